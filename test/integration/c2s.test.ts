/**
 * The core server end to end: real client libraries (@xmpp/client with SCRAM-SHA-1, StanzaJS with
 * SCRAM-SHA-256) through the local gateway, the stream Lambda's handler and DynamoDB Local.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RawClient, addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

describe('authentication', () => {
  it('logs in with @xmpp/client (SCRAM-SHA-1) and binds the requested resource', async () => {
    const { client, jid } = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'laptop');
    expect(jid).toBe('alice@localhost/laptop');
    await client.stop();
  });

  it('logs in with StanzaJS (SCRAM-SHA-256) and gets a server-generated resource', async () => {
    const c = await connectStanza(stack.wsUrl, 'bob@localhost', 'bob-pass');
    expect(c.jid).toMatch(/^bob@localhost\/.+/);
    c.disconnect();
  });

  it('refuses a wrong password with both libraries', async () => {
    await expect(connectXmppJs(stack.wsUrl, 'alice', 'wrong')).rejects.toThrow(/not-authorized/);
    await expect(connectStanza(stack.wsUrl, 'bob@localhost', 'wrong')).rejects.toThrow(/auth:failed/);
  });

  it('refuses an unknown user the same way as a wrong password', async () => {
    await expect(connectXmppJs(stack.wsUrl, 'nobody', 'x')).rejects.toThrow(/not-authorized/);
  });

  it('replaces an older session that binds the same resource (RFC 6120 §7.7.2.2)', async () => {
    const first = await RawClient.open(stack.wsUrl);
    await first.login('carol', 'carol-pass', 'phone');
    const second = await RawClient.open(stack.wsUrl);
    expect(await second.login('carol', 'carol-pass', 'phone')).toBe('carol@localhost/phone');
    expect(await first.next('<conflict')).toContain('urn:ietf:params:xml:ns:xmpp-streams');
    await first.closed;
    second.close();
  });
});

describe('roster, subscriptions and presence between two libraries', () => {
  it('runs the whole subscription handshake and shows presence both ways', async () => {
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'desk');
    const bob = await connectStanza(stack.wsUrl, 'bob@localhost', 'bob-pass', 'mobile');
    const bobEvents = record(bob, ['subscribe', 'subscribed', 'available', 'unavailable', 'roster:update', 'chat']);
    await alice.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    await alice.client.send(xml('presence'));
    await bob.getRoster();
    bob.sendPresence();

    // alice adds bob with a name and group, then asks to see his presence
    await alice.client.iqCaller.request(
      xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:roster' }, xml('item', { jid: 'bob@localhost', name: 'Bob' }, xml('group', {}, 'Friends')))),
    );
    await alice.client.send(xml('presence', { to: 'bob@localhost', type: 'subscribe' }));
    const pushAsk = await alice.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.ask === 'subscribe', 'roster push ask=subscribe');
    expect(pushAsk.getChild('query')!.getChild('item')!.attrs).toMatchObject({ jid: 'bob@localhost', subscription: 'none', name: 'Bob' });

    const request = await bobEvents.waitFor('subscribe', undefined, 'subscribe at bob');
    expect(request.data.from).toBe('alice@localhost');
    bob.acceptSubscription('alice@localhost');
    bob.subscribe('alice@localhost');

    const pushTo = await alice.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.subscription === 'to', 'push subscription=to');
    expect(pushTo.getChild('query')!.getChild('item')!.getChildText('group')).toBe('Friends');
    await alice.inbox.wait((s) => s.is('presence') && s.attrs.from === 'bob@localhost/mobile' && !s.attrs.type, 'bob available at alice');

    await alice.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === 'bob@localhost', 'subscribe at alice');
    await alice.client.send(xml('presence', { to: 'bob@localhost', type: 'subscribed' }));
    await alice.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.subscription === 'both', 'push subscription=both');
    const available = await bobEvents.waitFor('available', (e) => e.data.from === 'alice@localhost/desk', 'alice available at bob');
    expect(available.data.from).toBe('alice@localhost/desk');

    const aliceRoster = await alice.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    expect(aliceRoster.getChild('query')!.getChildren('item').map((i) => i.attrs)).toEqual([
      expect.objectContaining({ jid: 'bob@localhost', subscription: 'both', name: 'Bob' }),
    ]);
    const bobRoster = await bob.getRoster();
    expect(bobRoster.items).toEqual([expect.objectContaining({ jid: 'alice@localhost', subscription: 'both' })]);

    // chat both ways, to the bare JID and to the full JID
    await alice.client.send(xml('message', { to: 'bob@localhost', type: 'chat', id: 'm1' }, xml('body', {}, 'hi bob')));
    const chat = await bobEvents.waitFor('chat', (e) => e.data.body === 'hi bob', 'chat at bob');
    expect(chat.data.from).toBe('alice@localhost/desk');
    bob.sendMessage({ to: 'alice@localhost/desk', type: 'chat', body: 'hi alice' });
    const reply = await alice.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'hi alice', 'chat at alice');
    expect(reply.attrs.from).toBe('bob@localhost/mobile');

    // logging out: the contact sees unavailable
    await alice.client.stop();
    const gone = await bobEvents.waitFor('unavailable', (e) => e.data.from === 'alice@localhost/desk', 'alice unavailable at bob');
    expect(gone.data.type).toBe('unavailable');

    // the socket just dropping (no </close>) ends the session the same way
    const again = await RawClient.open(stack.wsUrl);
    await again.login('alice', 'alice-pass', 'tablet');
    again.send('<presence/>');
    await bobEvents.waitFor('available', (e) => e.data.from === 'alice@localhost/tablet', 'alice/tablet available');
    again.ws.terminate();
    await bobEvents.waitFor('unavailable', (e) => e.data.from === 'alice@localhost/tablet', 'alice/tablet unavailable after drop');
    bob.disconnect();
  });

  it('removes a contact: both subscriptions end and the roster push says remove', async () => {
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'rm');
    await alice.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    await alice.client.iqCaller.request(
      xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:roster' }, xml('item', { jid: 'bob@localhost', subscription: 'remove' }))),
    );
    await alice.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.subscription === 'remove', 'remove push');
    expect(await stack.store.getRosterItem('alice@localhost', 'bob@localhost')).toBeUndefined();
    expect((await stack.store.getRosterItem('bob@localhost', 'alice@localhost'))?.subscription).toBe('none');
    await expect(
      alice.client.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:roster' }, xml('item', { jid: 'bob@localhost', subscription: 'remove' })))),
    ).rejects.toThrow(/item-not-found/);
    await alice.client.stop();
  });

  it('answers a versioned roster request that is up to date with an empty result', async () => {
    const dave = await connectXmppJs(stack.wsUrl, 'dave', 'dave-pass');
    const first = await dave.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster', ver: '' })));
    const ver = first.getChild('query')!.attrs.ver;
    expect(ver).toBeDefined();
    const second = await dave.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster', ver })));
    expect(second.getChild('query')).toBeUndefined();
    await dave.client.stop();
  });
});

describe('message routing', () => {
  it('sends bare-JID messages to the highest priority resource and full-JID ones where addressed', async () => {
    const high = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'high');
    const low = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'low');
    const negative = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'negative');
    await high.client.send(xml('presence', {}, xml('priority', {}, '5')));
    await low.client.send(xml('presence', {}, xml('priority', {}, '1')));
    await negative.client.send(xml('presence', {}, xml('priority', {}, '-1')));
    // each resource sees its siblings' presence: wait until all three are known everywhere
    await high.inbox.wait((s) => s.is('presence') && s.attrs.from === 'erin@localhost/negative', 'sibling presence');

    const sender = await connectStanza(stack.wsUrl, 'frank@localhost', 'frank-pass', 'x');
    sender.sendMessage({ to: 'erin@localhost', type: 'chat', body: 'to bare' });
    sender.sendMessage({ to: 'erin@localhost/low', type: 'chat', body: 'to low' });
    sender.sendMessage({ to: 'erin@localhost/negative', type: 'chat', body: 'to negative' });
    sender.sendMessage({ to: 'erin@localhost/gone', type: 'chat', body: 'to absent resource' });

    await high.inbox.wait((s) => s.getChildText('body') === 'to bare', 'bare at high');
    await low.inbox.wait((s) => s.getChildText('body') === 'to low', 'full at low');
    await negative.inbox.wait((s) => s.getChildText('body') === 'to negative', 'full at negative');
    await high.inbox.wait((s) => s.getChildText('body') === 'to absent resource', 'absent resource falls back to bare');
    // The bare-JID message went to the top priority only; sent first, so it would have arrived by now.
    expect(low.inbox.seen((s) => s.getChildText('body') === 'to bare')).toEqual([]);
    expect(negative.inbox.seen((s) => s.getChildText('body') === 'to bare')).toEqual([]);
    for (const c of [high, low, negative]) await c.client.stop();
    sender.disconnect();
  });

  it('stores messages for an offline user and delivers them with a delay stamp at login', async () => {
    const sender = await connectXmppJs(stack.wsUrl, 'frank', 'frank-pass', 'desk');
    await sender.client.send(xml('message', { to: 'dave@localhost', type: 'chat' }, xml('body', {}, 'while you were out 1')));
    await sender.client.send(xml('message', { to: 'dave@localhost/phone', type: 'chat' }, xml('body', {}, 'while you were out 2')));
    // a ping round trip guarantees both messages were processed (frames of one socket are in order)
    await sender.client.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    await sender.client.stop();

    const dave = await connectXmppJs(stack.wsUrl, 'dave', 'dave-pass', 'phone');
    await dave.client.send(xml('presence'));
    const first = await dave.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'while you were out 1', 'offline 1');
    await dave.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'while you were out 2', 'offline 2');
    expect(first.attrs.from).toBe('frank@localhost/desk');
    expect(first.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp).toMatch(/^\d{4}-\d\d-\d\dT/);
    // deleted once delivered
    await vi.waitFor(async () => expect(await stack.store.listOffline('dave@localhost')).toEqual([]));
    await dave.client.stop();
  });

  it('answers a message to an unknown user with service-unavailable', async () => {
    const c = await connectXmppJs(stack.wsUrl, 'frank', 'frank-pass', 'err');
    await c.client.send(xml('message', { to: 'nobody@localhost', type: 'chat', id: 'x1' }, xml('body', {}, 'hello?')));
    const error = await c.inbox.wait((s) => s.is('message') && s.attrs.type === 'error', 'error reply');
    expect(error.attrs).toMatchObject({ id: 'x1', from: 'nobody@localhost' });
    expect(error.getChild('error')!.getChild('service-unavailable')).toBeDefined();
    await c.client.stop();
  });

  it('bounces stanzas for other domains with remote-server-not-found while federation is off', async () => {
    const c = await connectXmppJs(stack.wsUrl, 'frank', 'frank-pass', 'remote');
    await c.client.send(xml('message', { to: 'someone@elsewhere.example', type: 'chat', id: 'r1' }, xml('body', {}, 'hi')));
    const error = await c.inbox.wait((s) => s.is('message') && s.attrs.type === 'error', 'bounce');
    expect(error.getChild('error')!.getChild('remote-server-not-found')).toBeDefined();
    await c.client.stop();
  });
});

describe('server services', () => {
  it('answers disco#info, ping, version and refuses unknown namespaces', async () => {
    const c = await connectStanza(stack.wsUrl, 'carol@localhost', 'carol-pass', 'svc');
    const info = await c.getDiscoInfo('localhost');
    // The server itself, and PEP (on the server JID as well as on accounts).
    expect(info.identities).toEqual([expect.objectContaining({ category: 'server', type: 'im' }), expect.objectContaining({ category: 'pubsub', type: 'pep' })]);
    expect(info.features).toEqual(expect.arrayContaining(['http://jabber.org/protocol/disco#info', 'urn:xmpp:ping', 'jabber:iq:version', 'msgoffline']));
    await c.ping('localhost'); // rejects on an error reply
    const version = await c.getSoftwareVersion('localhost');
    expect(version.name).toBe('serverless-xmpp');
    await expect(c.sendIQ({ type: 'get', to: 'localhost', vcard: {} })).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    c.disconnect();
  });
});
