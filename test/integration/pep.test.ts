/**
 * XEP-0163 PEP through the local stack with StanzaJS and @xmpp/client: avatars (XEP-0084) with
 * notifications filtered by XEP-0115 caps, the last item at login, an OMEMO device list readable by
 * strangers (access_model=open), publish-options preconditions, max_items, retract/purge/delete,
 * whitelists (XEP-0223) and the account's disco.
 */
import { createHash } from 'node:crypto';
import type { Agent, Stanzas } from 'stanza';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addFreshUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import { befriend, presenceWithCaps, record } from './social.ts';
import { capsVer } from '../../shared/caps.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { parseFrame } from '../../shared/xml/parse.ts';

const AVATAR_DATA = 'urn:xmpp:avatar:data';
const AVATAR_METADATA = 'urn:xmpp:avatar:metadata';
const DEVICELIST = 'eu.siacs.conversations.axolotl.devicelist';
const PUBSUB = 'http://jabber.org/protocol/pubsub';

let stack: LocalStack & { store: DynamoStore };
/** The clients the running test opened, disconnected after it whatever its outcome. */
let open: Agent[] = [];
const newUser = (name: string) => addFreshUser(stack.store, name);

async function login(user: string, resource?: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  open.push(c);
  return c;
}

function publishOptions(fields: Record<string, string>): Stanzas.DataForm {
  return {
    type: 'submit',
    fields: [
      { name: 'FORM_TYPE', type: 'hidden', value: 'http://jabber.org/protocol/pubsub#publish-options' },
      ...Object.entries(fields).map(([name, value]) => ({ name, value })),
    ],
  };
}

/** A device list the way OMEMO clients publish it: item id "current", open access. */
function publishDeviceList(c: Agent, ids: number[], access = 'open') {
  const content: Stanzas.OMEMODeviceList = { itemType: DEVICELIST, devices: ids };
  return c.sendIQ({
    type: 'set',
    pubsub: {
      context: 'user',
      publish: { node: DEVICELIST, item: { id: 'current', content } },
      publishOptions: publishOptions({ 'pubsub#access_model': access }),
    },
  });
}

/** An XEP-0118 tune, the item these tests publish where the payload does not matter. */
const tune = (title: string): Stanzas.UserTune => ({ itemType: 'http://jabber.org/protocol/tune', title });

beforeAll(async () => {
  stack = await startTestStack();
});

afterEach(() => {
  for (const c of open) c.disconnect();
  open = [];
});

afterAll(async () => {
  await stack?.stop();
});

describe('avatars (XEP-0084) over PEP', () => {
  const image = Buffer.from('not really a png, but bytes all the same');
  const id = createHash('sha1').update(image).digest('hex');
  // The first two tests are one story: the second reads what the first published. Its accounts are its own.
  let alice: string;
  let bob: string;
  let carol: string;

  beforeAll(async () => {
    [alice, bob, carol] = [await newUser('alice'), await newUser('bob'), await newUser('carol')];
  });

  it('notifies a subscribed contact whose caps ask for avatar metadata, not one whose caps do not', async () => {
    const aliceC = await login(alice, 'phone');
    const bobC = await login(bob, 'laptop');
    const carolC = await login(carol, 'old');
    await befriend(aliceC, bobC);
    await befriend(aliceC, carolC);
    // StanzaJS's avatar plugin already lists urn:xmpp:avatar:metadata+notify; carol's client does not want it.
    carolC.disco.features.get('')!.delete(`${AVATAR_METADATA}+notify`);
    const bobEvents = record(bobC, ['avatar', 'pubsub:published']);
    const carolEvents = record(carolC, ['pubsub:published']);
    expect(await presenceWithCaps(bobC, [])).toBe(true); // first time this hash is seen: the server asks
    await presenceWithCaps(carolC, []);
    aliceC.sendPresence();

    await aliceC.publishAvatar(id, image);
    await aliceC.useAvatars([{ id, bytes: image.length, mediaType: 'image/png', width: 64, height: 64 }]);
    const seen = await bobEvents.waitFor('avatar', (e) => e.data.jid === `${alice}@localhost`, 'avatar notification at bob');
    expect(seen.data.avatars).toEqual([expect.objectContaining({ id, bytes: image.length, mediaType: 'image/png' })]);
    // the data node is not something bob asked to be notified about
    expect(bobEvents.seenOf('pubsub:published', (e) => e.data.pubsub.items.node === AVATAR_DATA)).toEqual([]);

    // fetching the data by id, as clients do after the metadata notification
    const fetched = await bobC.getAvatar(`${alice}@localhost`, id);
    expect(Buffer.from(fetched.content!.data!).equals(image)).toBe(true);

    // carol never hears of it; a later marker from alice arrives (so anything sent before it would have)
    aliceC.sendMessage({ to: carolC.jid, type: 'chat', body: 'marker' });
    await new Promise<void>((resolve) => carolC.once('chat', () => resolve()));
    expect(carolEvents.seen(() => true)).toEqual([]);
  });

  it('sends the last published item to a resource that comes online later, with a delay stamp', async () => {
    const bobC = await login(bob, 'tablet');
    const events = record(bobC, ['pubsub:published']);
    expect(await presenceWithCaps(bobC, [])).toBe(false); // same hash as bob's laptop: known, no query
    const last = await events.waitFor('pubsub:published', (e) => e.data.pubsub.items.node === AVATAR_METADATA, 'last item');
    expect(last.data.from).toBe(`${alice}@localhost`);
    expect((last.data.pubsub.items.published[0]!.content as Stanzas.AvatarMetaData).versions).toEqual([expect.objectContaining({ id })]);
    expect(last.data.delay?.timestamp).toBeInstanceOf(Date);
  });

  it('asks a resource about its caps hash only once, however many resources share it', async () => {
    const dave = await newUser('dave');
    const dave1 = await login(dave, 'one');
    const dave2 = await login(dave, 'two');
    dave1.disco.addFeature('urn:example:only-dave+notify');
    dave2.disco.addFeature('urn:example:only-dave+notify');
    expect(await presenceWithCaps(dave1, [])).toBe(true);
    expect(await presenceWithCaps(dave2, [])).toBe(false);
  });
});

