/**
 * XEP-0198 through the local stack: acknowledgements, resumption on a new connection after the
 * socket died without a stream close, the end of the resumption window, and the gateway's lifetime
 * cut made invisible. Raw frames where the protocol details matter; @xmpp/client, which resumes on
 * its own, where a real client's behaviour is the point.
 */
import type { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectXmppJs, startTestStack, xml, type LocalStack, type XmppJsClient } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const SM = 'urn:xmpp:sm:3';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Logs in with PLAIN, binds, enables SM with resumption; returns the SM id and the bound JID. */
async function loginWithSm(stack: Stack, user: string, resource: string): Promise<{ raw: RawClient; jid: string; smId: string; handled: () => number }> {
  const raw = await RawClient.open(stack.wsUrl);
  const jid = await raw.login(user, 'pw', resource);
  raw.send(`<enable xmlns="${SM}" resume="true"/>`);
  const enabled = await raw.next('<enabled');
  // The client's 'h': stanzas received since <enabled/>.
  let handled = 0;
  raw.ws.on('message', (data) => {
    if (/^<(message|presence|iq)[\s>/]/.test(data.toString())) handled++;
  });
  return { raw, jid, smId: /id="([^"]+)"/.exec(enabled)![1]!, handled: () => handled };
}

/** Opens a stream, authenticates with PLAIN and restarts: ready to resume or bind. */
async function authenticate(stack: Stack, user: string): Promise<RawClient> {
  const raw = await RawClient.open(stack.wsUrl);
  raw.open();
  await raw.next('</stream:features>');
  raw.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${user}\0pw`).toString('base64')}</auth>`);
  await raw.next('<success');
  raw.open();
  const features = await raw.next('</stream:features>');
  expect(features).toContain(`<sm xmlns="${SM}"/>`);
  return raw;
}

/** Makes a and b contacts with mutual subscriptions, through the store (the roster is not under test here). */
async function befriend(stack: Stack, a: string, b: string): Promise<void> {
  await stack.store.putRosterItem(a, { jid: b, groups: [], subscription: 'both' });
  await stack.store.putRosterItem(b, { jid: a, groups: [], subscription: 'both' });
}

/** @xmpp/client's stream management emits 'resumed' at run time; its published type leaves the emitter out. */
const smEvents = (client: XmppJsClient) => client.streamManagement as XmppJsClient['streamManagement'] & EventEmitter;

/**
 * Sends through a client that may be between connections (cut, resuming): a send that fails
 * before it left is sent again once the client is back; one that left is @xmpp/client's to resend
 * (its XEP-0198 queue), so nothing goes twice.
 */
async function sendWhileReconnecting(client: Awaited<ReturnType<typeof connectXmppJs>>['client'], el: ReturnType<typeof xml>): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      if (client.status === 'online') return await client.send(el);
    } catch {
      // not sent: the socket went away under it
    }
    await sleep(100);
  }
  throw new Error('the client did not come back');
}

const bodies = (frames: string[]) => frames.map((f) => /<body>([^<]*)<\/body>/.exec(f)?.[1]).filter((b): b is string => b !== undefined);

