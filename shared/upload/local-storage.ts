/**
 * Upload slots on the local stack's own HTTP endpoint (local/upload-http.ts): the PUT URL carries
 * a signed grant (size, content type, expiry); the GET URL is the same path without it, unguessable
 * by its random id.
 */
import { PUT_EXPIRY_SECONDS, uploadId, type UploadRequest, type UploadSlot, type UploadStorage } from './types.ts';
import { signGrant, uploadPath } from './token.ts';

export interface LocalUploadStorageOptions {
  /** e.g. http://127.0.0.1:5280/upload */
  baseUrl: string;
  secret: string;
}

export class LocalUploadStorage implements UploadStorage {
  private readonly base: string;

  constructor(private readonly options: LocalUploadStorageOptions) {
    this.base = options.baseUrl.replace(/\/+$/, '');
  }

  async createSlot(request: UploadRequest): Promise<UploadSlot> {
    const grant = {
      id: uploadId(),
      filename: request.filename,
      size: request.size,
      contentType: request.contentType,
      expires: Math.floor(Date.now() / 1000) + PUT_EXPIRY_SECONDS,
    };
    const get = `${this.base}/${uploadPath(grant.id, grant.filename)}`;
    const query = new URLSearchParams({ size: String(grant.size), expires: String(grant.expires) });
    if (grant.contentType) query.set('type', grant.contentType);
    query.set('sig', signGrant(this.options.secret, grant));
    return { put: `${get}?${query}`, get };
  }
}
