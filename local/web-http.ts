/**
 * The web client of the local stack, on the WebSocket port (http://127.0.0.1:5280/):
 *
 *   /                            web/index.html: Converse.js, started by web/app.js
 *   /app.js, /app.css            web/
 *   /config.json                 domain, registration on/off, MUC service (read by app.js)
 *   /converse/…                  the npm package converse.js (its dist/ folder)
 *   /.well-known/host-meta       XEP-0156 XRD advertising ws://<host>/xmpp-websocket
 *   /.well-known/host-meta.json  the same in JRD
 *
 * Every other path is not ours: the handler returns false so the next handler (or the 404) answers.
 * Security headers on every answer: a Content-Security-Policy that allows this origin and the
 * WebSocket endpoint only (no external origin, no inline script), nosniff, no framing, no referrer.
 */
import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HOST_META_JRD_TYPE,
  HOST_META_XRD_TYPE,
  contentSecurityPolicy,
  hostMetaJrd,
  hostMetaXrd,
  type WebClientConfig,
} from '../shared/web-client.ts';
import type { LocalHttpContext, LocalHttpHandler } from './http-handlers.ts';

export interface WebClientOptions {
  /** Folder of index.html, app.js, app.css. Default: the repository's web/. */
  webDir?: string;
  /** Converse.js's dist/ folder. Default: resolved from the installed npm package converse.js. */
  converseDir?: string;
  /** MUC service announced to the client. Default XMPP_MUC_DOMAIN or conference.<domain>. */
  mucDomain?: string;
  /** Converse.js log level (debug, info, warn, error). Default warn. */
  loglevel?: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.gif': 'image/gif',
  '.ico': 'image/x-icon',
  '.ttf': 'font/ttf',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.mp3': 'audio/mpeg',
  '.ogg': 'audio/ogg',
  '.wasm': 'application/wasm',
};

/** Host[:port] as a browser sends it: a DNS name, IPv4, or [IPv6]. Anything else is refused. */
const HOST_HEADER = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

const repoWebDir = fileURLToPath(new URL('../web/', import.meta.url));

function converseDistDir(): string {
  // The package exports ./dist/*, not its package.json.
  return dirname(createRequire(import.meta.url).resolve('converse.js/dist/converse.min.js'));
}

function securityHeaders(wsUrl: string): Record<string, string> {
  return {
    'Content-Security-Policy': contentSecurityPolicy(wsUrl),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
  };
}

function send(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: string | Buffer,
): void {
  const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, { ...headers, 'Content-Length': String(payload.length) });
  res.end(req.method === 'HEAD' ? undefined : payload);
}

/** A file under `root` named by the URL path `rel`, or undefined (no traversal, no dot files, files only). */
async function fileUnder(root: string, rel: string): Promise<{ path: string; size: number; mtime: Date } | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rel);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const parts = decoded.split('/').filter((p) => p !== '');
  if (parts.length === 0 || parts.some((p) => p === '..' || p.startsWith('.'))) return undefined;
  if (!CONTENT_TYPES[extname(parts[parts.length - 1]!).toLowerCase()]) return undefined;
  try {
    const realRoot = await realpath(root);
    const path = await realpath(join(realRoot, ...parts));
    if (!path.startsWith(realRoot + sep)) return undefined;
    const info = await stat(path);
    return info.isFile() ? { path, size: info.size, mtime: info.mtime } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The web client handler for the local stack's list of HTTP handlers (LocalStackOptions.httpHandlers).
 */
export function webClientHandler(options: WebClientOptions = {}): LocalHttpHandler {
  const webDir = options.webDir ?? repoWebDir;
  let converseDir = options.converseDir;

  return async (req: IncomingMessage, res: ServerResponse, ctx: LocalHttpContext): Promise<boolean> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const isStatic = path === '/' || path === '/index.html' || path === '/app.js' || path === '/app.css' || path === '/favicon.ico';
    const isConverse = path.startsWith('/converse/');
    const isConfig = path === '/config.json';
    const isHostMeta = path === '/.well-known/host-meta' || path === '/.well-known/host-meta.json';
    if (!isStatic && !isConverse && !isConfig && !isHostMeta) return false;

    const host = req.headers.host ?? '';
    if (!HOST_HEADER.test(host)) {
      send(req, res, 400, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' }, 'Bad Host header\n');
      return true;
    }
    const wsUrl = `ws://${host}${ctx.wsPath}`;
    const headers = securityHeaders(wsUrl);

    if (req.method === 'OPTIONS' && isHostMeta) {
      // CORS preflight for host-meta (XEP-0156 §4): readable from any origin, without credentials.
      res.writeHead(204, {
        ...headers,
        'Access-Control-Allow-Origin': '*',
        'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
        'Access-Control-Max-Age': '86400',
      });
      res.end();
      return true;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(req, res, 405, { ...headers, Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }, 'Method Not Allowed\n');
      return true;
    }

    if (isHostMeta) {
      const json = path.endsWith('.json');
      send(
        req,
        res,
        200,
        {
          ...headers,
          'Content-Type': json ? HOST_META_JRD_TYPE : HOST_META_XRD_TYPE,
          'Access-Control-Allow-Origin': '*',
          'Cache-Control': 'no-cache',
        },
        json ? `${JSON.stringify(hostMetaJrd(wsUrl), null, 2)}\n` : hostMetaXrd(wsUrl),
      );
      return true;
    }

    if (isConfig) {
      const config: WebClientConfig = {
        domain: ctx.domain,
        registration: ctx.registration,
        mucDomain: options.mucDomain ?? (process.env.XMPP_MUC_DOMAIN || `conference.${ctx.domain}`),
        websocketPath: ctx.wsPath,
        loglevel: options.loglevel,
      };
      send(req, res, 200, { ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-cache' }, `${JSON.stringify(config)}\n`);
      return true;
    }

    let file: Awaited<ReturnType<typeof fileUnder>>;
    let cache: string;
    if (isConverse) {
      converseDir ??= converseDistDir();
      file = await fileUnder(converseDir, path.slice('/converse/'.length));
      cache = 'public, max-age=3600';
    } else if (path === '/favicon.ico') {
      converseDir ??= converseDistDir();
      file = await fileUnder(converseDir, 'images/favicon.ico');
      cache = 'public, max-age=3600';
    } else {
      file = await fileUnder(webDir, path === '/' ? 'index.html' : path.slice(1));
      cache = 'no-cache';
    }
    if (!file) {
      send(req, res, 404, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' }, 'Not Found\n');
      return true;
    }
    const fileHeaders = {
      ...headers,
      'Content-Type': CONTENT_TYPES[extname(file.path).toLowerCase()]!,
      'Content-Length': String(file.size),
      'Last-Modified': file.mtime.toUTCString(),
      'Cache-Control': cache,
    };
    const since = req.headers['if-modified-since'];
    if (since && Date.parse(since) >= Math.floor(file.mtime.getTime() / 1000) * 1000) {
      res.writeHead(304, { ...headers, 'Last-Modified': fileHeaders['Last-Modified'], 'Cache-Control': cache });
      res.end();
      return true;
    }
    res.writeHead(200, fileHeaders);
    if (req.method === 'HEAD') {
      res.end();
      return true;
    }
    await new Promise<void>((resolve, reject) => {
      const stream = createReadStream(file.path);
      stream.on('error', (err) => {
        res.destroy(err);
        reject(err);
      });
      res.on('close', () => {
        stream.destroy();
        resolve();
      });
      stream.pipe(res);
    });
    return true;
  };
}
