/**
 * XEP-0163 PEP through the local stack with StanzaJS and @xmpp/client: avatars (XEP-0084) with
 * notifications filtered by XEP-0115 caps, the last item at login, an OMEMO device list readable by
 * strangers (access_model=open), publish-options preconditions, max_items, retract/purge/delete,
 * whitelists (XEP-0223) and the account's disco.
 */
import { createHash } from 'node:crypto';
import type { Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import { befriend, presenceWithCaps, record } from './social.ts';
import { capsVer } from '../../shared/caps.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { parseFrame } from '../../shared/xml/parse.ts';

const AVATAR_DATA = 'urn:xmpp:avatar:data';
const AVATAR_METADATA = 'urn:xmpp:avatar:metadata';
const DEVICELIST = 'eu.siacs.conversations.axolotl.devicelist';
const PUBSUB = 'http://jabber.org/protocol/pubsub';

let stack: LocalStack & { store: DynamoStore };
const open: Agent[] = [];

async function login(user: string, resource?: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  open.push(c);
  return c;
}

function publishOptions(fields: Record<string, string>) {
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
  return c.sendIQ({
    type: 'set',
    pubsub: {
      context: 'user',
      publish: { node: DEVICELIST, item: { id: 'current', content: { itemType: DEVICELIST, devices: ids } as any } },
      publishOptions: publishOptions({ 'pubsub#access_model': access }),
    },
  } as any);
}

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['alice', 'bob', 'carol', 'dave', 'stranger', 'olive', 'wendy', 'walter']) {
    await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
  }
});

afterAll(async () => {
  for (const c of open) c.disconnect();
  await stack?.stop();
});

describe('avatars (XEP-0084) over PEP', () => {
  const image = Buffer.from('not really a png, but bytes all the same');
  const id = createHash('sha1').update(image).digest('hex');

  it('notifies a subscribed contact whose caps ask for avatar metadata, not one whose caps do not', async () => {
    const alice = await login('alice', 'phone');
    const bob = await login('bob', 'laptop');
    const carol = await login('carol', 'old');
    await befriend(alice, bob);
    await befriend(alice, carol);
    // StanzaJS's avatar plugin already lists urn:xmpp:avatar:metadata+notify; carol's client does not want it.
    carol.disco.features.get('')!.delete(`${AVATAR_METADATA}+notify`);
    const bobEvents = record(bob, ['avatar', 'pubsub:published']);
    const carolEvents = record(carol, ['pubsub:published']);
    expect(await presenceWithCaps(bob, [])).toBe(true); // first time this hash is seen: the server asks
    await presenceWithCaps(carol, []);
    alice.sendPresence();

    await alice.publishAvatar(id, image);
    await alice.useAvatars([{ id, bytes: image.length, mediaType: 'image/png', width: 64, height: 64 }]);
    const seen = await bobEvents.wait((e) => e.kind === 'avatar' && e.data.jid === 'alice@localhost', 'avatar notification at bob');
    expect(seen.data.avatars).toEqual([expect.objectContaining({ id, bytes: image.length, mediaType: 'image/png' })]);
    // the data node is not something bob asked to be notified about
    expect(bobEvents.seen((e) => e.kind === 'pubsub:published' && e.data.pubsub.items.node === AVATAR_DATA)).toEqual([]);

    // fetching the data by id, as clients do after the metadata notification
    const fetched = await bob.getAvatar('alice@localhost', id);
    expect(Buffer.from(fetched.content!.data as any).equals(image)).toBe(true);

    // carol never hears of it; a later marker from alice arrives (so anything sent before it would have)
    alice.sendMessage({ to: carol.jid, type: 'chat', body: 'marker' });
    await new Promise<void>((resolve) => carol.once('chat', () => resolve()));
    expect(carolEvents.seen(() => true)).toEqual([]);
  });

  it('sends the last published item to a resource that comes online later, with a delay stamp', async () => {
    const bob = await login('bob', 'tablet');
    const events = record(bob, ['pubsub:published']);
    expect(await presenceWithCaps(bob, [])).toBe(false); // same hash as bob's laptop: known, no query
    const last = await events.wait((e) => e.kind === 'pubsub:published' && e.data.pubsub.items.node === AVATAR_METADATA, 'last item');
    expect(last.data.from).toBe('alice@localhost');
    expect(last.data.pubsub.items.published[0].content.versions).toEqual([expect.objectContaining({ id })]);
    expect(last.data.delay?.timestamp).toBeInstanceOf(Date);
  });

  it('asks a resource about its caps hash only once, however many resources share it', async () => {
    const dave = await login('dave', 'one');
    const dave2 = await login('dave', 'two');
    dave.disco.addFeature('urn:example:only-dave+notify');
    dave2.disco.addFeature('urn:example:only-dave+notify');
    expect(await presenceWithCaps(dave, [])).toBe(true);
    expect(await presenceWithCaps(dave2, [])).toBe(false);
  });
});

