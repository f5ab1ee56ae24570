/**
 * The session manager at the handleFrame level: three server instances over one DynamoDB Local
 * table, a recording sender instead of @connections (AWS's edge), frames redelivered by message id
 * as SQS does, and crashes injected after chosen steps.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import ScramClient from 'sasl-scram-sha-1';
import { ArchiveStore } from '../../shared/storage/archive-store.ts';
import { MucStore } from '../../shared/storage/muc-store.ts';
import { PepStore } from '../../shared/storage/pep-store.ts';
import { addAccount, befriend, Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
/** A number per test, for names of its own (rooms, timer events). */
let n = 0;
/** Fresh accounts per test. */
function users(...names: string[]): Promise<string[]> {
  n += 1;
  return freshUsers(h, ...names);
}

beforeEach(async () => {
  h ??= await startHarness(3);
  h.sender.beforePost = undefined;
});

/** Alice on her phone and laptop, her contact Bob at his desk: everyone online. */
async function aliceOnTwoDevicesWithBob() {
  const [alice, bob] = await users('alice', 'bob');
  await befriend(h, alice!, bob!);
  const b = new Connection(h);
  await b.online(bob!, 'secret', 'desk');
  const phone = new Connection(h);
  const laptop = new Connection(h);
  await phone.online(alice!, 'secret', 'phone');
  await laptop.online(alice!, 'secret', 'laptop');
  return { alice, bob, b, phone, laptop };
}

const chat = (to: string, body: string, id = body) => `<message xmlns="jabber:client" to="${to}" type="chat" id="${id}"><body>${body}</body></message>`;

