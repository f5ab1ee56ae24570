/** The contract of XEP-0363 upload storage (see storage.ts for how one is chosen). */
import { randomBytes } from 'node:crypto';

export interface UploadRequest {
  /** Bare JID of the uploader. */
  uploader: string;
  filename: string;
  size: number;
  contentType?: string;
}

export interface UploadSlot {
  put: string;
  /** Headers the client must send with the PUT (XEP-0363 allows Authorization, Cookie, Expires). */
  headers?: Record<string, string>;
  get: string;
}

export interface UploadStorage {
  createSlot(request: UploadRequest): Promise<UploadSlot>;
}

/** How long a PUT URL stays valid: the client uploads right after asking. */
export const PUT_EXPIRY_SECONDS = 300;

/** A path segment nobody can guess (128 bits). */
export function uploadId(): string {
  return randomBytes(16).toString('base64url');
}
