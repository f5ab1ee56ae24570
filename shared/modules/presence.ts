/**
 * RFC 6121 §3–4: presence broadcast, probes, directed presence, and the subscription state machine
 * (subscribe / subscribed / unsubscribe / unsubscribed, pending in and out, pre-approval).
 * Contacts on this server are handled directly; contacts elsewhere go out through federation.
 */
import { parseJid, type Jid } from '../jid.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import { forEachBounded, type XmppServer } from '../core/server.ts';
import type { ClientSession } from '../core/session.ts';
import type { RosterItem, SessionRecord, Subscription } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { doneByEarlierRun, invalidateRoute, recordDone } from '../storage/frame-context.ts';
import { InviteStore, PARS } from '../storage/invite-store.ts';
import { saveRosterItem } from './roster.ts';

const SUBSCRIPTION_TYPES = new Set(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);
/** Contacts handled at once during broadcasts and probes. */
const CONTACT_CONCURRENCY = 16;

const hasFrom = (s: Subscription) => s === 'from' || s === 'both';
const hasTo = (s: Subscription) => s === 'to' || s === 'both';

function copyWith(stanza: Element, attrs: Record<string, string | undefined>): Element {
  const copy = new Element(stanza.name, { ...stanza.attrs });
  for (const child of stanza.children) copy.append(child);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) delete copy.attrs[k];
    else copy.attrs[k] = v;
  }
  return copy;
}

function sessionJid(s: SessionRecord): string {
  return `${s.bare}/${s.resource}`;
}

/** Sends `stanza` to a JID: the given session(s) locally, or through federation. */
async function sendPresence(server: XmppServer, to: Jid, stanza: Element, sessions?: SessionRecord[]): Promise<void> {
  if (!server.isLocalDomain(to.domain)) return server.routeRemote(copyWith(stanza, { to: to.toString() }));
  const targets = sessions ?? (await server.store.getUserRoute(to.bare)).sessions;
  await Promise.all(
    targets
      .filter((s) => (to.resource ? s.resource === to.resource : s.available))
      .map((s) => server.deliver(s, copyWith(stanza, { to: sessionJid(s) }))),
  );
}

/** The current presence of each available session of a local user, as seen by others. */
function presencesOf(sessions: SessionRecord[]): Element[] {
  return sessions
    .filter((s) => s.available)
    .map((s) => {
      const p = (s.presence && parseStored(s.presence, 'stored presence')) || x('presence', { xmlns: NS.CLIENT });
      return copyWith(p, { from: sessionJid(s) });
    });
}

/** Broadcast of a client's own presence (no 'to'), RFC 6121 §4.2–4.5. */
async function broadcast(server: XmppServer, session: ClientSession, stanza: Element): Promise<void> {
  const unavailable = stanza.attrs.type === 'unavailable';
  if (stanza.attrs.type && !unavailable) return; // e.g. a stray probe or error without 'to'
  const wasAvailable = session.state.available ?? false;
  if (unavailable && !wasAvailable) return;
  const priority = clampPriority(stanza.getChildText('priority'));
  const presence = copyWith(stanza, { to: undefined, id: undefined });
  // This session's fact first, then the others' (read strongly consistent): of two sessions
  // coming online at the same moment, at least one sees the other (docs/architecture.md). The
  // roster is read meanwhile.
  const bare = session.bare;
  const [, roster] = await Promise.all([
    session.updateSession({ available: !unavailable, priority: unavailable ? 0 : priority, presence: unavailable ? null : presence.toString() }),
    server.store.getRoster(bare),
  ]);
  const initial = !unavailable && !wasAvailable;
  // The user's own and every local contact's sessions in a few batched reads (100 users each), not
  // one Query per contact.
  const contacts = roster.map((item) => ({ item, jid: parseJid(item.jid) }));
  const local = contacts.filter((c) => server.isLocalDomain(c.jid.domain) && c.jid.local && (hasFrom(c.item.subscription) || (initial && hasTo(c.item.subscription))));
  const sessionsOf = await server.store.getSessionsOf([bare, ...local.map((c) => c.jid.bare)]);
  const own = (sessionsOf.get(bare) ?? []).filter((s) => s.resource !== session.state.resource);

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
  if (initial) await server.sessionAvailable(session);
}

function clampPriority(text: string | null): number {
  const n = Number.parseInt(text ?? '0', 10);
  return Number.isFinite(n) ? Math.max(-128, Math.min(127, n)) : 0;
}

