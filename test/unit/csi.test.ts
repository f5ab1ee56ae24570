/**
 * XEP-0352 at the handleFrame level on three handler instances sharing one DynamoDB Local table:
 * holding on whichever instance delivers, the flush racing deliveries from other instances, and a
 * flush that crashes half-way and runs again. The recording sender stands in for @connections (AWS's edge).
 */
import { GetCommand } from '../../shared/storage/commands.ts';
import { beforeEach, describe, expect, it } from 'vitest';
import { befriend, Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;

beforeEach(async () => {
  h ??= await startHarness(3);
  h.sender.beforePost = undefined;
});

const INACTIVE = '<inactive xmlns="urn:xmpp:csi:0"/>';
const ACTIVE = '<active xmlns="urn:xmpp:csi:0"/>';
const presence = (status: string) => `<presence xmlns="jabber:client"><status>${status}</status></presence>`;
const chatState = (to: string, state: string) =>
  `<message xmlns="jabber:client" to="${to}" type="chat"><${state} xmlns="http://jabber.org/protocol/chatstates"/></message>`;
const chat = (to: string, body: string) => `<message xmlns="jabber:client" to="${to}" type="chat"><body>${body}</body></message>`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const statuses = (frames: string[]) => frames.map((f) => /<status>([^<]*)<\/status>/.exec(f)?.[1]).filter((s): s is string => s !== undefined);

/** Ann online (phone) with contacts online on desks; returns the connections by name. */
async function annWithContacts(...contacts: string[]) {
  const [ann, ...others] = await freshUsers(h, 'ann', ...contacts);
  const a = new Connection(h);
  const c: Connection[] = [];
  for (const other of others) {
    await befriend(h, ann!, other);
    const conn = new Connection(h);
    await conn.online(other, 'secret', 'desk');
    c.push(conn);
  }
  await a.online(ann!, 'secret', 'phone');
  return { ann: ann!, others, a, c };
}

describe('client state indication on several handler instances', () => {
  it('advertises the feature, holds presence and chat states while inactive (latest per sender), lets messages through', async () => {
    const { ann, a, c: [bob] } = await annWithContacts('bob');
    expect(a.posts('<csi xmlns="urn:xmpp:csi:0"/>')).toHaveLength(1);
    await a.frame(INACTIVE);
    const before = a.posts().length;

    // Each frame on another instance (round robin): all of them hold.
    for (const status of ['away', 'dnd', 'back']) await bob!.frame(presence(status));
    await bob!.frame(chatState(`${ann}/phone`, 'composing'));
    await bob!.frame(chat(`${ann}/phone`, 'hello')); // goes through, and supersedes the held <composing/>
    await bob!.frame(chatState(`${ann}/phone`, 'paused'));
    await bob!.frame(`<presence xmlns="jabber:client" to="${ann}" type="subscribed"/>`); // not an update: not held
    const whileInactive = a.posts().slice(before);
    expect(whileInactive.filter((f) => f.includes('<body>hello</body>'))).toHaveLength(1);
    expect(statuses(whileInactive)).toEqual([]);
    expect(whileInactive.filter((f) => f.includes('chatstates'))).toEqual([]);

    await a.frame(ACTIVE);
    const flushed = a.posts().slice(before + whileInactive.length);
    expect(statuses(flushed)).toEqual(['back']);
    expect(flushed.filter((f) => f.includes('chatstates'))).toHaveLength(1);
    expect(flushed.find((f) => f.includes('chatstates'))).toContain('<paused');
    // Once active, presence goes straight through again.
    await bob!.frame(presence('live'));
    expect(statuses(a.posts()).at(-1)).toBe('live');
  });

  it('a presence delivered by another instance while the flush posts is held and posted after it, not before', async () => {
    const { a, c: [bob] } = await annWithContacts('bob');
    await a.frame(INACTIVE);
    await bob!.frame(presence('bob0'));
    // While the flush (instance 0) posts the held bob0, Bob changes presence on instance 1.
    let raced = false;
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (connectionId === a.id && frame.includes('bob0') && !raced) {
        raced = true;
        await bob!.frame(presence('bob1'), 1);
      }
    };
    await a.frame(ACTIVE, 0);
    expect(raced).toBe(true);
    expect(statuses(a.posts()).filter((s) => s.startsWith('bob'))).toEqual(['bob0', 'bob1']);
  });

  it('many deliveries racing the flush on other instances: nothing lost, nothing older after newer', async () => {
    const { a, c: [bob, cat] } = await annWithContacts('bob', 'cat');
    await a.frame(INACTIVE);
    await bob!.frame(presence('bob0'));
    await cat!.frame(presence('cat0'));
    // Slow posts: the flush is under way while Bob and Cat change presence on the other instances.
    h.sender.beforePost = () => sleep(3);
    const changes = async (conn: Connection, name: string, instance: number) => {
      for (let i = 1; i <= 6; i++) await conn.frame(presence(`${name}${i}`), instance);
    };
    await Promise.all([a.frame(ACTIVE, 0), changes(bob!, 'bob', 1), changes(cat!, 'cat', 2)]);
    h.sender.beforePost = undefined;

    const seen = statuses(a.posts());
    for (const name of ['bob', 'cat']) {
      const mine = seen.filter((s) => s.startsWith(name)).map((s) => Number(s.slice(name.length)));
      // What Ann sees of each contact only moves forward and ends at the contact's latest presence.
      expect(mine).toEqual([...mine].sort((x, y) => x - y));
      expect(mine.at(-1)).toBe(6);
    }
  });

  it('a flush that crashes half-way runs again: each held stanza reaches the client once', async () => {
    const { a, c: contacts } = await annWithContacts('bob', 'cat', 'dan');
    await a.frame(INACTIVE);
    for (const [i, conn] of contacts.entries()) await conn.frame(presence(`held${i}`));
    expect(statuses(a.posts()).filter((s) => s.startsWith('held'))).toEqual([]);

    // The instance dies after posting the second held presence (a 410-free post that then throws).
    let flushedPosts = 0;
    h.sender.beforePost = ({ connectionId }) => {
      if (connectionId === a.id && ++flushedPosts === 2) h.crash.crashBefore('UpdateItemCommand');
    };
    await expect(a.frame(ACTIVE, 0)).rejects.toThrow(/crash before UpdateItemCommand/);
    h.sender.beforePost = undefined;
    await a.redeliver(1);

    expect(statuses(a.posts()).filter((s) => s.startsWith('held')).sort()).toEqual(['held0', 'held1', 'held2']);
    // Active for good: the next change is posted at once.
    await contacts[0]!.frame(presence('after'));
    expect(statuses(a.posts()).at(-1)).toBe('after');
  });

  it('a session that ends while inactive leaves nothing held behind', async () => {
    const { a, others: [bob], c: [desk] } = await annWithContacts('bob');
    await a.frame(INACTIVE);
    await desk!.frame(presence('held'));
    const csiItem = async () =>
      (await h.store.db.doc.send(new GetCommand({ TableName: h.store.db.table, Key: { pk: `conn#${a.id}`, sk: 'csi' }, ConsistentRead: true }))).Item;
    expect(Object.keys((await csiItem())?.held ?? {})).toEqual([`presence ${bob}/desk`]);
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    expect(await csiItem()).toBeUndefined();
  });

  it('refuses CSI before a resource is bound, and unknown elements of the namespace', async () => {
    const [eve] = await freshUsers(h, 'eve');
    const e = new Connection(h);
    await e.frame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    await e.frame(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${eve!.split('@')[0]}\0secret`).toString('base64')}</auth>`);
    await e.frame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    await e.frame(INACTIVE);
    expect(e.posts('<not-authorized')).toHaveLength(1);

    const f = new Connection(h);
    const [fay] = await freshUsers(h, 'fay');
    await f.online(fay!, 'secret', 'x');
    await f.frame('<sleepy xmlns="urn:xmpp:csi:0"/>');
    expect(f.posts('<unsupported-stanza-type')).toHaveLength(1);
  });
});
