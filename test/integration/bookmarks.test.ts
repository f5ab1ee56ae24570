/**
 * XEP-0402 PEP Native Bookmarks and XEP-0049 private XML storage with the
 * `urn:xmpp:bookmarks:1#compat` mapping, through the local stack: StanzaJS stores XEP-0048
 * bookmarks the legacy way (private storage), @xmpp/client reads and writes PEP items.
 */
import type { Agent } from 'stanza';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addFreshUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { befriend, presenceWithCaps, record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const BOOKMARKS = 'urn:xmpp:bookmarks:1';
const PUBSUB = 'http://jabber.org/protocol/pubsub';
const PRIVATE = 'jabber:iq:private';

let stack: LocalStack & { store: DynamoStore };
/** The clients the running test opened, closed after it whatever its outcome. */
let agents: Agent[] = [];
let stoppers: (() => Promise<unknown>)[] = [];
const newUser = (name: string) => addFreshUser(stack.store, name);

async function stanza(user: string, resource: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  agents.push(c);
  return c;
}

async function xmppjs(user: string, resource: string) {
  const c = await connectXmppJs(stack.wsUrl, user, `${user}-pass`, resource);
  stoppers.push(() => c.client.stop());
  return c;
}

const itemsIq = () => xml('iq', { type: 'get' }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node: BOOKMARKS })));

/** XEP-0402 §3.3, as a native client publishes a bookmark. */
const publishBookmark = (room: string, name: string, nick: string) =>
  xml(
    'iq',
    { type: 'set' },
    xml(
      'pubsub',
      { xmlns: PUBSUB },
      xml('publish', { node: BOOKMARKS }, xml('item', { id: room }, xml('conference', { xmlns: BOOKMARKS, name, autojoin: 'true' }, xml('nick', {}, nick)))),
      xml(
        'publish-options',
        {},
        xml(
          'x',
          { xmlns: 'jabber:x:data', type: 'submit' },
          xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#publish-options`)),
          xml('field', { var: 'pubsub#persist_items' }, xml('value', {}, 'true')),
          xml('field', { var: 'pubsub#max_items' }, xml('value', {}, 'max')),
          xml('field', { var: 'pubsub#send_last_published_item' }, xml('value', {}, 'never')),
          xml('field', { var: 'pubsub#access_model' }, xml('value', {}, 'whitelist')),
        ),
      ),
    ),
  );

beforeAll(async () => {
  stack = await startTestStack();
});

afterEach(async () => {
  for (const c of agents) c.disconnect();
  for (const stop of stoppers) await stop().catch(() => {});
  agents = [];
  stoppers = [];
});

afterAll(async () => {
  await stack?.stop();
});

