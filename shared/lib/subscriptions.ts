/**
 * RFC 6121 §3: the subscription state machine (subscribe / subscribed / unsubscribe /
 * unsubscribed, pending in and out, pre-approval, XEP-0379 invitation tokens), shared by the
 * presence module (subscription stanzas) and the roster module (removing an item cancels both
 * directions). Contacts on this server go through the inbound rules directly; others through
 * federation.
 */
import { parseJid, type Jid } from '../jid.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { RosterItem, SessionRecord } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { doneByEarlierRun, invalidateRoute, recordDone } from '../storage/frame-context.ts';
import { InviteStore, PARS } from '../storage/invite-store.ts';
import { saveRosterItem } from './roster-manager.ts';
import { copyWith, hasFrom, hasTo, sendCurrentPresence, sendPresence, sessionJid } from './presence-stanzas.ts';

export function subscriptionStanza(type: string, from: string, to: string, original?: Element): Element {
  const el = original ? copyWith(original, { from, to, type }) : x('presence', { xmlns: NS.CLIENT, from, to, type });
  delete el.attrs.id;
  if (original?.attrs.id) el.attrs.id = original.attrs.id;
  return el;
}

/**
 * A subscription stanza the server sends on a user's behalf (auto-replies): to a local user it goes
 * through the inbound rules, so the recipient's roster changes too; otherwise out to its server.
 */
async function sendSubscription(server: ModuleServer, type: string, from: string, to: Jid): Promise<void> {
  const stanza = subscriptionStanza(type, from, to.bare);
  if (server.isLocalDomain(to.domain)) await inboundSubscription(server, stanza, parseJid(from), to.toBare(), type);
  else await server.routeRemote(stanza);
}

/** The user's server, for subscription stanzas the user sends (RFC 6121 §3, "outbound"). Returns whether to route on. */
export async function outboundSubscription(server: ModuleServer, user: Jid, contact: Jid, type: string): Promise<boolean> {
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
async function invitedByOwner(server: ModuleServer, stanza: Element, owner: string): Promise<boolean> {
  const token = (stanza.getChild('preauth', PARS[0]) ?? stanza.getChild('preauth', PARS[1]))?.attrs.token;
  if (!token) return false;
  const label = `pars:${token}`;
  if (doneByEarlierRun(label)) return true;
  const invites = server.store.open(InviteStore);
  if ((await invites.get(token))?.inviter !== owner) return false;
  const taken = await invites.take(token);
  if (taken) recordDone(label);
  return taken !== undefined;
}

/** The contact's server, for subscription stanzas addressed to a local user ("inbound"). */
export async function inboundSubscription(server: ModuleServer, stanza: Element, from: Jid, to: Jid, type: string): Promise<void> {
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
export async function deliverPending(server: ModuleServer, owner: string, from: string, request: Element, to: SessionRecord): Promise<void> {
  if (await server.store.claimPendingSubscription(owner, from, to.connectionId)) await server.deliver(to, copyWith(request, { to: sessionJid(to) }));
}

/** Removing a roster item cancels both directions (RFC 6121 §2.5.2). */
export async function unsubscribeOnRemove(server: ModuleServer, user: Jid, item: RosterItem): Promise<void> {
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