/** Directed presence from a local client (RFC 6121 §4.6): remembered so 'unavailable' reaches it. */
async function directed(server: XmppServer, session: ClientSession, stanza: Element, to: Jid): Promise<void> {
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
async function deliverInbound(server: XmppServer, stanza: Element, to: Jid): Promise<void> {
  if (!server.isLocalDomain(to.domain)) return server.routeRemote(stanza);
  await sendPresence(server, to, stanza);
}

/** Probe from a contact: answer with current presence if they are subscribed to it (RFC 6121 §4.3.2). */
async function probe(server: XmppServer, from: Jid, to: Jid): Promise<void> {
  if (!server.isLocalDomain(to.domain) || !to.local) return;
  const item = await server.store.getRosterItem(to.bare, from.bare);
  if (!item || !hasFrom(item.subscription)) return;
  const { sessions } = await server.store.getUserRoute(to.bare);
  const presences = presencesOf(sessions);
  const replies = presences.length > 0 ? presences : [x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: to.bare })];
  for (const p of replies) await sendPresence(server, from, p);
}

/** Sends the user's current presence (or unavailable) from each available session to a contact. */
async function sendCurrentPresence(server: XmppServer, user: string, contact: Jid, unavailable: boolean): Promise<void> {
  const { sessions } = await server.store.getUserRoute(user);
  for (const p of presencesOf(sessions)) {
    await sendPresence(server, contact, unavailable ? x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: p.attrs.from }) : p);
  }
}

function subscriptionStanza(type: string, from: string, to: string, original?: Element): Element {
  const el = original ? copyWith(original, { from, to, type }) : x('presence', { xmlns: NS.CLIENT, from, to, type });
  delete el.attrs.id;
  if (original?.attrs.id) el.attrs.id = original.attrs.id;
  return el;
}

/**
 * A subscription stanza the server sends on a user's behalf (auto-replies): to a local user it goes
 * through the inbound rules, so the recipient's roster changes too; otherwise out to its server.
 */
async function sendSubscription(server: XmppServer, type: string, from: string, to: Jid): Promise<void> {
  const stanza = subscriptionStanza(type, from, to.bare);
  if (server.isLocalDomain(to.domain)) await inboundSubscription(server, stanza, parseJid(from), to.toBare(), type);
  else await server.routeRemote(stanza);
}

/** The user's server, for subscription stanzas the user sends (RFC 6121 §3, "outbound"). Returns whether to route on. */
async function outboundSubscription(server: XmppServer, user: Jid, contact: Jid, type: string): Promise<boolean> {
  const bare = user.bare;
  const item = await server.store.getRosterItem(bare, contact.bare);
  const base: RosterItem = item ?? { jid: contact.bare, groups: [], subscription: 'none' };
  switch (type) {
    case 'subscribe':
      if (!hasTo(base.subscription) && !base.ask) await saveRosterItem(server, bare, { ...base, ask: true });
      return true;
    case 'subscribed': {
      const pending = await server.store.deletePendingSubscription(bare, contact.bare);
      if (hasFrom(base.subscription)) return false;
      if (!pending) {
        // Pre-approval (RFC 6121 §3.4): remembered until the contact asks.
        if (!base.approved) await saveRosterItem(server, bare, { ...base, approved: true });
        return false;
      }
      await saveRosterItem(server, bare, { ...base, subscription: base.subscription === 'to' ? 'both' : 'from', approved: undefined });
      return true;
    }
    case 'unsubscribe':
      if (item && (hasTo(item.subscription) || item.ask)) {
        await saveRosterItem(server, bare, { ...item, subscription: item.subscription === 'both' ? 'from' : 'none', ask: undefined });
      }
      return true;
    case 'unsubscribed': {
      const pending = await server.store.deletePendingSubscription(bare, contact.bare);
      if (item && (hasFrom(item.subscription) || item.approved)) {
        await saveRosterItem(server, bare, { ...item, subscription: item.subscription === 'both' ? 'to' : item.subscription === 'from' ? 'none' : item.subscription, approved: undefined });
        if (hasFrom(item.subscription)) await sendCurrentPresence(server, bare, contact, true);
        return true;
      }
      return pending;
    }
  }
  return false;
}

/**
 * XEP-0379: a subscription request carrying a token of an invitation the owner made approves
 * itself, once (the token is used up; a rerun of this frame keeps what it took).
 */
