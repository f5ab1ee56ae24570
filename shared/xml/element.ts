/**
 * The XML tree type used everywhere: ltx's Element (the tree xmpp.js uses), so stanzas can be
 * built with `.c()/.t()/.up()`, queried with `getChild(name, xmlns)` and serialized with escaping.
 */
import { Element, createElement } from 'ltx';

export { Element };

type Child = Element | string | null | undefined | false;

/** Builds an element: `x('iq', { type: 'result' }, x('query', { xmlns: NS.ROSTER }))`. */
export function x(name: string, attrs: Record<string, string | number | undefined> = {}, ...children: Child[]): Element {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) clean[k] = String(v);
  const el = createElement(name, clean);
  for (const child of children) if (child) el.append(child);
  return el;
}

/** Namespaces used by the core and its modules. */
export const NS = {
  CLIENT: 'jabber:client',
  SERVER: 'jabber:server',
  FRAMING: 'urn:ietf:params:xml:ns:xmpp-framing',
  STREAMS: 'http://etherx.jabber.org/streams',
  STREAM_ERRORS: 'urn:ietf:params:xml:ns:xmpp-streams',
  STANZA_ERRORS: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  SASL: 'urn:ietf:params:xml:ns:xmpp-sasl',
  /** XEP-0388 Extensible SASL Profile (SASL2). */
  SASL2: 'urn:xmpp:sasl:2',
  /** XEP-0386 Bind 2 (resource binding inside SASL2). */
  BIND2: 'urn:xmpp:bind:0',
  /** XEP-0440: SASL channel-binding type capability. */
  SASL_CB: 'urn:xmpp:sasl-cb:0',
  BIND: 'urn:ietf:params:xml:ns:xmpp-bind',
  SESSION: 'urn:ietf:params:xml:ns:xmpp-session',
  ROSTER: 'jabber:iq:roster',
  ROSTER_VER: 'urn:xmpp:features:rosterver',
  PRE_APPROVAL: 'urn:xmpp:features:pre-approval',
  REGISTER: 'jabber:iq:register',
  REGISTER_FEATURE: 'http://jabber.org/features/iq-register',
  DISCO_INFO: 'http://jabber.org/protocol/disco#info',
  DISCO_ITEMS: 'http://jabber.org/protocol/disco#items',
  PING: 'urn:xmpp:ping',
  VERSION: 'jabber:iq:version',
  DELAY: 'urn:xmpp:delay',
  LIMITS: 'urn:xmpp:stream-limits:0',
  DATA_FORMS: 'jabber:x:data',
  SM: 'urn:xmpp:sm:3',
  /** XEP-0060 publish-subscribe (PEP, push notifications). */
  PUBSUB: 'http://jabber.org/protocol/pubsub',
  /** XEP-0280 message carbons. */
  CARBONS: 'urn:xmpp:carbons:2',
  /** XEP-0297 stanza forwarding (carbons, archive results). */
  FORWARD: 'urn:xmpp:forward:0',
  /** XEP-0334 message processing hints. */
  HINTS: 'urn:xmpp:hints',
  /** XEP-0359 unique and stable stanza ids. */
  SID: 'urn:xmpp:sid:0',
  /** XEP-0085 chat state notifications. */
  CHAT_STATES: 'http://jabber.org/protocol/chatstates',
} as const;
