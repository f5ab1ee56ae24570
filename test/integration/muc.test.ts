/**
 * XEP-0045 group chat through the local stack: three (and more) users with StanzaJS, raw-ish
 * stanzas with @xmpp/client where the exact XML matters, and a raw socket for a vanishing client.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Agent, Stanzas } from 'stanza';
import { RawClient, addFreshUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { record, type EventLog } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = `${MUC}#user`;
const SERVICE = 'conference.localhost';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
});

afterAll(async () => {
  await stack?.stop();
});

/** Accounts of their own for one test (or one describe), by the names the test calls them. */
async function newUsers<N extends string>(...names: N[]): Promise<Record<N, string>> {
  const users = {} as Record<N, string>;
  for (const name of names) users[name] = await addFreshUser(stack.store, name);
  return users;
}

const KINDS = ['muc:available', 'muc:unavailable', 'muc:invite', 'muc:declined', 'muc:destroyed', 'muc:topic', 'groupchat', 'chat', 'message', 'presence'] as const;
type User = { c: Agent; events: EventLog<(typeof KINDS)[number]> };

/** A StanzaJS client whose MUC events and messages land in an event log (disconnected by whoever connected it). */
async function connectUser(name: string, resource = 'web'): Promise<User> {
  const c = await connectStanza(stack.wsUrl, `${name}@localhost`, `${name}-pass`, resource);
  const events = record(c, [...KINDS]);
  c.sendPresence();
  return { c, events };
}

/** connectUser, for a test: disconnected when the test ends, whatever its outcome. */
async function stanzaUser(name: string, resource = 'web'): Promise<User> {
  const user = await connectUser(name, resource);
  onTestFinished(() => user.c.disconnect());
  return user;
}

function codes(pres: Stanzas.ReceivedMUCPresence): string[] {
  return pres?.muc?.statusCodes ?? [];
}

async function expectStanzaError(promise: Promise<unknown>, condition: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: { error?: Stanzas.StanzaError }) => e,
  );
  expect(err, `expected ${condition}`).toBeDefined();
  expect(err!.error?.condition).toBe(condition);
}

/** Creates and configures a room as `owner`, returning nothing until it is unlocked. */
async function createRoom(owner: Agent, room: string, nick: string, fields: Stanzas.DataFormField[] = []): Promise<Stanzas.ReceivedMUCPresence> {
  const self = await owner.joinRoom(room, nick);
  await owner.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }, ...fields] });
  return self;
}

describe('the conference service', () => {
  it('is listed in the server disco#items and answers disco#info with exactly its features', async () => {
    const u = await newUsers('frank');
    const { c } = await stanzaUser(u.frank, 'disco');
    const items = await c.getDiscoItems('localhost');
    expect(items.items).toEqual(expect.arrayContaining([expect.objectContaining({ jid: SERVICE, name: 'Chatrooms' })]));
    const info = await c.getDiscoInfo(SERVICE);
    expect(info.identities).toEqual([expect.objectContaining({ category: 'conference', type: 'text' })]);
    expect([...info.features].sort()).toEqual(['http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', MUC]);
  });
});

