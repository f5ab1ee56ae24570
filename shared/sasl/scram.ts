/**
 * SCRAM (RFC 5802, RFC 7677) for the server side, with SHA-1 and SHA-256.
 *
 * Hand-written on node:crypto because npm's SCRAM packages (sasl-scram-sha-1 and kin) are
 * client-side only. The server keeps only salt, iteration count, StoredKey and ServerKey; the
 * exchange state is a plain serializable object so it can live in the connection item between frames.
 * Channel binding (the -PLUS mechanisms, RFC 5802 §6) only where the server has the TLS connection:
 * native clients (channel-binding.ts). A WebSocket client's TLS ends at API Gateway, so there "p" is
 * refused.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export type ScramHash = 'sha1' | 'sha256';

export const SCRAM_MECHANISMS: Record<string, ScramHash> = {
  'SCRAM-SHA-256': 'sha256',
  'SCRAM-SHA-1': 'sha1',
};

export interface ScramCredentials {
  salt: string; // base64
  iterations: number;
  storedKey: string; // base64
  serverKey: string; // base64
}

const hmac = (hash: ScramHash, key: Buffer, data: string | Buffer) => createHmac(hash, key).update(data).digest();
const digest = (hash: ScramHash, data: Buffer) => createHash(hash).update(data).digest();

/**
 * SASLprep builds its Unicode tables when it is imported (its import alone took 27–33 ms on the
 * shared 2-core machine, part of every cold start), and only a password set or checked in the clear (SASL
 * PLAIN, registration, the CLI) needs it: SCRAM logins never see a password. So it is loaded on
 * first use, into a chunk of its own in the Lambda bundle.
 */
const importSaslprep = () => import('@mongodb-js/saslprep');
let saslprepModule: ReturnType<typeof importSaslprep> | undefined;
const loadSaslprep = () => (saslprepModule ??= importSaslprep());

/**
 * A password as SCRAM hashes it: SASLprep (RFC 4013, as RFC 5802 requires), by MongoDB's maintained
 * implementation rather than by hand (mapping, NFKC, prohibited output, bidi rules). `stored`: the
 * rules for a password being set (unassigned code points refused); otherwise the rules for one
 * being checked. Rejects with PasswordError on a password SASLprep refuses.
 */
export async function preparePassword(password: string, stored: boolean): Promise<string> {
  const { default: saslprep } = await loadSaslprep();
  try {
    return saslprep(password, { allowUnassigned: !stored });
  } catch (err) {
    throw new PasswordError(`the password has characters SASLprep (RFC 4013) does not allow: ${(err as Error).message}`);
  }
}

export class PasswordError extends Error {}

export async function saltedPassword(hash: ScramHash, password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  // RFC 5802 Hi() is PBKDF2 with HMAC over the SASLprep'd password. A password SASLprep refuses was
  // never stored, so it cannot match: it is hashed as it is, for the same work and a mismatch.
  let prepared: string;
  try {
    prepared = await preparePassword(password, false);
  } catch {
    prepared = password;
  }
  return pbkdf2Sync(Buffer.from(prepared, 'utf8'), salt, iterations, hash === 'sha1' ? 20 : 32, hash);
}

export async function deriveCredentials(
  hash: ScramHash,
  password: string,
  iterations: number,
  salt: Buffer = randomBytes(16),
): Promise<ScramCredentials> {
  const salted = await saltedPassword(hash, password, salt, iterations);
  const clientKey = hmac(hash, salted, 'Client Key');
  return {
    salt: salt.toString('base64'),
    iterations,
    storedKey: digest(hash, clientKey).toString('base64'),
    serverKey: hmac(hash, salted, 'Server Key').toString('base64'),
  };
}

/** Verifies a plaintext password (SASL PLAIN) against stored SCRAM credentials. */
export async function verifyPassword(hash: ScramHash, password: string, creds: ScramCredentials): Promise<boolean> {
  const salted = await saltedPassword(hash, password, Buffer.from(creds.salt, 'base64'), creds.iterations);
  const storedKey = digest(hash, hmac(hash, salted, 'Client Key'));
  return safeEqual(storedKey, Buffer.from(creds.storedKey, 'base64'));
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export class ScramError extends Error {
  constructor(
    readonly condition: 'malformed-request' | 'not-authorized' | 'invalid-mechanism' | 'encryption-required',
    message: string,
  ) {
    super(message);
  }
}

/** State kept between the two SCRAM round trips. */
export interface ScramState {
  hash: ScramHash;
  /** The channel binding type the client chose (gs2 flag "p"); its data is checked at the proof. */
  channelBinding?: string;
  username: string;
  clientFirstBare: string;
  serverFirst: string;
  nonce: string;
  gs2Header: string;
}

function parseAttributes(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw new ScramError('malformed-request', 'bad SCRAM attribute');
    map.set(part[0]!, part.slice(2));
  }
  return map;
}

