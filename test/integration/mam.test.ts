/**
 * XEP-0313 archives through the local stack: a 1:1 conversation archived on both sides and paged
 * both ways (XEP-0059), stanza ids (XEP-0359), time and JID filters, preferences, errors, and the
 * archive of a group chat room. StanzaJS's searchHistory where it can express the query,
 * @xmpp/client for what it cannot (an empty <before/>, unknown fields).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from 'stanza';
import { Inbox, addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const MAM = 'urn:xmpp:mam:2';
const RSM = 'http://jabber.org/protocol/rsm';
const SERVICE = 'conference.localhost';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['alice', 'bob', 'carol', 'dave']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

type Event = { kind: string; data: any };

async function stanzaUser(name: string, resource = 'web'): Promise<{ c: Agent; events: Inbox<Event> }> {
  const c = await connectStanza(stack.wsUrl, `${name}@localhost`, `${name}-pass`, resource);
  const events = new Inbox<Event>();
  for (const kind of ['chat', 'groupchat', 'message']) c.on(kind as any, (data: any) => events.push({ kind, data }));
  c.sendPresence();
  return { c, events };
}

const bodies = (fin: any) => fin.results.map((r: any) => r.item.message.body);

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
  let alice: Awaited<ReturnType<typeof stanzaUser>>;
  let bob: Awaited<ReturnType<typeof stanzaUser>>;
  let midpoint: Date;

  beforeAll(async () => {
    [alice, bob] = await Promise.all([stanzaUser('alice'), stanzaUser('bob')]);
    for (let i = 1; i <= 7; i++) {
      if (i === 4) {
        await new Promise((r) => setTimeout(r, 20));
        midpoint = new Date();
        await new Promise((r) => setTimeout(r, 20));
      }
      const [from, to] = i % 2 ? [alice, bob] : [bob, alice];
      from.c.sendMessage({ to: `${i % 2 ? 'bob' : 'alice'}@localhost`, type: 'chat', body: `m${i}` });
      await to.events.wait((e) => e.kind === 'chat' && e.data.body === `m${i}`, `m${i}`);
    }
    // Neither a bodiless chat state nor a message hinted <no-store/> is archived.
    alice.c.sendMessage({ to: 'bob@localhost', type: 'chat', chatState: 'composing' } as any);
    alice.c.sendMessage({ to: 'bob@localhost', type: 'chat', body: 'off the record', processingHints: { noStore: true } } as any);
    await bob.events.wait((e) => e.kind === 'chat' && e.data.body === 'off the record', 'no-store delivered');
  });

  afterAll(() => {
    alice?.c.disconnect();
    bob?.c.disconnect();
  });

  it('marks delivered messages with a stanza-id by the recipient that is its archive id', async () => {
    const received = bob.events.seen((e) => e.kind === 'chat' && e.data.body === 'm3')[0] ?? (await bob.events.wait((e) => e.data?.body === 'm3'));
    expect(received.data.stanzaIds).toEqual([expect.objectContaining({ by: 'bob@localhost' })]);
    const bobArchive = await bob.c.searchHistory({ with: 'alice@localhost' });
    const m3 = bobArchive.results!.find((r: any) => r.item.message.body === 'm3')!;
    expect(m3.id).toBe(received.data.stanzaIds[0].id);
    expect(bodies(bobArchive)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
  });

  it('pages forward with <after/> until complete', async () => {
    const page1 = await alice.c.searchHistory({ with: 'bob@localhost', paging: { max: 3 } });
    expect(bodies(page1)).toEqual(['m1', 'm2', 'm3']);
    expect(page1.complete).toBeFalsy();
    expect(page1.paging).toMatchObject({ first: page1.results![0]!.id, last: page1.results![2]!.id });
    const page2 = await alice.c.searchHistory({ with: 'bob@localhost', paging: { max: 3, after: page1.paging!.last } });
    expect(bodies(page2)).toEqual(['m4', 'm5', 'm6']);
    const page3 = await alice.c.searchHistory({ with: 'bob@localhost', paging: { max: 3, after: page2.paging!.last } });
    expect(bodies(page3)).toEqual(['m7']);
    expect(page3.complete).toBe(true);
    const first = page1.results![0]!.item;
    expect(first.message).toMatchObject({ from: 'alice@localhost/web', to: 'bob@localhost', type: 'chat' });
    expect(first.delay?.timestamp).toBeInstanceOf(Date);
  });

  it('pages backward from the end with an empty <before/>, then with <before>id</before>', async () => {
    const raw = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'raw');
    const results: any[] = [];
    raw.client.on('stanza', (s: any) => {
      const r = s.getChild('result', MAM);
      if (r) results.push(r);
    });
    const last = await raw.client.iqCaller.request(rawQuery({ with: 'bob@localhost' }, xml('set', { xmlns: RSM }, xml('max', {}, '3'), xml('before'))));
    const fin = last.getChild('fin', MAM)!;
    expect(results.map((r) => r.getChild('forwarded').getChild('message').getChildText('body'))).toEqual(['m5', 'm6', 'm7']);
    expect(fin.attrs.complete).toBeUndefined();
    const first = fin.getChild('set', RSM)!.getChildText('first')!;
    expect(first).toBe(results[0].attrs.id);
    expect(results.every((r) => r.attrs.queryid === 'raw')).toBe(true);
    await raw.client.stop();

    const earlier = await alice.c.searchHistory({ with: 'bob@localhost', paging: { max: 3, before: first } });
    expect(bodies(earlier)).toEqual(['m2', 'm3', 'm4']);
    const earliest = await alice.c.searchHistory({ with: 'bob@localhost', paging: { max: 3, before: earlier.paging!.first } });
    expect(bodies(earliest)).toEqual(['m1']);
    expect(earliest.complete).toBe(true);
  });

  it('filters by start and end time', async () => {
    const after = await alice.c.searchHistory({ with: 'bob@localhost', start: midpoint });
    expect(bodies(after)).toEqual(['m4', 'm5', 'm6', 'm7']);
    const before = await alice.c.searchHistory({ with: 'bob@localhost', end: midpoint });
    expect(bodies(before)).toEqual(['m1', 'm2', 'm3']);
  });

  it('answers bad queries with the errors XEP-0313 names', async () => {
    const raw = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'errors');
    await expect(raw.client.iqCaller.request(rawQuery({}, xml('set', { xmlns: RSM }, xml('after', {}, '1234567890123456-AAAAAAAA'))))).rejects.toThrow(/item-not-found/);
    await expect(raw.client.iqCaller.request(rawQuery({ '{urn:example}fulltext': 'x' }))).rejects.toThrow(/feature-not-implemented/);
    await expect(raw.client.iqCaller.request(rawQuery({ start: 'yesterday' }))).rejects.toThrow(/bad-request/);
    await expect(raw.client.iqCaller.request(rawQuery({}, undefined, 'bob@localhost'))).rejects.toThrow(/forbidden/);
    await raw.client.stop();
  });

  it('advertises MAM and stanza ids on the account, and nothing it does not implement', async () => {
    const info = await alice.c.getDiscoInfo('alice@localhost');
    expect(info.features).toEqual(expect.arrayContaining([MAM, 'urn:xmpp:sid:0']));
    // No before-id/after-id/ids, flipped pages or metadata (XEP-0313 §7), and no archive on the server JID.
    expect(info.features).not.toContain(`${MAM}#extended`);
    const server = await alice.c.getDiscoInfo('localhost');
    expect(server.features).not.toContain(MAM);
  });
});

describe('archiving rules', () => {
  it('keeps a message to oneself once, and offline messages with their stanza-id', async () => {
    const carol = await stanzaUser('carol', 'one');
    carol.c.sendMessage({ to: 'carol@localhost', type: 'chat', body: 'note to self' });
    await carol.events.wait((e) => e.kind === 'chat' && e.data.body === 'note to self', 'self message');
    const self = await carol.c.searchHistory({ with: 'carol@localhost' });
    expect(bodies(self)).toEqual(['note to self']);

    const sender = await stanzaUser('dave', 'offline');
    carol.c.disconnect();
    await new Promise((r) => setTimeout(r, 300));
    sender.c.sendMessage({ to: 'carol@localhost', type: 'chat', body: 'while you were away' });
    await sender.c.ping('localhost');
    const back = await stanzaUser('carol', 'two');
    const offline = await back.events.wait((e) => e.kind === 'chat' && e.data.body === 'while you were away', 'offline');
    const archived = await back.c.searchHistory({ with: 'dave@localhost' });
    expect(archived.results!.map((r: any) => r.id)).toEqual([offline.data.stanzaIds[0].id]);
    back.c.disconnect();
    sender.c.disconnect();
  });

  it('follows the archiving preferences (never for a contact)', async () => {
    const alice = await stanzaUser('alice', 'prefs');
    await alice.c.setHistoryPreferences({ default: 'always', never: ['dave@localhost'] } as any);
    const prefs = await alice.c.getHistoryPreferences();
    expect(prefs).toMatchObject({ default: 'always', never: ['dave@localhost'] });
    const dave = await stanzaUser('dave', 'prefs');
    dave.c.sendMessage({ to: 'alice@localhost', type: 'chat', body: 'not for the record' });
    await alice.events.wait((e) => e.kind === 'chat' && e.data.body === 'not for the record', 'delivered');
    expect(bodies(await alice.c.searchHistory({ with: 'dave@localhost' }))).toEqual([]);
    // Dave's own archive has it: preferences are per account.
    expect(bodies(await dave.c.searchHistory({ with: 'alice@localhost' }))).toEqual(['not for the record']);
    await alice.c.setHistoryPreferences({ default: 'always' } as any);
    alice.c.disconnect();
    dave.c.disconnect();
  });
});

describe('a room archive', () => {
  it('pages through the room history, filters by occupant and keeps outsiders of members-only rooms out', async () => {
    const alice = await stanzaUser('alice', 'room');
    const bob = await stanzaUser('bob', 'room');
    const room = `archive@${SERVICE}`;
    await alice.c.joinRoom(room, 'Alice');
    await alice.c.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }] });
    await bob.c.joinRoom(room, 'Bob');
    for (let i = 1; i <= 5; i++) {
      const who = i % 2 ? alice : bob;
      who.c.sendMessage({ to: room, type: 'groupchat', body: `r${i}` });
      await alice.events.wait((e) => e.kind === 'groupchat' && e.data.body === `r${i}`, `r${i}`);
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
    await expect(bob.c.searchHistory(room, { with: 'alice@localhost' })).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    expect(bodies(await alice.c.searchHistory(room, { with: 'bob@localhost' }))).toEqual(['r2', 'r4']);

    await alice.c.configureRoom(room, { fields: [{ name: 'muc#roomconfig_membersonly', value: true }] });
    const outsider = await stanzaUser('carol', 'room');
    await expect(outsider.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    for (const u of [alice, bob, outsider]) u.c.disconnect();
  });

  it('of a password-protected room is for those inside and its owner, not for whoever asks', async () => {
    const alice = await stanzaUser('alice', 'secret');
    const bob = await stanzaUser('bob', 'secret');
    const dave = await stanzaUser('dave', 'secret');
    const room = `vault@${SERVICE}`;
    await alice.c.joinRoom(room, 'Alice');
    await alice.c.configureRoom(room, {
      fields: [
        { name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' },
        { name: 'muc#roomconfig_passwordprotectedroom', value: true },
        { name: 'muc#roomconfig_roomsecret', value: 'sesame' },
      ],
    });
    await bob.c.joinRoom(room, 'Bob', { muc: { type: 'join', password: 'sesame' } } as any);
    bob.c.sendMessage({ to: room, type: 'groupchat', body: 'the combination is 1234' });
    await alice.events.wait((e) => e.kind === 'groupchat' && e.data.body === 'the combination is 1234', 'secret said');
    // Dave never gave the password: the archive is closed to him as the room is.
    await expect(dave.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    expect(bodies(await bob.c.searchHistory(room, {}))).toEqual(['the combination is 1234']);
    expect(bodies(await alice.c.searchHistory(room, {}))).toEqual(['the combination is 1234']);
    // Once Bob has left he would need the password again, and so does his archive query.
    await bob.c.leaveRoom(room);
    await expect(bob.c.searchHistory(room, {})).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    for (const u of [alice, bob, dave]) u.c.disconnect();
  });
});
