/**
 * What the web client (web/: Converse.js started by web/app.js) needs from the server side, shared by
 * the local stack (local/web-http.ts) and the cloud site (cdk/lib/web-client.ts) so both publish the
 * same documents and headers:
 * - config.json, the settings web/app.js reads;
 * - XEP-0156 (Discovering Alternative XMPP Connection Methods), HTTP lookup: the host-meta documents
 *   that advertise the WebSocket endpoint, in XRD (`/.well-known/host-meta`, RFC 6415) and JRD
 *   (`/.well-known/host-meta.json`);
 * - the page's Content-Security-Policy.
 * Values may be CDK token strings: they are only interpolated.
 */

/** The settings web/app.js reads from config.json. */
export interface WebClientConfig {
  domain: string;
  registration: boolean;
  /** The XEP-0045 service rooms are created on. */
  mucDomain?: string;
  /** Absolute ws(s):// URL; when absent app.js uses websocketPath on the page's own host. */
  websocketUrl?: string;
  websocketPath?: string;
  /** Converse.js log level (debug, info, warn, error). */
  loglevel?: string;
}

/**
 * The page's Content-Security-Policy: this origin and the WebSocket endpoint, nothing else (no
 * other origin, no inline script, no eval, no framing).
 */
export function contentSecurityPolicy(webSocketUrl: string): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    // Converse.js (lit) sets style attributes on its elements.
    "style-src 'self' 'unsafe-inline'",
    // Avatars and previews are data: or blob: URLs made in the page.
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "media-src 'self' blob:",
    `connect-src 'self' ${webSocketUrl}`,
    "worker-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** The link relation of an RFC 7395 WebSocket endpoint (XEP-0156 §3.1). */
export const WEBSOCKET_REL = 'urn:xmpp:alt-connections:websocket';

function xmlAttr(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The XRD document. `webSocketUrl` may be a CDK token string (it is only interpolated). */
export function hostMetaXrd(webSocketUrl: string): string {
  return [
    "<?xml version='1.0' encoding='utf-8'?>",
    "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>",
    `  <Link rel="${WEBSOCKET_REL}" href="${xmlAttr(webSocketUrl)}"/>`,
    '</XRD>',
    '',
  ].join('\n');
}

/** The JRD document (RFC 6415 Appendix A). */
export function hostMetaJrd(webSocketUrl: string): { links: { rel: string; href: string }[] } {
  return { links: [{ rel: WEBSOCKET_REL, href: webSocketUrl }] };
}

/** Media types of the two documents (RFC 6415 §3). */
export const HOST_META_XRD_TYPE = 'application/xrd+xml; charset=utf-8';
export const HOST_META_JRD_TYPE = 'application/json; charset=utf-8';
