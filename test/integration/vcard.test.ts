/**
 * XEP-0054 vcard-temp and avatar compatibility (XEP-0153, XEP-0398) through the local stack with
 * StanzaJS: vCards round trip and are readable by others, a vCard photo becomes the PEP avatar
 * (with notifications) and a PEP avatar shows up in vCards and in presence hashes.
 */
import { createHash } from 'node:crypto';
import type { Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import { befriend, presenceWithCaps, record } from './social.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };
const agents: Agent[] = [];

async function login(user: string, resource: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  agents.push(c);
  return c;
}

// A 1×1 PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['vera', 'vic', 'nosy', 'pam']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  for (const c of agents) c.disconnect();
  await stack?.stop();
});

describe('vcard-temp', () => {
  it('stores a vCard and serves it to the owner and to others', async () => {
    const vera = await login('vera', 'desk');
    await vera.publishVCard({
      fullName: 'Vera Example',
      name: { given: 'Vera', family: 'Example' },
      records: [
        { type: 'nickname', value: 'vee' },
        { type: 'email', value: 'vera@example.org', types: ['internet'] },
      ],
    });
    const own = await vera.getVCard('vera@localhost');
    expect(own.fullName).toBe('Vera Example');
    expect(own.name).toMatchObject({ given: 'Vera', family: 'Example' });
    const nosy = await login('nosy', 'x');
    const seen = await nosy.getVCard('vera@localhost');
    expect(seen.records).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'nickname', value: 'vee' })]));
  });

  it("refuses to change someone else's vCard, and answers for unknown users with service-unavailable", async () => {
    const nosy = await login('nosy', 'y');
    await expect(nosy.sendIQ({ type: 'set', to: 'vera@localhost', vcard: { fullName: 'pwned' } } as any)).rejects.toMatchObject({
      error: { condition: 'forbidden' },
    });
    await expect(nosy.getVCard('nobody@localhost')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    const vera = await login('vera', 'check');
    expect((await vera.getVCard('vera@localhost')).fullName).toBe('Vera Example');
  });

  it('advertises vcard-temp and the PEP↔vCard conversion', async () => {
    const vera = await login('vera', 'disco');
    expect((await vera.getDiscoInfo('localhost')).features).toContain('vcard-temp');
    expect((await vera.getDiscoInfo('vera@localhost')).features).toContain('urn:xmpp:pep-vcard-conversion:0');
  });
});

describe('avatars between vCard and PEP', () => {
  it('turns a vCard photo into the PEP avatar: contacts are notified and fetch the same bytes', async () => {
    const vic = await login('vic', 'phone');
    const pam = await login('pam', 'laptop');
    await befriend(vic, pam);
    const events = record(pam, ['avatar']);
    await presenceWithCaps(pam, []); // StanzaJS asks for urn:xmpp:avatar:metadata+notify
    await vic.publishVCard({ fullName: 'Vic', records: [{ type: 'photo', data: PNG.toString('base64') as any, mediaType: 'image/png' }] });
    const note = await events.wait((e) => e.kind === 'avatar' && e.data.jid === 'vic@localhost' && e.data.source === 'pubsub', 'avatar notification');
    expect(note.data.avatars).toEqual([expect.objectContaining({ id: sha1(PNG), bytes: PNG.length, mediaType: 'image/png' })]);
    const data = await pam.getAvatar('vic@localhost', sha1(PNG));
    expect(Buffer.from(data.content!.data as any).equals(PNG)).toBe(true);
    // the vCard itself still has the photo, for XEP-0153 clients
    const vcard = await pam.getVCard('vic@localhost');
    // StanzaJS keeps BINVAL as the base64 text
    const photo = vcard.records!.find((r) => r.type === 'photo') as any;
    expect(Buffer.from(photo.data, 'base64').equals(PNG)).toBe(true);
    expect(vcard.fullName).toBe('Vic');
  });

  it('puts the avatar hash in presence (XEP-0153) on behalf of the client', async () => {
    const vic = await login('vic', 'tablet');
    const pam = await login('pam', 'watch');
    const seen = new Promise<any>((resolve) => {
      pam.on('presence', (p: any) => {
        if (p.from === 'vic@localhost/tablet' && p.vcardAvatar) resolve(p);
      });
    });
    await pam.getRoster();
    pam.sendPresence();
    vic.sendPresence();
    expect((await seen).vcardAvatar).toBe(sha1(PNG));
  });

  it('shows a PEP-published avatar in the vCard of an open-avatar user, and a vCard without photo disables it', async () => {
    const vera = await login('vera', 'avatar');
    const image = Buffer.concat([PNG, Buffer.from('x')]);
    await vera.sendIQ({
      type: 'set',
      pubsub: {
        context: 'user',
        publish: { node: 'urn:xmpp:avatar:data', item: { id: sha1(image), content: { itemType: 'urn:xmpp:avatar:data', data: image } } },
        publishOptions: { type: 'submit', fields: [{ name: 'FORM_TYPE', type: 'hidden', value: 'http://jabber.org/protocol/pubsub#publish-options' }, { name: 'pubsub#access_model', value: 'open' }] },
      },
    } as any);
    await vera.sendIQ({
      type: 'set',
      pubsub: {
        context: 'user',
        publish: { node: 'urn:xmpp:avatar:metadata', item: { id: sha1(image), content: { itemType: 'urn:xmpp:avatar:metadata', versions: [{ id: sha1(image), bytes: image.length, mediaType: 'image/png' }] } } },
        publishOptions: { type: 'submit', fields: [{ name: 'FORM_TYPE', type: 'hidden', value: 'http://jabber.org/protocol/pubsub#publish-options' }, { name: 'pubsub#access_model', value: 'open' }] },
      },
    } as any);
    const nosy = await login('nosy', 'z');
    const vcard = await nosy.getVCard('vera@localhost');
    const photo = vcard.records!.find((r) => r.type === 'photo') as any;
    expect(Buffer.from(photo.data, 'base64').equals(image)).toBe(true);
    expect(vcard.fullName).toBe('Vera Example');

    // XEP-0153 semantics: a vCard without a photo means no avatar
    await vera.publishVCard({ fullName: 'Vera Example' });
    const after = await nosy.getVCard('vera@localhost');
    expect(after.records?.find((r) => r.type === 'photo')).toBeUndefined();
    const metadata = await nosy.getItems('vera@localhost', 'urn:xmpp:avatar:metadata');
    expect((metadata.items![0]!.content as any).versions ?? []).toEqual([]);
  });
});
