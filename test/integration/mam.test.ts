/**
 * XEP-0313 archives through the local stack: a 1:1 conversation archived on both sides and paged
 * both ways (XEP-0059), stanza ids (XEP-0359), time and JID filters, preferences, errors, and the
 * archive of a group chat room. StanzaJS's searchHistory where it can express the query,
 * @xmpp/client for what it cannot (an empty <before/>, unknown fields).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Agent, Stanzas } from 'stanza';
import { addFreshUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { record, type EventLog } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import type { Element } from '../../shared/xml/element.ts';

const MAM = 'urn:xmpp:mam:2';
const RSM = 'http://jabber.org/protocol/rsm';
const SERVICE = 'conference.localhost';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.stop();
});

const newUser = (name: string) => addFreshUser(stack.store, name);

type User = { c: Agent; events: EventLog<'chat' | 'groupchat' | 'message'> };

/** A StanzaJS client whose messages land in an event log (disconnected by whoever connected it). */
async function connectUser(name: string, resource = 'web'): Promise<User> {
  const c = await connectStanza(stack.wsUrl, `${name}@localhost`, `${name}-pass`, resource);
  const events = record(c, ['chat', 'groupchat', 'message']);
  c.sendPresence();
  return { c, events };
}

/** connectUser, for a test: disconnected when the test ends, whatever its outcome. */
async function stanzaUser(name: string, resource = 'web'): Promise<User> {
  const user = await connectUser(name, resource);
  onTestFinished(() => user.c.disconnect());
  return user;
}

const bodies = (fin: Stanzas.MAMFin) => fin.results!.map((r) => r.item.message!.body);

/** MAM query with hand-written XML (for what StanzaJS cannot express). */
function rawQuery(fields: Record<string, string>, set?: ReturnType<typeof xml>, to?: string) {
  return xml(
    'iq',
    { type: 'set', to },
    xml(
      'query',
      { xmlns: MAM, queryid: 'raw' },
      xml(
        'x',
        { xmlns: 'jabber:x:data', type: 'submit' },
        xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, MAM)),
        ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
      ),
      ...(set ? [set] : []),
    ),
  );
}

