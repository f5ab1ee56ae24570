/**
 * XEP-0163 Personal Eventing Protocol: each account is a pubsub service (XEP-0060 subset) at its
 * bare JID. Publish (auto-create, publish-options), retract, items, create, configure, delete,
 * purge, affiliations (whitelists); filtered notifications driven by XEP-0115 entity capabilities,
 * which are learnt with one disco#info query per hash and cached for everyone; the last published
 * item goes to each newly available resource. OMEMO device lists and bundles, XEP-0084 avatars,
 * XEP-0402 bookmarks and XEP-0223 private storage all live here.
 *
 * Long because: it is the XEP-0060 request surface (one handler per pubsub verb, owner and
 * publisher, each with its error cases); the node logic it shares with private storage and vCard
 * is in lib/pep.ts.
 */
import { randomBytes } from 'node:crypto';
import { capsOf, capsVer } from '../caps.ts';
import { StanzaError } from '../errors.ts';
import { parseJid, type Jid } from '../jid.ts';
import type { IqRequest, StanzaEvent, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import type { Affiliation } from '../storage/pep-store.ts';
import { ReferenceStore } from '../storage/reference-store.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import {
  DEFAULT_CONFIG,
  PUBSUB,
  PUBSUB_OWNER,
  applyConfig,
  configForm,
  formFields,
  pubsubError,
  unsupported,
} from '../lib/pep-config.ts';
import {
  capsStore,
  checkAccess,
  deleteNode,
  deliverLastItems,
  deliverLastItemsRemote,
  knownFeatures,
  newNode,
  pepStore,
  publishItem,
  purgeNode,
  readItems,
  rememberFeatures,
  retractItems,
  subscribe,
  unsubscribe,
} from '../lib/pep.ts';

/** The XEP-0060 features implemented, advertised on accounts (XEP-0163 §9.1). */
const FEATURES = [
  'access-open',
  'access-presence',
  'access-roster',
  'access-whitelist',
  'auto-create',
  'auto-subscribe',
  'config-node',
  'config-node-max',
  'create-and-configure',
  'create-nodes',
  'delete-items',
  'delete-nodes',
  'filtered-notifications',
  'item-ids',
  'last-published',
  'modify-affiliations',
  'persistent-items',
  'presence-notifications',
  'publish',
  'publish-options',
  'purge-nodes',
  'retract-items',
  'retrieve-affiliations',
  'retrieve-default',
  'retrieve-items',
  'retrieve-subscriptions',
  'manage-subscriptions',
  'subscribe',
];

const MAX_NODE_LENGTH = 1024;
const MAX_ID_LENGTH = 1024;
const CAPS_QUERY_ID = 'caps.';

function nodeOf(el: Element): string {
  const node = el.attrs.node;
  if (!node) throw pubsubError('not-acceptable', 'nodeid-required');
  if (node.length > MAX_NODE_LENGTH) throw new StanzaError('not-acceptable', 'node name too long');
  return node;
}

function requireOwner({ from, to }: IqRequest): string {
  if (from.bare !== to.bare) throw new StanzaError('forbidden', 'only the account owner may do this');
  return to.bare;
}

/** Non-owners asking about an account that does not exist get what any stanza to it gets. */
async function requireAccount(server: ModuleServer, bare: string): Promise<void> {
  if (!(await server.store.getUserRoute(bare)).exists) throw new StanzaError('service-unavailable');
}

async function existingNode(request: IqRequest, node: string) {
  const rec = await pepStore(request.server).getNode(request.to.bare, node);
  if (!rec) throw new StanzaError('item-not-found', 'no such node');
  return rec;
}

// ---- http://jabber.org/protocol/pubsub ------------------------------------------------------------

