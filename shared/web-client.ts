/**
 * XEP-0156 (Discovering Alternative XMPP Connection Methods), HTTP lookup: the host-meta documents
 * that advertise the WebSocket endpoint, in XRD (`/.well-known/host-meta`, RFC 6415) and JRD
 * (`/.well-known/host-meta.json`). Used by the local stack (local/web-http.ts) and the cloud site
 * (cdk/lib/web-client.ts), so both publish the same documents.
 */

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
