/**
 * The PEP service of one account (XEP-0163 on the XEP-0060 subset it needs): publishing with
 * auto-create and publish-options, retraction, item retrieval, access models, and notifications
 * to the owner's resources and to contacts with a presence subscription whose entity capabilities
 * (XEP-0115) ask for the node (`<node>+notify`). Other modules (private storage, vCard avatars)
 * publish and read through the functions exported here.
 *
 * Long because: publishing, access checks and the caps-filtered notification fan-out are one
 * consistent model of a node; splitting them would spread its invariants over several files.
 */
import { randomBytes } from 'node:crypto';
import { capsOf, type Caps } from '../caps.ts';
import { StanzaError } from '../errors.ts';
import { Jid, parseJid } from '../jid.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import type { RosterItem, SessionRecord } from '../core/types.ts';
import { CapsStore } from '../storage/caps-store.ts';
import { INLINE_LAST_BYTES, PepStore, type NodeConfig, type PepItem, type PepNode } from '../storage/pep-store.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { DEFAULT_CONFIG, PUBSUB_EVENT, applyConfig, checkPreconditions, pubsubError } from './pep-config.ts';

export const pepStore = (server: ModuleServer): PepStore => server.store.open(PepStore);
export const capsStore = (server: ModuleServer): CapsStore => server.store.open(CapsStore);

const hasFrom = (item: RosterItem | undefined) => item?.subscription === 'from' || item?.subscription === 'both';

export function newNode(owner: string, node: string, config: NodeConfig = DEFAULT_CONFIG): PepNode {
  return { owner, node, config, affiliations: {}, subscribers: {}, itemIds: [], version: 0 };
}

// ---- access ---------------------------------------------------------------------------------------

/**
 * Whether `requester` may retrieve items of (and be notified about) a node; throws the XEP-0060
 * §6.5.x error when not. `rosterItem` is the owner's roster item for the requester when already known.
 */
export async function checkAccess(server: ModuleServer, rec: PepNode, requester: string, rosterItem?: RosterItem | null): Promise<void> {
  if (requester === rec.owner) return;
  const affiliation = rec.affiliations[requester];
  if (affiliation === 'outcast') throw new StanzaError('forbidden');
  const item = () => (rosterItem !== undefined ? rosterItem ?? undefined : server.store.getRosterItem(rec.owner, requester));
  switch (rec.config.accessModel) {
    case 'open':
      return;
    case 'presence':
      if (hasFrom(await item())) return;
      throw pubsubError('not-authorized', 'presence-subscription-required');
    case 'roster': {
      const groups = (await item())?.groups ?? [];
      if (groups.some((g) => rec.config.rosterGroups.includes(g))) return;
      throw pubsubError('not-authorized', 'not-in-roster-group');
    }
    case 'whitelist':
      if (affiliation === 'member' || affiliation === 'publisher' || affiliation === 'owner') return;
      throw pubsubError('not-allowed', 'closed-node');
  }
}

async function mayAccess(server: ModuleServer, rec: PepNode, requester: string, rosterItem?: RosterItem | null): Promise<boolean> {
  try {
    await checkAccess(server, rec, requester, rosterItem);
    return true;
  } catch (err) {
    if (err instanceof StanzaError) return false;
    throw err;
  }
}

// ---- entity capabilities of the recipients ---------------------------------------------------------

/** Verified feature lists by hash (immutable: a hash names one feature set), bounded. */
const featureMemo = new Map<string, Set<string>>();
const FEATURE_MEMO_LIMIT = 2000;

export function rememberFeatures(caps: Pick<Caps, 'hash' | 'ver'>, features: string[]): Set<string> {
  const set = new Set(features);
  featureMemo.set(`${caps.hash} ${caps.ver}`, set);
  if (featureMemo.size > FEATURE_MEMO_LIMIT) featureMemo.delete(featureMemo.keys().next().value!);
  return set;
}

/** The features behind a caps hash, when verified (memory, then the shared cache). */
export async function knownFeatures(server: ModuleServer, caps: Caps): Promise<Set<string> | undefined> {
  const memo = featureMemo.get(`${caps.hash} ${caps.ver}`);
  if (memo) return memo;
  const features = await capsStore(server).getFeatures(caps.hash, caps.ver);
  return features ? rememberFeatures(caps, features) : undefined;
}