describe('connection state across handler instances', () => {
  it('sees the state another instance committed, frame after frame (no instance affinity)', async () => {
    const [alice, bob] = await users('alice', 'bob');
    await befriend(h, alice!, bob!);
    const a = new Connection(h);
    const b = new Connection(h);
    // Each frame of a login goes to the next instance: every one must read what the last committed.
    await a.online(alice!, 'secret', 'phone');
    await b.online(bob!, 'secret', 'desk');
    expect(a.posts('<success')).toHaveLength(1);
    expect(a.posts(/<jid>alice\d+@localhost\/phone<\/jid>/)).toHaveLength(1);
    expect(b.posts(`from="${alice}/phone"`).length).toBeGreaterThan(0); // Bob learns Alice is online
    await a.frame(chat(bob!, 'hello bob'));
    expect(b.posts('hello bob')).toHaveLength(1);
  });

  it('keeps the committed state when a frame fails half-way, and redelivery runs it against that state', async () => {
    const [alice] = await users('alice');
    const a = new Connection(h);
    await a.frame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    // The SASL success is posted, then the instance dies before its commit reaches DynamoDB.
    h.crash.crashBefore('PutItemCommand');
    const local = alice!.split('@')[0];
    const auth = `<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${local}\0secret`).toString('base64')}</auth>`;
    await expect(a.frame(auth)).rejects.toThrow(/crash before PutItemCommand/);
    expect((await h.store.getConnection(a.id))?.stage).toBe('open'); // nothing of the failed frame was kept
    // Another instance gets the record again: it runs against the committed state, and the step is
    // not replayed to the client.
    expect((await a.redeliver(2))?.stage).toBe('authenticated');
    expect(a.posts('<success')).toHaveLength(1);
    // The commit landed and the instance died after it: a further delivery is skipped outright.
    await a.redeliver(0);
    expect(a.posts('<success')).toHaveLength(1);
    // The client goes on from there.
    await a.frame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    expect(a.posts('urn:ietf:params:xml:ns:xmpp-bind')).toHaveLength(1);
  });
});

describe('a connection state an instance remembers from the last frame it ran', () => {
  /** Holds every GetItem of a connection item until `release` (a slow read of the connection's state). */
  function holdConnectionReads() {
    const name = `hold${n}`;
    const started: string[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    h.crash.client.middlewareStack.add(
      (next, context) => async (args) => {
        started.push(context.commandName ?? '');
        // The document client's input, not yet marshalled at this step.
        const key = (args.input as { Key?: { pk?: unknown } }).Key?.pk;
        if (context.commandName === 'GetItemCommand' && typeof key === 'string' && key.startsWith('conn#')) await released;
        return next(args);
      },
      { step: 'initialize', name },
    );
    return { started, release, done: () => h.crash.client.middlewareStack.remove(name) };
  }

  it("reads the recipient's route while the sender's state is still being read, and posts once that read confirms it", async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    const b = new Connection(h);
    await a.online(alice!, 'secret', 'phone'); // its last frame ran on instance 2
    await b.online(bob!, 'secret', 'desk');
    const hold = holdConnectionReads();
    try {
      const sent = a.frame(chat(bob!, 'overlapped'), 2);
      // The route Query starts while the connection's GetItem is held: the two overlap. Nothing is
      // posted until the GetItem answers.
      for (let i = 0; i < 200 && !hold.started.includes('QueryCommand'); i++) await new Promise((r) => setTimeout(r, 10));
      expect(hold.started.slice(0, 2).sort()).toEqual(['GetItemCommand', 'QueryCommand']);
      expect(b.posts('overlapped')).toEqual([]);
      hold.release();
      await sent;
    } finally {
      hold.done();
    }
    expect(b.posts('overlapped')).toHaveLength(1);
  });

  it('is thrown away when another instance moved the connection on: nothing of that run gets out, the frame runs on the stored state', async () => {
    const [alice] = await users('alice');
    const a = new Connection(h);
    await a.login(alice!, 'secret', 'phone'); // open 0, auth 1, restart 2, bind 0
    await a.frame('<presence xmlns="jabber:client"/>', 0); // instance 0 remembers: no stream management
    await a.frame('<enable xmlns="urn:xmpp:sm:3" resume="true"/>', 1); // instance 1 enables it
    await a.frame('<iq xmlns="jabber:client" type="get" id="p1"><ping xmlns="urn:xmpp:ping"/></iq>', 1);
    // Instance 0's remembered state has no stream management: an <r/> run on it would be refused.
    // Run on the stored state, it is answered with the one stanza counted since <enable/>.
    const state = await a.frame('<r xmlns="urn:xmpp:sm:3"/>', 0);
    expect(a.posts('<a ')).toEqual(['<a xmlns="urn:xmpp:sm:3" h="1"/>']);
    expect(a.posts('stream:error')).toEqual([]);
    expect(state?.stage).toBe('bound');
    // A message after it, on instance 0 again: the state it remembers now is current.
    await a.frame('<iq xmlns="jabber:client" type="get" id="p2"><ping xmlns="urn:xmpp:ping"/></iq>', 0);
    await a.frame('<r xmlns="urn:xmpp:sm:3"/>', 0);
    expect(a.posts('<a ')).toEqual(['<a xmlns="urn:xmpp:sm:3" h="1"/>', '<a xmlns="urn:xmpp:sm:3" h="2"/>']);
  });

  it('fails the frame, having let nothing out, when the read of the stored state fails; the redelivery delivers once', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    const b = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await b.online(bob!, 'secret', 'desk');
    h.crash.crashBefore('GetItemCommand'); // the connection's read is the frame's first request
    await expect(a.frame(chat(bob!, 'read failed'), 2)).rejects.toThrow(/crash before GetItemCommand/);
    expect(b.posts('read failed')).toEqual([]);
    await a.redeliver(2);
    expect(b.posts('read failed')).toHaveLength(1);
  });
});

describe('a redelivered SCRAM step', () => {
  const sasl = (name: string, data: string, mechanism = '') =>
    `<${name} xmlns="urn:ietf:params:xml:ns:xmpp-sasl"${mechanism && ` mechanism="${mechanism}"`}>${Buffer.from(data).toString('base64')}</${name}>`;
  const text = (post: string) => Buffer.from(/>([^<]*)</.exec(post)![1]!, 'base64').toString();

  it('sends the challenge the first run sent, so the client (sasl-scram-sha-1) still authenticates', async () => {
    const [alice] = await users('alice');
    const credentials = { username: alice!.split('@')[0]!, password: 'secret' };
    const a = new Connection(h);
    await a.frame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    const client = new ScramClient();
    // The challenge is posted, then the instance dies before the SCRAM state is committed.
    h.crash.crashBefore('PutItemCommand');
    await expect(a.frame(sasl('auth', await client.response(credentials), 'SCRAM-SHA-1'))).rejects.toThrow(/crash before PutItemCommand/);
    await a.redeliver();
    // One challenge reached the client (the second run's is the same text, so the journal skips it),
    // and the state committed by the second run matches it.
    const challenges = a.posts('<challenge');
    expect(challenges).toHaveLength(1);
    client.challenge(text(challenges[0]!));
    await a.frame(sasl('response', await client.response(credentials)));
    expect(a.posts('<failure')).toEqual([]);
    expect(a.posts('<success')).toHaveLength(1);
    expect((await h.store.getConnection(a.id))?.stage).toBe('authenticated');
  });
});

describe('a redelivered message frame', () => {
  it('delivers once and archives once when the frame crashed after the delivery', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    const b = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await b.online(bob!, 'secret', 'desk');
    // Both archive copies are written in one BatchWriteItem alongside the post; crash after it.
    h.crash.crashAfter('BatchWriteItemCommand');
    await expect(a.frame(chat(bob!, 'exactly once'))).rejects.toThrow(/crash after BatchWriteItemCommand/);
    expect(b.posts('exactly once')).toHaveLength(1);
    await a.redeliver();
    expect(b.posts('exactly once')).toHaveLength(1);
    const archive = new ArchiveStore(h.store.db);
    for (const owner of [alice!, bob!]) {
      const page = await archive.query(`user#${owner}`, { max: 10 });
      expect(page.items.filter((i) => i.xml.includes('exactly once'))).toHaveLength(1);
    }
    // The stanza-id Bob got is the archived one.
    const id = /<stanza-id[^>]*id="([^"]+)"/.exec(b.posts('exactly once')[0]!)![1];
    const bobs = await archive.query(`user#${bob}`, { max: 10 });
    expect(bobs.items.map((i) => i.id)).toContain(id);
  });

  it('stores an offline message once when the frame failed after storing it', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    h.crash.crashAfter('PutItemCommand'); // the offline item
    await expect(a.frame(chat(bob!, 'kept for later'))).rejects.toThrow(/crash after PutItemCommand/);
    await a.redeliver();
    expect(await h.store.listOffline(bob!)).toHaveLength(1);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    expect(b.posts('kept for later')).toHaveLength(1);
    expect(await h.store.listOffline(bob!)).toHaveLength(0);
  });

  it('goes to offline storage again when it runs again after the recipient came online (no live second copy)', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    h.crash.crashAfter('PutItemCommand'); // the offline item
    await expect(a.frame(chat(bob!, 'stored, then online'))).rejects.toThrow(/crash after PutItemCommand/);
    // Bob comes online before the frame is redelivered: his login delivers the stored copy.
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    expect(b.posts('stored, then online')).toHaveLength(1);
    await a.redeliver();
    expect(b.posts('stored, then online')).toHaveLength(1);
    expect(await h.store.listOffline(bob!)).toHaveLength(0);
  });
});