describe('OMEMO device list', () => {
  // One story, test after test: each starts from the nodes and subscriptions the previous left. Its accounts are its own.
  let olive: string;
  let stranger: string;

  beforeAll(async () => {
    [olive, stranger] = [await newUser('olive'), await newUser('stranger')];
  });

  it('publishes with access_model=open and a stranger (no subscription) reads it', async () => {
    const oliveC = await login(olive);
    await publishDeviceList(oliveC, [1234, 5678]);
    const strangerC = await login(stranger);
    const result = await strangerC.getItems(`${olive}@localhost`, DEVICELIST);
    expect(result.items).toEqual([expect.objectContaining({ id: 'current', content: expect.objectContaining({ devices: [1234, 5678] }) })]);
  });

  it('keeps presence-access nodes from strangers with presence-subscription-required', async () => {
    const oliveC = await login(olive, 'presence');
    await oliveC.publish('', 'urn:example:private-ish', tune('x'), 'x');
    const strangerC = await login(stranger, 'nosy');
    await expect(strangerC.getItems(`${olive}@localhost`, 'urn:example:private-ish')).rejects.toMatchObject({
      error: { condition: 'not-authorized' },
    });
    // the raw reply names the pubsub condition
    const raw = await RawClient.open(stack.wsUrl);
    try {
      await raw.login(stranger, `${stranger}-pass`, 'raw');
      raw.send(`<iq type='get' id='i1' to='${olive}@localhost'><pubsub xmlns='${PUBSUB}'><items node='urn:example:private-ish'/></pubsub></iq>`);
      const reply = await raw.next(/id=["']i1["']/);
      expect(reply).toMatch(/<not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"\/>/);
      expect(reply).toContain(`<presence-subscription-required xmlns="${PUBSUB}#errors"/>`);
    } finally {
      raw.close();
    }
  });

  it('refuses a publish whose options contradict the node (precondition-not-met), accepts it after configure', async () => {
    const oliveC = await login(olive, 'reconfig');
    await expect(publishDeviceList(oliveC, [1], 'presence')).rejects.toMatchObject({ error: { condition: 'conflict' } });
    // Conversations' recovery: reconfigure the node, publish again
    await oliveC.configureNode(`${olive}@localhost`, DEVICELIST, publishOptions({ 'pubsub#access_model': 'presence' }));
    await publishDeviceList(oliveC, [1], 'presence');
    const config = await oliveC.getNodeConfig(`${olive}@localhost`, DEVICELIST);
    expect(config.fields).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'pubsub#access_model', value: 'presence' })]));
    const strangerC = await login(stranger, 'again');
    await expect(strangerC.getItems(`${olive}@localhost`, DEVICELIST)).rejects.toMatchObject({ error: { condition: 'not-authorized' } });
  });

  it('lets a stranger subscribe explicitly: last item at once, then each publication, until unsubscribed', async () => {
    const oliveC = await login(olive, 'subs');
    await oliveC.configureNode(`${olive}@localhost`, DEVICELIST, publishOptions({ 'pubsub#access_model': 'open' }));
    const strangerC = await login(stranger, 'subscriber');
    const events = record(strangerC, ['pubsub:published']);
    strangerC.sendPresence(); // a bare-JID subscription reaches available resources
    const sub = await strangerC.subscribeToNode(`${olive}@localhost`, DEVICELIST);
    expect(sub).toMatchObject({ node: DEVICELIST, state: 'subscribed' });
    const last = await events.waitFor('pubsub:published', undefined, 'last item on subscription');
    expect((last.data.pubsub.items.published[0]!.content as Stanzas.OMEMODeviceList).devices).toEqual([1]);
    await publishDeviceList(oliveC, [1, 2]);
    const next = await events.waitFor('pubsub:published', undefined, 'notification to the subscriber');
    expect((next.data.pubsub.items.published[0]!.content as Stanzas.OMEMODeviceList).devices).toEqual([1, 2]);
    const subscribers = await oliveC.getNodeSubscribers(`${olive}@localhost`, DEVICELIST);
    expect(JSON.stringify(subscribers)).toContain(`"${stranger}@localhost"`);

    await strangerC.unsubscribeFromNode(`${olive}@localhost`, DEVICELIST);
    await publishDeviceList(oliveC, [3]);
    // a message sent after the publication arrives after anything the publication caused
    const marker = new Promise<void>((resolve) => strangerC.once('chat', () => resolve()));
    oliveC.sendMessage({ to: strangerC.jid, type: 'chat', body: 'marker' });
    await marker;
    expect(events.seen(() => true)).toEqual([]);
    await expect(strangerC.unsubscribeFromNode(`${olive}@localhost`, DEVICELIST)).rejects.toMatchObject({ error: { condition: 'unexpected-request' } });
    // presence-access nodes stay closed to strangers
    await expect(strangerC.subscribeToNode(`${olive}@localhost`, 'urn:example:private-ish')).rejects.toMatchObject({ error: { condition: 'not-authorized' } });
  });

  it('lets only the owner publish', async () => {
    const strangerC = await login(stranger, 'vandal');
    const content: Stanzas.OMEMODeviceList = { itemType: DEVICELIST, devices: [666] };
    await expect(
      strangerC.sendIQ({
        type: 'set',
        to: `${olive}@localhost`,
        pubsub: { context: 'user', publish: { node: DEVICELIST, item: { id: 'current', content } } },
      }),
    ).rejects.toMatchObject({ error: { condition: 'forbidden' } });
  });
});

