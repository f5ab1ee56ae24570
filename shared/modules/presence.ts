/**
 * RFC 6121 §3–4: presence broadcast, probes, directed presence, and the subscription state machine
 * (subscribe / subscribed / unsubscribe / unsubscribed, pending in and out, pre-approval).
 * Contacts on this server are handled directly; contacts elsewhere go out through federation.
 */
import { parseJid, type Jid } from '../jid.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import { forEachBounded } from '../core/bounded.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import type { RosterItem, SessionRecord } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { saveRosterItem } from '../lib/roster-manager.ts';
import { copyWith, hasFrom, hasTo, presencesOf, sendCurrentPresence, sendPresence, sessionJid } from '../lib/presence-stanzas.ts';
import { deliverPending, inboundSubscription, outboundSubscription, subscriptionStanza, unsubscribeOnRemove } from '../lib/subscriptions.ts';

const SUBSCRIPTION_TYPES = new Set(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);
/** Contacts handled at once during broadcasts and probes. */
const CONTACT_CONCURRENCY = 16;

/** Broadcast of a client's own presence (no 'to'), RFC 6121 §4.2–4.5. */
async function broadcast(server: ModuleServer, session: ClientSession, stanza: Element): Promise<void> {
  const unavailable = stanza.attrs.type === 'unavailable';
  if (stanza.attrs.type && !unavailable) return; // e.g. a stray probe or error without 'to'
  const wasAvailable = session.state.available ?? false;
  if (unavailable && !wasAvailable) return;
  const priority = clampPriority(stanza.getChildText('priority'));
  const presence = copyWith(stanza, { to: undefined, id: undefined });
  const sent = presence.toString();
  // This session's fact first, then the others' (read strongly consistent): of two sessions
  // coming online at the same moment, at least one sees the other (docs/architecture.md). The
  // roster is read meanwhile, and modules add to the presence meanwhile (the avatar hash).
  const bare = session.bare;
  const [account, roster] = await Promise.all([
    session.updateSession({ available: !unavailable, priority: unavailable ? 0 : priority, presence: unavailable ? null : sent }),
    server.store.getRoster(bare),
    unavailable ? undefined : server.runHooks('presence/decorate', { server, stanza: presence, from: session.jid, session }),
  ]);
  const initial = !unavailable && !wasAvailable;
  // The update returns the account item as written, with the user's sessions: the own resources
  // need no read of their own (and see this session's fact, the item's writes being atomic).
  const tasks = [() => fanOut(server, session, presence, roster, initial, unavailable, account?.sessions)];
  // What the modules added is stored too, alongside the broadcast: a session reading this one's
  // presence in between sees it without (an avatar hash: its client keeps the avatar it has).
  if (presence.toString() !== sent) tasks.push(async () => void (await session.updateSession({ presence: presence.toString() })));
  // A session coming online also gets what waited for it (stored messages, subscription
  // requests): side by side with the broadcast, one round trip instead of two.
  if (initial) tasks.push(() => server.sessionAvailable(session));
  await forEachBounded(tasks, tasks.length, (task) => task());
}

/** The broadcast itself: own resources, contacts, directed-presence recipients. */
async function fanOut(server: ModuleServer, session: ClientSession, presence: Element, roster: RosterItem[], initial: boolean, unavailable: boolean, ownSessions: SessionRecord[] | undefined): Promise<void> {
  const bare = session.bare;
  // Every local contact's sessions (and the user's own, unless known) in a few batched reads (100
  // users each), not one Query per contact: 100 contacts are one request.
  const contacts = roster.map((item) => ({ item, jid: parseJid(item.jid) }));
  const local = contacts.filter((c) => server.isLocalDomain(c.jid.domain) && c.jid.local && (hasFrom(c.item.subscription) || (initial && hasTo(c.item.subscription))));
  const sessionsOf = await server.store.getSessionsOf([...(ownSessions ? [] : [bare]), ...local.map((c) => c.jid.bare)]);
  const own = (ownSessions ?? sessionsOf.get(bare) ?? []).filter((s) => s.resource !== session.state.resource);

  // Own other resources see it; a new session also learns theirs (RFC 6121 §4.2.2, 4.4.2).
  await Promise.all(own.filter((s) => s.available).map((s) => server.deliver(s, copyWith(presence, { to: sessionJid(s) }))));
  if (initial) for (const p of presencesOf(own)) await session.send(copyWith(p, { to: session.jid.toString() }));

  // Modules may keep a recipient out of a broadcast (e.g. blocking, XEP-0191).
  const skip = (stanza: Element, from: Jid, to: Jid) => server.runHooks('presence/broadcast', { server, stanza, from, to, session });
  await forEachBounded(contacts, CONTACT_CONCURRENCY, async ({ item, jid: contact }) => {
    const sessions = server.isLocalDomain(contact.domain) ? (sessionsOf.get(contact.bare) ?? []) : undefined;
    if (hasFrom(item.subscription) && !(await skip(presence, session.jid, contact))) await sendPresence(server, contact, presence, sessions);
    if (initial && hasTo(item.subscription)) {
      if (sessions) {
        for (const p of presencesOf(sessions)) {
          if (!(await skip(p, parseJid(p.attrs.from!), session.jid))) await session.send(copyWith(p, { to: session.jid.toString() }));
        }
      } else {
        await server.routeRemote(x('presence', { xmlns: NS.CLIENT, type: 'probe', from: bare, to: contact.bare }));
      }
    }
  });

  if (unavailable) {
    // Directed-presence recipients learn we left (RFC 6121 §4.6.3).
    for (const jid of session.state.directed ?? []) await sendPresence(server, parseJid(jid), presence);
    session.update({ directed: [] });
  }
}