describe('session records', () => {
  it('a roster get after initial presence keeps the stored presence (attribute updates, not whole items)', async () => {
    const [alice, bob] = await users('alice', 'bob');
    await befriend(h, alice!, bob!);
    const a = new Connection(h);
    await a.login(alice!, 'secret', 'phone');
    await a.frame('<presence xmlns="jabber:client"><status>at lunch</status></presence>');
    await a.frame('<iq type="get" id="r" xmlns="jabber:client"><query xmlns="jabber:iq:roster"/></iq>');
    const [session] = (await h.store.getUserRoute(alice!)).sessions;
    expect(session).toMatchObject({ available: true, interested: true });
    expect(session!.presence).toContain('at lunch');
    // Bob logging in later is shown that presence.
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    expect(b.posts('at lunch')).toHaveLength(1);
  });

  it('account removal ends every session first: contacts see each resource leave, the other socket is closed', async () => {
    const { alice, b, phone, laptop } = await aliceOnTwoDevicesWithBob();
    await phone.frame('<iq type="set" id="rm" xmlns="jabber:client"><query xmlns="jabber:iq:register"><remove/></query></iq>');
    for (const resource of ['phone', 'laptop']) {
      expect(b.posts(new RegExp(`from="${alice}/${resource}"[^>]*type="unavailable"|type="unavailable"[^>]*from="${alice}/${resource}"`))).toHaveLength(1);
    }
    expect(phone.posts('type="result" id="rm"').length + phone.posts('id="rm"').length).toBeGreaterThan(0);
    expect(laptop.posts('<not-authorized')).toHaveLength(1);
    expect(h.sender.closed).toEqual(expect.arrayContaining([phone.id, laptop.id]));
    expect(await h.store.getAccount(alice!)).toBeUndefined();
    expect((await h.store.getUserRoute(alice!)).sessions).toEqual([]);
  });
});

