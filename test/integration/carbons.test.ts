/**
 * XEP-0280 carbons through the local stack: a user on two devices (StanzaJS) sees both sides of a
 * conversation held on either; private messages and disabled sessions get no copies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from 'stanza';
import { Inbox, addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['alice', 'bob', 'carol']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

type Event = { kind: string; data: any };

async function device(name: string, resource: string, priority = 0): Promise<{ c: Agent; events: Inbox<Event> }> {
  const c = await connectStanza(stack.wsUrl, `${name}@localhost`, `${name}-pass`, resource);
  const events = new Inbox<Event>();
  for (const kind of ['chat', 'carbon:received', 'carbon:sent', 'message', 'message:sent']) c.on(kind as any, (data: any, ...rest: any[]) => events.push({ kind, data: rest.length ? [data, ...rest] : data }));
  c.sendPresence({ priority } as any);
  return { c, events };
}

describe('message carbons', () => {
  let laptop: Awaited<ReturnType<typeof device>>;
  let phone: Awaited<ReturnType<typeof device>>;
  let bob: Awaited<ReturnType<typeof device>>;

  beforeAll(async () => {
    laptop = await device('alice', 'laptop', 5);
    phone = await device('alice', 'phone', 1);
    bob = await device('bob', 'desk');
    await laptop.c.enableCarbons();
    await phone.c.enableCarbons();
  });

  afterAll(() => {
    for (const d of [laptop, phone, bob]) d?.c.disconnect();
  });

  it('is advertised by the server', async () => {
    const info = await laptop.c.getDiscoInfo('localhost');
    expect(info.features).toContain('urn:xmpp:carbons:2');
    // The §6.1 rules are followed except for errors answering eligible messages: not claimed.
    expect(info.features).not.toContain('urn:xmpp:carbons:rules:0');
  });

  it('copies a message received on one device to the other (received)', async () => {
    bob.c.sendMessage({ to: 'alice@localhost', type: 'chat', body: 'to your best device' });
    const original = await laptop.events.wait((e) => e.kind === 'chat' && e.data.body === 'to your best device' && !e.data.carbon, 'original at laptop');
    expect(original.data.from).toBe('bob@localhost/desk');
    const copy = await phone.events.wait((e) => e.kind === 'carbon:received', 'received carbon at phone');
    expect(copy.data.from).toBe('alice@localhost');
    const inner = copy.data.carbon.forward.message;
    expect(inner).toMatchObject({ from: 'bob@localhost/desk', to: 'alice@localhost', body: 'to your best device' });
    // The copy carries the archive id the original got (XEP-0313 §4.2 with carbons).
    expect(inner.stanzaIds).toEqual(original.data.stanzaIds);
    expect(laptop.events.seen((e) => e.kind === 'carbon:received')).toEqual([]);
  });

  it('copies a message addressed to one full JID to the other device', async () => {
    bob.c.sendMessage({ to: 'alice@localhost/phone', type: 'chat', body: 'phone only' });
    await phone.events.wait((e) => e.kind === 'chat' && e.data.body === 'phone only' && !e.data.carbon, 'original at phone');
    const copy = await laptop.events.wait((e) => e.kind === 'carbon:received', 'received carbon at laptop');
    expect(copy.data.carbon.forward.message.body).toBe('phone only');
  });

  it('copies what one device sends to the other (sent), not back to the sender', async () => {
    laptop.c.sendMessage({ to: 'bob@localhost/desk', type: 'chat', body: 'sent from laptop', id: 'laptop-1' });
    await bob.events.wait((e) => e.kind === 'chat' && e.data.body === 'sent from laptop', 'at bob');
    const copy = await phone.events.wait((e) => e.kind === 'carbon:sent', 'sent carbon at phone');
    expect(copy.data.from).toBe('alice@localhost');
    expect(copy.data.carbon.forward.message).toMatchObject({ from: 'alice@localhost/laptop', to: 'bob@localhost/desk', id: 'laptop-1', body: 'sent from laptop' });
    expect(laptop.events.seen((e) => e.kind === 'carbon:sent')).toEqual([]);
  });

  it('makes no copies of messages marked <private/> or <no-copy/>', async () => {
    // StanzaJS cannot write <private/>: a third device with @xmpp/client sends it by hand.
    const tablet = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'tablet');
    await tablet.client.send(
      xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'for bob only'), xml('private', { xmlns: 'urn:xmpp:carbons:2' })),
    );
    await tablet.client.send(xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'no copy please'), xml('no-copy', { xmlns: 'urn:xmpp:hints' })));
    await bob.events.wait((e) => e.kind === 'chat' && e.data.body === 'no copy please', 'private at bob');
    // A later ordinary message proves the private ones would have been copied by now.
    await tablet.client.send(xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'public again')));
    await phone.events.wait((e) => e.kind === 'carbon:sent' && e.data.carbon.forward.message.body === 'public again', 'later copy');
    const copied = phone.events.seen((e) => e.kind === 'carbon:sent').map((e) => e.data.carbon.forward.message.body);
    expect(copied).not.toContain('for bob only');
    expect(copied).not.toContain('no copy please');
    await tablet.client.stop();
  });

  it('stops copying to a device that disables carbons, and accepts repeated requests', async () => {
    await phone.c.disableCarbons();
    await phone.c.disableCarbons();
    bob.c.sendMessage({ to: 'alice@localhost/laptop', type: 'chat', body: 'laptop, no copy' });
    laptop.c.sendMessage({ to: 'bob@localhost/desk', type: 'chat', body: 'sent while phone opted out' });
    await bob.events.wait((e) => e.kind === 'chat' && e.data.body === 'sent while phone opted out', 'at bob');
    await laptop.events.wait((e) => e.kind === 'chat' && e.data.body === 'laptop, no copy', 'at laptop');
    await phone.c.enableCarbons();
    await phone.c.enableCarbons();
    bob.c.sendMessage({ to: 'alice@localhost/laptop', type: 'chat', body: 'copies again' });
    await phone.events.wait((e) => e.kind === 'carbon:received' && e.data.carbon.forward.message.body === 'copies again', 'copy after re-enable');
    const copied = phone.events.seen((e) => e.kind.startsWith('carbon:')).map((e) => e.data.carbon.forward.message.body);
    expect(copied).not.toContain('laptop, no copy');
    expect(copied).not.toContain('sent while phone opted out');
  });

  it('refuses to switch carbons for someone else', async () => {
    const raw = await connectXmppJs(stack.wsUrl, 'carol', 'carol-pass', 'x');
    await expect(
      raw.client.iqCaller.request(xml('iq', { type: 'set', to: 'alice@localhost' }, xml('enable', { xmlns: 'urn:xmpp:carbons:2' }))),
    ).rejects.toThrow(/not-allowed/);
    await raw.client.stop();
  });

  it('copies neither group chat messages nor private messages from a room occupant', async () => {
    const room = 'carbons@conference.localhost';
    await laptop.c.joinRoom(room, 'Alice');
    await laptop.c.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }] });
    await bob.c.joinRoom(room, 'Bob');
    bob.c.sendMessage({ to: room, type: 'groupchat', body: 'hello room' });
    bob.c.sendMessage({ to: `${room}/Alice`, type: 'chat', body: 'psst' });
    await laptop.events.wait((e) => e.kind === 'chat' && e.data.body === 'psst', 'pm at laptop');
    // A private message the laptop sends to an occupant is copied to the phone (§6.1).
    laptop.c.sendMessage({ to: `${room}/Bob`, type: 'chat', body: 'psst back' });
    const sent = await phone.events.wait((e) => e.kind === 'carbon:sent' && e.data.carbon.forward.message.body === 'psst back', 'sent pm copy');
    expect(sent.data.carbon.forward.message.to).toBe(`${room}/Bob`);
    const copied = phone.events.seen((e) => e.kind.startsWith('carbon:')).map((e) => e.data.carbon.forward.message.body);
    expect(copied).not.toContain('hello room');
    expect(copied).not.toContain('psst');
  });
});