describe('OMEMO device list', () => {
  it('publishes with access_model=open and a stranger (no subscription) reads it', async () => {
    const olive = await login('olive');
    await publishDeviceList(olive, [1234, 5678]);
    const stranger = await login('stranger');
    const result = await stranger.getItems('olive@localhost', DEVICELIST);
    expect(result.items).toEqual([expect.objectContaining({ id: 'current', content: expect.objectContaining({ devices: [1234, 5678] }) })]);
  });

  it('keeps presence-access nodes from strangers with presence-subscription-required', async () => {
    const olive = await login('olive', 'presence');
    await olive.publish('', 'urn:example:private-ish', { itemType: 'http://jabber.org/protocol/tune', title: 'x' } as any, 'x');
    const stranger = await login('stranger', 'nosy');
    await expect(stranger.getItems('olive@localhost', 'urn:example:private-ish')).rejects.toMatchObject({
      error: { condition: 'not-authorized' },
    });
    // the raw reply names the pubsub condition
    const raw = await RawClient.open(stack.wsUrl);
    await raw.login('stranger', 'stranger-pass', 'raw');
    raw.send(`<iq type='get' id='i1' to='olive@localhost'><pubsub xmlns='${PUBSUB}'><items node='urn:example:private-ish'/></pubsub></iq>`);
    const reply = await raw.next(/id=["']i1["']/);
    expect(reply).toMatch(/<not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"\/>/);
    expect(reply).toContain(`<presence-subscription-required xmlns="${PUBSUB}#errors"/>`);
    raw.close();
  });

  it('refuses a publish whose options contradict the node (precondition-not-met), accepts it after configure', async () => {
    const olive = await login('olive', 'reconfig');
    await expect(publishDeviceList(olive, [1], 'presence')).rejects.toMatchObject({ error: { condition: 'conflict' } });
    // Conversations' recovery: reconfigure the node, publish again
    await olive.configureNode('olive@localhost', DEVICELIST, publishOptions({ 'pubsub#access_model': 'presence' }) as any);
    await publishDeviceList(olive, [1], 'presence');
    const config = await olive.getNodeConfig('olive@localhost', DEVICELIST);
    expect(config.fields).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'pubsub#access_model', value: 'presence' })]));
    const stranger = await login('stranger', 'again');
    await expect(stranger.getItems('olive@localhost', DEVICELIST)).rejects.toMatchObject({ error: { condition: 'not-authorized' } });
  });

  it('lets a stranger subscribe explicitly: last item at once, then each publication, until unsubscribed', async () => {
    const olive = await login('olive', 'subs');
    await olive.configureNode('olive@localhost', DEVICELIST, publishOptions({ 'pubsub#access_model': 'open' }) as any);
    const stranger = await login('stranger', 'subscriber');
    const events = record(stranger, ['pubsub:published']);
    stranger.sendPresence(); // a bare-JID subscription reaches available resources
    const sub = await stranger.subscribeToNode('olive@localhost', DEVICELIST);
    expect(sub).toMatchObject({ node: DEVICELIST, state: 'subscribed' });
    const last = await events.wait((e) => e.kind === 'pubsub:published', 'last item on subscription');
    expect(last.data.pubsub.items.published[0].content.devices).toEqual([1]);
    await publishDeviceList(olive, [1, 2]);
    const next = await events.wait((e) => e.kind === 'pubsub:published', 'notification to the subscriber');
    expect(next.data.pubsub.items.published[0].content.devices).toEqual([1, 2]);
    const subscribers = await olive.getNodeSubscribers('olive@localhost', DEVICELIST);
    expect(JSON.stringify(subscribers)).toContain('"stranger@localhost"');

    await stranger.unsubscribeFromNode('olive@localhost', DEVICELIST);
    await publishDeviceList(olive, [3]);
    // a message sent after the publication arrives after anything the publication caused
    const marker = new Promise<void>((resolve) => stranger.once('chat', () => resolve()));
    olive.sendMessage({ to: stranger.jid, type: 'chat', body: 'marker' });
    await marker;
    expect(events.seen(() => true)).toEqual([]);
    await expect(stranger.unsubscribeFromNode('olive@localhost', DEVICELIST)).rejects.toMatchObject({ error: { condition: 'unexpected-request' } });
    // presence-access nodes stay closed to strangers
    await expect(stranger.subscribeToNode('olive@localhost', 'urn:example:private-ish')).rejects.toMatchObject({ error: { condition: 'not-authorized' } });
  });

  it('lets only the owner publish', async () => {
    const stranger = await login('stranger', 'vandal');
    await expect(
      stranger.sendIQ({
        type: 'set',
        to: 'olive@localhost',
        pubsub: { context: 'user', publish: { node: DEVICELIST, item: { id: 'current', content: { itemType: DEVICELIST, devices: [666] } } } },
      } as any),
    ).rejects.toMatchObject({ error: { condition: 'forbidden' } });
  });
});

