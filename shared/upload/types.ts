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

/**
 * Media a browser may show in place: anything else (HTML, SVG, XML, scripts, unknown types) is served
 * as an attachment, so an uploaded page cannot run in the file host's origin.
 */
export const INLINE_TYPES = /^(image\/(png|jpeg|gif|webp|avif)|audio\/[\w.+-]+|video\/[\w.+-]+|text\/plain)$/i;

/** The Content-Disposition a file is served with. */
export function contentDisposition(contentType: string | undefined, filename: string): string {
  return `${contentType && INLINE_TYPES.test(contentType) ? 'inline' : 'attachment'}; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

/** How long a PUT URL stays valid: the client uploads right after asking. */
export const PUT_EXPIRY_SECONDS = 300;

/** A path segment nobody can guess (128 bits). */
export function uploadId(): string {
  return randomBytes(16).toString('base64url');
}