describe('a team room with three users', () => {
  // One story, test after test, in one room: each starts where the previous left it. The accounts are its own.
  const room = `team@${SERVICE}`;
  let u: Record<'alice' | 'bob' | 'carol' | 'dave' | 'erin', string>;
  let alice: User;
  let bob: User;
  let carol: User;

  beforeAll(async () => {
    u = await newUsers('alice', 'bob', 'carol', 'dave', 'erin');
    [alice, bob, carol] = await Promise.all([connectUser(u.alice), connectUser(u.bob), connectUser(u.carol)]);
  });

  afterAll(() => {
    for (const user of [alice, bob, carol]) user?.c.disconnect();
  });

  it('creates a locked room (201) that others cannot enter until the owner configures it', async () => {
    const self = await alice.c.joinRoom(room, 'Alice');
    expect(codes(self)).toEqual(expect.arrayContaining(['110', '201']));
    expect(self.muc).toMatchObject({ affiliation: 'owner', role: 'moderator' });

    await expect(bob.c.joinRoom(room, 'Bob')).rejects.toMatchObject({ error: { condition: 'item-not-found' } });

    const form = await alice.c.getRoomConfig(room);
    const fields = Object.fromEntries(form.fields!.map((f) => [f.name, f]));
    expect(fields['muc#roomconfig_persistentroom']).toMatchObject({ type: 'boolean' });
    expect(fields['muc#roomconfig_whois']).toMatchObject({ type: 'list-single', value: 'moderators' });
    await alice.c.configureRoom(room, {
      fields: [
        { name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' },
        { name: 'muc#roomconfig_roomname', value: 'Team' },
        { name: 'muc#roomconfig_roomdesc', value: 'Where the team talks' },
        { name: 'muc#roomconfig_persistentroom', value: true },
        { name: 'muc#roomconfig_whois', value: 'anyone' },
      ],
    });
    const info = await bob.c.getDiscoInfo(room);
    expect(info.identities).toEqual([expect.objectContaining({ category: 'conference', type: 'text', name: 'Team' })]);
    expect([...info.features].sort()).toEqual(
      [
        'http://jabber.org/protocol/disco#info',
        MUC,
        'http://jabber.org/protocol/muc#self-ping-optimization',
        'http://jabber.org/protocol/muc#stable_id',
        'jabber:iq:register',
        'muc_nonanonymous',
        'muc_open',
        'muc_persistent',
        'muc_public',
        'muc_unmoderated',
        'muc_unsecured',
        'urn:xmpp:mam:2',
        'urn:xmpp:message-moderate:1',
        'urn:xmpp:occupant-id:0',
        'urn:xmpp:sid:0',
      ].sort(),
    );
    const listed = await bob.c.getDiscoItems(SERVICE);
    expect(listed.items).toEqual(expect.arrayContaining([expect.objectContaining({ jid: room, name: 'Team' })]));
  });

  it('shows who is there with roles, affiliations, real JIDs (100) and the subject', async () => {
    alice.c.setSubject(room, 'Release planning');
    await alice.events.waitFor('muc:topic', (e) => e.data.topic === 'Release planning', 'subject reflected');

    const bobSelf = await bob.c.joinRoom(room, 'Bob');
    expect(codes(bobSelf)).toEqual(expect.arrayContaining(['100', '110']));
    expect(bobSelf.muc).toMatchObject({ affiliation: 'none', role: 'participant' });
    const aliceSeen = await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Alice`, 'alice in roster');
    expect(aliceSeen.data.muc).toMatchObject({ affiliation: 'owner', role: 'moderator', jid: `${u.alice}@localhost/web` });
    const topic = await bob.events.waitFor('muc:topic', undefined, 'subject on join');
    expect(topic.data).toMatchObject({ topic: 'Release planning', from: `${room}/Alice` });

    const bobArrives = await alice.events.waitFor('muc:available', (e) => e.data.from === `${room}/Bob`, 'bob arrives at alice');
    expect(bobArrives.data.muc).toMatchObject({ role: 'participant', jid: `${u.bob}@localhost/web` });
    expect(codes(bobArrives.data)).not.toContain('110');

    await carol.c.joinRoom(room, 'Carol');
    await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Carol`, 'carol arrives at bob');
  });

  it('refuses a nickname in use (409) and renames with 303', async () => {
    await expectStanzaError(
      (async () => {
        const { c } = await stanzaUser(u.dave, 'nick');
        try {
          await c.joinRoom(room, 'Bob');
        } finally {
          c.disconnect();
        }
      })(),
      'conflict',
    );
    await carol.c.changeNick(room, 'Caroline');
    const leave = await bob.events.waitFor('muc:unavailable', (e) => e.data.from === `${room}/Carol`, 'old nick leaves');
    expect(codes(leave.data)).toContain('303');
    expect(leave.data.muc.nick).toBe('Caroline');
    await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Caroline`, 'new nick arrives');
  });

  it('delivers a groupchat message to every occupant, reflected to the sender with its id and the room stanza-id', async () => {
    bob.c.sendMessage({ to: room, type: 'groupchat', body: 'hello team', id: 'bob-1' });
    const got = await Promise.all(
      [alice, bob, carol].map((user) => user.events.waitFor('groupchat', (e) => e.data.body === 'hello team', 'groupchat')),
    );
    for (const g of got) {
      expect(g.data.from).toBe(`${room}/Bob`);
      expect(g.data.id).toBe('bob-1');
      expect(g.data.stanzaIds).toEqual([expect.objectContaining({ by: room })]);
    }
    expect(new Set(got.map((g) => g.data.stanzaIds![0]!.id)).size).toBe(1);
  });

  it('sends private messages only to the addressed occupant, marked as MUC private messages', async () => {
    carol.c.sendMessage({ to: `${room}/Bob`, type: 'chat', body: 'psst bob' });
    const pm = await bob.events.waitFor('chat', (e) => e.data.body === 'psst bob', 'pm at bob');
    expect(pm.data.from).toBe(`${room}/Caroline`);
    expect(pm.data.muc).toBeDefined();
    bob.c.sendMessage({ to: `${room}/Nobody`, type: 'chat', body: 'lost', id: 'pm-lost' });
    const error = await bob.events.waitFor('message', (e) => e.data.type === 'error' && e.data.id === 'pm-lost', 'error for unknown nick');
    expect(error.data.error).toMatchObject({ condition: 'item-not-found' });
    expect(alice.events.seen((e) => 'body' in e.data && e.data.body === 'psst bob')).toEqual([]);
  });

  it('sends discussion history on join, as asked (maxstanzas, maxchars=0), then the current subject', async () => {
    for (const body of ['one', 'two', 'three']) alice.c.sendMessage({ to: room, type: 'groupchat', body });
    await bob.events.waitFor('groupchat', (e) => e.data.body === 'three', 'three sent');

    const dave = await stanzaUser(u.dave, 'history');
    await dave.c.joinRoom(room, 'Dave', { muc: { type: 'join', history: { maxStanzas: 2 } } });
    const history = [
      await dave.events.waitFor('groupchat', (e) => !!e.data.body, 'history 1'),
      await dave.events.waitFor('groupchat', (e) => !!e.data.body, 'history 2'),
    ];
    expect(history.map((h) => h.data.body)).toEqual(['two', 'three']);
    expect(history[0]!.data.delay).toMatchObject({ from: room });
    await dave.events.waitFor('muc:topic', undefined, 'subject after history');
    await dave.c.leaveRoom(room, 'Dave');

    // maxchars=0, seconds=0 and a 'since' in the future each ask for nothing.
    for (const history of [{ maxCharacters: 0 }, { seconds: 0 }, { since: new Date(Date.now() + 3_600_000) }]) {
      await dave.c.joinRoom(room, 'Dave', { muc: { type: 'join', history } });
      await dave.events.waitFor('muc:topic', undefined, 'subject, no history');
      expect(dave.events.seenOf('groupchat', (e) => !!e.data.body)).toEqual([]);
      await dave.c.leaveRoom(room, 'Dave');
    }
    // A 'since' an hour ago, with at most 3 stanzas: the last three messages.
    const since = new Date(Date.now() - 3_600_000);
    await dave.c.joinRoom(room, 'Dave', { muc: { type: 'join', history: { since, maxStanzas: 3 } } });
    await dave.events.waitFor('muc:topic', undefined, 'subject after history since');
    expect(dave.events.seenOf('groupchat', (e) => !!e.data.body).map((e) => e.data.body)).toEqual(['one', 'two', 'three']);
    await dave.c.leaveRoom(room, 'Dave');

    // Subject changes are archived but are not discussion history: only the current one comes, last.
    alice.c.setSubject(room, 'Planning v2');
    await alice.events.waitFor('muc:topic', (e) => e.data.topic === 'Planning v2', 'subject changed');
    await dave.c.joinRoom(room, 'Dave');
    const topic = await dave.events.waitFor('muc:topic', undefined, 'current subject');
    expect(topic.data.topic).toBe('Planning v2');
    const recent = dave.events.seenOf('groupchat', (e) => !!e.data.body).map((e) => e.data.body);
    expect(recent.slice(-3)).toEqual(['one', 'two', 'three']);
    expect(dave.events.seenOf('muc:topic')).toEqual([]);
    await dave.c.leaveRoom(room, 'Dave');
  });

  it('answers self-pings (XEP-0410) for occupants and not-acceptable for others', async () => {
    await bob.c.ping(`${room}/Bob`);
    const { c } = await stanzaUser(u.erin, 'ping');
    await expectStanzaError(c.ping(`${room}/Bob`), 'not-acceptable');
  });

  it('lets the owner moderate: voice, kick (307) and ban (301), and keeps non-moderators from it', async () => {
    await expectStanzaError(bob.c.kick(room, 'Caroline', 'no'), 'forbidden');
    await expectStanzaError(alice.c.kick(room, 'Nobody'), 'item-not-found');

    await alice.c.setRoomRole(room, 'Caroline', 'visitor', 'quiet please');
    const muted = await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Caroline` && e.data.muc.role === 'visitor', 'voice revoked');
    expect(muted.data.muc.reason).toBe('quiet please');
    carol.c.sendMessage({ to: room, type: 'groupchat', body: 'can I speak?', id: 'muted-1' });
    const refused = await carol.events.waitFor('message', (e) => e.data.type === 'error' && e.data.id === 'muted-1', 'visitor refused');
    expect(refused.data.error).toMatchObject({ condition: 'forbidden' });
    await alice.c.setRoomRole(room, 'Caroline', 'participant');
    await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Caroline` && e.data.muc.role === 'participant', 'voice granted');

    await alice.c.kick(room, 'Caroline', 'take a break');
    const kicked = await carol.events.waitFor('muc:unavailable', (e) => e.data.from === `${room}/Caroline`, 'carol kicked');
    expect(codes(kicked.data)).toEqual(expect.arrayContaining(['307', '110']));
    expect(kicked.data.muc).toMatchObject({ role: 'none', reason: 'take a break' });
    const seen = await bob.events.waitFor('muc:unavailable', (e) => e.data.from === `${room}/Caroline`, 'kick seen by bob');
    expect(codes(seen.data)).toContain('307');
    expect(codes(seen.data)).not.toContain('110');

    await carol.c.joinRoom(room, 'Carol');
    await alice.c.ban(room, `${u.carol}@localhost`, 'spam');
    const banned = await carol.events.waitFor('muc:unavailable', (e) => codes(e.data).includes('301'), 'carol banned');
    expect(banned.data.muc.affiliation).toBe('outcast');
    await expect(carol.c.joinRoom(room, 'Carol')).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    const outcasts = await alice.c.getRoomMembers(room, { affiliation: 'outcast' });
    expect(outcasts.muc.users).toEqual([expect.objectContaining({ jid: `${u.carol}@localhost`, affiliation: 'outcast', reason: 'spam' })]);
    await expectStanzaError(bob.c.getRoomMembers(room, { affiliation: 'outcast' }), 'forbidden');
    await alice.c.setRoomAffiliation(room, `${u.carol}@localhost`, 'none');
    await carol.c.joinRoom(room, 'Carol');
  });

  it('keeps at least one owner and lets owners grant admin and membership', async () => {
    await expectStanzaError(alice.c.setRoomAffiliation(room, `${u.alice}@localhost`, 'member'), 'conflict');
    await alice.c.setRoomAffiliation(room, `${u.bob}@localhost`, 'admin');
    const promoted = await carol.events.waitFor('muc:available', (e) => e.data.from === `${room}/Bob` && e.data.muc.affiliation === 'admin', 'bob admin');
    expect(promoted.data.muc.role).toBe('moderator');
    await expectStanzaError(bob.c.setRoomAffiliation(room, `${u.alice}@localhost`, 'none'), 'not-allowed');
    await bob.c.setRoomAffiliation(room, `${u.dave}@localhost`, 'member');
    const members = await alice.c.getRoomMembers(room, { affiliation: 'member' });
    expect(members.muc.users).toEqual([expect.objectContaining({ jid: `${u.dave}@localhost`, affiliation: 'member' })]);
    const owners = await bob.c.getRoomMembers(room, { affiliation: 'owner' });
    expect(owners.muc.users).toEqual([expect.objectContaining({ jid: `${u.alice}@localhost`, affiliation: 'owner', nick: 'Alice' })]);
    const admins = await alice.c.getRoomMembers(room, { affiliation: 'admin' });
    expect(admins.muc.users).toEqual([expect.objectContaining({ jid: `${u.bob}@localhost`, affiliation: 'admin' })]);
    await expectStanzaError(carol.c.getRoomMembers(room, { affiliation: 'owner' }), 'forbidden');
  });

  it('takes an occupant whose socket drops out of the room for the others', async () => {
    const raw = await RawClient.open(stack.wsUrl);
    onTestFinished(() => raw.close());
    await raw.login(u.erin, `${u.erin}-pass`, 'flaky');
    raw.send(`<presence to="${room}/Erin"><x xmlns="${MUC}"/></presence>`);
    await raw.next(/status code=["']110["']/);
    await bob.events.waitFor('muc:available', (e) => e.data.from === `${room}/Erin`, 'erin joined');
    raw.ws.terminate();
    const gone = await bob.events.waitFor('muc:unavailable', (e) => e.data.from === `${room}/Erin`, 'erin gone');
    expect(gone.data.muc.role).toBe('none');
  });
});

describe('room types', () => {
  it('keeps strangers out of members-only (407) and password (401) rooms, and admits invitees', async () => {
    const u = await newUsers('alice', 'frank');
    const owner = await stanzaUser(u.alice, 'types');
    const guest = await stanzaUser(u.frank, 'types');
    const members = `members@${SERVICE}`;
    await createRoom(owner.c, members, 'Alice', [{ name: 'muc#roomconfig_membersonly', value: true }]);
    await expect(guest.c.joinRoom(members, 'Frank')).rejects.toMatchObject({ error: { condition: 'registration-required' } });
    owner.c.invite(members, { to: `${u.frank}@localhost`, reason: 'join us' });
    const invite = await guest.events.waitFor('muc:invite', undefined, 'mediated invite');
    expect(invite.data).toMatchObject({ type: 'mediated', room: members, from: `${u.alice}@localhost/types`, reason: 'join us' });
    const self = await guest.c.joinRoom(members, 'Frank');
    expect(self.muc.affiliation).toBe('member');
    // Semi-anonymous: a member reads the member list, not who owns or administers the room.
    expect((await guest.c.getRoomMembers(members, { affiliation: 'member' })).muc.users).toEqual([expect.objectContaining({ jid: `${u.frank}@localhost` })]);
    await expect(guest.c.getRoomMembers(members, { affiliation: 'owner' })).rejects.toMatchObject({ error: { condition: 'forbidden' } });
    // Non-anonymous: every member may read the owner and admin lists (group OMEMO encrypts to all of them).
    const open = `omemo-group@${SERVICE}`;
    await createRoom(owner.c, open, 'Alice', [
      { name: 'muc#roomconfig_membersonly', value: true },
      { name: 'muc#roomconfig_whois', value: 'anyone' },
    ]);
    await owner.c.setRoomAffiliation(open, `${u.frank}@localhost`, 'member');
    expect((await guest.c.getRoomMembers(open, { affiliation: 'owner' })).muc.users).toEqual([expect.objectContaining({ jid: `${u.alice}@localhost`, affiliation: 'owner' })]);
    expect((await guest.c.getRoomMembers(open, { affiliation: 'admin' })).muc.users ?? []).toEqual([]);
    await expect(guest.c.getRoomMembers(open, { affiliation: 'outcast' })).rejects.toMatchObject({ error: { condition: 'forbidden' } });

    const secret = `secret@${SERVICE}`;
    await createRoom(owner.c, secret, 'Alice', [
      { name: 'muc#roomconfig_passwordprotectedroom', value: true },
      { name: 'muc#roomconfig_roomsecret', value: 'sesame' },
      { name: 'muc#roomconfig_publicroom', value: false },
    ]);
    await expect(guest.c.joinRoom(secret, 'Frank')).rejects.toMatchObject({ error: { condition: 'not-authorized' } });
    await expect(guest.c.joinRoom(secret, 'Frank', { muc: { type: 'join', password: 'wrong' } })).rejects.toMatchObject({
      error: { condition: 'not-authorized' },
    });
    await guest.c.joinRoom(secret, 'Frank', { muc: { type: 'join', password: 'sesame' } });
    const listed = await guest.c.getDiscoItems(SERVICE);
    expect(listed.items.map((i) => i.jid)).not.toContain(secret);
    const info = await guest.c.getDiscoInfo(secret);
    expect(info.features).toEqual(expect.arrayContaining(['muc_passwordprotected', 'muc_hidden', 'muc_temporary', 'muc_semianonymous']));
  });

  it('turns away joiners beyond the maximum number of occupants (503)', async () => {
    const u = await newUsers('bob', 'carol', 'dave');
    const owner = await stanzaUser(u.bob, 'max');
    const room = `small@${SERVICE}`;
    await createRoom(owner.c, room, 'Bob', [{ name: 'muc#roomconfig_maxusers', value: '2' }]);
    const second = await stanzaUser(u.carol, 'max');
    await second.c.joinRoom(room, 'Carol');
    const third = await stanzaUser(u.dave, 'max');
    await expect(third.c.joinRoom(room, 'Dave')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
  });

  it('moderated rooms make newcomers visitors until a moderator grants voice', async () => {
    const u = await newUsers('erin', 'frank');
    const owner = await stanzaUser(u.erin, 'mod');
    const room = `stage@${SERVICE}`;
    await createRoom(owner.c, room, 'Erin', [{ name: 'muc#roomconfig_moderatedroom', value: true }]);
    const visitor = await stanzaUser(u.frank, 'mod');
    const self = await visitor.c.joinRoom(room, 'Frank');
    expect(self.muc.role).toBe('visitor');
    const voiceList = await owner.c.getRoomMembers(room, { role: 'participant' });
    expect(voiceList.muc.users ?? []).toEqual([]);
    await owner.c.setRoomRole(room, 'Frank', 'participant');
    await visitor.events.waitFor('muc:available', (e) => e.data.from === `${room}/Frank` && e.data.muc.role === 'participant', 'voice');
  });
});

describe('invitations, configuration changes and destruction', () => {
  it('passes direct invitations (XEP-0249) through and relays declines of mediated ones', async () => {
    const u = await newUsers('alice', 'bob');
    const alice = await stanzaUser(u.alice, 'inv');
    const bob = await stanzaUser(u.bob, 'inv');
    const room = `party@${SERVICE}`;
    await createRoom(alice.c, room, 'Alice');
    alice.c.directInvite(room, `${u.bob}@localhost/inv`, { reason: 'come over' });
    const direct = await bob.events.waitFor('muc:invite', (e) => e.data.type === 'direct', 'direct invite');
    expect(direct.data).toMatchObject({ room, reason: 'come over', from: `${u.alice}@localhost/inv` });
    bob.c.disconnect();

    // StanzaJS 12 cannot serialize a decline; @xmpp/client sends it as XEP-0045 §7.8.2 shows.
    const decliner = await connectXmppJs(stack.wsUrl, u.bob, `${u.bob}-pass`, 'decline');
    onTestFinished(async () => {
      await decliner.client.stop();
    });
    await decliner.client.send(
      xml('message', { to: room }, xml('x', { xmlns: MUC_USER }, xml('decline', { to: `${u.alice}@localhost/inv` }, xml('reason', {}, 'busy')))),
    );
    const declined = await alice.events.waitFor('message', (e) => e.data.from === room && !e.data.body, 'decline');
    expect(declined.data.from).toBe(room);
    const raw = await connectXmppJs(stack.wsUrl, u.alice, `${u.alice}-pass`, 'raw-decline');
    onTestFinished(async () => {
      await raw.client.stop();
    });
    await decliner.client.send(
      xml('message', { to: room }, xml('x', { xmlns: MUC_USER }, xml('decline', { to: `${u.alice}@localhost/raw-decline` }, xml('reason', {}, 'still busy')))),
    );
    const relayed = await raw.inbox.wait((s) => s.is('message') && !!s.getChild('x', MUC_USER)?.getChild('decline'), 'decline xml');
    expect(relayed.attrs.from).toBe(room);
    expect(relayed.getChild('x', MUC_USER)!.getChild('decline')!.attrs.from).toBe(`${u.bob}@localhost`);
    expect(relayed.getChild('x', MUC_USER)!.getChild('decline')!.getChildText('reason')).toBe('still busy');
  });

  it('announces configuration changes with 104 and 172/173', async () => {
    const u = await newUsers('carol');
    const owner = await connectXmppJs(stack.wsUrl, u.carol, `${u.carol}-pass`, 'cfg');
    onTestFinished(async () => {
      await owner.client.stop();
    });
    const room = `config@${SERVICE}`;
    await owner.client.send(xml('presence', { to: `${room}/Carol` }, xml('x', { xmlns: MUC })));
    await owner.inbox.wait((s) => s.is('presence') && !!s.getChild('x', MUC_USER)?.getChildren('status').some((c) => c.attrs.code === '201'), '201');
    const submit = (fields: Record<string, string>) =>
      owner.client.iqCaller.request(
        xml(
          'iq',
          { type: 'set', to: room },
          xml(
            'query',
            { xmlns: `${MUC}#owner` },
            xml(
              'x',
              { xmlns: 'jabber:x:data', type: 'submit' },
              ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))),
            ),
          ),
        ),
      );
    await submit({});
    await submit({ 'muc#roomconfig_whois': 'anyone' });
    const note = await owner.inbox.wait((s) => s.is('message') && !!s.getChild('x', MUC_USER), 'config change');
    expect(note.getChild('x', MUC_USER)!.getChildren('status').map((c) => c.attrs.code)).toEqual(['104', '172']);
    await expect(submit({ 'muc#roomconfig_whois': 'everybody' })).rejects.toThrow(/not-acceptable/);
    await expect(submit({ 'muc#roomconfig_passwordprotectedroom': '1' })).rejects.toThrow(/not-acceptable/);
  });

  it('destroys a room: occupants learn the reason and the alternative, and it is gone', async () => {
    const u = await newUsers('alice', 'bob');
    const alice = await stanzaUser(u.alice, 'destroy');
    const bob = await stanzaUser(u.bob, 'destroy');
    const room = `doomed@${SERVICE}`;
    await createRoom(alice.c, room, 'Alice', [{ name: 'muc#roomconfig_persistentroom', value: true }]);
    await bob.c.joinRoom(room, 'Bob');
    await expectStanzaError(bob.c.destroyRoom(room, { reason: 'mine now' }), 'forbidden');
    await alice.c.destroyRoom(room, { jid: `team@${SERVICE}`, reason: 'moved' });
    const destroyed = await bob.events.waitFor('muc:destroyed', undefined, 'destroyed');
    expect(destroyed.data).toMatchObject({ room, newRoom: `team@${SERVICE}`, reason: 'moved' });
    await expectStanzaError(bob.c.getDiscoInfo(room), 'item-not-found');
    expect((await bob.c.getDiscoItems(SERVICE)).items.map((i) => i.jid)).not.toContain(room);
  });

  it('removes a temporary room when its last occupant leaves', async () => {
    const u = await newUsers('alice');
    const alice = await stanzaUser(u.alice, 'temp');
    const room = `fleeting@${SERVICE}`;
    await createRoom(alice.c, room, 'Alice');
    expect((await alice.c.getDiscoItems(SERVICE)).items.map((i) => i.jid)).toContain(room);
    await alice.c.leaveRoom(room, 'Alice');
    await expectStanzaError(alice.c.getDiscoInfo(room), 'item-not-found');
  });
});
