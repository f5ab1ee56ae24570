/**
 * Where XEP-0363 uploads go: an `UploadStorage` turns a slot request into a PUT URL and a GET URL.
 * Two implementations: S3 pre-signed URLs in the cloud (s3-storage.ts) and the local stack's HTTP
 * endpoint with HMAC-signed tokens (local-storage.ts). Chosen from the environment:
 *   XMPP_UPLOAD_BUCKET           S3 bucket (cloud); with XMPP_UPLOAD_PUBLIC_READ=true GET URLs are plain
 *                                object URLs (XMPP_UPLOAD_PUBLIC_URL overrides their base), otherwise
 *                                pre-signed for XMPP_UPLOAD_GET_EXPIRY_SECONDS (default 7 days, S3's maximum)
 *   XMPP_UPLOAD_URL, XMPP_UPLOAD_SECRET   the local stack's upload endpoint and its HMAC key
 *   XMPP_UPLOAD_MAX_BYTES        largest file accepted (default 100 MiB)
 *   XMPP_UPLOAD_QUOTA_BYTES      bytes a user may upload per UTC day (default 1 GiB)
 *   XMPP_UPLOAD_DOMAIN           the service's JID (default upload.<domain>)
 * Neither bucket nor local endpoint: no upload service.
 */
import { LocalUploadStorage } from './local-storage.ts';
import { S3UploadStorage } from './s3-storage.ts';
import type { UploadStorage } from './types.ts';

export type { UploadRequest, UploadSlot, UploadStorage } from './types.ts';

export interface UploadConfig {
  /** The service's JID, e.g. upload.example.com. */
  domain: string;
  maxFileSize: number;
  /** Bytes a user may be granted slots for per UTC day (XMPP_UPLOAD_QUOTA_BYTES, default 1 GiB). */
  dailyQuota: number;
  storage: UploadStorage;
}

export const DEFAULT_MAX_FILE_SIZE = 100 * 1024 * 1024;
export const DEFAULT_DAILY_QUOTA = 1024 * 1024 * 1024;

function positive(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${value}"`);
  return n;
}

export function uploadConfigFromEnv(env: NodeJS.ProcessEnv, domain: string): UploadConfig | undefined {
  const maxFileSize = positive(env.XMPP_UPLOAD_MAX_BYTES, DEFAULT_MAX_FILE_SIZE, 'XMPP_UPLOAD_MAX_BYTES');
  const dailyQuota = positive(env.XMPP_UPLOAD_QUOTA_BYTES, DEFAULT_DAILY_QUOTA, 'XMPP_UPLOAD_QUOTA_BYTES');
  const service = (env.XMPP_UPLOAD_DOMAIN || `upload.${domain}`).toLowerCase();
  if (env.XMPP_UPLOAD_BUCKET) {
    const storage = new S3UploadStorage({
      bucket: env.XMPP_UPLOAD_BUCKET,
      region: env.AWS_REGION,
      publicRead: /^(1|true|yes|on)$/i.test(env.XMPP_UPLOAD_PUBLIC_READ ?? ''),
      publicBaseUrl: env.XMPP_UPLOAD_PUBLIC_URL || undefined,
      getExpirySeconds: positive(env.XMPP_UPLOAD_GET_EXPIRY_SECONDS, 7 * 24 * 3600, 'XMPP_UPLOAD_GET_EXPIRY_SECONDS'),
    });
    return { domain: service, maxFileSize, dailyQuota, storage };
  }
  if (env.XMPP_UPLOAD_URL && env.XMPP_UPLOAD_SECRET) {
    return { domain: service, maxFileSize, dailyQuota, storage: new LocalUploadStorage({ baseUrl: env.XMPP_UPLOAD_URL, secret: env.XMPP_UPLOAD_SECRET }) };
  }
  return undefined;
}
