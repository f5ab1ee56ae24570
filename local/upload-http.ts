/**
 * The local stack's XEP-0363 HTTP endpoint (what S3 is in the cloud), on the WebSocket port under
 * /upload/: PUT with the signed grant from the slot (exact size, content type if one was named,
 * expiry; each path written once), GET/HEAD to fetch, OPTIONS for browsers' CORS preflight.
 * Files live in `<XMPP_DATA_DIR>/uploads/<id>/` (the bytes and a small JSON description).
 *
 * Files are served with `Content-Security-Policy: sandbox` and `nosniff`, since they share an origin
 * with the web client: an uploaded HTML page cannot script it.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { verifyGrant, type UploadGrant } from '../shared/upload/token.ts';
import { contentDisposition } from '../shared/upload/types.ts';
import type { LocalHttpHandler } from './http-handlers.ts';

export const UPLOAD_PATH = '/upload/';

export interface UploadHttpOptions {
  /** Where files go, e.g. `<dataDir>/uploads`. */
  dir: string;
  /** The HMAC key the slots were signed with (XMPP_UPLOAD_SECRET). */
  secret: string;
}

interface Stored {
  filename: string;
  size: number;
  contentType: string;
  uploadedAt: string;
}

const ID = /^[A-Za-z0-9_-]{16,64}$/;
/** Types a browser may show inline; anything else downloads. */

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, PUT, OPTIONS',
  'Access-Control-Allow-Headers': 'Content-Type',
  'Access-Control-Max-Age': '86400',
};

function reply(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...CORS, 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(`${text}\n`);
}

export function uploadHttpHandler(options: UploadHttpOptions): LocalHttpHandler {
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://local');
    if (!url.pathname.startsWith(UPLOAD_PATH)) return false;
    const parts = url.pathname.slice(UPLOAD_PATH.length).split('/');
    let filename: string | undefined;
    try {
      filename = parts.length === 2 && ID.test(parts[0]!) ? decodeURIComponent(parts[1]!) : undefined;
    } catch {
      filename = undefined;
    }
    if (!filename) {
      reply(res, 404, 'Not Found');
      return true;
    }
    const id = parts[0]!;
    const dir = join(options.dir, id);
    switch (req.method) {
      case 'OPTIONS':
        res.writeHead(204, CORS);
        res.end();
        return true;
      case 'PUT':
        await put(req, res, url, options, id, filename, dir);
        return true;
      case 'GET':
      case 'HEAD':
        await get(req, res, filename, dir);
        return true;
      default:
        reply(res, 405, 'Method Not Allowed', { Allow: 'GET, HEAD, PUT, OPTIONS' });
        return true;
    }
  };
}

async function put(req: IncomingMessage, res: ServerResponse, url: URL, options: UploadHttpOptions, id: string, filename: string, dir: string) {
  const size = Number(url.searchParams.get('size'));
  const expires = Number(url.searchParams.get('expires'));
  const grant: UploadGrant = { id, filename, size, contentType: url.searchParams.get('type') ?? undefined, expires };
  if (!verifyGrant(options.secret, grant, url.searchParams.get('sig') ?? '')) return reply(res, 403, 'Forbidden: not a valid upload slot');
  if (expires < Date.now() / 1000) return reply(res, 403, 'Forbidden: this upload slot has expired');
  const length = req.headers['content-length'];
  if (length === undefined) return reply(res, 411, 'Length Required');
  if (Number(length) !== size) return reply(res, Number(length) > size ? 413 : 400, `Content-Length must be ${size}, the size in the slot request`);
  const contentType = req.headers['content-type'];
  if (grant.contentType && contentType?.split(';')[0]!.trim().toLowerCase() !== grant.contentType.toLowerCase()) {
    return reply(res, 415, `Content-Type must be ${grant.contentType}, as in the slot request`);
  }
  if (await exists(join(dir, 'meta.json'))) return reply(res, 409, 'Conflict: already uploaded');
  await mkdir(dir, { recursive: true });
  const partial = join(dir, `.partial-${process.pid}-${Date.now()}`);
  const out = createWriteStream(partial, { flags: 'wx' });
  let received = 0;
  let tooLong = false;
  try {
    for await (const chunk of req) {
      received += (chunk as Buffer).length;
      if (received > size) {
        tooLong = true;
        break;
      }
      if (!out.write(chunk)) await once(out, 'drain');
    }
  } finally {
    out.end();
    await once(out, 'close');
  }
  if (tooLong || received !== size) {
    await rm(partial, { force: true });
    if (tooLong) res.setHeader('Connection', 'close');
    return reply(res, tooLong ? 413 : 400, `expected exactly ${size} bytes`);
  }
  const stored: Stored = {
    filename,
    size,
    contentType: grant.contentType ?? contentType?.split(';')[0]!.trim() ?? 'application/octet-stream',
    uploadedAt: new Date().toISOString(),
  };
  await rename(partial, join(dir, 'file'));
  await writeFile(join(dir, 'meta.json'), JSON.stringify(stored), { flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  reply(res, 201, 'Created');
}

async function get(req: IncomingMessage, res: ServerResponse, filename: string, dir: string) {
  let stored: Stored;
  try {
    stored = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as Stored;
  } catch {
    return reply(res, 404, 'Not Found');
  }
  if (stored.filename !== filename) return reply(res, 404, 'Not Found');
  const type = /^[\w!#$&^.+-]+\/[\w!#$&^.+-]+$/.test(stored.contentType) ? stored.contentType : 'application/octet-stream';
  res.writeHead(200, {
    ...CORS,
    'Content-Type': type,
    'Content-Length': String(stored.size),
    'Content-Disposition': contentDisposition(type, filename),
    'Content-Security-Policy': "default-src 'none'; sandbox",
    'X-Content-Type-Options': 'nosniff',
    'Cache-Control': 'public, max-age=31536000, immutable',
  });
  if (req.method === 'HEAD') return res.end();
  const stream = createReadStream(join(dir, 'file'));
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
