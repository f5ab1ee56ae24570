/** Namespace rewriting between the core (jabber:client) and the wire (jabber:server, components). */
import { NS, type Element } from '../shared/xml/element.ts';

export const STANZA_NAMES = new Set(['message', 'presence', 'iq']);

/**
 * The stanza as it goes on a stream whose default namespace is `ns`: a shallow copy with the
 * namespace replaced (children are shared, never modified), so the core's element stays intact.
 */
export function onWire(stanza: Element, ns: string): string {
  const copy = Object.create(Object.getPrototypeOf(stanza)) as Element;
  Object.assign(copy, stanza, { attrs: { ...stanza.attrs, xmlns: ns }, parent: null });
  return copy.toString();
}

/** A stanza read from a server or component stream, renamed into the core's jabber:client. */
export function toCore(stanza: Element): Element {
  stanza.attrs.xmlns = NS.CLIENT;
  return stanza;
}