describe('items, retraction, purge and deletion', () => {
  it('keeps max_items, retracts with a notification, purges and deletes', async () => {
    const wendy = await newUser('wendy');
    const wendyC = await login(wendy);
    const events = record(wendyC, ['pubsub:published', 'pubsub:retracted', 'pubsub:purged', 'pubsub:deleted']);
    await presenceWithCaps(wendyC, ['urn:example:notes']);
    for (const n of ['1', '2', '3']) {
      await wendyC.sendIQ({
        type: 'set',
        pubsub: {
          context: 'user',
          publish: { node: 'urn:example:notes', item: { id: `n${n}`, content: tune(`note ${n}`) } },
          publishOptions: publishOptions({ 'pubsub#max_items': '2' }),
        },
      });
    }
    await events.waitFor('pubsub:published', (e) => e.data.pubsub.items.published[0]!.id === 'n3', 'own notification');
    const items = await wendyC.getItems(`${wendy}@localhost`, 'urn:example:notes');
    expect(items.items!.map((i) => i.id)).toEqual(['n2', 'n3']);

    await wendyC.retract(`${wendy}@localhost`, 'urn:example:notes', 'n2', true);
    const retracted = await events.waitFor('pubsub:retracted', undefined, 'retract notification');
    expect(retracted.data.pubsub.items.retracted).toEqual(['n2']);
    await expect(wendyC.retract(`${wendy}@localhost`, 'urn:example:notes', 'n2', true)).rejects.toMatchObject({ error: { condition: 'item-not-found' } });

    await wendyC.purgeNode(`${wendy}@localhost`, 'urn:example:notes');
    await events.waitFor('pubsub:purged', undefined, 'purge notification');
    expect((await wendyC.getItems(`${wendy}@localhost`, 'urn:example:notes')).items ?? []).toEqual([]);

    await wendyC.deleteNode(`${wendy}@localhost`, 'urn:example:notes');
    await events.waitFor('pubsub:deleted', undefined, 'delete notification');
    await expect(wendyC.getItems(`${wendy}@localhost`, 'urn:example:notes')).rejects.toMatchObject({ error: { condition: 'item-not-found' } });
  });

  it('rejects a publish without a payload and unknown publish-options', async () => {
    const wendyC = await login(await newUser('wendy'), 'bad');
    await expect(wendyC.sendIQ({ type: 'set', pubsub: { context: 'user', publish: { node: 'urn:example:x', item: { id: 'a' } } } })).rejects.toMatchObject({
      error: { condition: 'bad-request' },
    });
    await expect(
      wendyC.sendIQ({
        type: 'set',
        pubsub: {
          context: 'user',
          publish: { node: 'urn:example:x', item: { id: 'a', content: tune('t') } },
          publishOptions: publishOptions({ 'pubsub#frobnicate': 'yes' }),
        },
      }),
    ).rejects.toMatchObject({ error: { condition: 'conflict' } });
  });
});