async function publish(request: IqRequest, el: Element): Promise<Element> {
  const owner = requireOwner(request);
  const node = nodeOf(el);
  const items = el.getChildren('item');
  if (items.length !== 1) throw pubsubError('bad-request', items.length ? 'invalid-payload' : 'item-required', 'publish exactly one item');
  const item = items[0]!;
  const payloads = item.getChildElements();
  if (payloads.length !== 1) throw pubsubError('bad-request', payloads.length ? 'invalid-payload' : 'payload-required', 'an item carries exactly one payload element');
  const id = item.attrs.id || undefined;
  if (id !== undefined && id.length > MAX_ID_LENGTH) throw new StanzaError('not-acceptable', 'item id too long');
  const optionsEl = request.payload.getChild('publish-options');
  const form = optionsEl ? formFields(optionsEl) : undefined;
  if (optionsEl && !form) throw new StanzaError('bad-request', 'publish-options without a data form');
  const published = await publishItem(request.server, { owner, node, id, payload: payloads[0]!, options: form?.fields, by: request.session });
  return x('pubsub', { xmlns: PUBSUB }, x('publish', { node }, x('item', { id: published })));
}

async function retract(request: IqRequest, el: Element): Promise<void> {
  const owner = requireOwner(request);
  const node = nodeOf(el);
  const ids = el.getChildren('item').map((i) => i.attrs.id);
  if (ids.length === 0 || ids.some((id) => !id)) throw pubsubError('bad-request', 'item-required');
  const notify = el.attrs.notify === 'true' || el.attrs.notify === '1';
  await retractItems(request.server, owner, node, ids as string[], notify, request.session);
}

async function items(request: IqRequest, el: Element): Promise<Element> {
  const { server, from, to } = request;
  const node = nodeOf(el);
  if (from.bare !== to.bare) await requireAccount(server, to.bare);
  const rec = await existingNode(request, node);
  await checkAccess(server, rec, from.bare);
  const ids = el.getChildren('item').map((i) => i.attrs.id).filter((id): id is string => !!id);
  let found = await readItems(server, rec, ids.length ? ids : undefined);
  if (ids.length && found.length === 0) throw new StanzaError('item-not-found');
  const max = el.attrs.max_items;
  if (max !== undefined) {
    if (!/^\d+$/.test(max)) throw new StanzaError('bad-request', 'max_items must be a number');
    found = found.slice(Math.max(0, found.length - Number(max)));
  }
  return x(
    'pubsub',
    { xmlns: PUBSUB },
    x('items', { node }, ...found.map((i) => x('item', { id: i.id }, parseStored(i.xml, 'PEP item', { node, id: i.id })))),
  );
}

async function create(request: IqRequest, el: Element): Promise<void> {
  const owner = requireOwner(request);
  const node = nodeOf(el);
  const form = formFields(request.payload.getChild('configure') ?? undefined);
  const config = form && form.type !== 'cancel' ? applyConfig(DEFAULT_CONFIG, form.fields) : DEFAULT_CONFIG;
  if (!(await pepStore(request.server).putNode(newNode(owner, node, config), 0))) throw new StanzaError('conflict', 'the node exists');
}

async function handlePubsub(request: IqRequest): Promise<Element | void> {
  const { payload, type } = request;
  // Options and RSM paging (XEP-0059, ignored) may ride along with the one operation.
  const children = payload.getChildElements().filter((c) => (c.attrs.xmlns ?? PUBSUB) === PUBSUB && c.name !== 'publish-options' && c.name !== 'configure');
  const [op] = children;
  if (!op || children.length !== 1) throw new StanzaError('bad-request', 'one pubsub operation per request');
  switch (`${type} ${op.name}`) {
    case 'set publish':
      return publish(request, op);
    case 'set retract':
      return retract(request, op);
    case 'get items':
      return items(request, op);
    case 'set create':
      return create(request, op);
    case 'get affiliations':
      return ownAffiliations(request, op);
    case 'set subscribe':
      return subscribeOp(request, op);
    case 'set unsubscribe':
      return unsubscribeOp(request, op);
    case 'get subscriptions':
      return ownSubscriptions(request, op);
    case 'get options':
    case 'set options':
      throw unsupported('subscription-options');
    case 'get default':
      throw unsupported('retrieve-default-sub');
    default:
      throw new StanzaError('bad-request', `unexpected ${type} <${op.name}/>`);
  }
}