/** The +notify features of a session's last broadcast presence (empty without verified caps). */
async function sessionFeatures(server: ModuleServer, session: SessionRecord): Promise<Set<string>> {
  const presence = session.available && session.presence ? parseStored(session.presence, 'stored presence') : undefined;
  const caps = presence ? capsOf(presence) : undefined;
  return (caps && (await knownFeatures(server, caps))) ?? new Set();
}

// ---- notifications ------------------------------------------------------------------------------

function eventMessage(owner: string, to: string, child: Element, delay?: string): Element {
  return x(
    'message',
    { xmlns: NS.CLIENT, from: owner, to, type: 'headline', id: `pep-${randomBytes(6).toString('base64url')}` },
    x('event', { xmlns: PUBSUB_EVENT }, child),
    delay ? x('delay', { xmlns: NS.DELAY, from: owner, stamp: delay }) : undefined,
  );
}

/** Where a notification goes: a local session, or a JID on another server (explicit subscribers). */
export type Target = { session: SessionRecord } | { remote: Jid };

/**
 * Sends one event notification, unless a 'message/in' hook stops it (the recipient or the owner
 * blocked the other, XEP-0163 §4.3.3). `by` is the owner's session when the owner's own request
 * caused it. Returns whether it went out.
 */
async function sendEvent(server: ModuleServer, owner: string, target: Target, child: Element, delay?: string, by?: ClientSession): Promise<boolean> {
  const to = 'session' in target ? `${target.session.bare}/${target.session.resource}` : target.remote.toString();
  const message = eventMessage(owner, to, child, delay);
  const toJid = parseJid(to);
  if (toJid.bare !== owner && (await server.runHooks('message/in', { server, stanza: message, from: parseJid(owner), to: toJid, session: by }))) {
    return false;
  }
  if ('remote' in target) {
    await server.routeRemote(message);
    return true;
  }
  return server.deliver(target.session, message);
}

/**
 * The sessions (or remote JID) an explicit subscription of `jid` reaches: a full JID's session if
 * connected (as any message to a full JID), the available ones of a bare JID (as a headline).
 */
async function subscriberTargets(server: ModuleServer, jid: Jid): Promise<Target[]> {
  if (!server.isLocalDomain(jid.domain)) return [{ remote: jid }];
  const { sessions } = await server.store.getUserRoute(jid.bare);
  return sessions.filter((s) => (jid.resource ? s.resource === jid.resource : s.available)).map((session) => ({ session }));
}

/**
 * Who gets notifications of a node: the owner's available resources and those of local contacts
 * with a presence subscription to the owner that may access the node, each only if its entity
 * capabilities ask for `<node>+notify` (filtered notifications); contacts on other servers with
 * that subscription, at their bare JID; and explicit subscribers that may still access it (local
 * or on other servers), whatever their caps.
 *
 * Contacts on other servers: their presence and caps are not tracked here, so the notification
 * goes to the bare JID, which their server hands to each available resource (a headline, RFC 6121
 * §8.5.2.1.1); clients that did not ask for the node ignore it. Without it a contact on another
 * server never learns of a new OMEMO device and stops encrypting to it.
 */
async function recipients(server: ModuleServer, rec: PepNode): Promise<Target[]> {
  if (!rec.config.deliverNotifications) return [];
  const want = `${rec.node}+notify`;
  const candidates: SessionRecord[] = [...(await server.store.getUserRoute(rec.owner)).sessions];
  const remoteContacts: Jid[] = [];
  const roster = await server.store.getRoster(rec.owner);
  for (const item of roster) {
    if (!hasFrom(item)) continue;
    let contact: Jid;
    try {
      contact = parseJid(item.jid);
    } catch {
      continue;
    }
    if (!contact.local || contact.resource) continue;
    if (!(await mayAccess(server, rec, contact.bare, item))) continue;
    if (server.isLocalDomain(contact.domain)) candidates.push(...(await server.store.getUserRoute(contact.bare)).sessions);
    else if (!server.hostedDomains.has(contact.domain)) remoteContacts.push(contact.toBare());
  }
  const out: Target[] = remoteContacts.map((remote) => ({ remote }));
  const seen = new Set<string>(remoteContacts.map((j) => j.toString()));
  for (const s of candidates) {
    if (s.available && !seen.has(s.connectionId) && (await sessionFeatures(server, s)).has(want)) {
      seen.add(s.connectionId);
      out.push({ session: s });
    }
  }
  for (const subscribed of Object.keys(rec.subscribers)) {
    let jid: Jid;
    try {
      jid = parseJid(subscribed);
    } catch {
      continue;
    }
    if (!(await mayAccess(server, rec, jid.bare))) continue;
    for (const t of await subscriberTargets(server, jid)) {
      const key = 'session' in t ? t.session.connectionId : t.remote.toString();
      if (!seen.has(key)) {
        seen.add(key);
        out.push(t);
      }
    }
  }
  return out;
}