describe('items, retraction, purge and deletion', () => {
  it('keeps max_items, retracts with a notification, purges and deletes', async () => {
    const wendy = await login('wendy');
    const events = record(wendy, ['pubsub:published', 'pubsub:retracted', 'pubsub:purged', 'pubsub:deleted']);
    await presenceWithCaps(wendy, ['urn:example:notes']);
    for (const n of ['1', '2', '3']) {
      await wendy.sendIQ({
        type: 'set',
        pubsub: {
          context: 'user',
          publish: { node: 'urn:example:notes', item: { id: `n${n}`, content: { itemType: 'http://jabber.org/protocol/tune', title: `note ${n}` } } },
          publishOptions: publishOptions({ 'pubsub#max_items': '2' }),
        },
      } as any);
    }
    await events.wait((e) => e.kind === 'pubsub:published' && e.data.pubsub.items.published[0].id === 'n3', 'own notification');
    const items = await wendy.getItems('wendy@localhost', 'urn:example:notes');
    expect(items.items!.map((i) => i.id)).toEqual(['n2', 'n3']);

    await wendy.retract('wendy@localhost', 'urn:example:notes', 'n2', true);
    const retracted = await events.wait((e) => e.kind === 'pubsub:retracted', 'retract notification');
    expect(retracted.data.pubsub.items.retracted).toEqual(['n2']);
    await expect(wendy.retract('wendy@localhost', 'urn:example:notes', 'n2', true)).rejects.toMatchObject({ error: { condition: 'item-not-found' } });

    await wendy.purgeNode('wendy@localhost', 'urn:example:notes');
    await events.wait((e) => e.kind === 'pubsub:purged', 'purge notification');
    expect((await wendy.getItems('wendy@localhost', 'urn:example:notes')).items ?? []).toEqual([]);

    await wendy.deleteNode('wendy@localhost', 'urn:example:notes');
    await events.wait((e) => e.kind === 'pubsub:deleted', 'delete notification');
    await expect(wendy.getItems('wendy@localhost', 'urn:example:notes')).rejects.toMatchObject({ error: { condition: 'item-not-found' } });
  });

  it('rejects a publish without a payload and unknown publish-options', async () => {
    const wendy = await login('wendy', 'bad');
    await expect(
      wendy.sendIQ({ type: 'set', pubsub: { context: 'user', publish: { node: 'urn:example:x', item: { id: 'a' } } } } as any),
    ).rejects.toMatchObject({ error: { condition: 'bad-request' } });
    await expect(
      wendy.sendIQ({
        type: 'set',
        pubsub: {
          context: 'user',
          publish: { node: 'urn:example:x', item: { id: 'a', content: { itemType: 'http://jabber.org/protocol/tune', title: 't' } } },
          publishOptions: publishOptions({ 'pubsub#frobnicate': 'yes' }),
        },
      } as any),
    ).rejects.toMatchObject({ error: { condition: 'conflict' } });
  });
});

