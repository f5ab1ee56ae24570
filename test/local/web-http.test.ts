/**
 * The web client's HTTP side on the local stack's WebSocket port (local/web-http.ts), and the list
 * of HTTP handlers the stack tries in order (local/http-handlers.ts).
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { LocalHttpHandler } from '../../local/http-handlers.ts';
import { webClientHandler } from '../../local/web-http.ts';
import { startTestStack, type LocalStack } from '../integration/helpers.ts';

/** A plain HTTP request with full control of the headers (fetch will not send a forged Host). */
function rawGet(port: number, path: string, headers: Record<string, string>, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('web client over HTTP (local stack)', () => {
  let stack: LocalStack;
  let base: string;
  let port: number;
  const seenByNext: string[] = [];

  beforeAll(async () => {
    // A second handler after the web client: it gets what the web client does not claim.
    const next: LocalHttpHandler = (req, res) => {
      if (!req.url?.startsWith('/elsewhere/')) return false;
      seenByNext.push(req.url);
      res.writeHead(201, { 'Content-Type': 'text/plain' });
      res.end('next handler\n');
      return true;
    };
    stack = await startTestStack({ httpHandlers: [webClientHandler(), next] });
    port = stack.gateway.port;
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    await stack?.stop();
  });

  it('serves the page with a CSP that allows only this origin and the WebSocket endpoint', async () => {
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await res.text();
    expect(html).toContain('converse/converse.min.js');
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//); // nothing from another origin

    const csp = res.headers.get('content-security-policy')!;
    const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
    expect(directives['default-src']).toEqual(["'none'"]);
    expect(directives['script-src']).toEqual(["'self'"]);
    expect(directives['connect-src']).toEqual(["'self'", `ws://127.0.0.1:${port}/xmpp-websocket`]);
    expect(directives['frame-ancestors']).toEqual(["'none'"]);
    expect(directives['base-uri']).toEqual(["'none'"]);
    // No directive names any other origin (only keywords, data:/blob: and our WebSocket).
    for (const [name, values] of Object.entries(directives)) {
      for (const v of values) {
        expect(/^'[a-z-]+'$/.test(v) || v === 'data:' || v === 'blob:' || v === `ws://127.0.0.1:${port}/xmpp-websocket`, `${name} ${v}`).toBe(true);
      }
    }
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
  });

  it('serves Converse.js from the npm package, with the right types', async () => {
    const js = await fetch(`${base}/converse/converse.min.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect((await js.text()).length).toBeGreaterThan(100_000);
    const css = await fetch(`${base}/converse/converse.min.css`);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    await css.arrayBuffer();
    const app = await fetch(`${base}/app.js`);
    expect(await app.text()).toContain('converse.initialize');
    const head = await fetch(`${base}/converse/converse.min.js`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(100_000);
    expect(await head.text()).toBe('');
  });

  it('tells the page the domain, registration and MUC service', async () => {
    const res = await fetch(`${base}/config.json`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      domain: 'localhost',
      registration: true,
      mucDomain: 'conference.localhost',
      websocketPath: '/xmpp-websocket',
    });
  });

  it('advertises the WebSocket endpoint in host-meta, XRD and JRD (XEP-0156), readable cross-origin', async () => {
    const ws = `ws://127.0.0.1:${port}/xmpp-websocket`;
    const xrd = await fetch(`${base}/.well-known/host-meta`);
    expect(xrd.status).toBe(200);
    expect(xrd.headers.get('content-type')).toBe('application/xrd+xml; charset=utf-8');
    expect(xrd.headers.get('access-control-allow-origin')).toBe('*');
    const xml = await xrd.text();
    expect(xml).toContain("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>");
    expect(xml).toContain(`<Link rel="urn:xmpp:alt-connections:websocket" href="${ws}"/>`);

    const jrd = await fetch(`${base}/.well-known/host-meta.json`);
    expect(jrd.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(jrd.headers.get('access-control-allow-origin')).toBe('*');
    expect(await jrd.json()).toEqual({ links: [{ rel: 'urn:xmpp:alt-connections:websocket', href: ws }] });

    const preflight = await fetch(`${base}/.well-known/host-meta.json`, { method: 'OPTIONS' });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-methods')).toBe('GET, HEAD, OPTIONS');

    // The advertised endpoint is the real one: a client following host-meta gets the xmpp subprotocol.
    const socket = new WebSocket(ws, ['xmpp']);
    const protocol = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => resolve(socket.protocol));
      socket.once('error', reject);
    });
    socket.close();
    expect(protocol).toBe('xmpp');
  });

  it('the page and the CSP follow the Host the browser used', async () => {
    const res = await rawGet(port, '/.well-known/host-meta.json', { Host: `localhost:${port}` });
    expect(JSON.parse(res.body).links[0].href).toBe(`ws://localhost:${port}/xmpp-websocket`);
    const page = await rawGet(port, '/', { Host: `localhost:${port}` });
    expect(String(page.headers['content-security-policy'])).toContain(`connect-src 'self' ws://localhost:${port}/xmpp-websocket;`);
  });

  it('refuses a malformed Host header instead of reflecting it', async () => {
    const res = await rawGet(port, '/.well-known/host-meta', { Host: 'evil.example"/><x a="' });
    expect(res.status).toBe(400);
    expect(res.body).not.toContain('evil');
  });

  it('serves nothing outside its folders', async () => {
    for (const path of [
      '/converse/../package.json',
      '/converse/%2e%2e/package.json',
      '/converse/..%2fpackage.json',
      '/converse/%2e%2e%2f%2e%2e%2fpackage.json',
      '/converse/.%2e/.%2e/.%2e/package.json',
      '/converse/%00.js',
      '/converse/images',
      '/converse/..\\..\\package.json',
      '/index.html/../../package.json',
    ]) {
      const res = await rawGet(port, path, { Host: `127.0.0.1:${port}` });
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toContain('"name"');
    }
  });

  it('answers only GET and HEAD on its paths', async () => {
    const res = await fetch(`${base}/config.json`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
  });

  it('leaves other paths to the next handler, and 404 when nobody claims them', async () => {
    const mine = await fetch(`${base}/elsewhere/thing-1`);
    expect(mine.status).toBe(201);
    expect(await mine.text()).toBe('next handler\n');
    expect(seenByNext).toEqual(['/elsewhere/thing-1']);
    const nobody = await fetch(`${base}/nothing-here`);
    expect(nobody.status).toBe(404);
    await nobody.text();
    // The WebSocket path itself still belongs to the gateway.
    expect((await fetch(`${base}/xmpp-websocket`)).status).toBe(426);
  });
});
