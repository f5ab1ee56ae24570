/**
 * Server Dialback keys (XEP-0220) generated as XEP-0185 recommends:
 * key = HMAC-SHA256(hex(SHA256(secret)), "<receiving> <originating> <stream id>"), in hex.
 * Any task that knows the secret can verify a key another task generated.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export function dialbackKey(secret: string, receiving: string, originating: string, streamId: string): string {
  const hashedSecret = createHash('sha256').update(secret).digest('hex');
  return createHmac('sha256', hashedSecret).update(`${receiving} ${originating} ${streamId}`).digest('hex');
}

/** Compares in constant time; surrounding white space in the received key is ignored. */
export function verifyDialbackKey(secret: string, receiving: string, originating: string, streamId: string, key: string): boolean {
  const expected = Buffer.from(dialbackKey(secret, receiving, originating, streamId));
  const given = Buffer.from(key.trim());
  return given.length === expected.length && timingSafeEqual(given, expected);
}