/** The subscriber JID named in <subscribe/> or <unsubscribe/>: the requester's own, bare or full (§6.1.3.1). */
function subscriberJid(request: IqRequest, el: Element): Jid {
  if (!el.attrs.jid) throw pubsubError('bad-request', 'jid-required');
  let jid: Jid;
  try {
    jid = parseJid(el.attrs.jid);
  } catch {
    throw pubsubError('bad-request', 'invalid-jid');
  }
  if (jid.bare !== request.from.bare) throw pubsubError('bad-request', 'invalid-jid', 'subscribe your own JID');
  return jid;
}

async function subscribeOp(request: IqRequest, el: Element): Promise<Element> {
  const { server, from, to } = request;
  const node = nodeOf(el);
  const jid = subscriberJid(request, el);
  if (from.bare !== to.bare) await requireAccount(server, to.bare);
  await subscribe(server, to.bare, node, jid);
  return x('pubsub', { xmlns: PUBSUB }, x('subscription', { node, jid: jid.toString(), subscription: 'subscribed' }));
}

async function unsubscribeOp(request: IqRequest, el: Element): Promise<void> {
  const { server, from, to } = request;
  const node = nodeOf(el);
  const jid = subscriberJid(request, el);
  if (from.bare !== to.bare) await requireAccount(server, to.bare);
  if (!(await unsubscribe(server, to.bare, node, [jid.toString()]))) throw pubsubError('unexpected-request', 'not-subscribed', undefined, undefined);
}

/** The requester's own explicit subscriptions at this account (§5.6). */
async function ownSubscriptions(request: IqRequest, el: Element): Promise<Element> {
  const { server, from, to } = request;
  if (from.bare !== to.bare) await requireAccount(server, to.bare);
  const nodes = (await pepStore(server).listNodes(to.bare)).filter((n) => !el.attrs.node || n.node === el.attrs.node);
  const mine = nodes.flatMap((n) =>
    Object.keys(n.subscribers)
      .filter((jid) => parseJid(jid).bare === from.bare)
      .map((jid) => x('subscription', { node: n.node, jid, subscription: 'subscribed' })),
  );
  return x('pubsub', { xmlns: PUBSUB }, x('subscriptions', el.attrs.node ? { node: el.attrs.node } : {}, ...mine));
}

/** The requester's own affiliations (XEP-0060 §5.7): for the owner, owner of every node. */
async function ownAffiliations(request: IqRequest, el: Element): Promise<Element> {
  const { server, from, to } = request;
  if (from.bare !== to.bare) await requireAccount(server, to.bare);
  const nodes = (await pepStore(server).listNodes(to.bare)).filter((n) => !el.attrs.node || n.node === el.attrs.node);
  const mine = nodes
    .map((n) => ({ node: n.node, affiliation: from.bare === to.bare ? 'owner' : n.affiliations[from.bare] }))
    .filter((a) => a.affiliation && a.affiliation !== 'none');
  return x('pubsub', { xmlns: PUBSUB }, x('affiliations', {}, ...mine.map((a) => x('affiliation', a))));
}

// ---- http://jabber.org/protocol/pubsub#owner ------------------------------------------------------

const SETTABLE_AFFILIATIONS: Affiliation[] = ['member', 'publisher', 'none', 'outcast'];

