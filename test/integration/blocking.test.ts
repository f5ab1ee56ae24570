/**
 * XEP-0191 Blocking Command through the local stack with StanzaJS and @xmpp/client: blocked
 * contacts can neither message nor see presence (both ways), iqs are refused, block list pushes
 * reach every resource, unblocking restores presence and messages.
 */
import type { Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { befriend, record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };
const agents: Agent[] = [];
const stoppers: (() => Promise<unknown>)[] = [];

async function login(user: string, resource: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  agents.push(c);
  return c;
}

/** A chat message from `from` to `to` and back as a marker: what was sent before it has arrived. */
async function roundTrip(from: Agent, to: Agent, body: string): Promise<void> {
  const got = new Promise<void>((resolve) => {
    const on = (m: any) => {
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
  for (const user of ['bea', 'bo', 'cy']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  for (const c of agents) c.disconnect();
  for (const stop of stoppers) await stop().catch(() => {});
  await stack?.stop();
});

describe('blocking a contact', () => {
  let bea: Agent;
  let bea2: Agent;
  let bo: Agent;
  let cy: Agent;

  it('blocks: the contact sees the user go offline, every resource of the user gets the push', async () => {
    bea = await login('bea', 'main');
    bo = await login('bo', 'main');
    cy = await login('cy', 'main');
    await befriend(bea, bo);
    await befriend(bea, cy);
    bea2 = await login('bea', 'second');
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
    const boErrors = new Promise<any>((resolve) => bo.on('message:error', (m: any) => resolve(m)));
    bo.sendMessage({ to: 'bea@localhost', type: 'chat', body: 'can you hear me?' });
    expect((await boErrors).error.condition).toBe('service-unavailable');

    const raw = await connectXmppJs(stack.wsUrl, 'bea', 'bea-pass', 'raw');
    stoppers.push(() => raw.client.stop());
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
    const bo2 = await login('bo', 'new');
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
    const cy = await login('cy', 'lists');
    await cy.block('elsewhere.example');
    await cy.block('bea@localhost/main');
    expect((await cy.getBlocked()).jids!.sort()).toEqual(['bea@localhost/main', 'elsewhere.example']);
    const raw = await connectXmppJs(stack.wsUrl, 'cy', 'cy-pass', 'raw');
    stoppers.push(() => raw.client.stop());
    await raw.client.send(xml('message', { to: 'someone@elsewhere.example', type: 'chat', id: 'd1' }, xml('body', {}, 'hi')));
    const refused = await raw.inbox.wait((s) => s.is('message') && s.attrs.id === 'd1', 'refusal');
    expect(refused.getChild('error')!.getChild('blocked', 'urn:xmpp:blocking:errors')).toBeDefined();
    // an empty <unblock/> clears the list
    await raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('unblock', { xmlns: 'urn:xmpp:blocking' })));
    expect((await cy.getBlocked()).jids ?? []).toEqual([]);
  });

  it('refuses an empty block and malformed JIDs, and advertises the feature', async () => {
    const raw = await connectXmppJs(stack.wsUrl, 'cy', 'cy-pass', 'bad');
    stoppers.push(() => raw.client.stop());
    await expect(raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' })))).rejects.toThrow(/bad-request/);
    await expect(
      raw.client.iqCaller.request(xml('iq', { type: 'set' }, xml('block', { xmlns: 'urn:xmpp:blocking' }, xml('item', { jid: 'a@@b' })))),
    ).rejects.toThrow(/jid-malformed/);
    const cy = await login('cy', 'disco');
    expect((await cy.getDiscoInfo('localhost')).features).toContain('urn:xmpp:blocking');
  });
});