describe('XEP-0198 stream management', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack();
    for (const user of ['ann', 'bob', 'cat', 'dan', 'eve', 'fay']) await addUser(stack.store, `${user}@localhost`, 'pw');
  });
  afterAll(() => stack?.stop());

  it('enables with resumption, counts both ways, asks for acknowledgements and survives a count that runs ahead', async () => {
    const ann = await loginWithSm(stack, 'ann', 'phone');
    expect(ann.smId).toMatch(/\./);
    ann.raw.send(`<r xmlns="${SM}"/>`);
    expect(await ann.raw.next('<a ')).toContain('h="0"');
    ann.raw.send('<iq type="get" id="p1"><ping xmlns="urn:xmpp:ping"/></iq>');
    await ann.raw.next('id="p1"');
    ann.raw.send('<presence/>');
    ann.raw.send(`<r xmlns="${SM}"/>`);
    expect(await ann.raw.next('<a ')).toContain('h="2"');

    const bob = await RawClient.open(stack.wsUrl);
    await bob.login('bob', 'pw', 'desk');
    for (let i = 1; i <= 5; i++) bob.send(`<message to="${ann.jid}" type="chat"><body>m${i}</body></message>`);
    // The server asks after every fifth unacknowledged stanza (the ping result and the presence echo count too).
    await ann.raw.next(`<r xmlns="${SM}"/>`);
    ann.raw.send(`<a xmlns="${SM}" h="${ann.handled()}"/>`);
    // A count above what was sent (a post the gateway delivered twice is counted twice) does not
    // end the stream: the server reads the client's counts with that difference from now on.
    ann.raw.send(`<a xmlns="${SM}" h="99"/>`);
    ann.raw.send(`<r xmlns="${SM}"/>`);
    expect(await ann.raw.next('<a ')).toContain('h="2"');
    expect(ann.raw.frames.seen((f) => f.includes('stream:error'))).toEqual([]);
    bob.close();
  });

  it('refuses to enable before bind, twice, or to resume a session that is not there', async () => {
    const early = await authenticate(stack, 'cat');
    early.send(`<enable xmlns="${SM}" resume="true"/>`);
    expect(await early.next('<failed')).toContain('unexpected-request');
    early.send(`<resume xmlns="${SM}" previd="bm9wZQ.nope" h="0"/>`);
    expect(await early.next('<failed')).toContain('item-not-found');
    // The stream goes on: the client binds anew.
    early.send('<iq type="set" id="b1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>r</resource></bind></iq>');
    await early.next('<jid>');
    early.send(`<enable xmlns="${SM}"/>`);
    expect(await early.next('<enabled')).not.toContain('resume=');
    early.send(`<enable xmlns="${SM}"/>`);
    expect(await early.next('<failed')).toContain('unexpected-request');
    early.close();
  });

  it('resumes on a new connection after the socket died: unacknowledged stanzas resent in order, contacts see no flap', async () => {
    await befriend(stack, 'dan@localhost', 'eve@localhost');
    const eve = await RawClient.open(stack.wsUrl);
    const eveJid = await eve.login('eve', 'pw', 'laptop');
    eve.send('<presence/>');
    const dan = await loginWithSm(stack, 'dan', 'phone');
    dan.raw.send('<presence/>');
    await eve.next(/<presence[^>]*from="dan@localhost\/phone"/);
    eve.send(`<message to="${dan.jid}" type="chat"><body>before</body></message>`);
    await dan.raw.next('before');
    dan.raw.send(`<r xmlns="${SM}"/>`);
    const handled = Number(/h="(\d+)"/.exec(await dan.raw.next('<a '))![1]);
    const received = dan.handled();
    expect(received).toBeGreaterThanOrEqual(2); // at least eve's presence and the message

    dan.raw.ws.terminate(); // no stream close, no WebSocket close
    await sleep(300);
    for (let i = 1; i <= 4; i++) eve.send(`<message to="${dan.jid}" type="chat"><body>gap${i}</body></message>`);
    await sleep(500);

    const back = await authenticate(stack, 'dan');
    back.send(`<resume xmlns="${SM}" previd="${dan.smId}" h="${received}"/>`);
    const resumed = await back.next('<resumed');
    expect(resumed).toContain(`h="${handled}"`); // what dan sent (his presence): nothing of his is lost either
    for (let i = 1; i <= 4; i++) await back.next(`gap${i}`);
    await sleep(300);
    expect(bodies(back.frames.seen(() => true))).toEqual([]); // nothing twice: every body was waited for above
    // The session is the same: a new message reaches it, and eve never saw dan go.
    eve.send(`<message to="${dan.jid}" type="chat"><body>after</body></message>`);
    await back.next('after');
    expect(eve.frames.seen((f) => f.includes('from="dan@localhost/phone"') && f.includes('unavailable'))).toEqual([]);
    expect(eveJid).toBe('eve@localhost/laptop');
    back.close();
    eve.close();
  });

  it('resumes a real client (@xmpp/client) whose socket was killed, with every message once', async () => {
    const fay = await connectXmppJs(stack.wsUrl, 'fay', 'pw', 'tablet');
    const sm = (fay.client as unknown as { streamManagement: { id: string; enabled: boolean } }).streamManagement;
    await expect.poll(() => sm.enabled).toBe(true); // <enabled/> comes after the client is online
    const resumed = new Promise<void>((resolve) => smEvents(fay.client).on('resumed', resolve));
    const bob = await RawClient.open(stack.wsUrl);
    await bob.login('bob', 'pw', 'desk2');
    const socket = (fay.client as unknown as { socket: { socket: { terminate?: () => void; close: () => void } } }).socket.socket;
    (socket.terminate ?? socket.close).call(socket);
    for (let i = 1; i <= 10; i++) bob.send(`<message to="${fay.jid}" type="chat"><body>k${i}</body></message>`);
    await resumed;
    const got: string[] = [];
    for (let i = 1; i <= 10; i++) got.push((await fay.inbox.wait((s) => s.getChildText('body') === `k${i}`, `k${i}`)).getChildText('body')!);
    await sleep(500);
    expect(fay.inbox.seen((s) => /^k\d+$/.test(s.getChildText('body') ?? ''))).toEqual([]); // none twice
    expect(got).toHaveLength(10);
    bob.close();
    await fay.client.stop();
  });
});