async function handleOwner(request: IqRequest): Promise<Element | void> {
  const { server, payload, type } = request;
  const owner = requireOwner(request);
  const [op] = payload.getChildElements();
  if (!op || payload.getChildElements().length !== 1) throw new StanzaError('bad-request', 'one pubsub#owner operation per request');
  if (type === 'get' && op.name === 'default') {
    return x('pubsub', { xmlns: PUBSUB_OWNER }, x('default', {}, configForm(DEFAULT_CONFIG)));
  }
  const node = nodeOf(op);
  const store = pepStore(server);
  switch (`${type} ${op.name}`) {
    case 'get configure': {
      const rec = await existingNode(request, node);
      return x('pubsub', { xmlns: PUBSUB_OWNER }, x('configure', { node }, configForm(rec.config)));
    }
    case 'set configure': {
      const form = formFields(op);
      if (!form) throw new StanzaError('bad-request', 'a data form is required');
      if (form.type === 'cancel') return;
      for (let attempt = 0; attempt < 5; attempt++) {
        const rec = await existingNode(request, node);
        const expected = rec.version;
        rec.config = applyConfig(rec.config, form.fields);
        if (rec.itemIds.length > rec.config.maxItems) {
          const evicted = rec.itemIds.splice(0, rec.itemIds.length - rec.config.maxItems);
          if (!(await store.putNode(rec, expected))) continue;
          await store.deleteItems(owner, node, evicted);
          return;
        }
        if (await store.putNode(rec, expected)) return;
      }
      throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
    }
    case 'set delete':
      return deleteNode(server, await existingNode(request, node), request.session);
    case 'set purge':
      return purgeNode(server, owner, node, request.session);
    case 'get affiliations': {
      const rec = await existingNode(request, node);
      const list = [[owner, 'owner'], ...Object.entries(rec.affiliations).filter(([, a]) => a !== 'none')];
      return x('pubsub', { xmlns: PUBSUB_OWNER }, x('affiliations', { node }, ...list.map(([jid, affiliation]) => x('affiliation', { jid, affiliation }))));
    }
    case 'set affiliations': {
      const changes = op.getChildren('affiliation').map((a) => {
        const affiliation = a.attrs.affiliation as Affiliation;
        let jid: Jid;
        try {
          jid = parseJid(a.attrs.jid ?? '');
        } catch {
          throw new StanzaError('bad-request', `invalid jid "${a.attrs.jid ?? ''}"`);
        }
        if (!SETTABLE_AFFILIATIONS.includes(affiliation)) throw new StanzaError('bad-request', `affiliation "${a.attrs.affiliation ?? ''}" cannot be set`);
        if (jid.bare === owner) throw new StanzaError('not-acceptable', 'the owner stays owner');
        return { jid: jid.bare, affiliation };
      });
      // Local users named here get a reference among their own items (written first), so removing
      // their account takes them off this node (reference-store.ts).
      const references = server.store.open(ReferenceStore);
      const isLocal = (bare: string) => server.isLocalDomain(parseJid(bare).domain);
      for (const c of changes) if (c.affiliation !== 'none' && isLocal(c.jid)) await references.add(c.jid, 'pep-affiliation', pepTarget(owner, node));
      for (let attempt = 0; attempt < 5; attempt++) {
        const rec = await existingNode(request, node);
        const expected = rec.version;
        for (const c of changes) {
          if (c.affiliation === 'none') delete rec.affiliations[c.jid];
          else rec.affiliations[c.jid] = c.affiliation;
        }
        if (await store.putNode(rec, expected)) {
          for (const c of changes) if (c.affiliation === 'none' && isLocal(c.jid)) await references.remove(c.jid, 'pep-affiliation', pepTarget(owner, node));
          return;
        }
      }
      throw new StanzaError('resource-constraint', 'the node is busy, try again', 'wait');
    }
    case 'get subscriptions': {
      const rec = await existingNode(request, node);
      const subs = Object.keys(rec.subscribers).map((jid) => x('subscription', { jid, subscription: 'subscribed' }));
      return x('pubsub', { xmlns: PUBSUB_OWNER }, x('subscriptions', { node }, ...subs));
    }
    case 'set subscriptions': {
      // §8.8.2: the owner may end subscriptions (subscription='none'); adding others is not offered.
      const entries = op.getChildren('subscription');
      const ends: string[] = [];
      for (const e of entries) {
        if (e.attrs.subscription !== 'none') throw new StanzaError('not-acceptable', 'only subscription="none" can be set');
        try {
          ends.push(parseJid(e.attrs.jid ?? '').toString());
        } catch {
          throw new StanzaError('bad-request', `invalid jid "${e.attrs.jid ?? ''}"`);
        }
      }
      await existingNode(request, node);
      if (ends.length) await unsubscribe(server, owner, node, ends);
      return;
    }
    default:
      throw new StanzaError('bad-request', `unexpected ${type} <${op.name}/>`);
  }
}

