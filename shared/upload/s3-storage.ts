/**
 * Upload slots on S3: a pre-signed PutObject URL whose signature covers Content-Length (S3 refuses
 * any other size) and, when the client named one, Content-Type; and either a plain object URL
 * (public-read buckets, see cdk/lib/uploads.ts) or a pre-signed GetObject URL.
 *
 * Pre-signed GET URLs stop working when the credentials that signed them expire: signed by a Lambda
 * role, that is within hours, whatever the requested expiry. Public-read is the choice for links
 * that must last until the bucket's lifecycle rule removes the file.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { PUT_EXPIRY_SECONDS, contentDisposition, uploadId, type UploadRequest, type UploadSlot, type UploadStorage } from './types.ts';

export interface S3UploadStorageOptions {
  bucket: string;
  region?: string;
  publicRead: boolean;
  /** Base of public GET URLs (e.g. a CloudFront distribution); default the bucket's virtual-hosted URL. */
  publicBaseUrl?: string;
  /** Lifetime of pre-signed GET URLs (at most 7 days, S3's limit for SigV4). */
  getExpirySeconds: number;
  client?: S3Client;
}

const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

/** An S3 key as a URL path: each segment percent-encoded, slashes kept. */
const keyPath = (key: string) => key.split('/').map(encodeURIComponent).join('/');

/**
 * The S3 client and presigner are imported on the first upload request, not when the stream Lambda
 * starts: they are the largest part of its bundle and few frames need them (docs/performance.md).
 */
let sdk: Promise<[typeof import('@aws-sdk/client-s3'), typeof import('@aws-sdk/s3-request-presigner')]> | undefined;
const loadSdk = () => (sdk ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/s3-request-presigner')]));

export class S3UploadStorage implements UploadStorage {
  private client?: S3Client;

  constructor(private readonly options: S3UploadStorageOptions) {
    this.client = options.client;
  }

  async createSlot(request: UploadRequest): Promise<UploadSlot> {
    const [{ GetObjectCommand, PutObjectCommand, S3Client }, { getSignedUrl }] = await loadSdk();
    this.client ??= new S3Client({ region: this.options.region });
    const client = this.client;
    const { bucket } = this.options;
    const key = `${uploadId()}/${request.filename}`;
    const signed = new Set(['content-length', ...(request.contentType ? ['content-type'] : [])]);
    const put = await getSignedUrl(
      client,
      new PutObjectCommand({ Bucket: bucket, Key: key, ContentLength: request.size, ContentType: request.contentType }),
      { expiresIn: PUT_EXPIRY_SECONDS, signableHeaders: signed },
    );
    let get: string;
    if (this.options.publicRead) {
      const region = await client.config.region();
      const base = this.options.publicBaseUrl?.replace(/\/+$/, '') ?? `https://${bucket}.s3.${region}.amazonaws.com`;
      get = `${base}/${keyPath(key)}`;
    } else {
      // The signed GET sets how the file is served, whatever the PUT sent: the requested type (or
      // octet-stream), and inline only for media (an uploaded page must not run in S3's origin).
      const served = new GetObjectCommand({
        Bucket: bucket,
        Key: key,
        ResponseContentType: request.contentType ?? 'application/octet-stream',
        ResponseContentDisposition: contentDisposition(request.contentType, request.filename),
      });
      get = await getSignedUrl(client, served, {
        expiresIn: Math.min(this.options.getExpirySeconds, MAX_PRESIGN_SECONDS),
      });
    }
    return { put, get };
  }
}