async function notify(server: ModuleServer, rec: PepNode, child: () => Element, by?: ClientSession): Promise<void> {
  for (const target of await recipients(server, rec)) await sendEvent(server, rec.owner, target, child(), undefined, by);
}

function itemElement(rec: PepNode, id: string, xml: string | undefined, withPayload = true): Element {
  const payload = withPayload && xml !== undefined ? parseStored(xml, 'PEP item') : undefined;
  return x('item', { id }, payload);
}

// ---- publishing --------------------------------------------------------------------------------------

export interface PublishRequest {
  owner: string;
  node: string;
  /** Item id; generated when absent. */
  id?: string;
  payload: Element;
  /** publish-options fields: the configuration of a new node, preconditions on an existing one. */
  options?: Map<string, string[]>;
  /** The owner's session that asked, if any. */
  by?: ClientSession;
}

const MAX_ATTEMPTS = 5;

/** Publishes (auto-creating the node), evicts beyond max_items, notifies. Resolves the item id. */
export async function publishItem(server: ModuleServer, request: PublishRequest): Promise<string> {
  const store = pepStore(server);
  const id = request.id ?? randomBytes(12).toString('hex');
  const xml = request.payload.toString();
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const existing = await store.getNode(request.owner, request.node);
    let rec: PepNode;
    if (existing) {
      if (request.options) checkPreconditions(existing.config, request.options);
      rec = existing;
    } else {
      rec = newNode(request.owner, request.node, request.options ? applyConfig(DEFAULT_CONFIG, request.options, true) : DEFAULT_CONFIG);
    }
    const published = new Date().toISOString();
    if (rec.config.persistItems) await store.putItem(rec.owner, rec.node, { id, xml, published });
    const ids = rec.itemIds.filter((i) => i !== id);
    if (rec.config.persistItems) ids.push(id);
    const evicted = ids.length > rec.config.maxItems ? ids.splice(0, ids.length - rec.config.maxItems) : [];
    const expected = rec.version;
    rec.itemIds = ids;
    rec.last = { id, published, xml: !rec.config.persistItems || xml.length <= INLINE_LAST_BYTES ? xml : undefined };
    if (!(await store.putNode(rec, expected))) continue; // another publisher got there first: read again
    if (evicted.length) await store.deleteItems(rec.owner, rec.node, evicted);
    await notify(server, rec, () => x('items', { node: rec.node }, itemElement(rec, id, xml, rec.config.deliverPayloads)), request.by);
    return id;
  }
  throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
}

/** Removes items; notifies when asked to or when the node says so. Throws item-not-found for unknown ids. */
export async function retractItems(server: ModuleServer, owner: string, node: string, ids: string[], notifyRequested: boolean, by?: ClientSession): Promise<void> {
  const store = pepStore(server);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const rec = await store.getNode(owner, node);
    if (!rec) throw new StanzaError('item-not-found', 'no such node');
    const known = new Set([...rec.itemIds, ...(rec.last ? [rec.last.id] : [])]);
    const missing = ids.find((id) => !known.has(id));
    if (missing !== undefined) throw new StanzaError('item-not-found', `no item ${missing}`);
    const expected = rec.version;
    rec.itemIds = rec.itemIds.filter((i) => !ids.includes(i));
    if (rec.last && ids.includes(rec.last.id)) {
      const newest = rec.itemIds.at(-1);
      const item = newest !== undefined ? await store.getItem(owner, node, newest) : undefined;
      rec.last = item ? { id: item.id, published: item.published, xml: item.xml.length <= INLINE_LAST_BYTES ? item.xml : undefined } : undefined;
    }
    if (!(await store.putNode(rec, expected))) continue;
    await store.deleteItems(owner, node, ids);
    if (notifyRequested || rec.config.notifyRetract) {
      await notify(server, rec, () => x('items', { node }, ...ids.map((id) => x('retract', { id }))), by);
    }
    return;
  }
  throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
}

