/**
 * XEP-0280 carbons through the local stack: a user on two devices (StanzaJS) sees both sides of a
 * conversation held on either; private messages and disabled sessions get no copies.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Agent } from 'stanza';
import { addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { record, type EventLog } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['alice', 'bob', 'carol']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

type Device = { c: Agent; events: EventLog<'chat' | 'carbon:received' | 'carbon:sent' | 'message'> };

async function device(name: string, resource: string, priority = 0): Promise<Device> {
  const c = await connectStanza(stack.wsUrl, `${name}@localhost`, `${name}-pass`, resource);
  const events = record(c, ['chat', 'carbon:received', 'carbon:sent', 'message']);
  c.sendPresence({ priority });
  return { c, events };
}

/** The bodies of the carbons (received or sent) a device got that no test waited for. */
const carbonBodies = (d: Device) => [...d.events.seenOf('carbon:received'), ...d.events.seenOf('carbon:sent')].map((e) => e.data.carbon.forward.message!.body);

describe('message carbons', () => {
  // One story on the same three devices, test after test (carbons enabled, disabled, enabled again).
  let laptop: Device;
  let phone: Device;
  let bob: Device;

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
    const original = await laptop.events.waitFor('chat', (e) => e.data.body === 'to your best device' && !e.data.carbon, 'original at laptop');
    expect(original.data.from).toBe('bob@localhost/desk');
    const copy = await phone.events.waitFor('carbon:received', undefined, 'received carbon at phone');
    expect(copy.data.from).toBe('alice@localhost');
    const inner = copy.data.carbon.forward.message!;
    expect(inner).toMatchObject({ from: 'bob@localhost/desk', to: 'alice@localhost', body: 'to your best device' });
    // The copy carries the archive id the original got (XEP-0313 §4.2 with carbons).
    expect(inner.stanzaIds).toEqual(original.data.stanzaIds);
    expect(laptop.events.seenOf('carbon:received')).toEqual([]);
  });

  it('copies a message addressed to one full JID to the other device', async () => {
    bob.c.sendMessage({ to: 'alice@localhost/phone', type: 'chat', body: 'phone only' });
    await phone.events.waitFor('chat', (e) => e.data.body === 'phone only' && !e.data.carbon, 'original at phone');
    const copy = await laptop.events.waitFor('carbon:received', undefined, 'received carbon at laptop');
    expect(copy.data.carbon.forward.message!.body).toBe('phone only');
  });

  it('copies what one device sends to the other (sent), not back to the sender', async () => {
    laptop.c.sendMessage({ to: 'bob@localhost/desk', type: 'chat', body: 'sent from laptop', id: 'laptop-1' });
    await bob.events.waitFor('chat', (e) => e.data.body === 'sent from laptop', 'at bob');
    const copy = await phone.events.waitFor('carbon:sent', undefined, 'sent carbon at phone');
    expect(copy.data.from).toBe('alice@localhost');
    expect(copy.data.carbon.forward.message).toMatchObject({ from: 'alice@localhost/laptop', to: 'bob@localhost/desk', id: 'laptop-1', body: 'sent from laptop' });
    expect(laptop.events.seenOf('carbon:sent')).toEqual([]);
  });

  it('makes no copies of messages marked <private/> or <no-copy/>', async () => {
    // StanzaJS cannot write <private/>: a third device with @xmpp/client sends it by hand.
    const tablet = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'tablet');
    onTestFinished(async () => {
      await tablet.client.stop();
    });
    await tablet.client.send(
      xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'for bob only'), xml('private', { xmlns: 'urn:xmpp:carbons:2' })),
    );
    await tablet.client.send(xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'no copy please'), xml('no-copy', { xmlns: 'urn:xmpp:hints' })));
    await bob.events.waitFor('chat', (e) => e.data.body === 'no copy please', 'private at bob');
    // A later ordinary message proves the private ones would have been copied by now.
    await tablet.client.send(xml('message', { to: 'bob@localhost/desk', type: 'chat' }, xml('body', {}, 'public again')));
    await phone.events.waitFor('carbon:sent', (e) => e.data.carbon.forward.message!.body === 'public again', 'later copy');
    const copied = phone.events.seenOf('carbon:sent').map((e) => e.data.carbon.forward.message!.body);
    expect(copied).not.toContain('for bob only');
    expect(copied).not.toContain('no copy please');
  });

  it('stops copying to a device that disables carbons, and accepts repeated requests', async () => {
    await phone.c.disableCarbons();
    await phone.c.disableCarbons();
    bob.c.sendMessage({ to: 'alice@localhost/laptop', type: 'chat', body: 'laptop, no copy' });
    laptop.c.sendMessage({ to: 'bob@localhost/desk', type: 'chat', body: 'sent while phone opted out' });
    await bob.events.waitFor('chat', (e) => e.data.body === 'sent while phone opted out', 'at bob');
    await laptop.events.waitFor('chat', (e) => e.data.body === 'laptop, no copy', 'at laptop');
    await phone.c.enableCarbons();
    await phone.c.enableCarbons();
    bob.c.sendMessage({ to: 'alice@localhost/laptop', type: 'chat', body: 'copies again' });
    await phone.events.waitFor('carbon:received', (e) => e.data.carbon.forward.message!.body === 'copies again', 'copy after re-enable');
    const copied = carbonBodies(phone);
    expect(copied).not.toContain('laptop, no copy');
    expect(copied).not.toContain('sent while phone opted out');
  });

  it('refuses to switch carbons for someone else', async () => {
    const raw = await connectXmppJs(stack.wsUrl, 'carol', 'carol-pass', 'x');
    onTestFinished(async () => {
      await raw.client.stop();
    });
    await expect(
      raw.client.iqCaller.request(xml('iq', { type: 'set', to: 'alice@localhost' }, xml('enable', { xmlns: 'urn:xmpp:carbons:2' }))),
    ).rejects.toThrow(/not-allowed/);
  });

  it('copies neither group chat messages nor private messages from a room occupant', async () => {
    const room = 'carbons@conference.localhost';
    await laptop.c.joinRoom(room, 'Alice');
    await laptop.c.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }] });
    await bob.c.joinRoom(room, 'Bob');
    bob.c.sendMessage({ to: room, type: 'groupchat', body: 'hello room' });
    bob.c.sendMessage({ to: `${room}/Alice`, type: 'chat', body: 'psst' });
    await laptop.events.waitFor('chat', (e) => e.data.body === 'psst', 'pm at laptop');
    // A private message the laptop sends to an occupant is copied to the phone (§6.1).
    laptop.c.sendMessage({ to: `${room}/Bob`, type: 'chat', body: 'psst back' });
    const sent = await phone.events.waitFor('carbon:sent', (e) => e.data.carbon.forward.message!.body === 'psst back', 'sent pm copy');
    expect(sent.data.carbon.forward.message!.to).toBe(`${room}/Bob`);
    const copied = carbonBodies(phone);
    expect(copied).not.toContain('hello room');
    expect(copied).not.toContain('psst');
  });
});