describe('account removal', () => {
  it('leaves nothing to a later account of the same name: subscriptions, pre-approvals, room and node affiliations', async () => {
    const [alice, bob, carol] = await users('alice', 'bob', 'carol');
    await befriend(h, alice!, bob!);
    // Carol pre-approved Bob's subscription (RFC 6121 §3.4), and Bob has her in his roster.
    await h.store.putRosterItem(carol!, { jid: bob!, groups: [], subscription: 'none', approved: true });
    await h.store.putRosterItem(bob!, { jid: carol!, groups: [], subscription: 'none' });
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'desk');
    // Alice owns a room where Bob is a member, and a PEP node whose whitelist names Bob.
    const room = `club${n}@conference.localhost`;
    await a.frame(`<presence xmlns="jabber:client" to="${room}/alice"/>`);
    await a.frame(`<iq xmlns="jabber:client" type="set" id="aff" to="${room}"><query xmlns="http://jabber.org/protocol/muc#admin"><item affiliation="member" jid="${bob}"/></query></iq>`);
    expect(a.posts('id="aff"')[0]).toContain('type="result"');
    await a.frame('<iq xmlns="jabber:client" type="set" id="pub"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="diary"><item id="1"><entry xmlns="urn:test"/></item></publish></pubsub></iq>');
    await a.frame(`<iq xmlns="jabber:client" type="set" id="paff"><pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><affiliations node="diary"><affiliation jid="${bob}" affiliation="member"/></affiliations></pubsub></iq>`);
    expect(a.posts('id="paff"')[0]).toContain('type="result"');
    const muc = new MucStore(h.store.db);
    const pep = new PepStore(h.store.db);
    expect(await muc.getAffiliation(room, bob!)).toBe('member');
    expect((await pep.getNode(alice!, 'diary'))?.affiliations[bob!]).toBe('member');

    const b = new Connection(h);
    await b.online(bob!, 'secret', 'phone');
    await b.frame('<iq type="set" id="rm" xmlns="jabber:client"><query xmlns="jabber:iq:register"><remove/></query></iq>');
    expect(await h.store.getAccount(bob!)).toBeUndefined();
    // Alice's roster keeps the item (her data) but no subscription; she was told (roster push).
    expect(await h.store.getRosterItem(alice!, bob!)).toMatchObject({ subscription: 'none' });
    expect(a.posts(new RegExp(`<item[^>]*jid="${bob}"[^>]*subscription="none"|<item[^>]*subscription="none"[^>]*jid="${bob}"`)).length).toBeGreaterThan(0);
    expect((await h.store.getRosterItem(carol!, bob!))?.approved).toBeFalsy();
    expect(await muc.getAffiliation(room, bob!)).toBe('none');
    expect((await pep.getNode(alice!, 'diary'))?.affiliations[bob!]).toBeUndefined();

    // Someone registers "bob" again: Alice's presence does not reach the newcomer.
    await addAccount(h, bob!);
    const newcomer = new Connection(h);
    await newcomer.online(bob!, 'secret', 'laptop');
    await a.frame('<presence xmlns="jabber:client"><status>still here</status></presence>');
    expect(newcomer.posts('still here')).toHaveLength(0);
  });
});