/** The items of a node, oldest first (the last one alone for nodes that do not persist items). */
export async function readItems(server: ModuleServer, rec: PepNode, ids?: string[]): Promise<PepItem[]> {
  const store = pepStore(server);
  if (!rec.config.persistItems) {
    const last = rec.last?.xml !== undefined ? [{ id: rec.last.id, xml: rec.last.xml, published: rec.last.published }] : [];
    return ids ? last.filter((i) => ids.includes(i.id)) : last;
  }
  if (ids) {
    const found = await Promise.all(ids.filter((id) => rec.itemIds.includes(id)).map((id) => store.getItem(rec.owner, rec.node, id)));
    return found.filter((i): i is PepItem => i !== undefined);
  }
  const order = new Map(rec.itemIds.map((id, i) => [id, i]));
  return (await store.listItems(rec.owner, rec.node)).filter((i) => order.has(i.id)).sort((a, b) => order.get(a.id)! - order.get(b.id)!);
}

/** Deletes a node and its items; subscribers learn it (pubsub#notify_delete). */
export async function deleteNode(server: ModuleServer, rec: PepNode, by?: ClientSession): Promise<void> {
  const targets = rec.config.notifyDelete ? await recipients(server, rec) : [];
  await pepStore(server).deleteNode(rec.owner, rec.node);
  for (const target of targets) await sendEvent(server, rec.owner, target, x('delete', { node: rec.node }), undefined, by);
}

/** Removes every item of a node, keeping the node. */
export async function purgeNode(server: ModuleServer, owner: string, node: string, by?: ClientSession): Promise<void> {
  const store = pepStore(server);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const rec = await store.getNode(owner, node);
    if (!rec) throw new StanzaError('item-not-found', 'no such node');
    const ids = rec.itemIds;
    const expected = rec.version;
    rec.itemIds = [];
    rec.last = undefined;
    if (!(await store.putNode(rec, expected))) continue;
    await store.deleteItems(owner, node, ids);
    await notify(server, rec, () => x('purge', { node }), by);
    return;
  }
  throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
}

// ---- last published item on presence (XEP-0163 §4.3.4) ------------------------------------------

/**
 * Sends a newly-available (or newly-interested) resource the last item of each node it asks for
 * with `+notify`, from its own account and from every local contact it has a presence subscription
 * to, where access allows and the node sends last items on presence.
 */
export async function deliverLastItems(server: ModuleServer, jid: Jid, features: Set<string>, already: Set<string> = new Set()): Promise<void> {
  const wanted = new Set<string>();
  for (const f of features) if (f.endsWith('+notify') && !already.has(f)) wanted.add(f.slice(0, -'+notify'.length));
  if (wanted.size === 0) return;
  const { sessions } = await server.store.getUserRoute(jid.bare);
  const session = sessions.find((s) => s.resource === jid.resource);
  if (!session) return;
  const owners: { bare: string; item?: RosterItem }[] = [{ bare: jid.bare }];
  for (const item of await server.store.getRoster(jid.bare)) {
    if (item.subscription !== 'to' && item.subscription !== 'both') continue;
    try {
      const contact = parseJid(item.jid);
      if (server.isLocalDomain(contact.domain) && contact.local && !contact.resource) owners.push({ bare: contact.bare });
    } catch {
      // an unparseable roster item has no PEP service here
    }
  }
  const store = pepStore(server);
  for (const owner of owners) {
    const nodes = (await store.listNodes(owner.bare)).filter(
      (n) => wanted.has(n.node) && n.last && n.config.deliverNotifications && n.config.sendLastPublishedItem === 'on_sub_and_presence',
    );
    let rosterItem: RosterItem | null | undefined;
    for (const rec of nodes) {
      if (owner.bare !== jid.bare) {
        // The user's roster says 'to' or 'both', so the owner's item for the user (kept in step by
        // this server) says 'from' or 'both'; only the roster access model needs its groups.
        if (rec.config.accessModel === 'roster') rosterItem ??= (await server.store.getRosterItem(owner.bare, jid.bare)) ?? null;
        const item = rec.config.accessModel === 'roster' ? rosterItem : { jid: jid.bare, groups: [], subscription: 'from' as const };
        if (!(await mayAccess(server, rec, jid.bare, item))) continue;
      }
      const last = rec.last!;
      const xml = last.xml ?? (await store.getItem(rec.owner, rec.node, last.id))?.xml;
      if (xml === undefined) continue;
      await sendEvent(server, rec.owner, { session }, x('items', { node: rec.node }, itemElement(rec, last.id, xml, rec.config.deliverPayloads)), last.published);
    }
  }
}

