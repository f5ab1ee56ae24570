/**
 * XEP-0049 private XML storage, with XEP-0402's `urn:xmpp:bookmarks:1#compat`: XEP-0048 bookmarks
 * (`<storage xmlns='storage:bookmarks'/>`) are not kept as a blob but read from and written to the
 * PEP Native Bookmarks node, one item per room, so clients of either kind see the same bookmarks
 * and XEP-0402 clients get notifications when a legacy client changes them. URL bookmarks, which
 * XEP-0402 dropped, stay in private storage beside them.
 */
import { StanzaError } from '../errors.ts';
import { JidError, parseJid } from '../jid.ts';
import type { XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import { PrivateStore } from '../storage/private-store.ts';
import { Element, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { pepStore, publishItem, readItems, retractItems } from '../lib/pep.ts';

export const PRIVATE = 'jabber:iq:private';
const LEGACY = 'storage:bookmarks';
export const BOOKMARKS = 'urn:xmpp:bookmarks:1';
/** XEP-0402 §3.3: the configuration bookmarks nodes must have. */
const BOOKMARK_OPTIONS = new Map([
  ['pubsub#persist_items', ['true']],
  ['pubsub#max_items', ['max']],
  ['pubsub#send_last_published_item', ['never']],
  ['pubsub#access_model', ['whitelist']],
]);

const privateStore = (server: ModuleServer): PrivateStore => server.store.open(PrivateStore);

const truthy = (v: string | undefined) => v === 'true' || v === '1';

const parse = (xml: string) => parseStored(xml, 'private XML');

function copy(el: Element): Element {
  const c = new Element(el.name, { ...el.attrs });
  for (const child of el.children) c.append(typeof child === 'string' ? child : copy(child));
  return c;
}

/** A XEP-0402 conference (item id = room JID) as a XEP-0048 conference. */
function toLegacy(jid: string, conference: Element): Element {
  const nick = conference.getChildText('nick');
  const password = conference.getChildText('password');
  return x(
    'conference',
    { jid, name: conference.attrs.name, autojoin: truthy(conference.attrs.autojoin) ? 'true' : 'false' },
    nick !== null ? x('nick', {}, nick) : undefined,
    password !== null ? x('password', {}, password) : undefined,
    ...(conference.getChild('extensions')?.getChildElements() ?? []).map(copy),
  );
}

/** A XEP-0048 conference as a XEP-0402 one; elements other than nick and password go to <extensions/>. */
function toNative(legacy: Element): Element {
  const nick = legacy.getChildText('nick');
  const password = legacy.getChildText('password');
  const others = legacy.getChildElements().filter((c) => c.name !== 'nick' && c.name !== 'password');
  return x(
    'conference',
    { xmlns: BOOKMARKS, name: legacy.attrs.name, autojoin: truthy(legacy.attrs.autojoin) ? 'true' : undefined },
    nick !== null ? x('nick', {}, nick) : undefined,
    password !== null ? x('password', {}, password) : undefined,
    others.length ? x('extensions', {}, ...others.map(copy)) : undefined,
  );
}

async function readLegacyBookmarks(server: ModuleServer, owner: string): Promise<Element> {
  const storage = x('storage', { xmlns: LEGACY });
  const rec = await pepStore(server).getNode(owner, BOOKMARKS);
  for (const item of rec ? await readItems(server, rec) : []) {
    const conference = parse(item.xml);
    if (conference?.is('conference', BOOKMARKS)) storage.append(toLegacy(item.id, conference));
  }
  const urls = await privateStore(server).get(owner, LEGACY, 'storage');
  for (const url of (urls && parse(urls)?.getChildren('url')) || []) storage.append(copy(url));
  return storage;
}

/** Replaces the bookmarks with a XEP-0048 list: publishes changed rooms, retracts missing ones. */
async function writeLegacyBookmarks(server: ModuleServer, owner: string, storage: Element, by: ClientSession): Promise<void> {
  const wanted = new Map<string, Element>();
  for (const conference of storage.getChildren('conference')) {
    let room: string;
    try {
      room = parseJid(conference.attrs.jid ?? '').toString();
    } catch (err) {
      if (err instanceof JidError) throw new StanzaError('not-acceptable', `bookmark with an invalid room JID "${conference.attrs.jid ?? ''}"`);
      throw err;
    }
    wanted.set(room, toNative(conference));
  }
  const urls = storage.getChildren('url');
  const priv = privateStore(server);
  if (urls.length) await priv.put(owner, LEGACY, 'storage', x('storage', { xmlns: LEGACY }, ...urls.map(copy)).toString());
  else await priv.delete(owner, LEGACY, 'storage');

  let rec = await pepStore(server).getNode(owner, BOOKMARKS);
  const current = new Map<string, string>();
  for (const item of rec ? await readItems(server, rec) : []) {
    const conference = parse(item.xml);
    if (conference) current.set(item.id, toNative(toLegacy(item.id, conference)).toString());
  }
  // XEP-0402 §5.3.2: only changed items are published (and notified).
  for (const [room, conference] of wanted) {
    if (current.get(room) === conference.toString()) continue;
    await publishItem(server, { owner, node: BOOKMARKS, id: room, payload: conference, options: rec ? undefined : BOOKMARK_OPTIONS, by });
    rec ??= await pepStore(server).getNode(owner, BOOKMARKS);
  }
  const gone = [...current.keys()].filter((room) => !wanted.has(room));
  if (gone.length) await retractItems(server, owner, BOOKMARKS, gone, true, by);
}

export const privateModule: XmppModule = {
  name: 'private',
  setup(reg) {
    reg.feature(PRIVATE);
    reg.feature(`${BOOKMARKS}#compat`, 'account');
    reg.iq('account', PRIVATE, async ({ server, type, payload, from, to, session }) => {
      // XEP-0049 §3: nobody but the user's own resources (forbidden is the preferred error).
      if (from.bare !== to.bare || !session) throw new StanzaError('forbidden', 'private data belongs to its owner');
      const owner = from.bare;
      const elements = payload.getChildElements();
      if (elements.length === 0 || elements.some((e) => !e.getNS() || e.getNS() === PRIVATE)) {
        throw new StanzaError('not-acceptable', 'one namespaced child element is required');
      }
      if (type === 'get') {
        if (elements.length !== 1) throw new StanzaError('not-acceptable', 'query one namespace at a time');
        const wanted = elements[0]!;
        const ns = wanted.getNS()!;
        if (ns === LEGACY && wanted.name === 'storage') return x('query', { xmlns: PRIVATE }, await readLegacyBookmarks(server, owner));
        const stored = await privateStore(server).get(owner, ns, wanted.name);
        return x('query', { xmlns: PRIVATE }, (stored && parse(stored)) || x(wanted.name, { xmlns: ns }));
      }
      for (const el of elements) {
        const ns = el.getNS()!;
        if (ns === LEGACY && el.name === 'storage') await writeLegacyBookmarks(server, owner, el, session);
        else await privateStore(server).put(owner, ns, el.name, copy(el).attr('xmlns', ns).toString());
      }
      return undefined;
    });
  },
};
