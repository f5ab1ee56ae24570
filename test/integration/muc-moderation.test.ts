/**
 * XEP-0425 moderated message retraction with @xmpp/client, through two stream handler instances:
 * a moderator retracts an occupant's message for everyone; the archive keeps a tombstone (no body)
 * and the announcement; others may not; two moderators retracting one message at the same moment
 * announce it once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const MUC = 'http://jabber.org/protocol/muc';
const MODERATE = 'urn:xmpp:message-moderate:1';
const RETRACT = 'urn:xmpp:message-retract:1';
const MAM = 'urn:xmpp:mam:2';
let stack: LocalStack & { store: DynamoStore };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  stack = await startTestStack({ handlerInstances: 2 });
  for (const user of ['alice', 'bob', 'carol', 'dave']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

type Client = Awaited<ReturnType<typeof connectXmppJs>>;

async function join(c: Client, room: string, nick: string): Promise<void> {
  await c.client.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: MUC })));
  await c.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/${nick}`, `${nick}'s self-presence`);
}

/** alice creates and opens the room; dave is made admin (a moderator too); bob and carol join. */
async function roomWithEveryone(room: string): Promise<Record<'alice' | 'bob' | 'carol' | 'dave', Client>> {
  const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', `mod-${room}`);
  await join(alice, room, 'alice');
  await alice.client.iqCaller.request(
    xml('iq', { type: 'set', to: room }, xml('query', { xmlns: `${MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))),
  );
  await alice.client.iqCaller.request(
    xml('iq', { type: 'set', to: room }, xml('query', { xmlns: `${MUC}#admin` }, xml('item', { jid: 'dave@localhost', affiliation: 'admin' }))),
  );
  const others = {} as Record<'bob' | 'carol' | 'dave', Client>;
  for (const name of ['bob', 'carol', 'dave'] as const) {
    others[name] = await connectXmppJs(stack.wsUrl, name, `${name}-pass`, `m-${room}`);
    await join(others[name], room, name);
  }
  return { alice, ...others };
}

/** bob says something; resolves with the stanza-id the room gave it. */
async function bobSays(clients: Record<string, Client>, room: string, text: string): Promise<string> {
  await clients.bob!.client.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, text)));
  const seen = await clients.carol!.inbox.wait((s) => s.getChildText('body') === text, text);
  return seen.getChild('stanza-id', 'urn:xmpp:sid:0')!.attrs.id as string;
}

const moderate = (room: string, id: string, reason?: string) =>
  xml('iq', { type: 'set', to: room }, xml('moderate', { xmlns: MODERATE, id }, xml('retract', { xmlns: RETRACT }), ...(reason ? [xml('reason', {}, reason)] : [])));

const isAnnouncement = (room: string, id: string) => (s: ReturnType<typeof xml>) =>
  s.is('message') && s.attrs.from === room && s.getChild('retract', RETRACT)?.attrs.id === id;