/**
 * XEP-0163 §6.1.2 for a contact on another server: its available presence (with caps) reached the
 * owner, so the last item of each node its caps ask for goes to its full JID, where access allows.
 */
export async function deliverLastItemsRemote(server: ModuleServer, owner: string, jid: Jid, features: Set<string>): Promise<void> {
  const wanted = new Set<string>();
  for (const f of features) if (f.endsWith('+notify')) wanted.add(f.slice(0, -'+notify'.length));
  if (wanted.size === 0) return;
  const rosterItem = (await server.store.getRosterItem(owner, jid.bare)) ?? null;
  if (!rosterItem || (rosterItem.subscription !== 'from' && rosterItem.subscription !== 'both')) return;
  const store = pepStore(server);
  const nodes = (await store.listNodes(owner)).filter(
    (n) => wanted.has(n.node) && n.last && n.config.deliverNotifications && n.config.sendLastPublishedItem === 'on_sub_and_presence',
  );
  for (const rec of nodes) {
    if (!(await mayAccess(server, rec, jid.bare, rosterItem))) continue;
    const last = rec.last!;
    const xml = last.xml ?? (await store.getItem(rec.owner, rec.node, last.id))?.xml;
    if (xml === undefined) continue;
    await sendEvent(server, rec.owner, { remote: jid }, x('items', { node: rec.node }, itemElement(rec, last.id, xml, rec.config.deliverPayloads)), last.published);
  }
}

// ---- explicit subscriptions (XEP-0060 §6.1, §6.2) -----------------------------------------------

/** A bound on explicit subscribers per node (they live in the node item). */
const MAX_SUBSCRIBERS = 500;

/** Subscribes `jid` (checked by the caller to be the requester's); sends the last item as XEP-0060 §6.1.7 says. */
export async function subscribe(server: ModuleServer, owner: string, node: string, jid: Jid): Promise<void> {
  const store = pepStore(server);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const rec = await store.getNode(owner, node);
    if (!rec) throw new StanzaError('item-not-found', 'no such node');
    await checkAccess(server, rec, jid.bare);
    const expected = rec.version;
    if (!rec.subscribers[jid.toString()]) {
      if (Object.keys(rec.subscribers).length >= MAX_SUBSCRIBERS) throw new StanzaError('resource-constraint', 'too many subscribers', 'cancel');
      rec.subscribers[jid.toString()] = new Date().toISOString();
      if (!(await store.putNode(rec, expected))) continue;
    }
    const last = rec.last;
    if (last && rec.config.sendLastPublishedItem !== 'never' && rec.config.deliverNotifications) {
      const xml = last.xml ?? (await store.getItem(owner, node, last.id))?.xml;
      if (xml !== undefined) {
        for (const target of await subscriberTargets(server, jid)) {
          await sendEvent(server, owner, target, x('items', { node }, itemElement(rec, last.id, xml, rec.config.deliverPayloads)), last.published);
        }
      }
    }
    return;
  }
  throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
}

/** Removes subscriptions; false when `jids` were not subscribed. */
export async function unsubscribe(server: ModuleServer, owner: string, node: string, jids: string[]): Promise<boolean> {
  const store = pepStore(server);
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const rec = await store.getNode(owner, node);
    if (!rec) throw new StanzaError('item-not-found', 'no such node');
    const present = jids.filter((j) => rec.subscribers[j]);
    if (present.length === 0) return false;
    const expected = rec.version;
    for (const j of present) delete rec.subscribers[j];
    if (await store.putNode(rec, expected)) return true;
  }
  throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
}