function decodeSaslName(name: string): string {
  if (/=(?!2C|3D)/.test(name)) throw new ScramError('malformed-request', 'bad escape in username');
  return name.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

/** What the server can bind to on this connection, for the gs2 header check. */
export interface BindingOffer {
  /** The client asked for a -PLUS mechanism. */
  plus: boolean;
  /** Channel binding types this connection has (none: WebSocket). */
  available: readonly string[];
}

export interface ClientFirst {
  gs2Header: string;
  clientFirstBare: string;
  username: string;
  clientNonce: string;
  /** The binding type of a "p=" header. */
  channelBinding?: string;
}

/** Parses client-first-message and returns the username (the caller then loads credentials). */
export function parseClientFirst(message: string, offer: BindingOffer = { plus: false, available: [] }): ClientFirst {
  const m = /^([nyp])(=[^,]*)?,(a=[^,]*)?,(.*)$/s.exec(message);
  if (!m) throw new ScramError('malformed-request', 'bad gs2 header');
  const flag = m[1]!;
  const binding = flag === 'p' ? m[2]?.slice(1) : undefined;
  if (flag === 'p' && !binding) throw new ScramError('malformed-request', 'bad gs2 header');
  if (flag !== 'p' && m[2]) throw new ScramError('malformed-request', 'bad gs2 header');
  if (offer.plus && flag !== 'p') throw new ScramError('malformed-request', 'a -PLUS mechanism needs channel binding');
  if (!offer.plus && flag === 'p') throw new ScramError('malformed-request', 'channel binding needs a -PLUS mechanism');
  if (binding && !offer.available.includes(binding)) throw new ScramError('malformed-request', `channel binding type ${binding} is not supported here`);
  // RFC 5802 §6 would refuse "y" (the client can bind but thinks we cannot) where -PLUS is offered,
  // as a sign of a stripped mechanism list. Clients that know only tls-unique (undefined on TLS
  // 1.3, so never offered here) send it against every server that offers other types: stock
  // slixmpp 1.8 locked itself out that way. "y" is accepted; the attack it would reveal needs a
  // certificate the client trusts (docs/native-clients.md).
  if (m[3]) throw new ScramError('malformed-request', 'authzid is not supported');
  const clientFirstBare = m[4]!;
  if (clientFirstBare.startsWith('m=')) throw new ScramError('malformed-request', 'mandatory extension not supported');
  const attrs = parseAttributes(clientFirstBare);
  const username = attrs.get('n');
  const clientNonce = attrs.get('r');
  if (!username || !clientNonce) throw new ScramError('malformed-request', 'username and nonce required');
  return { gs2Header: `${flag}${m[2] ?? ''},,`, clientFirstBare, username: decodeSaslName(username), clientNonce, channelBinding: binding };
}

export function serverFirst(
  hash: ScramHash,
  parsed: ClientFirst,
  creds: Pick<ScramCredentials, 'salt' | 'iterations'>,
  serverNonce = randomBytes(18).toString('base64'),
): { message: string; state: ScramState } {
  const nonce = parsed.clientNonce + serverNonce;
  const message = `r=${nonce},s=${creds.salt},i=${creds.iterations}`;
  return {
    message,
    state: {
      hash,
      username: parsed.username,
      clientFirstBare: parsed.clientFirstBare,
      serverFirst: message,
      nonce,
      gs2Header: parsed.gs2Header,
      ...(parsed.channelBinding ? { channelBinding: parsed.channelBinding } : {}),
    },
  };
}

/**
 * Checks client-final-message; returns server-final-message ("v=...") or throws not-authorized.
 * `bindingData` is this connection's data for the type the client chose (absent: none here).
 */
export function verifyClientFinal(state: ScramState, message: string, creds: ScramCredentials, bindingData?: Buffer): string {
  const proofAt = message.lastIndexOf(',p=');
  if (proofAt === -1) throw new ScramError('malformed-request', 'missing proof');
  const withoutProof = message.slice(0, proofAt);
  const attrs = parseAttributes(withoutProof);
  const proof = Buffer.from(message.slice(proofAt + 3), 'base64');
  if (state.channelBinding && !bindingData) throw new ScramError('not-authorized', 'no channel binding data on this connection');
  const expected = Buffer.concat([Buffer.from(state.gs2Header), state.channelBinding ? bindingData! : Buffer.alloc(0)]);
  if (attrs.get('c') !== expected.toString('base64')) {
    throw new ScramError('not-authorized', 'channel binding mismatch');
  }
  if (attrs.get('r') !== state.nonce) throw new ScramError('not-authorized', 'nonce mismatch');
  const authMessage = `${state.clientFirstBare},${state.serverFirst},${withoutProof}`;
  const storedKey = Buffer.from(creds.storedKey, 'base64');
  const signature = hmac(state.hash, storedKey, authMessage);
  if (proof.length !== signature.length) throw new ScramError('not-authorized', 'bad proof');
  const clientKey = Buffer.alloc(signature.length);
  for (let i = 0; i < signature.length; i++) clientKey[i] = proof[i]! ^ signature[i]!;
  if (!safeEqual(digest(state.hash, clientKey), storedKey)) throw new ScramError('not-authorized', 'bad proof');
  const serverSignature = hmac(state.hash, Buffer.from(creds.serverKey, 'base64'), authMessage);
  return `v=${serverSignature.toString('base64')}`;
}
