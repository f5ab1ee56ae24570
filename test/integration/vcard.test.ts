/**
 * XEP-0054 vcard-temp and avatar compatibility (XEP-0153, XEP-0398) through the local stack with
 * StanzaJS: vCards round trip and are readable by others, a vCard photo becomes the PEP avatar
 * (with notifications) and a PEP avatar shows up in vCards and in presence hashes.
 */
import { createHash } from 'node:crypto';
import type { Agent, Stanzas } from 'stanza';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addFreshUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import { befriend, presenceWithCaps, record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };
/** The clients the running test opened, disconnected after it whatever its outcome. */
let agents: Agent[] = [];
const newUser = (name: string) => addFreshUser(stack.store, name);

async function login(user: string, resource: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  agents.push(c);
  return c;
}

// A 1×1 PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');

/** Vera's vCard, as the first test stores it (and the tests that read it store it first). */
const VERA: Stanzas.VCardTemp = {
  fullName: 'Vera Example',
  name: { given: 'Vera', family: 'Example' },
  records: [
    { type: 'nickname', value: 'vee' },
    { type: 'email', value: 'vera@example.org', types: ['internet'] },
  ],
};

/**
 * StanzaJS 12 types a vCard photo's BINVAL as a Buffer, but reads and writes it as the base64 text
 * (a string): these two say so once.
 */
type PhotoAsText = Omit<Stanzas.VCardTempPhoto, 'data'> & { data?: string };
const photoRecord = (photo: PhotoAsText) => photo as unknown as Stanzas.VCardTempPhoto;
const photoOf = (vcard: Stanzas.VCardTemp) => vcard.records?.find((r) => r.type === 'photo') as PhotoAsText | undefined;

beforeAll(async () => {
  stack = await startTestStack();
});

afterEach(() => {
  for (const c of agents) c.disconnect();
  agents = [];
});

afterAll(async () => {
  await stack?.stop();
});

describe('vcard-temp', () => {
  it('stores a vCard and serves it to the owner and to others', async () => {
    const veraUser = await newUser('vera');
    const vera = await login(veraUser, 'desk');
    await vera.publishVCard(VERA);
    const own = await vera.getVCard(`${veraUser}@localhost`);
    expect(own.fullName).toBe('Vera Example');
    expect(own.name).toMatchObject({ given: 'Vera', family: 'Example' });
    const nosy = await login(await newUser('nosy'), 'x');
    const seen = await nosy.getVCard(`${veraUser}@localhost`);
    expect(seen.records).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'nickname', value: 'vee' })]));
  });

  it("refuses to change someone else's vCard, and answers for unknown users with service-unavailable", async () => {
    const veraUser = await newUser('vera');
    await (await login(veraUser, 'desk')).publishVCard(VERA);
    const nosy = await login(await newUser('nosy'), 'y');
    await expect(nosy.sendIQ({ type: 'set', to: `${veraUser}@localhost`, vcard: { fullName: 'pwned' } })).rejects.toMatchObject({
      error: { condition: 'forbidden' },
    });
    await expect(nosy.getVCard('nobody@localhost')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    const vera = await login(veraUser, 'check');
    expect((await vera.getVCard(`${veraUser}@localhost`)).fullName).toBe('Vera Example');
  });

  it('advertises vcard-temp and the PEP↔vCard conversion', async () => {
    const veraUser = await newUser('vera');
    const vera = await login(veraUser, 'disco');
    expect((await vera.getDiscoInfo('localhost')).features).toContain('vcard-temp');
    expect((await vera.getDiscoInfo(`${veraUser}@localhost`)).features).toContain('urn:xmpp:pep-vcard-conversion:0');
  });
});

