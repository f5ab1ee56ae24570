/**
 * Presence stanzas as RFC 6121 §4 sends them, shared by the presence module (broadcasts, probes,
 * directed presence) and the subscription state machine (lib/subscriptions.ts).
 */
import type { Jid } from '../jid.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { SessionRecord, Subscription } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';

/** The contact receives the user's presence. */
export const hasFrom = (s: Subscription) => s === 'from' || s === 'both';
/** The user receives the contact's presence. */
export const hasTo = (s: Subscription) => s === 'to' || s === 'both';

export function copyWith(stanza: Element, attrs: Record<string, string | undefined>): Element {
  const copy = new Element(stanza.name, { ...stanza.attrs });
  for (const child of stanza.children) copy.append(child);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) delete copy.attrs[k];
    else copy.attrs[k] = v;
  }
  return copy;
}

export function sessionJid(s: SessionRecord): string {
  return `${s.bare}/${s.resource}`;
}

/** Sends `stanza` to a JID: the given session(s) locally, or through federation. */
export async function sendPresence(server: ModuleServer, to: Jid, stanza: Element, sessions?: SessionRecord[]): Promise<void> {
  if (!server.isLocalDomain(to.domain)) return server.routeRemote(copyWith(stanza, { to: to.toString() }));
  const targets = sessions ?? (await server.store.getUserRoute(to.bare)).sessions;
  await Promise.all(
    targets
      .filter((s) => (to.resource ? s.resource === to.resource : s.available))
      .map((s) => server.deliver(s, copyWith(stanza, { to: sessionJid(s) }))),
  );
}

/** The current presence of each available session of a local user, as seen by others. */
export function presencesOf(sessions: SessionRecord[]): Element[] {
  return sessions
    .filter((s) => s.available)
    .map((s) => {
      const p = (s.presence && parseStored(s.presence, 'stored presence')) || x('presence', { xmlns: NS.CLIENT });
      return copyWith(p, { from: sessionJid(s) });
    });
}

/** Sends the user's current presence (or unavailable) from each available session to a contact. */
export async function sendCurrentPresence(server: ModuleServer, user: string, contact: Jid, unavailable: boolean): Promise<void> {
  const { sessions } = await server.store.getUserRoute(user);
  for (const p of presencesOf(sessions)) {
    await sendPresence(server, contact, unavailable ? x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: p.attrs.from }) : p);
  }
}