describe('password change', () => {
  it("logs the account's other sessions out (stream error reset), keeps the one that changed it, and only the new password works", async () => {
    const { alice, b, phone, laptop } = await aliceOnTwoDevicesWithBob();
    await phone.frame(`<iq type="set" id="pw" xmlns="jabber:client"><query xmlns="jabber:iq:register"><username>${alice!.split('@')[0]}</username><password>n3w</password></query></iq>`);
    expect(phone.posts('id="pw"')[0]).toContain('type="result"');
    expect(laptop.posts('<reset')).toHaveLength(1);
    expect(h.sender.closed).toContain(laptop.id);
    expect(h.sender.closed).not.toContain(phone.id);
    expect(b.posts(new RegExp(`from="${alice}/laptop"[^>]*type="unavailable"|type="unavailable"[^>]*from="${alice}/laptop"`))).toHaveLength(1);
    expect((await h.store.getUserRoute(alice!)).sessions.map((s) => s.resource)).toEqual(['phone']);
    const old = new Connection(h);
    await old.login(alice!, 'secret', 'tablet');
    expect(old.posts('<not-authorized/>')).toHaveLength(1);
    const fresh = new Connection(h);
    await fresh.login(alice!, 'n3w', 'tablet');
    expect(fresh.posts('<success')).toHaveLength(1);
  });

  it('is also taken addressed to the domain, as XEP-0077 shows it and Conversations and Gajim send it; not for someone else', async () => {
    const [carl, dora] = await users('carl', 'dora');
    const c = new Connection(h);
    await c.online(carl!, 'secret', 'phone');
    await c.frame(`<iq type="set" id="pw" to="localhost" xmlns="jabber:client"><query xmlns="jabber:iq:register"><username>${carl!.split('@')[0]}</username><password>n3w</password></query></iq>`);
    expect(c.posts('id="pw"')[0]).toContain('type="result"');
    const fresh = new Connection(h);
    await fresh.login(carl!, 'n3w', 'tablet');
    expect(fresh.posts('<success')).toHaveLength(1);
    // Another account's bare JID: refused, and Dora's password is unchanged.
    await c.frame(`<iq type="set" id="other" to="${dora}" xmlns="jabber:client"><query xmlns="jabber:iq:register"><password>mine</password></query></iq>`);
    expect(c.posts('id="other"')[0]).toContain('<service-unavailable');
    const d = new Connection(h);
    await d.login(dora!, 'secret', 'desk');
    expect(d.posts('<success')).toHaveLength(1);
  });
});

describe('offline storage', () => {
  it('a frame that stored a message, failed, and runs again after its stream was replaced stores it once; a burst keeps its order', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    for (const body of ['one', 'two', 'three']) await a.frame(chat(bob!, body));
    // The instance dies right after the offline item was written.
    h.crash.crashAfter('PutItemCommand');
    await expect(a.frame(chat(bob!, 'four'))).rejects.toThrow(/crash after PutItemCommand/);
    // Before the frame runs again, a new login takes the resource (the old stream's version is bumped).
    const a2 = new Connection(h);
    await a2.online(alice!, 'secret', 'phone');
    await a.redeliver();
    const stored = (await h.store.listOffline(bob!)).map((m) => /<body>([^<]*)/.exec(m.xml)?.[1]);
    expect(stored).toEqual(['one', 'two', 'three', 'four']);
  });
});