function clampPriority(text: string | null): number {
  const n = Number.parseInt(text ?? '0', 10);
  return Number.isFinite(n) ? Math.max(-128, Math.min(127, n)) : 0;
}

/** Directed presence from a local client (RFC 6121 §4.6): remembered so 'unavailable' reaches it. */
async function directed(server: ModuleServer, session: ClientSession, stanza: Element, to: Jid): Promise<void> {
  const type = stanza.attrs.type;
  if (type === undefined || type === 'unavailable') {
    const item = await server.store.getRosterItem(session.bare, to.bare);
    if (!item || !hasFrom(item.subscription)) {
      const set = new Set(session.state.directed ?? []);
      if (type === undefined) set.add(to.toString());
      else set.delete(to.toString());
      session.update({ directed: [...set] });
    }
  }
  await deliverInbound(server, stanza, to);
}

/** Delivers presence (available, unavailable, error) to a local JID, or out (RFC 6121 §4.3). */
async function deliverInbound(server: ModuleServer, stanza: Element, to: Jid): Promise<void> {
  if (!server.isLocalDomain(to.domain)) return server.routeRemote(stanza);
  await sendPresence(server, to, stanza);
}

/** Probe from a contact: answer with current presence if they are subscribed to it (RFC 6121 §4.3.2). */
async function probe(server: ModuleServer, from: Jid, to: Jid): Promise<void> {
  if (!server.isLocalDomain(to.domain) || !to.local) return;
  const item = await server.store.getRosterItem(to.bare, from.bare);
  if (!item || !hasFrom(item.subscription)) return;
  const { sessions } = await server.store.getUserRoute(to.bare);
  const presences = presencesOf(sessions);
  const replies = presences.length > 0 ? presences : [x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: to.bare })];
  for (const p of replies) await sendPresence(server, from, p);
}

async function onPresence({ server, stanza, from, to, session }: StanzaEvent): Promise<boolean> {
  const type = stanza.attrs.type;
  if (!to) {
    if (session) await broadcast(server, session, stanza);
    return true;
  }
  if (type && SUBSCRIPTION_TYPES.has(type)) {
    if (!to.local) return true;
    if (session) {
      // Subscription stanzas travel between bare JIDs (RFC 6121 §3.1.2).
      if (!(await outboundSubscription(server, from.toBare(), to.toBare(), type))) return true;
      const out = subscriptionStanza(type, from.bare, to.bare, stanza);
      if (server.isLocalDomain(to.domain)) await inboundSubscription(server, out, from.toBare(), to.toBare(), type);
      else await server.routeRemote(out);
      // Approving a subscription shows the new subscriber our current presence (RFC 6121 §3.1.5).
      if (type === 'subscribed') await sendCurrentPresence(server, from.bare, to.toBare(), false);
      return true;
    }
    await inboundSubscription(server, stanza, from, to, type);
    return true;
  }
  if (type === 'probe') {
    await probe(server, from, to);
    return true;
  }
  if (session) await directed(server, session, stanza, to);
  else await deliverInbound(server, stanza, to);
  return true;
}

export const presenceModule: XmppModule = {
  name: 'presence',
  setup(reg) {
    reg.streamFeature('post-auth', () => x('sub', { xmlns: NS.PRE_APPROVAL }));
    reg.hook('presence', onPresence);
    reg.onSession('session/ended', async ({ server, session }) => {
      if (session.state.available) await broadcast(server, session, x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: session.jid.toString() }));
    });
    // A removed account cancels its subscriptions both ways (as removing each roster item would), and
    // local contacts' pre-approvals of it go: a new account of the same name starts as a stranger.
    reg.onAccountRemoval(async ({ server, bare }) => {
      const user = parseJid(bare);
      for (const item of await server.store.getRoster(bare)) {
        await unsubscribeOnRemove(server, user, item);
        const contact = parseJid(item.jid);
        if (!server.isLocalDomain(contact.domain) || !contact.local) continue;
        const theirs = await server.store.getRosterItem(contact.bare, bare);
        if (theirs?.approved) await saveRosterItem(server, contact.bare, { ...theirs, approved: undefined });
      }
    });
    // Pending subscription requests are re-delivered at each login (RFC 6121 §3.1.3).
    reg.onSession('session/available', async ({ server, session }) => {
      for (const { from, xml } of await server.store.listPendingSubscriptions(session.bare)) {
        const p = parseStored(xml, 'pending subscription request', { user: session.bare, from });
        if (p) await deliverPending(server, session.bare, from, p, session.toRecord());
      }
    });
  },
};