// ---- entity capabilities: learning what each resource wants -------------------------------------

/**
 * A caps query's waiter: a local full JID, or a contact on another server and the local account
 * whose last items it is to get (`remote <full JID> <owner>`).
 */
const remoteWaiter = (jid: Jid, owner: string) => `remote ${jid.toString()} ${owner}`;

/**
 * Available presence from a contact on another server to a local account (XEP-0163 §6.1.2): its
 * caps say which nodes it wants; unknown caps are asked of it (one query per hash, as for local
 * clients) and the last items follow the answer.
 */
async function onRemotePresence(server: ModuleServer, stanza: Element, from: Jid, to: Jid): Promise<boolean> {
  const caps = capsOf(stanza);
  if (!caps || !from.resource) return false;
  const features = await knownFeatures(server, caps);
  if (features) {
    await deliverLastItemsRemote(server, to.bare, from, features);
    return false;
  }
  const state = await capsStore(server).addWaiter(caps.hash, caps.ver, remoteWaiter(from, to.bare));
  if (state.state === 'known') {
    await deliverLastItemsRemote(server, to.bare, from, rememberFeatures({ hash: caps.hash, ver: caps.ver }, state.features));
    return false;
  }
  if (state.state === 'wait') return false;
  await server.routeRemote(
    x(
      'iq',
      { xmlns: NS.CLIENT, type: 'get', id: `${CAPS_QUERY_ID}${caps.hash}.${randomBytes(6).toString('base64url')}`, from: server.config.domain, to: from.toString() },
      x('query', { xmlns: NS.DISCO_INFO, node: `${caps.node}#${caps.ver}` }),
    ),
  );
  return false;
}

/** Available presence from a local client: learn its caps, send the last items it asks for. */
async function onPresence({ server, stanza, from, to, session }: StanzaEvent): Promise<boolean> {
  if (!session && to?.local && !to.resource && !stanza.attrs.type && server.isLocalDomain(to.domain) && !server.isLocalDomain(from.domain)) {
    return onRemotePresence(server, stanza, from, to);
  }
  if (!session || to || stanza.attrs.type) return false;
  const caps = capsOf(stanza);
  if (!caps) return false;
  const initial = !session.state.available;
  let previous: Set<string> | undefined;
  if (!initial) {
    // A resource that changes its caps gets the last items of nodes it newly asks for.
    const own = (await server.store.getUserRoute(session.bare)).sessions.find((s) => s.resource === session.state.resource);
    const before = own?.presence ? capsOf(parseStored(own.presence, 'stored presence') ?? x('presence')) : undefined;
    if (before && before.hash === caps.hash && before.ver === caps.ver) return false;
    previous = before ? await knownFeatures(server, before) : undefined;
  }
  const features = await knownFeatures(server, caps);
  if (features) {
    await deliverLastItems(server, session.jid, features, previous);
    return false;
  }
  await askCaps(server, session, caps.hash, caps.node, caps.ver);
  return false;
}

/** One disco#info query per hash (XEP-0115 §6.2); others with the same hash wait for its answer. */
async function askCaps(server: ModuleServer, session: ClientSession, hash: string, node: string, ver: string): Promise<void> {
  const jid = session.jid.toString();
  const state = await capsStore(server).addWaiter(hash, ver, jid);
  if (state.state === 'known') {
    await deliverLastItems(server, session.jid, rememberFeatures({ hash, ver }, state.features));
    return;
  }
  if (state.state === 'wait') return;
  await session.send(
    x(
      'iq',
      { xmlns: NS.CLIENT, type: 'get', id: `${CAPS_QUERY_ID}${hash}.${randomBytes(6).toString('base64url')}`, from: server.config.domain, to: jid },
      x('query', { xmlns: NS.DISCO_INFO, node: `${node}#${ver}` }),
    ),
  );
}