describe('coming online: stored messages, subscription requests and the broadcast side by side', () => {
  it('an initial presence that crashes half-way runs again on another instance: each stored message, request and presence arrives once', async () => {
    const [alice, bob, carol, dave] = await users('alice', 'bob', 'carol', 'dave');
    await befriend(h, alice!, dave!);
    const [b, c, d] = [new Connection(h), new Connection(h), new Connection(h)];
    await b.online(bob!, 'secret', 'desk');
    await c.online(carol!, 'secret', 'desk');
    await d.online(dave!, 'secret', 'desk');
    for (const body of ['one', 'two', 'three']) await b.frame(chat(alice!, body));
    await c.frame(`<presence xmlns="jabber:client" to="${alice}" type="subscribe"/>`);
    const a = new Connection(h);
    await a.login(alice!, 'secret', 'phone');
    await a.frame('<iq type="get" id="roster" xmlns="jabber:client"><query xmlns="jabber:iq:roster"/></iq>');
    // The batched read of the contacts' sessions returns, then the instance dies: the stored
    // messages were being posted alongside.
    h.crash.crashAfter('BatchGetItemCommand');
    await expect(a.frame('<presence xmlns="jabber:client"/>', 0)).rejects.toThrow(/crash after BatchGetItemCommand/);
    await a.redeliver(1);
    expect(a.posts(/<body>/).map((m) => /<body>([^<]*)/.exec(m)?.[1])).toEqual(['one', 'two', 'three']);
    expect(a.posts(`type="subscribe"`)).toHaveLength(1);
    expect(a.posts(new RegExp(`^<presence[^>]*from="${dave}/desk"`))).toHaveLength(1);
    expect(d.posts(new RegExp(`^<presence[^>]*from="${alice}/phone"`))).toHaveLength(1);
    expect(await h.store.listOffline(alice!)).toEqual([]);
  });

  it('a logout that crashes half-way runs again on another instance: the contact and the room each see the session leave once', async () => {
    const [alice, bob, carol] = await users('alice', 'bob', 'carol');
    await befriend(h, alice!, bob!);
    const room = `leave${n}@conference.localhost`;
    const [b, c, a] = [new Connection(h), new Connection(h), new Connection(h)];
    await b.online(bob!, 'secret', 'desk');
    await c.online(carol!, 'secret', 'desk');
    await c.frame(`<presence xmlns="jabber:client" to="${room}/carol"/>`);
    await a.online(alice!, 'secret', 'phone');
    await a.frame(`<presence xmlns="jabber:client" to="${room}/alice"/>`);
    // The contacts' batched read returns, then the instance dies: the room was being left alongside.
    h.crash.crashAfter('BatchGetItemCommand');
    await expect(a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>', 0)).rejects.toThrow(/crash after BatchGetItemCommand/);
    await a.redeliver(1);
    const left = (posts: string[]) => posts.filter((p) => /type="unavailable"/.test(p));
    expect(left(b.posts(new RegExp(`^<presence[^>]*from="${alice}/phone"`)))).toHaveLength(1);
    expect(left(c.posts(new RegExp(`^<presence[^>]*from="${room}/alice"`)))).toHaveLength(1);
    expect(a.posts('<close')).toHaveLength(1);
    expect((await h.store.getUserRoute(alice!)).sessions).toEqual([]);
  });
});

describe('a recipient whose socket is gone (410)', () => {
  it('gets the message from offline storage at the next login, not never', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    const b = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await b.online(bob!, 'secret', 'desk');
    h.sender.gone.add(b.id); // the socket died; its $disconnect is not processed yet
    await a.frame(chat(bob!, 'while you were gone'));
    await a.frame(chat(`${bob}/desk`, 'to the full jid'));
    expect(b.posts('while you were gone')).toHaveLength(0);
    expect((await h.store.listOffline(bob!)).map((m) => m.xml)).toEqual([expect.stringContaining('while you were gone'), expect.stringContaining('to the full jid')]);
    await b.disconnect();
    const again = new Connection(h);
    await again.online(bob!, 'secret', 'desk');
    expect(again.posts('while you were gone')).toHaveLength(1);
    expect(again.posts('to the full jid')).toHaveLength(1);
  });

  it('goes to another available resource when the top one is gone', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const a = new Connection(h);
    const desk = new Connection(h);
    const phone = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await desk.online(bob!, 'secret', 'desk');
    await phone.login(bob!, 'secret', 'phone');
    await phone.frame('<presence xmlns="jabber:client"><priority>-1</priority></presence>');
    h.sender.gone.add(desk.id);
    await a.frame(chat(`${bob}/desk`, 'find me'));
    // Negative priority takes no bare-JID messages, so it is kept offline rather than lost.
    expect(phone.posts('find me')).toHaveLength(0);
    expect(await h.store.listOffline(bob!)).toHaveLength(1);
  });
});

