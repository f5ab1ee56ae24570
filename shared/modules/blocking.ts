/**
 * XEP-0191 Blocking Command. A user's block list stops, in both directions, every stanza between
 * the user and a blocked JID: messages and iqs get errors (not-acceptable + <blocked/> for the
 * user's own attempts, service-unavailable for the blocked side, as if the user were offline),
 * presence is dropped silently, presence broadcasts skip the blocked contact both ways, and PEP
 * notifications are not sent. Blocking sends the contact unavailable presence; unblocking sends the
 * current presence again. Changes are pushed to every resource of the user.
 */
import { randomBytes } from 'node:crypto';
import { StanzaError } from '../errors.ts';
import { JidError, parseJid, type Jid } from '../jid.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { BlockStore } from '../storage/block-store.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';

export const BLOCKING = 'urn:xmpp:blocking';
const BLOCKING_ERRORS = 'urn:xmpp:blocking:errors';
/** A bound on one user's list (each check reads it whole). */
const MAX_BLOCKLIST = 1000;

const blockStore = (server: ModuleServer): BlockStore => server.store.open(BlockStore);

/** Messages the 'message/out' check already cleared, so 'message/in' does not check again. */
const cleared = new WeakSet<Element>();

/** XEP-0191 §5 matching: full JID, bare JID, domain/resource, or a whole domain. */
export function isBlocked(list: string[], jid: Jid): boolean {
  for (const entry of list) {
    let item: Jid;
    try {
      item = parseJid(entry);
    } catch {
      continue;
    }
    if (item.local) {
      if (item.resource ? jid.toString() === item.toString() : jid.bare === item.bare) return true;
    } else if (item.resource) {
      if (!jid.local && jid.domain === item.domain && jid.resource === item.resource) return true;
    } else if (jid.domain === item.domain) {
      return true;
    }
  }
  return false;
}

const isUser = (server: ModuleServer, jid: Jid) => !!jid.local && server.isLocalDomain(jid.domain);

/**
 * Who blocks whom between a sender and a recipient: 'sender' when the (local) sender's list has
 * the recipient, 'recipient' when the (local) recipient's list has the sender. A user never
 * blocks its own resources, nor the server itself. The lists come with the users' routes, read
 * once per frame (storage/frame-context.ts).
 */
async function blocking(server: ModuleServer, from: Jid, to: Jid): Promise<'sender' | 'recipient' | undefined> {
  if (from.bare === to.bare) return undefined;
  if (!to.local && server.isLocalDomain(to.domain)) return undefined;
  const listOf = (j: Jid) => (isUser(server, j) ? blockStore(server).get(j.bare) : Promise.resolve([]));
  const [fromList, toList] = await Promise.all([listOf(from), listOf(to)]);
  if (isBlocked(fromList, to)) return 'sender';
  if (isBlocked(toList, from)) return 'recipient';
  return undefined;
}

const blockedError = () =>
  new StanzaError('not-acceptable', 'you have blocked this contact', undefined, x('blocked', { xmlns: BLOCKING_ERRORS }));