/** The answer to a caps query: verified, cached for everyone, then the waiting resources get their last items. */
async function onIq({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  const type = stanza.attrs.type;
  const id = stanza.attrs.id ?? '';
  if ((type !== 'result' && type !== 'error') || !id.startsWith(CAPS_QUERY_ID)) return false;
  if (!to || to.local || !server.isLocalDomain(to.domain) || !from.resource) return false;
  const hash = id.slice(CAPS_QUERY_ID.length).split('.')[0]!;
  const query = stanza.getChild('query', NS.DISCO_INFO);
  const node = query?.attrs.node ?? '';
  const ver = node.slice(node.lastIndexOf('#') + 1);
  if (type === 'error' || !query || !node.includes('#')) return true;
  const store = capsStore(server);
  if (capsVer(query, hash) !== ver) {
    await store.dropPending(hash, ver);
    return true;
  }
  const features = query.getChildren('feature').map((f) => f.attrs.var).filter((v): v is string => !!v);
  const set = rememberFeatures({ hash, ver }, features);
  const waiting = new Set([...(await store.setFeatures(hash, ver, features)), from.toString()]);
  for (const waiter of waiting) {
    const [kind, jid, owner] = waiter.split(' ');
    if (kind === 'remote' && jid && owner) await deliverLastItemsRemote(server, owner, parseJid(jid), set);
    else if (server.isLocalDomain(parseJid(waiter).domain)) await deliverLastItems(server, parseJid(waiter), set);
  }
  return true;
}

/** disco#items of an account: the nodes the requester may read (XEP-0163 §9.2). */
async function nodeItems({ server, from, to }: IqRequest): Promise<Element[]> {
  const nodes = await pepStore(server).listNodes(to.bare);
  const rosterItem = from.bare === to.bare ? undefined : (await server.store.getRosterItem(to.bare, from.bare)) ?? null;
  const visible: Element[] = [];
  for (const n of nodes) {
    try {
      await checkAccess(server, n, from.bare, rosterItem);
      visible.push(x('item', { jid: to.bare, node: n.node, name: n.config.title }));
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
    }
  }
  return visible;
}

const pepTarget = (owner: string, node: string) => JSON.stringify([owner, node]);

/** A removed account is taken off the nodes of others that named it (whitelists, publishers). */
async function accountRemoved(server: ModuleServer, bare: string): Promise<void> {
  const references = server.store.open(ReferenceStore);
  const store = pepStore(server);
  for (const target of await references.list(bare, 'pep-affiliation')) {
    const [owner, node] = JSON.parse(target) as [string, string];
    for (let attempt = 0; attempt < 5; attempt++) {
      const rec = await store.getNode(owner, node);
      if (!rec || !(bare in rec.affiliations)) break;
      const expected = rec.version;
      delete rec.affiliations[bare];
      if (await store.putNode(rec, expected)) break;
      if (attempt === 4) throw new Error(`pep: node ${node} of ${owner} stayed busy while removing ${bare}`);
    }
    await references.remove(bare, 'pep-affiliation', target);
  }
}

export const pepModule: XmppModule = {
  name: 'pep',
  setup(reg) {
    // On the accounts (XEP-0163 §6.1) and on the server JID too, where clients also look for it
    // (Prosody advertises it on both).
    for (const target of ['account', 'server'] as const) {
      reg.identity({ category: 'pubsub', type: 'pep' }, target);
      reg.feature(PUBSUB, target);
      for (const f of FEATURES) reg.feature(`${PUBSUB}#${f}`, target);
    }
    reg.iq('account', PUBSUB, handlePubsub);
    reg.iq('account', PUBSUB_OWNER, handleOwner);
    reg.accountItems(nodeItems);
    reg.hook('presence', onPresence, 40);
    reg.hook('iq', onIq, 40);
    reg.onAccountRemoval(({ server, bare }) => accountRemoved(server, bare));
  },
};