describe('a stream replaced by a new login of the same resource', () => {
  /** Alice and Bob are contacts; Bob is online at his desk, Alice on her phone (the stream to replace). */
  async function aliceOnPhoneBobAtDesk() {
    const [alice, bob] = await users('alice', 'bob');
    await befriend(h, alice!, bob!);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const old = new Connection(h);
    await old.online(alice!, 'secret', 'phone');
    return { alice: alice!, bob: bob!, b, old };
  }

  it('routes the messages still queued on the old stream, ignores the rest, and removes it at its $disconnect', async () => {
    const { alice, bob, b, old } = await aliceOnPhoneBobAtDesk();
    // The client's post stalled, it reconnected and bound the same resource, while its last
    // frames on the old socket were still queued.
    const replacement = new Connection(h);
    await replacement.online(alice!, 'secret', 'phone');
    expect(old.posts('<conflict')).toHaveLength(1);
    expect(h.sender.closed).toContain(old.id);
    expect((await h.store.getConnection(old.id))?.stage).toBe('replaced');
    await old.frame(chat(bob!, 'sent before the close'));
    await old.frame('<iq type="get" id="v" xmlns="jabber:client" to="localhost"><query xmlns="jabber:iq:version"/></iq>');
    await old.frame('<presence xmlns="jabber:client"><status>stale</status></presence>');
    expect(b.posts('sent before the close')).toEqual([expect.stringContaining(`from="${alice}/phone"`)]);
    expect(b.posts('stale')).toHaveLength(0);
    await old.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    await old.disconnect();
    expect(await h.store.getConnection(old.id)).toBeUndefined();
    // The new session is untouched by the old one's end.
    expect((await h.store.getUserRoute(alice!)).sessions.map((s) => s.connectionId)).toEqual([replacement.id]);
    await b.frame(chat(`${alice}/phone`, 'to the new session'));
    expect(replacement.posts('to the new session')).toHaveLength(1);
  });

  it("keeps the old stream's room occupancy for its queued room messages, until its $disconnect", async () => {
    const [alice, bob] = await users('alice', 'bob');
    const room = `room${n}@conference.localhost`;
    const join = (nick: string) => `<presence xmlns="jabber:client" to="${room}/${nick}"/>`;
    const groupchat = (body: string) => `<message xmlns="jabber:client" to="${room}" type="groupchat" id="${body}"><body>${body}</body></message>`;
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    await b.frame(join('bob')); // an instant room (no MUC <x/>)
    const unavailable = () => b.posts(new RegExp(`from="${room}/alice"[^>]*type="unavailable"|type="unavailable"[^>]*from="${room}/alice"`));
    // The new session rejoins and stays; does not rejoin; or rejoins and leaves before the old
    // stream's queued message is processed.
    for (const newSession of ['stays', 'never joins', 'joins and leaves'] as const) {
      const old = new Connection(h);
      await old.online(alice!, 'secret', 'phone');
      await old.frame(join('alice'));
      const before = unavailable().length;
      const replacement = new Connection(h);
      await replacement.online(alice!, 'secret', 'phone');
      if (newSession !== 'never joins') await replacement.frame(join('alice'));
      if (newSession === 'joins and leaves') await replacement.frame(`<presence xmlns="jabber:client" to="${room}/alice" type="unavailable"/>`);
      const body = `queued (new session ${newSession})`;
      await old.frame(groupchat(body));
      expect(b.posts(body)).toEqual([expect.stringContaining(`from="${room}/alice"`)]);
      expect(unavailable().length - before).toBe(0); // Bob saw no flap so far
      await old.disconnect();
      // Taken over, alice stays in the room; otherwise she leaves when the old socket's end is processed.
      expect(unavailable().length - before).toBe(newSession === 'stays' ? 0 : 1);
      await b.frame(groupchat(`reply (${newSession})`));
      expect(replacement.posts(`reply (${newSession})`)).toHaveLength(newSession === 'stays' ? 1 : 0);
      await replacement.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
      await replacement.disconnect();
    }
  });

  it('a room message that fails half-way and runs again after the replaced entry went reaches the new connection once', async () => {
    const [alice, bob, carol] = await users('alice', 'bob', 'carol');
    const room = `lounge${n}@conference.localhost`;
    const join = (c: Connection, nick: string) => c.frame(`<presence xmlns="jabber:client" to="${room}/${nick}"/>`);
    const a = new Connection(h);
    const c = new Connection(h);
    const old = new Connection(h);
    await a.online(alice!, 'secret', 'desk');
    await join(a, 'alice');
    await c.online(carol!, 'secret', 'desk');
    await join(c, 'carol');
    await old.online(bob!, 'secret', 'phone');
    await join(old, 'bob');
    // Bob reconnects: the room holds his old (replaced) and new connection side by side.
    const fresh = new Connection(h);
    await fresh.online(bob!, 'secret', 'phone');
    await join(fresh, 'bob');
    // The post to Carol fails once: the frame fails after Bob's new connection got the message.
    let failed = false;
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === c.id && frame.includes('once for bob') && !failed) {
        failed = true;
        throw new Error('post failed');
      }
    };
    await expect(a.frame(`<message xmlns="jabber:client" to="${room}" type="groupchat" id="g1"><body>once for bob</body></message>`)).rejects.toThrow(/post failed/);
    expect(fresh.posts('once for bob')).toHaveLength(1);
    // The old connection's end is processed before the redelivery: its room entry goes.
    await old.disconnect();
    await a.redeliver();
    expect(fresh.posts('once for bob')).toHaveLength(1);
    expect(c.posts('once for bob')).toHaveLength(1);
  });

  it('a frame of the old stream committing while it is replaced is redelivered against the replaced state', async () => {
    const { alice, bob, b, old } = await aliceOnPhoneBobAtDesk();
    const replacement = new Connection(h);
    // While the old stream's presence change is posting to Bob (one instance), the new login binds
    // on the others and replaces it. The change sets a new priority: state to commit (a status
    // alone changes nothing of the connection's state, and commits nothing).
    let replaced: Promise<void> | undefined;
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId !== b.id || !frame.includes('racing')) return;
      h.sender.beforePost = undefined;
      replaced = replacement.login(alice!, 'secret', 'phone');
      return replaced;
    };
    await expect(old.frame('<presence xmlns="jabber:client"><status>racing</status><priority>5</priority></presence>', 0)).rejects.toThrow(/stale state/);
    await replaced;
    expect((await old.redeliver(1))?.stage).toBe('replaced');
    await old.frame(chat(bob!, 'after the race'));
    expect(b.posts('after the race')).toHaveLength(1);
    const [session] = (await h.store.getUserRoute(alice!)).sessions;
    expect(session?.connectionId).toBe(replacement.id);
  });

  it('a message frame of the old stream that fails while it is replaced posts nothing twice when it runs again', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const desk = new Connection(h);
    const phone = new Connection(h);
    await desk.online(bob!, 'secret', 'desk');
    await phone.online(bob!, 'secret', 'phone');
    const old = new Connection(h);
    await old.online(alice!, 'secret', 'laptop');
    const replacement = new Connection(h);
    // The post to Bob's desk waits while the new login replaces the stream; the post to his phone then fails.
    let failed = false;
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (!frame.includes('twice?')) return;
      if (connectionId === desk.id) await replacement.login(alice!, 'secret', 'laptop');
      if (connectionId === phone.id && !failed) {
        failed = true;
        throw new Error('post failed');
      }
    };
    await expect(old.frame(chat(bob!, 'twice?'), 0)).rejects.toThrow(/post failed/);
    expect((await h.store.getConnection(old.id))?.stage).toBe('replaced');
    await old.redeliver(1);
    expect(desk.posts('twice?')).toHaveLength(1);
    expect(phone.posts('twice?')).toHaveLength(1);
  });
});
