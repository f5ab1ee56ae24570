/**
 * XEP-0191 Blocking Command through the local stack with StanzaJS and @xmpp/client: blocked
 * contacts can neither message nor see presence (both ways), iqs are refused, block list pushes
 * reach every resource, unblocking restores presence and messages.
 */
import type { Agent, Stanzas } from 'stanza';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { addFreshUser, addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { befriend, record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };

/** A StanzaJS client, disconnected by whoever connected it. */
function login(user: string, resource: string): Promise<Agent> {
  return connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
}

/** login, for a test: disconnected when the test ends, whatever its outcome. */
async function testLogin(user: string, resource: string): Promise<Agent> {
  const c = await login(user, resource);
  onTestFinished(() => c.disconnect());
  return c;
}

/** An @xmpp/client connection for a test: stopped when the test ends, whatever its outcome. */
async function testXmppJs(user: string, resource: string) {
  const c = await connectXmppJs(stack.wsUrl, user, `${user}-pass`, resource);
  onTestFinished(async () => {
    await c.client.stop().catch(() => {});
  });
  return c;
}

/** A chat message from `from` to `to` and back as a marker: what was sent before it has arrived. */
async function roundTrip(from: Agent, to: Agent, body: string): Promise<void> {
  const got = new Promise<void>((resolve) => {
    const on = (m: Stanzas.ReceivedMessage) => {
      if (m.body === body) {
        to.off('chat', on);
        resolve();
      }
    };
    to.on('chat', on);
  });
  from.sendMessage({ to: to.jid, type: 'chat', body });
  await got;
}

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.stop();
});