describe('whitelist nodes (XEP-0223)', () => {
  it('hides a whitelist node from contacts until the owner makes them members', async () => {
    const [walter, alice] = [await newUser('walter'), await newUser('alice')];
    const walterC = await login(walter);
    const aliceC = await login(alice, 'wl');
    await befriend(walterC, aliceC);
    await walterC.sendIQ({
      type: 'set',
      pubsub: {
        context: 'user',
        publish: { node: 'urn:example:secret', item: { id: 'current', content: tune('shh') } },
        publishOptions: publishOptions({ 'pubsub#access_model': 'whitelist', 'pubsub#persist_items': 'true' }),
      },
    });
    await expect(aliceC.getItems(`${walter}@localhost`, 'urn:example:secret')).rejects.toMatchObject({ error: { condition: 'not-allowed' } });
    await walterC.updateNodeAffiliations(`${walter}@localhost`, 'urn:example:secret', [{ jid: `${alice}@localhost`, affiliation: 'member' }]);
    const items = await aliceC.getItems(`${walter}@localhost`, 'urn:example:secret');
    expect(items.items).toHaveLength(1);
    const affiliations = await walterC.getNodeAffiliations(`${walter}@localhost`, 'urn:example:secret');
    expect(affiliations.items).toEqual(expect.arrayContaining([expect.objectContaining({ jid: `${alice}@localhost`, affiliation: 'member' })]));
  });
});

describe('discovery', () => {
  it('advertises PEP on the account (pubsub/pep, publish-options) and lists readable nodes', async () => {
    const olive = await newUser('olive');
    const oliveC = await login(olive, 'disco');
    await publishDeviceList(oliveC, [1234]);
    const info = await oliveC.getDiscoInfo(`${olive}@localhost`);
    expect(info.identities).toEqual(expect.arrayContaining([expect.objectContaining({ category: 'pubsub', type: 'pep' })]));
    expect(info.features).toEqual(
      expect.arrayContaining([`${PUBSUB}#publish`, `${PUBSUB}#publish-options`, `${PUBSUB}#auto-create`, `${PUBSUB}#filtered-notifications`, `${PUBSUB}#config-node-max`]),
    );
    const items = await oliveC.getDiscoItems(`${olive}@localhost`);
    expect(items.items!.map((i) => i.node)).toEqual(expect.arrayContaining([DEVICELIST]));
    // And on the server JID, where clients look too.
    const server = await oliveC.getDiscoInfo('localhost');
    expect(server.identities).toEqual(expect.arrayContaining([expect.objectContaining({ category: 'pubsub', type: 'pep' }), expect.objectContaining({ category: 'server', type: 'im' })]));
    expect(server.features).toEqual(expect.arrayContaining([`${PUBSUB}#publish`, `${PUBSUB}#publish-options`]));
  });

  it('puts the server caps in the stream features, naming exactly the server disco#info', async () => {
    const dave = await newUser('dave');
    const raw = await RawClient.open(stack.wsUrl);
    let features: string;
    try {
      raw.open();
      features = await raw.next('</stream:features>');
    } finally {
      raw.close();
    }
    const c = parseFrame(features).getChild('c', 'http://jabber.org/protocol/caps')!;
    expect(c.attrs).toMatchObject({ hash: 'sha-1', node: expect.any(String), ver: expect.any(String) });
    const client = await RawClient.open(stack.wsUrl);
    try {
      await client.login(dave, `${dave}-pass`, 'caps');
      client.send(`<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='${c.attrs.node}#${c.attrs.ver}'/></iq>`);
      const result = parseFrame(await client.next(/id=["']d1["']/));
      const query = result.getChild('query', 'http://jabber.org/protocol/disco#info')!;
      expect(capsVer(query)).toBe(c.attrs.ver);
      expect(query.getChildren('feature').map((f) => f.attrs.var)).toContain('http://jabber.org/protocol/caps');
    } finally {
      client.close();
    }
  });
});