describe('whitelist nodes (XEP-0223)', () => {
  it('hides a whitelist node from contacts until the owner makes them members', async () => {
    const walter = await login('walter');
    const alice = await login('alice', 'wl');
    await befriend(walter, alice);
    await walter.sendIQ({
      type: 'set',
      pubsub: {
        context: 'user',
        publish: { node: 'urn:example:secret', item: { id: 'current', content: { itemType: 'http://jabber.org/protocol/tune', title: 'shh' } } },
        publishOptions: publishOptions({ 'pubsub#access_model': 'whitelist', 'pubsub#persist_items': 'true' }),
      },
    } as any);
    await expect(alice.getItems('walter@localhost', 'urn:example:secret')).rejects.toMatchObject({ error: { condition: 'not-allowed' } });
    await walter.updateNodeAffiliations('walter@localhost', 'urn:example:secret', [{ jid: 'alice@localhost', affiliation: 'member' }]);
    const items = await alice.getItems('walter@localhost', 'urn:example:secret');
    expect(items.items).toHaveLength(1);
    const affiliations = await walter.getNodeAffiliations('walter@localhost', 'urn:example:secret');
    expect(affiliations.items).toEqual(expect.arrayContaining([expect.objectContaining({ jid: 'alice@localhost', affiliation: 'member' })]));
  });
});

describe('discovery', () => {
  it('advertises PEP on the account (pubsub/pep, publish-options) and lists readable nodes', async () => {
    const olive = await login('olive', 'disco');
    const info = await olive.getDiscoInfo('olive@localhost');
    expect(info.identities).toEqual(expect.arrayContaining([expect.objectContaining({ category: 'pubsub', type: 'pep' })]));
    expect(info.features).toEqual(
      expect.arrayContaining([`${PUBSUB}#publish`, `${PUBSUB}#publish-options`, `${PUBSUB}#auto-create`, `${PUBSUB}#filtered-notifications`, `${PUBSUB}#config-node-max`]),
    );
    const items = await olive.getDiscoItems('olive@localhost');
    expect(items.items!.map((i) => i.node)).toEqual(expect.arrayContaining([DEVICELIST]));
    // And on the server JID, where clients look too.
    const server = await olive.getDiscoInfo('localhost');
    expect(server.identities).toEqual(expect.arrayContaining([expect.objectContaining({ category: 'pubsub', type: 'pep' }), expect.objectContaining({ category: 'server', type: 'im' })]));
    expect(server.features).toEqual(expect.arrayContaining([`${PUBSUB}#publish`, `${PUBSUB}#publish-options`]));
  });

  it('puts the server caps in the stream features, naming exactly the server disco#info', async () => {
    const raw = await RawClient.open(stack.wsUrl);
    raw.open();
    const features = await raw.next('</stream:features>');
    const c = parseFrame(features).getChild('c', 'http://jabber.org/protocol/caps')!;
    expect(c.attrs).toMatchObject({ hash: 'sha-1', node: expect.any(String), ver: expect.any(String) });
    raw.close();
    const client = await RawClient.open(stack.wsUrl);
    await client.login('dave', 'dave-pass', 'caps');
    client.send(`<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='${c.attrs.node}#${c.attrs.ver}'/></iq>`);
    const result = parseFrame(await client.next(/id=["']d1["']/));
    const query = result.getChild('query', 'http://jabber.org/protocol/disco#info')!;
    expect(capsVer(query)).toBe(c.attrs.ver);
    expect(query.getChildren('feature').map((f) => f.attrs.var)).toContain('http://jabber.org/protocol/caps');
    client.close();
  });
});