describe('bookmarks shared between XEP-0049 and XEP-0402 clients', () => {
  // The first three tests are one story, each starting from the bookmarks the previous left; the account is theirs.
  let ann: string;

  beforeAll(async () => {
    ann = await newUser('ann');
  });

  it('stores a bookmark with a legacy client and reads it as a PEP item with another', async () => {
    const legacy = await stanza(ann, 'legacy');
    await legacy.addBookmark({ jid: 'tea@conference.localhost', name: 'Tea room', autoJoin: true, nick: 'annie' });

    const native = await xmppjs(ann, 'native');
    const result = await native.client.iqCaller.request(itemsIq());
    const items = result.getChild('pubsub')!.getChild('items')!.getChildren('item');
    expect(items.map((i) => i.attrs.id)).toEqual(['tea@conference.localhost']);
    const conference = items[0]!.getChild('conference', BOOKMARKS)!;
    expect(conference.attrs).toMatchObject({ name: 'Tea room', autojoin: 'true' });
    expect(conference.getChildText('nick')).toBe('annie');
  });

  it('reads a bookmark published the XEP-0402 way through private storage (the compat path)', async () => {
    const native = await xmppjs(ann, 'native2');
    await native.client.iqCaller.request(publishBookmark('coffee@conference.localhost', 'Coffee', 'ann'));
    const legacy = await stanza(ann, 'legacy2');
    const bookmarks = await legacy.getBookmarks();
    expect(bookmarks).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ jid: 'tea@conference.localhost', name: 'Tea room', autoJoin: true, nick: 'annie' }),
        expect.objectContaining({ jid: 'coffee@conference.localhost', name: 'Coffee', autoJoin: true, nick: 'ann' }),
      ]),
    );
    expect(bookmarks).toHaveLength(2);
  });

  it('notifies native clients of legacy changes, item by item, and retracts removed rooms', async () => {
    const watcher = await stanza(ann, 'watcher');
    const events = record(watcher, ['pubsub:published', 'pubsub:retracted']);
    await presenceWithCaps(watcher, [BOOKMARKS]);
    const legacy = await stanza(ann, 'legacy3');
    await legacy.addBookmark({ jid: 'juice@conference.localhost', name: 'Juice', autoJoin: false });
    const published = await events.waitFor('pubsub:published', (e) => e.data.pubsub.items.node === BOOKMARKS, 'bookmark notification');
    expect(published.data.pubsub.items.published.map((i) => i.id)).toEqual(['juice@conference.localhost']);

    await legacy.removeBookmark('tea@conference.localhost');
    const retracted = await events.wait((e) => e.kind === 'pubsub:retracted', 'retraction');
    expect(retracted.data.pubsub.items.retracted).toEqual(['tea@conference.localhost']);
    // the unchanged rooms were not published again
    expect(events.seen((e) => e.kind === 'pubsub:published')).toEqual([]);

    const native = await xmppjs(ann, 'native3');
    const result = await native.client.iqCaller.request(itemsIq());
    const ids = result.getChild('pubsub')!.getChild('items')!.getChildren('item').map((i) => i.attrs.id);
    expect(ids.sort()).toEqual(['coffee@conference.localhost', 'juice@conference.localhost']);
  });

  it('keeps bookmarks private (whitelist node) even from contacts', async () => {
    const [annUser, benUser] = [await newUser('ann'), await newUser('ben')];
    const ann = await stanza(annUser, 'friend');
    const ben = await stanza(benUser, 'friend');
    await ann.addBookmark({ jid: 'tea@conference.localhost', name: 'Tea room', autoJoin: true });
    await befriend(ann, ben);
    await expect(ben.getItems(`${annUser}@localhost`, BOOKMARKS)).rejects.toMatchObject({ error: { condition: 'not-allowed' } });
  });

  it('advertises the compat feature on the account', async () => {
    const annUser = await newUser('ann');
    const ann = await stanza(annUser, 'disco');
    const info = await ann.getDiscoInfo(`${annUser}@localhost`);
    expect(info.features).toEqual(expect.arrayContaining([`${BOOKMARKS}#compat`, `${PUBSUB}#publish-options`]));
    const server = await ann.getDiscoInfo('localhost');
    expect(server.features).toContain(PRIVATE);
  });
});

describe('XEP-0049 private XML storage', () => {
  it('stores and returns any namespaced element, and URL bookmarks next to PEP ones', async () => {
    const cat = await xmppjs(await newUser('cat'), 'prefs');
    const set = xml('iq', { type: 'set' }, xml('query', { xmlns: PRIVATE }, xml('prefs', { xmlns: 'urn:example:prefs' }, xml('theme', {}, 'dark'))));
    await cat.client.iqCaller.request(set);
    const got = await cat.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: PRIVATE }, xml('prefs', { xmlns: 'urn:example:prefs' }))));
    expect(got.getChild('query')!.getChild('prefs', 'urn:example:prefs')!.getChildText('theme')).toBe('dark');
    // never stored: the empty element comes back
    const empty = await cat.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: PRIVATE }, xml('other', { xmlns: 'urn:example:other' }))));
    expect(empty.getChild('query')!.getChild('other', 'urn:example:other')!.children).toEqual([]);

    await cat.client.iqCaller.request(
      xml(
        'iq',
        { type: 'set' },
        xml(
          'query',
          { xmlns: PRIVATE },
          xml(
            'storage',
            { xmlns: 'storage:bookmarks' },
            xml('url', { name: 'Docs', url: 'https://example.org/docs' }),
            xml('conference', { jid: 'lobby@conference.localhost', autojoin: '1' }, xml('nick', {}, 'kitty')),
          ),
        ),
      ),
    );
    const storage = (
      await cat.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: PRIVATE }, xml('storage', { xmlns: 'storage:bookmarks' }))))
    )
      .getChild('query')!
      .getChild('storage', 'storage:bookmarks')!;
    expect(storage.getChildren('url').map((u) => u.attrs)).toEqual([{ name: 'Docs', url: 'https://example.org/docs' }]);
    expect(storage.getChildren('conference').map((c) => c.attrs)).toEqual([{ jid: 'lobby@conference.localhost', autojoin: 'true' }]);
  });

  it("refuses another user's private data and requests without a namespaced child", async () => {
    const cat = await newUser('cat');
    const ben = await xmppjs(await newUser('ben'), 'snoop');
    await expect(
      ben.client.iqCaller.request(xml('iq', { type: 'get', to: `${cat}@localhost` }, xml('query', { xmlns: PRIVATE }, xml('prefs', { xmlns: 'urn:example:prefs' })))),
    ).rejects.toThrow(/forbidden/);
    await expect(ben.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: PRIVATE })))).rejects.toThrow(/not-acceptable/);
  });
});