async function onMessageOut({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  if (!to) return false;
  const who = await blocking(server, from, to);
  cleared.add(stanza);
  if (!who) return false;
  await server.bounce(stanza, who === 'sender' ? blockedError() : new StanzaError('service-unavailable'));
  return true;
}

async function onMessageIn({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  if (!to || cleared.has(stanza)) return false;
  const who = await blocking(server, from, to);
  if (!who) return false;
  // What the user's server sends on its own (e.g. PEP notifications) is dropped silently.
  const type = stanza.attrs.type ?? 'normal';
  if (who === 'recipient' && (type === 'chat' || type === 'normal')) await server.bounce(stanza, new StanzaError('service-unavailable'));
  return true;
}

/** Addressed presence (directed, subscriptions, probes) is dropped without a word (XEP-0191 §3.3). */
async function onPresence({ server, from, to }: StanzaEvent): Promise<boolean> {
  if (!to) return false;
  return (await blocking(server, from, to)) !== undefined;
}

async function onBroadcast({ server, from, to }: StanzaEvent): Promise<boolean> {
  return !!to && (await blocking(server, from, to)) !== undefined;
}

async function onIq({ server, stanza, from, to, session }: StanzaEvent): Promise<boolean> {
  if (!to) return false;
  const who = await blocking(server, from, to);
  if (!who) return false;
  const type = stanza.attrs.type;
  if (type === 'get' || type === 'set') await server.bounce(stanza, who === 'sender' && session ? blockedError() : new StanzaError('service-unavailable'));
  return true;
}

function parseItems(el: Element): string[] {
  return el.getChildren('item').map((item) => {
    try {
      return parseJid(item.attrs.jid ?? '').toString();
    } catch (err) {
      if (err instanceof JidError) throw new StanzaError('jid-malformed', `invalid jid "${item.attrs.jid ?? ''}"`);
      throw err;
    }
  });
}

/** Sends `build(session)` from each available session of `user` to `contact` (local sessions or its server). */
async function presenceTo(server: ModuleServer, user: string, contact: Jid, build: (fromJid: string, presenceXml?: string) => Element): Promise<void> {
  const own = (await server.store.getUserRoute(user)).sessions.filter((s) => s.available);
  const targets = server.isLocalDomain(contact.domain) ? (await server.store.getUserRoute(contact.bare)).sessions.filter((s) => s.available) : undefined;
  for (const s of own) {
    const stanza = build(`${s.bare}/${s.resource}`, s.presence);
    if (!targets) {
      await server.routeRemote(stanza.attr('to', contact.toString()));
      continue;
    }
    for (const t of targets.filter((t) => !contact.resource || t.resource === contact.resource)) {
      await server.deliver(t, stanza.attr('to', `${t.bare}/${t.resource}`));
    }
  }
}

/** Only contacts allowed to see the user's presence learn anything (XEP-0191 §3.3, §3.4). */
async function seesPresence(server: ModuleServer, user: string, jid: Jid): Promise<boolean> {
  if (!jid.local) return false;
  const item = await server.store.getRosterItem(user, jid.bare);
  return item?.subscription === 'from' || item?.subscription === 'both';
}

/** The change goes to every resource of the user (XEP-0191 §3.3, §3.4). */
async function push(server: ModuleServer, user: string, payload: () => Element): Promise<void> {
  const { sessions } = await server.store.getUserRoute(user);
  const id = `block-${randomBytes(6).toString('base64url')}`;
  await Promise.all(sessions.map((s) => server.deliver(s, x('iq', { xmlns: NS.CLIENT, type: 'set', id, to: `${s.bare}/${s.resource}` }, payload()))));
}

export const blockingModule: XmppModule = {
  name: 'blocking',
  setup(reg) {
    reg.feature(BLOCKING);
    // Before everyone else: a blocked stanza goes no further.
    reg.hook('message/out', onMessageOut, 100);
    reg.hook('message/in', onMessageIn, 100);
    reg.hook('presence', onPresence, 100);
    reg.hook('presence/broadcast', onBroadcast, 100);
    reg.hook('iq', onIq, 100);
    reg.iq('account', BLOCKING, async ({ server, type, payload, from, to, session }) => {
      if (from.bare !== to.bare || !session) throw new StanzaError('service-unavailable');
      const user = from.bare;
      const store = blockStore(server);
      if (type === 'get') {
        if (!payload.is('blocklist')) throw new StanzaError('bad-request');
        return x('blocklist', { xmlns: BLOCKING }, ...(await store.get(user)).map((jid) => x('item', { jid })));
      }
      if (payload.is('block')) {
        const jids = parseItems(payload);
        if (jids.length === 0) throw new StanzaError('bad-request', 'block at least one JID');
        const current = await store.get(user);
        const added = jids.filter((j) => !current.includes(j));
        if (current.length + added.length > MAX_BLOCKLIST) throw new StanzaError('resource-constraint', `a block list holds at most ${MAX_BLOCKLIST} JIDs`, 'cancel');
        // Contacts that saw the user's presence see the user go offline, before the block takes hold.
        for (const jid of added.map((j) => parseJid(j))) {
          if (await seesPresence(server, user, jid)) {
            await presenceTo(server, user, jid, (fromJid) => x('presence', { xmlns: NS.CLIENT, type: 'unavailable', from: fromJid }));
          }
        }
        if (added.length) await store.add(user, added);
        await push(server, user, () => x('block', { xmlns: BLOCKING }, ...jids.map((jid) => x('item', { jid }))));
        return undefined;
      }
      if (payload.is('unblock')) {
        const jids = parseItems(payload);
        const unblocked = jids.length ? jids : await store.get(user);
        if (jids.length) await store.remove(user, jids);
        else await store.clear(user);
        // The contact sees the user's current presence again, and the user the contact's (a probe).
        for (const jid of unblocked.map((j) => parseJid(j))) {
          if (await seesPresence(server, user, jid)) {
            await presenceTo(server, user, jid, (fromJid, xml) => {
              const p = (xml && parseStored(xml, 'stored presence')) || x('presence', { xmlns: NS.CLIENT });
              return p.attr('from', fromJid);
            });
          }
          const item = jid.local ? await server.store.getRosterItem(user, jid.bare) : undefined;
          if (item?.subscription === 'to' || item?.subscription === 'both') {
            await server.route(x('presence', { xmlns: NS.CLIENT, type: 'probe', from: user, to: jid.bare }), parseJid(user));
          }
        }
        await push(server, user, () => x('unblock', { xmlns: BLOCKING }, ...jids.map((jid) => x('item', { jid }))));
        return undefined;
      }
      throw new StanzaError('bad-request', 'expected <block/> or <unblock/>');
    });
  },
};