describe('a 1:1 conversation in both archives', () => {
  // The tests read the archives this conversation wrote; the accounts are its own.
  let aliceUser: string;
  let bobUser: string;
  let alice: User;
  let bob: User;
  let midpoint: Date;

  beforeAll(async () => {
    [aliceUser, bobUser] = [await newUser('alice'), await newUser('bob')];
    [alice, bob] = await Promise.all([connectUser(aliceUser), connectUser(bobUser)]);
    for (let i = 1; i <= 7; i++) {
      if (i === 4) {
        await new Promise((r) => setTimeout(r, 20));
        midpoint = new Date();
        await new Promise((r) => setTimeout(r, 20));
      }
      const [from, to] = i % 2 ? [alice, bob] : [bob, alice];
      from.c.sendMessage({ to: `${i % 2 ? bobUser : aliceUser}@localhost`, type: 'chat', body: `m${i}` });
      await to.events.waitFor('chat', (e) => e.data.body === `m${i}`, `m${i}`);
    }
    // Neither a bodiless chat state nor a message hinted <no-store/> is archived.
    alice.c.sendMessage({ to: `${bobUser}@localhost`, type: 'chat', chatState: 'composing' });
    alice.c.sendMessage({ to: `${bobUser}@localhost`, type: 'chat', body: 'off the record', processingHints: { noStore: true } });
    await bob.events.waitFor('chat', (e) => e.data.body === 'off the record', 'no-store delivered');
  });

  afterAll(() => {
    alice?.c.disconnect();
    bob?.c.disconnect();
  });

  it('marks delivered messages with a stanza-id by the recipient that is its archive id', async () => {
    const received = bob.events.seenOf('chat', (e) => e.data.body === 'm3')[0] ?? (await bob.events.wait((e) => e.data.body === 'm3'));
    expect(received.data.stanzaIds).toEqual([expect.objectContaining({ by: `${bobUser}@localhost` })]);
    const bobArchive = await bob.c.searchHistory({ with: `${aliceUser}@localhost` });
    const m3 = bobArchive.results!.find((r) => r.item.message!.body === 'm3')!;
    expect(m3.id).toBe(received.data.stanzaIds![0]!.id);
    expect(bodies(bobArchive)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
  });

  it('pages forward with <after/> until complete', async () => {
    const page1 = await alice.c.searchHistory({ with: `${bobUser}@localhost`, paging: { max: 3 } });
    expect(bodies(page1)).toEqual(['m1', 'm2', 'm3']);
    expect(page1.complete).toBeFalsy();
    expect(page1.paging).toMatchObject({ first: page1.results![0]!.id, last: page1.results![2]!.id });
    const page2 = await alice.c.searchHistory({ with: `${bobUser}@localhost`, paging: { max: 3, after: page1.paging!.last } });
    expect(bodies(page2)).toEqual(['m4', 'm5', 'm6']);
    const page3 = await alice.c.searchHistory({ with: `${bobUser}@localhost`, paging: { max: 3, after: page2.paging!.last } });
    expect(bodies(page3)).toEqual(['m7']);
    expect(page3.complete).toBe(true);
    const first = page1.results![0]!.item;
    expect(first.message).toMatchObject({ from: `${aliceUser}@localhost/web`, to: `${bobUser}@localhost`, type: 'chat' });
    expect(first.delay?.timestamp).toBeInstanceOf(Date);
  });

  it('pages backward from the end with an empty <before/>, then with <before>id</before>', async () => {
    const raw = await connectXmppJs(stack.wsUrl, aliceUser, `${aliceUser}-pass`, 'raw');
    let first: string;
    try {
      const results: Element[] = [];
      raw.client.on('stanza', (s: Element) => {
        const r = s.getChild('result', MAM);
        if (r) results.push(r);
      });
      const last = await raw.client.iqCaller.request(rawQuery({ with: `${bobUser}@localhost` }, xml('set', { xmlns: RSM }, xml('max', {}, '3'), xml('before'))));
      const fin = last.getChild('fin', MAM)!;
      expect(results.map((r) => r.getChild('forwarded')!.getChild('message')!.getChildText('body'))).toEqual(['m5', 'm6', 'm7']);
      expect(fin.attrs.complete).toBeUndefined();
      first = fin.getChild('set', RSM)!.getChildText('first')!;
      expect(first).toBe(results[0]!.attrs.id);
      expect(results.every((r) => r.attrs.queryid === 'raw')).toBe(true);
    } finally {
      await raw.client.stop();
    }

    const earlier = await alice.c.searchHistory({ with: `${bobUser}@localhost`, paging: { max: 3, before: first } });
    expect(bodies(earlier)).toEqual(['m2', 'm3', 'm4']);
    const earliest = await alice.c.searchHistory({ with: `${bobUser}@localhost`, paging: { max: 3, before: earlier.paging!.first } });
    expect(bodies(earliest)).toEqual(['m1']);
    expect(earliest.complete).toBe(true);
  });

  it('filters by start and end time', async () => {
    const after = await alice.c.searchHistory({ with: `${bobUser}@localhost`, start: midpoint });
    expect(bodies(after)).toEqual(['m4', 'm5', 'm6', 'm7']);
    const before = await alice.c.searchHistory({ with: `${bobUser}@localhost`, end: midpoint });
    expect(bodies(before)).toEqual(['m1', 'm2', 'm3']);
  });

  it('answers bad queries with the errors XEP-0313 names', async () => {
    const raw = await connectXmppJs(stack.wsUrl, aliceUser, `${aliceUser}-pass`, 'errors');
    onTestFinished(async () => {
      await raw.client.stop();
    });
    await expect(raw.client.iqCaller.request(rawQuery({}, xml('set', { xmlns: RSM }, xml('after', {}, '1234567890123456-AAAAAAAA'))))).rejects.toThrow(/item-not-found/);
    await expect(raw.client.iqCaller.request(rawQuery({ '{urn:example}fulltext': 'x' }))).rejects.toThrow(/feature-not-implemented/);
    await expect(raw.client.iqCaller.request(rawQuery({ start: 'yesterday' }))).rejects.toThrow(/bad-request/);
    await expect(raw.client.iqCaller.request(rawQuery({}, undefined, `${bobUser}@localhost`))).rejects.toThrow(/forbidden/);
  });

  it('advertises MAM and stanza ids on the account, and nothing it does not implement', async () => {
    const info = await alice.c.getDiscoInfo(`${aliceUser}@localhost`);
    expect(info.features).toEqual(expect.arrayContaining([MAM, 'urn:xmpp:sid:0']));
    // No before-id/after-id/ids, flipped pages or metadata (XEP-0313 §7), and no archive on the server JID.
    expect(info.features).not.toContain(`${MAM}#extended`);
    const server = await alice.c.getDiscoInfo('localhost');
    expect(server.features).not.toContain(MAM);
  });
});

describe('archiving rules', () => {
  it('keeps a message to oneself once, and offline messages with their stanza-id', async () => {
    const [carolUser, daveUser] = [await newUser('carol'), await newUser('dave')];
    const carol = await stanzaUser(carolUser, 'one');
    carol.c.sendMessage({ to: `${carolUser}@localhost`, type: 'chat', body: 'note to self' });
    await carol.events.waitFor('chat', (e) => e.data.body === 'note to self', 'self message');
    const self = await carol.c.searchHistory({ with: `${carolUser}@localhost` });
    expect(bodies(self)).toEqual(['note to self']);

    const sender = await stanzaUser(daveUser, 'offline');
    carol.c.disconnect();
    await new Promise((r) => setTimeout(r, 300));
    sender.c.sendMessage({ to: `${carolUser}@localhost`, type: 'chat', body: 'while you were away' });
    await sender.c.ping('localhost');
    const back = await stanzaUser(carolUser, 'two');
    const offline = await back.events.waitFor('chat', (e) => e.data.body === 'while you were away', 'offline');
    const archived = await back.c.searchHistory({ with: `${daveUser}@localhost` });
    expect(archived.results!.map((r) => r.id)).toEqual([offline.data.stanzaIds![0]!.id]);
  });

  it('follows the archiving preferences (never for a contact)', async () => {
    const [aliceUser, daveUser] = [await newUser('alice'), await newUser('dave')];
    const alice = await stanzaUser(aliceUser, 'prefs');
    await alice.c.setHistoryPreferences({ default: 'always', never: [`${daveUser}@localhost`] });
    const prefs = await alice.c.getHistoryPreferences();
    expect(prefs).toMatchObject({ default: 'always', never: [`${daveUser}@localhost`] });
    const dave = await stanzaUser(daveUser, 'prefs');
    dave.c.sendMessage({ to: `${aliceUser}@localhost`, type: 'chat', body: 'not for the record' });
    await alice.events.waitFor('chat', (e) => e.data.body === 'not for the record', 'delivered');
    expect(bodies(await alice.c.searchHistory({ with: `${daveUser}@localhost` }))).toEqual([]);
    // Dave's own archive has it: preferences are per account.
    expect(bodies(await dave.c.searchHistory({ with: `${aliceUser}@localhost` }))).toEqual(['not for the record']);
    await alice.c.setHistoryPreferences({ default: 'always' });
  });
});

describe('a room archive', () => {
  it('pages through the room history, filters by occupant and keeps outsiders of members-only rooms out', async () => {
    const [aliceUser, bobUser, carolUser] = [await newUser('alice'), await newUser('bob'), await newUser('carol')];
    const alice = await stanzaUser(aliceUser, 'room');
    const bob = await stanzaUser(bobUser, 'room');
    const room = `archive@${SERVICE}`;
    await alice.c.joinRoom(room, 'Alice');
    await alice.c.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }] });
    await bob.c.joinRoom(room, 'Bob');
    for (let i = 1; i <= 5; i++) {
      const who = i % 2 ? alice : bob;
      who.c.sendMessage({ to: room, type: 'groupchat', body: `r${i}` });
      await alice.events.waitFor('groupchat', (e) => e.data.body === `r${i}`, `r${i}`);
    }
    const page1 = await bob.c.searchHistory(room, { paging: { max: 2 } });
    expect(bodies(page1)).toEqual(['r1', 'r2']);
    expect(page1.results![0]!.item.message).toMatchObject({ from: `${room}/Alice`, type: 'groupchat' });
    expect(page1.results![0]!.item.message!.to).toBeUndefined();
    const page2 = await bob.c.searchHistory(room, { paging: { max: 2, after: page1.paging!.last } });
    expect(bodies(page2)).toEqual(['r3', 'r4']);
    const page3 = await bob.c.searchHistory(room, { paging: { max: 2, after: page2.paging!.last } });
    expect(bodies(page3)).toEqual(['r5']);
    expect(page3.complete).toBe(true);
    const byBob = await alice.c.searchHistory(room, { with: `${room}/Bob` });
    expect(bodies(byBob)).toEqual(['r2', 'r4']);
    // Semi-anonymous room: only moderators may filter by real JID.
    await expect(bob.c.searchHistory(room, { with: `${aliceUser}@localhost` })).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    expect(bodies(await alice.c.searchHistory(room, { with: `${bobUser}@localhost` }))).toEqual(['r2', 'r4']);

    await alice.c.configureRoom(room, { fields: [{ name: 'muc#roomconfig_membersonly', value: true }] });
    const outsider = await stanzaUser(carolUser, 'room');
    await expect(outsider.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
  });

  it('of a password-protected room is for those inside and its owner, not for whoever asks', async () => {
    const alice = await stanzaUser(await newUser('alice'), 'secret');
    const bob = await stanzaUser(await newUser('bob'), 'secret');
    const dave = await stanzaUser(await newUser('dave'), 'secret');
    const room = `vault@${SERVICE}`;
    await alice.c.joinRoom(room, 'Alice');
    await alice.c.configureRoom(room, {
      fields: [
        { name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' },
        { name: 'muc#roomconfig_passwordprotectedroom', value: true },
        { name: 'muc#roomconfig_roomsecret', value: 'sesame' },
      ],
    });
    const withPassword: Stanzas.MUCPresence = { muc: { type: 'join', password: 'sesame' } };
    await bob.c.joinRoom(room, 'Bob', withPassword);
    bob.c.sendMessage({ to: room, type: 'groupchat', body: 'the combination is 1234' });
    await alice.events.waitFor('groupchat', (e) => e.data.body === 'the combination is 1234', 'secret said');
    // Dave never gave the password: the archive is closed to him as the room is.
    await expect(dave.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    expect(bodies(await bob.c.searchHistory(room, {}))).toEqual(['the combination is 1234']);
    expect(bodies(await alice.c.searchHistory(room, {}))).toEqual(['the combination is 1234']);
    // Once Bob has left he would need the password again, and so does his archive query.
    await bob.c.leaveRoom(room);
    await expect(bob.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
  });
});