describe('XEP-0425 moderated retraction', () => {
  it('retracts for everyone, leaves a tombstone in the archive, and is advertised', async () => {
    const room = 'moderated@conference.localhost';
    const c = await roomWithEveryone(room);
    const info = await c.carol.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    expect(info.getChild('query')!.getChildren('feature').map((f: ReturnType<typeof xml>) => f.attrs.var)).toContain(MODERATE);
    const id = await bobSays(c, room, 'buy cheap potions');

    await c.alice.client.iqCaller.request(moderate(room, id, 'spam'));
    for (const name of ['alice', 'bob', 'carol', 'dave'] as const) {
      const got = await c[name].inbox.wait(isAnnouncement(room, id), `the announcement at ${name}`);
      const retract = got.getChild('retract', RETRACT)!;
      expect(retract.getChild('moderated', MODERATE)!.attrs.by).toBe(`${room}/alice`);
      expect(retract.getChildText('reason')).toBe('spam');
    }

    // The archive: the message is a tombstone without its body, and the announcement follows it.
    const results: ReturnType<typeof xml>[] = [];
    c.carol.client.on('stanza', (s: ReturnType<typeof xml>) => {
      const message = s.getChild('result', MAM)?.getChild('forwarded', 'urn:xmpp:forward:0')?.getChild('message');
      if (message) results.push(message);
    });
    await c.carol.client.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: MAM })));
    const archived = results.map((m) => m.toString()).join('\n');
    expect(archived).not.toContain('buy cheap potions');
    const stone = results.find((m) => m.getChild('retracted', RETRACT));
    expect(stone!.getChild('retracted', RETRACT)!.getChild('moderated', MODERATE)!.attrs.by).toBe(`${room}/alice`);
    expect(results.some((m) => m.getChild('retract', RETRACT)?.attrs.id === id)).toBe(true);

    // Someone joining later gets no trace of the text in the history either.
    const late = await connectXmppJs(stack.wsUrl, 'carol', 'carol-pass', 'late');
    await join(late, room, 'carol-late');
    await sleep(300);
    expect(late.inbox.seen((s) => s.getChildText('body') === 'buy cheap potions')).toEqual([]);
    for (const client of [...Object.values(c), late]) await client.client.stop();
  });

  it('refuses a participant (forbidden) and an unknown message (item-not-found)', async () => {
    const room = 'strict@conference.localhost';
    const c = await roomWithEveryone(room);
    const id = await bobSays(c, room, 'mine');
    await expect(c.carol.client.iqCaller.request(moderate(room, id))).rejects.toMatchObject({ condition: 'forbidden' });
    await expect(c.alice.client.iqCaller.request(moderate(room, '1999-not-a-message'))).rejects.toMatchObject({ condition: 'item-not-found' });
    await sleep(300);
    expect(c.bob.inbox.seen(isAnnouncement(room, id))).toEqual([]);
    for (const client of Object.values(c)) await client.client.stop();
  });

  it('two moderators retracting one message at the same moment: one announcement, one tombstone', async () => {
    const room = 'race@conference.localhost';
    const c = await roomWithEveryone(room);
    const id = await bobSays(c, room, 'contested');
    await Promise.all([c.alice.client.iqCaller.request(moderate(room, id, 'by alice')), c.dave.client.iqCaller.request(moderate(room, id, 'by dave'))]);
    await c.carol.inbox.wait(isAnnouncement(room, id), 'the announcement');
    await sleep(800);
    expect(c.carol.inbox.seen(isAnnouncement(room, id))).toEqual([]); // no second one
    for (const client of Object.values(c)) await client.client.stop();
  });
});

describe('voice requests (XEP-0045 §7.13, §8.6)', () => {
  const REQUEST = 'http://jabber.org/protocol/muc#request';
  const form = (type: string, fields: Record<string, string>) =>
    xml(
      'x',
      { xmlns: 'jabber:x:data', type },
      xml('field', { var: 'FORM_TYPE' }, xml('value', {}, REQUEST)),
      ...Object.entries(fields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))),
    );
  const roleOf = (p: ReturnType<typeof xml>) => p.getChild('x', `${MUC}#user`)?.getChild('item')?.attrs.role;

  it('a visitor asks for voice, the moderators are asked, two approve at once, and the visitor speaks', async () => {
    const room = 'quiet@conference.localhost';
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'voice-owner');
    await join(alice, room, 'alice');
    await alice.client.iqCaller.request(
      xml('iq', { type: 'set', to: room }, xml('query', { xmlns: `${MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'muc#roomconfig_moderatedroom' }, xml('value', {}, '1'))))),
    );
    await alice.client.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: `${MUC}#admin` }, xml('item', { jid: 'dave@localhost', affiliation: 'admin' }))));
    const dave = await connectXmppJs(stack.wsUrl, 'dave', 'dave-pass', 'voice-admin');
    await join(dave, room, 'dave');
    const carol = await connectXmppJs(stack.wsUrl, 'carol', 'carol-pass', 'voice-visitor');
    await carol.client.send(xml('presence', { to: `${room}/carol` }, xml('x', { xmlns: MUC })));
    const entered = await carol.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/carol`, 'self-presence');
    expect(roleOf(entered)).toBe('visitor');

    await carol.client.send(xml('message', { to: room }, form('submit', { 'muc#role': 'participant' })));
    const asked = await Promise.all(
      [alice, dave].map((m) => m.inbox.wait((s) => s.is('message') && s.attrs.from === room && s.getChild('x', 'jabber:x:data') !== undefined, 'the voice request')),
    );
    const fields = (m: ReturnType<typeof xml>) =>
      Object.fromEntries(m.getChild('x', 'jabber:x:data')!.getChildren('field').map((f: ReturnType<typeof xml>) => [f.attrs.var, f.getChildText('value')]));
    expect(fields(asked[0]!)).toMatchObject({ FORM_TYPE: REQUEST, 'muc#roomnick': 'carol', 'muc#jid': carol.jid, 'muc#request_allow': 'false' });

    const approval = () => xml('message', { to: room }, form('submit', { 'muc#role': 'participant', 'muc#roomnick': 'carol', 'muc#request_allow': 'true' }));
    await Promise.all([alice.client.send(approval()), dave.client.send(approval())]);
    const voiced = await carol.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/carol` && roleOf(s) === 'participant', 'voice');
    expect(voiced).toBeDefined();
    await sleep(500);
    expect(carol.inbox.seen((s) => s.is('presence') && s.attrs.from === `${room}/carol` && roleOf(s) === 'participant')).toEqual([]); // once
    await carol.client.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'thank you')));
    await alice.inbox.wait((s) => s.getChildText('body') === 'thank you', "carol's first words");
    for (const c of [alice, dave, carol]) await c.client.stop();
  });
});