describe('blocking a contact', () => {
  // One story, test after test, with the same connected clients; the accounts are its own.
  let bea: Agent;
  let bea2: Agent;
  let bo: Agent;
  let cy: Agent;
  const clients: Agent[] = [];
  const storyLogin = async (user: string, resource: string) => {
    const c = await login(user, resource);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    for (const user of ['bea', 'bo', 'cy']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
  });

  afterAll(() => {
    for (const c of clients) c.disconnect();
  });

  it('blocks: the contact sees the user go offline, every resource of the user gets the push', async () => {
    bea = await storyLogin('bea', 'main');
    bo = await storyLogin('bo', 'main');
    cy = await storyLogin('cy', 'main');
    await befriend(bea, bo);
    await befriend(bea, cy);
    bea2 = await storyLogin('bea', 'second');
    const pushes = record(bea2, ['block', 'unblock']);
    await bea2.getRoster();
    const boEvents = record(bo, ['unavailable']);

    await bea.block('bo@localhost');
    const gone = await boEvents.wait((e) => e.kind === 'unavailable' && e.data.from === 'bea@localhost/main', 'unavailable from bea at bo');
    expect(gone.data.type).toBe('unavailable');
    const push = await pushes.wait((e) => e.kind === 'block', 'block push at the other resource');
    expect(push.data.jids).toEqual(['bo@localhost']);
    expect((await bea2.getBlocked()).jids).toEqual(['bo@localhost']);
  });

  it("drops the blocked contact's messages with service-unavailable, refuses the user's with <blocked/>", async () => {
    const beaMessages = record(bea, ['chat']);
    const boErrors = new Promise<Stanzas.Message>((resolve) => bo.on('message:error', (m) => resolve(m)));
    bo.sendMessage({ to: 'bea@localhost', type: 'chat', body: 'can you hear me?' });
    expect((await boErrors).error!.condition).toBe('service-unavailable');

    const raw = await testXmppJs('bea', 'raw');
    await raw.client.send(xml('message', { to: 'bo@localhost', type: 'chat', id: 'b1' }, xml('body', {}, 'hello?')));
    const refused = await raw.inbox.wait((s) => s.is('message') && s.attrs.type === 'error' && s.attrs.id === 'b1', 'refusal');
    expect(refused.getChild('error')!.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    expect(refused.getChild('error')!.getChild('blocked', 'urn:xmpp:blocking:errors')).toBeDefined();

    // nothing from bo reached bea: a message from cy, sent later, arrives first and alone
    await roundTrip(cy, bea, 'marker from cy');
    expect(beaMessages.seen((e) => e.data.from?.startsWith('bo@'))).toEqual([]);
  });

  it('hides presence both ways, also for new resources', async () => {
    const boSeen = record(bo, ['available']);
    bea.sendPresence({ status: 'busy' });
    await roundTrip(bea, cy, 'after the status change');
    // a new resource of bo sees neither bea's presence nor is seen by her
    const beaSeen = record(bea, ['available']);
    const bo2 = await storyLogin('bo', 'new');
    const bo2Seen = record(bo2, ['available']);
    await bo2.getRoster();
    bo2.sendPresence();
    await roundTrip(cy, bo2, 'marker for bo2');
    await roundTrip(cy, bea, 'marker for bea');
    expect(boSeen.seen((e) => e.data.from?.startsWith('bea@'))).toEqual([]);
    expect(bo2Seen.seen((e) => e.data.from?.startsWith('bea@'))).toEqual([]);
    expect(beaSeen.seen((e) => e.data.from?.startsWith('bo@'))).toEqual([]);
  });

  it('refuses iqs between them', async () => {
    await expect(bo.getVCard('bea@localhost')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    await expect(bo.ping('bea@localhost/main')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    await expect(bea.ping('bo@localhost/main')).rejects.toMatchObject({ error: { condition: 'not-acceptable' } });
  });

  it('unblocks: presence comes back both ways and messages flow', async () => {
    const pushes = record(bea2, ['unblock']);
    const boSeen = record(bo, ['available']);
    const beaSeen = record(bea, ['available']);
    await bea.unblock('bo@localhost');
    await boSeen.wait((e) => e.kind === 'available' && e.data.from === 'bea@localhost/main', 'bea available again at bo');
    await beaSeen.wait((e) => e.kind === 'available' && e.data.from === 'bo@localhost/main', 'bo available again at bea (probe)');
    expect((await pushes.wait((e) => e.kind === 'unblock', 'unblock push')).data.jids).toEqual(['bo@localhost']);
    await roundTrip(bo, bea, 'back in touch');
    expect((await bea.getBlocked()).jids).toEqual([]);
  });
});

describe('block list management', () => {
  it('blocks whole domains and unblocks everything at once', async () => {
    const cyUser = await addFreshUser(stack.store, 'cy');
    const cy = await testLogin(cyUser, 'lists');
    await cy.block('elsewhere.example');
    await cy.block('bea@localhost/main');
    expect((await cy.getBlocked()).jids!.sort()).toEqual(['bea@localhost/main', 'elsewhere.example']);
    const raw = await testXmppJs(cyUser, 'raw');
    await raw.client.send(xml('message', { to: 'someone@elsewhere.example', type: 'chat', id: 'd1' }, xml('body', {}, 'hi')));
    const refused = await raw.inbox.wait((s) => s.is('message') && s.attrs.id === 'd1', 'refusal');
    expect(refused.getChild('error')!.getChild('blocked', 'urn:xmpp:blocking:errors')).toBeDefined();
    // an empty <unblock/> clears the list
    await raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('unblock', { xmlns: 'urn:xmpp:blocking' })));
    expect((await cy.getBlocked()).jids ?? []).toEqual([]);
  });

  it('refuses an empty block and malformed JIDs, and advertises the feature', async () => {
    const cyUser = await addFreshUser(stack.store, 'cy');
    const raw = await testXmppJs(cyUser, 'bad');
    await expect(raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' })))).rejects.toThrow(/bad-request/);
    await expect(
      raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: 'a@@b' })))),
    ).rejects.toThrow(/jid-malformed/);
    const cy = await testLogin(cyUser, 'disco');
    expect((await cy.getDiscoInfo('localhost')).features).toContain('urn:xmpp:blocking');
  });
});