async function invitedByOwner(server: XmppServer, stanza: Element, owner: string): Promise<boolean> {
  const token = (stanza.getChild('preauth', PARS[0]) ?? stanza.getChild('preauth', PARS[1]))?.attrs.token;
  if (!token) return false;
  const label = `pars:${token}`;
  if (doneByEarlierRun(label)) return true;
  const invites = new InviteStore(server.store.db);
  if ((await invites.get(token))?.inviter !== owner) return false;
  const taken = await invites.take(token);
  if (taken) recordDone(label);
  return taken !== undefined;
}

/** The contact's server, for subscription stanzas addressed to a local user ("inbound"). */
async function inboundSubscription(server: XmppServer, stanza: Element, from: Jid, to: Jid, type: string): Promise<void> {
  const owner = to.bare;
  const route = await server.store.getUserRoute(owner);
  if (!route.exists) {
    if (type === 'subscribe') await sendSubscription(server, 'unsubscribed', owner, from);
    return;
  }
  const item = await server.store.getRosterItem(owner, from.bare);
  const deliver = () => sendPresence(server, to.toBare(), subscriptionStanza(type, from.bare, owner, stanza), route.sessions);
  switch (type) {
    case 'subscribe':
      if (item && hasFrom(item.subscription)) {
        await sendSubscription(server, 'subscribed', owner, from);
        return;
      }
      // Pre-approved by the owner (RFC 6121 §3.4), or by the owner's invitation link (XEP-0379).
      if (item?.approved || (await invitedByOwner(server, stanza, owner))) {
        const base = item ?? { jid: from.bare, groups: [], subscription: 'none' as const };
        await saveRosterItem(server, owner, { ...base, subscription: base.subscription === 'to' ? 'both' : 'from', approved: undefined });
        await sendSubscription(server, 'subscribed', owner, from);
        await sendCurrentPresence(server, owner, from, false);
        return;
      }
      // Kept until answered and re-sent at each login (RFC 6121 §3.1.3). Stored first, then the
      // owner's sessions read afresh: a login racing this one sees the request, or we see it.
      await server.store.putPendingSubscription(owner, from.bare, subscriptionStanza(type, from.bare, owner, stanza).toString());
      invalidateRoute(owner);
      for (const s of (await server.store.getUserRoute(owner)).sessions) {
        if (s.available) await deliverPending(server, owner, from.bare, subscriptionStanza(type, from.bare, owner, stanza), s);
      }
      return;
    case 'subscribed':
      if (item?.ask) {
        await saveRosterItem(server, owner, { ...item, subscription: item.subscription === 'from' ? 'both' : 'to', ask: undefined });
        await deliver();
      }
      return;
    case 'unsubscribe':
      await server.store.deletePendingSubscription(owner, from.bare);
      if (item && hasFrom(item.subscription)) {
        await saveRosterItem(server, owner, { ...item, subscription: item.subscription === 'both' ? 'to' : 'none' });
        await deliver();
        await sendCurrentPresence(server, owner, from, true);
      }
      return;
    case 'unsubscribed':
      if (item && (hasTo(item.subscription) || item.ask)) {
        await saveRosterItem(server, owner, { ...item, subscription: item.subscription === 'both' ? 'from' : 'none', ask: undefined });
        await deliver();
      }
      return;
  }
}

/**
 * Shows a pending subscription request to one session, once: the request's handler and the
 * session's login may both find the other (see above); the claim lets only one of them post.
 */
async function deliverPending(server: XmppServer, owner: string, from: string, request: Element, to: SessionRecord): Promise<void> {
  if (await server.store.claimPendingSubscription(owner, from, to.connectionId)) await server.deliver(to, copyWith(request, { to: sessionJid(to) }));
}

/** Removing a roster item cancels both directions (RFC 6121 §2.5.2). */
export async function unsubscribeOnRemove(server: XmppServer, user: Jid, item: RosterItem): Promise<void> {
  const contact = parseJid(item.jid);
  for (const type of ['unsubscribe', 'unsubscribed'] as const) {
    const applies = type === 'unsubscribe' ? hasTo(item.subscription) || item.ask : hasFrom(item.subscription);
    if (!applies) continue;
    if (type === 'unsubscribed') await sendCurrentPresence(server, user.bare, contact, true);
    const stanza = subscriptionStanza(type, user.bare, contact.bare);
    if (server.isLocalDomain(contact.domain)) await inboundSubscription(server, stanza, user.toBare(), contact, type);
    else await server.routeRemote(stanza);
  }
  await server.store.deletePendingSubscription(user.bare, contact.bare);
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