describe('XEP-0198 when the resumption window ends', () => {
  let stack: Stack;
  const saved = process.env.XMPP_SM_RESUME_SECONDS;

  beforeAll(async () => {
    process.env.XMPP_SM_RESUME_SECONDS = '1';
    stack = await startTestStack();
    for (const user of ['gil', 'hal']) await addUser(stack.store, `${user}@localhost`, 'pw');
    await befriend(stack, 'gil@localhost', 'hal@localhost');
  });
  afterAll(async () => {
    if (saved === undefined) delete process.env.XMPP_SM_RESUME_SECONDS;
    else process.env.XMPP_SM_RESUME_SECONDS = saved;
    await stack?.stop();
  });

  it('ends the session, tells contacts, and keeps the unacknowledged messages offline; a late resume fails cleanly', async () => {
    const hal = await RawClient.open(stack.wsUrl);
    await hal.login('hal', 'pw', 'desk');
    hal.send('<presence/>');
    const gil = await loginWithSm(stack, 'gil', 'phone');
    gil.raw.send('<presence/>');
    await hal.next(/<presence[^>]*from="gil@localhost\/phone"/);
    gil.raw.ws.terminate();
    await sleep(300);
    for (let i = 1; i <= 3; i++) hal.send(`<message to="${gil.jid}" type="chat"><body>late${i}</body></message>`);
    // The window (1 s) ends: hal sees gil go, and the messages wait offline.
    await hal.frames.wait((f) => f.startsWith('<presence') && f.includes('from="gil@localhost/phone"') && f.includes('unavailable'), 'unavailable', 10_000);
    await expect.poll(async () => (await stack.store.listOffline('gil@localhost')).length, { timeout: 10_000 }).toBe(3);

    const back = await authenticate(stack, 'gil');
    back.send(`<resume xmlns="${SM}" previd="${gil.smId}" h="0"/>`);
    expect(await back.next('<failed')).toContain('item-not-found');
    back.send('<iq type="set" id="b2"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>phone</resource></bind></iq>');
    await back.next('<jid>');
    back.send('<presence/>');
    for (let i = 1; i <= 3; i++) expect(await back.next(`late${i}`)).toContain('Offline storage');
    back.close();
    hal.close();
  });
});

describe('XEP-0198 across the gateway lifetime cut', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack({ maxLifetimeSeconds: 2 });
    for (const user of ['ivy', 'jon']) await addUser(stack.store, `${user}@localhost`, 'pw');
    await befriend(stack, 'ivy@localhost', 'jon@localhost');
  });
  afterAll(() => stack?.stop());

  // Its own waits allow 20 s per message: on a loaded machine the whole run passes 30 s.
  it('cuts a busy session again and again without losing or doubling a message, and contacts see no flap', { timeout: 90_000 }, async () => {
    // Both are real clients that resume: the cut (every 2 s) hits the sender's socket too.
    const jon = await connectXmppJs(stack.wsUrl, 'jon', 'pw', 'desk');
    const ivy = await connectXmppJs(stack.wsUrl, 'ivy', 'pw', 'phone');
    let resumptions = 0;
    smEvents(ivy.client).on('resumed', () => resumptions++);
    await jon.client.send(xml('presence'));
    await ivy.client.send(xml('presence'));
    await jon.inbox.wait((s) => s.is('presence') && s.attrs.from === 'ivy@localhost/phone', 'ivy available');
    const total = 60;
    for (let i = 1; i <= total; i++) {
      await sendWhileReconnecting(jon.client, xml('message', { to: ivy.jid, type: 'chat' }, xml('body', {}, `n${i}`)));
      await sleep(100); // 6 s of traffic: cuts at 2, 4 and 6 s
    }
    const received: string[] = [];
    for (let i = 1; i <= total; i++) received.push((await ivy.inbox.wait((s) => s.getChildText('body') === `n${i}`, `n${i}`, 20_000)).getChildText('body')!);
    await sleep(500);
    expect(ivy.inbox.seen((s) => /^n\d+$/.test(s.getChildText('body') ?? ''))).toEqual([]); // none twice
    expect(received).toHaveLength(total);
    expect(resumptions).toBeGreaterThanOrEqual(2);
    const flaps = jon.inbox.seen((s) => s.is('presence') && s.attrs.from === 'ivy@localhost/phone' && s.attrs.type === 'unavailable');
    expect(flaps).toEqual([]);
    await ivy.client.stop();
    await jon.client.stop();
  });
});
