/**
 * The client's side of a SCRAM proof (RFC 5802 §3), for tests that drive SASL by hand (channel
 * binding data that no npm client library computes). Not used by the server.
 */
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';

/** client-final-message for server-first `serverFirst`, with the gs2 header and channel binding data. */
export function scramClientFinal(password: string, serverFirst: string, clientFirstBare: string, gs2: string, cbData: Buffer, hash: 'sha1' | 'sha256' = 'sha256'): string {
  const attrs = Object.fromEntries(serverFirst.split(',').map((p) => [p[0], p.slice(2)]));
  const salted = pbkdf2Sync(password, Buffer.from(attrs.s!, 'base64'), Number(attrs.i), hash === 'sha256' ? 32 : 20, hash);
  const clientKey = createHmac(hash, salted).update('Client Key').digest();
  const storedKey = createHash(hash).update(clientKey).digest();
  const withoutProof = `c=${Buffer.concat([Buffer.from(gs2), cbData]).toString('base64')},r=${attrs.r}`;
  const signature = createHmac(hash, storedKey).update(`${clientFirstBare},${serverFirst},${withoutProof}`).digest();
  return `${withoutProof},p=${Buffer.from(clientKey.map((b, i) => b ^ signature[i]!)).toString('base64')}`;
}