describe('avatars between vCard and PEP', () => {
  // The first two tests are one story: the second sees the avatar and the friendship of the first. The accounts are theirs.
  let vicUser: string;
  let pamUser: string;

  beforeAll(async () => {
    [vicUser, pamUser] = [await newUser('vic'), await newUser('pam')];
  });

  it('turns a vCard photo into the PEP avatar: contacts are notified and fetch the same bytes', async () => {
    const vic = await login(vicUser, 'phone');
    const pam = await login(pamUser, 'laptop');
    await befriend(vic, pam);
    const events = record(pam, ['avatar']);
    await presenceWithCaps(pam, []); // StanzaJS asks for urn:xmpp:avatar:metadata+notify
    await vic.publishVCard({ fullName: 'Vic', records: [photoRecord({ type: 'photo', data: PNG.toString('base64'), mediaType: 'image/png' })] });
    const note = await events.waitFor('avatar', (e) => e.data.jid === `${vicUser}@localhost` && e.data.source === 'pubsub', 'avatar notification');
    expect(note.data.avatars).toEqual([expect.objectContaining({ id: sha1(PNG), bytes: PNG.length, mediaType: 'image/png' })]);
    const data = await pam.getAvatar(`${vicUser}@localhost`, sha1(PNG));
    expect(Buffer.from(data.content!.data!).equals(PNG)).toBe(true);
    // the vCard itself still has the photo, for XEP-0153 clients
    const vcard = await pam.getVCard(`${vicUser}@localhost`);
    // StanzaJS keeps BINVAL as the base64 text
    const photo = photoOf(vcard)!;
    expect(Buffer.from(photo.data!, 'base64').equals(PNG)).toBe(true);
    expect(vcard.fullName).toBe('Vic');
  });

  it('puts the avatar hash in presence (XEP-0153) on behalf of the client', async () => {
    const vic = await login(vicUser, 'tablet');
    const pam = await login(pamUser, 'watch');
    const seen = new Promise<Stanzas.ReceivedPresence>((resolve) => {
      pam.on('presence', (p) => {
        if (p.from === `${vicUser}@localhost/tablet` && p.vcardAvatar) resolve(p);
      });
    });
    await pam.getRoster();
    pam.sendPresence();
    vic.sendPresence();
    expect((await seen).vcardAvatar).toBe(sha1(PNG));
    // A session of Pam's that comes online later is shown Vic's stored presence: the hash was
    // stored with it (added alongside the broadcast's first write).
    const later = await login(pamUser, 'phone');
    const stored = new Promise<Stanzas.ReceivedPresence>((resolve) => {
      later.on('presence', (p) => {
        if (p.from === `${vicUser}@localhost/tablet`) resolve(p);
      });
    });
    await later.getRoster();
    later.sendPresence();
    expect((await stored).vcardAvatar).toBe(sha1(PNG));
  });

  it('shows a PEP-published avatar in the vCard of an open-avatar user, and a vCard without photo disables it', async () => {
    const veraUser = await newUser('vera');
    const vera = await login(veraUser, 'avatar');
    await vera.publishVCard(VERA);
    const image = Buffer.concat([PNG, Buffer.from('x')]);
    const openAccess: Stanzas.DataForm = {
      type: 'submit',
      fields: [
        { name: 'FORM_TYPE', type: 'hidden', value: 'http://jabber.org/protocol/pubsub#publish-options' },
        { name: 'pubsub#access_model', value: 'open' },
      ],
    };
    const avatarData: Stanzas.AvatarData = { itemType: 'urn:xmpp:avatar:data', data: image };
    await vera.sendIQ({
      type: 'set',
      pubsub: { context: 'user', publish: { node: 'urn:xmpp:avatar:data', item: { id: sha1(image), content: avatarData } }, publishOptions: openAccess },
    });
    const avatarMetadata: Stanzas.AvatarMetaData = { itemType: 'urn:xmpp:avatar:metadata', versions: [{ id: sha1(image), bytes: image.length, mediaType: 'image/png' }] };
    await vera.sendIQ({
      type: 'set',
      pubsub: { context: 'user', publish: { node: 'urn:xmpp:avatar:metadata', item: { id: sha1(image), content: avatarMetadata } }, publishOptions: openAccess },
    });
    const nosy = await login(await newUser('nosy'), 'z');
    const vcard = await nosy.getVCard(`${veraUser}@localhost`);
    const photo = photoOf(vcard)!;
    expect(Buffer.from(photo.data!, 'base64').equals(image)).toBe(true);
    expect(vcard.fullName).toBe('Vera Example');

    // XEP-0153 semantics: a vCard without a photo means no avatar
    await vera.publishVCard({ fullName: 'Vera Example' });
    const after = await nosy.getVCard(`${veraUser}@localhost`);
    expect(after.records?.find((r) => r.type === 'photo')).toBeUndefined();
    const metadata = await nosy.getItems<Stanzas.AvatarMetaData>(`${veraUser}@localhost`, 'urn:xmpp:avatar:metadata');
    expect(metadata.items![0]!.content!.versions ?? []).toEqual([]);
  });
});