describe('registered nicknames (XEP-0045 §7.10, §7.12)', () => {
  const REGISTER = 'jabber:iq:register';
  const submit = (room: string, nick: string) =>
    xml(
      'iq',
      { type: 'set', to: room },
      xml(
        'query',
        { xmlns: REGISTER },
        xml(
          'x',
          { xmlns: 'jabber:x:data', type: 'submit' },
          xml('field', { var: 'FORM_TYPE' }, xml('value', {}, `${MUC}#register`)),
          xml('field', { var: 'muc#register_roomnick' }, xml('value', {}, nick)),
        ),
      ),
    );

  it('registers a nickname nobody else may take (also when two register it at once), makes a member, and cancels', async () => {
    const room = 'names@conference.localhost';
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'names-owner');
    await join(alice, room, 'alice');
    await alice.client.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: `${MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))));
    const bob = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'names');
    const carol = await connectXmppJs(stack.wsUrl, 'carol', 'carol-pass', 'names');

    const form = await bob.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: REGISTER })));
    expect(form.getChild('query')!.getChild('x', 'jabber:x:data')!.getChildren('field').map((f: ReturnType<typeof xml>) => f.attrs.var)).toContain('muc#register_roomnick');

    // Both want "bard" at the same moment: one gets it.
    const outcomes = await Promise.allSettled([bob.client.iqCaller.request(submit(room, 'bard')), carol.client.iqCaller.request(submit(room, 'bard'))]);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ condition: 'conflict' });
    const [owner, other] = outcomes[0]!.status === 'fulfilled' ? [bob, carol] : [carol, bob];
    const ownerName = owner === bob ? 'bob' : 'carol';

    const registered = await owner.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: REGISTER })));
    expect(registered.getChild('query')!.getChildText('username')).toBe('bard');
    const info = await owner.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: 'x-roomuser-item' })));
    expect(info.getChild('query')!.getChild('identity')!.attrs.name).toBe('bard');
    const members = await alice.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: `${MUC}#admin` }, xml('item', { affiliation: 'member' }))));
    expect(members.getChild('query')!.getChildren('item').map((i: ReturnType<typeof xml>) => i.attrs.jid)).toEqual([`${ownerName}@localhost`]);

    // The other cannot enter as "bard"; the owner of the name can.
    await other.client.send(xml('presence', { to: `${room}/bard` }, xml('x', { xmlns: MUC })));
    const refused = await other.inbox.wait((s) => s.is('presence') && s.attrs.type === 'error' && s.attrs.from === `${room}/bard`, 'the refusal');
    expect(refused.getChild('error')!.getChild('conflict')).toBeDefined();
    await join(owner, room, 'bard');

    // Cancelled: the name is free again (once its owner has left the room under it) and the membership gone.
    await owner.client.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: REGISTER }, xml('remove'))));
    await owner.client.send(xml('presence', { to: `${room}/bard`, type: 'unavailable' }));
    await owner.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/bard` && s.attrs.type === 'unavailable', 'left');
    await other.client.iqCaller.request(submit(room, 'bard'));
    const after = await alice.client.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: `${MUC}#admin` }, xml('item', { affiliation: 'member' }))));
    expect(after.getChild('query')!.getChildren('item').map((i: ReturnType<typeof xml>) => i.attrs.jid)).toEqual([`${ownerName === 'bob' ? 'carol' : 'bob'}@localhost`]);
    for (const c of [alice, bob, carol]) await c.client.stop();
  });
});
