/**
 * Upload tokens of the local stack's HTTP endpoint: an HMAC-SHA256 over everything the PUT must
 * match (path, exact size, content type, expiry), carried in the PUT URL's query. The signer (the
 * stream Lambda code) and the verifier (local/upload-http.ts) share only the secret.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface UploadGrant {
  id: string;
  filename: string;
  size: number;
  /** When present, the PUT must carry exactly this Content-Type. */
  contentType?: string;
  /** Epoch seconds after which the PUT URL is refused. */
  expires: number;
}

function mac(secret: string | Buffer, grant: UploadGrant): Buffer {
  return createHmac('sha256', secret)
    .update(['xmpp-upload-v1', grant.id, grant.filename, String(grant.size), grant.contentType ?? '', String(grant.expires)].join('\n'))
    .digest();
}

export function signGrant(secret: string | Buffer, grant: UploadGrant): string {
  return mac(secret, grant).toString('base64url');
}

/** Whether `signature` is the MAC of `grant` (constant time). Expiry is the caller's check. */
export function verifyGrant(secret: string | Buffer, grant: UploadGrant, signature: string): boolean {
  const expected = mac(secret, grant);
  const given = Buffer.from(signature, 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The path of an upload under the endpoint's base: `<id>/<filename, URI-encoded>`. */
export function uploadPath(id: string, filename: string): string {
  return `${id}/${encodeURIComponent(filename)}`;
}
