/**
 * XEP-0054 vcard-temp, with avatars unified with XEP-0084 (XEP-0398, XEP-0153):
 * - the photo has one home, the PEP avatar nodes. A vCard set with an embedded PHOTO publishes it
 *   there (data, then metadata; new nodes are open, as vCards are public); a vCard set without one
 *   disables the avatar. A vCard get carries the current PEP avatar as PHOTO when the requester may
 *   read both avatar nodes (XEP-0398 §5.2, "inject on request").
 * - every available presence a client sends gets the avatar hash (<x xmlns='vcard-temp:x:update'>),
 *   unless it already carries a non-empty one (XEP-0398 §4).
 */
import { createHash } from 'node:crypto';
import { StanzaError } from '../errors.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import type { PepNode } from '../storage/pep-store.ts';
import { VCardStore } from '../storage/vcard-store.ts';
import { Element, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { checkAccess, pepStore, publishItem } from '../lib/pep.ts';

export const VCARD = 'vcard-temp';
const VCARD_UPDATE = 'vcard-temp:x:update';
const CONVERSION = 'urn:xmpp:pep-vcard-conversion:0';
const AVATAR_DATA = 'urn:xmpp:avatar:data';
const AVATAR_METADATA = 'urn:xmpp:avatar:metadata';
const NEW_AVATAR_NODE = new Map([['pubsub#access_model', ['open']]]);

const vcardStore = (server: ModuleServer): VCardStore => server.store.open(VCardStore);

function parse(xml: string | undefined): Element | undefined {
  return xml === undefined ? undefined : parseStored(xml, 'vCard data');
}

interface Avatar {
  id: string;
  type: string;
  data: PepNode;
  metadata: PepNode;
}

/** The current XEP-0084 avatar: the metadata's first <info/> stored in PEP (not an external URL). */
async function currentAvatar(server: ModuleServer, owner: string): Promise<Avatar | null | undefined> {
  const nodes = await pepStore(server).listNodes(owner, 'urn:xmpp:avatar:');
  const metadata = nodes.find((n) => n.node === AVATAR_METADATA);
  const data = nodes.find((n) => n.node === AVATAR_DATA);
  if (!metadata?.last) return undefined; // never published
  const info = parse(metadata.last.xml)
    ?.getChildren('info')
    .find((i) => i.attrs.id && !i.attrs.url);
  if (!info || !data) return null; // published, but disabled (or only elsewhere)
  return { id: info.attrs.id!, type: info.attrs.type ?? 'image/png', data, metadata };
}

async function mayRead(server: ModuleServer, avatar: Avatar, requester: string): Promise<boolean> {
  try {
    await checkAccess(server, avatar.data, requester);
    await checkAccess(server, avatar.metadata, requester);
    return true;
  } catch (err) {
    if (err instanceof StanzaError) return false;
    throw err;
  }
}

function sniffType(bytes: Buffer): string | undefined {
  if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'image/jpeg';
  if (bytes.subarray(0, 4).toString('latin1') === 'GIF8') return 'image/gif';
  if (bytes.subarray(0, 4).toString('latin1') === 'RIFF' && bytes.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  return undefined;
}

/** vCard → PEP (XEP-0398 §5.2): data item (id = SHA-1 of the image), then metadata pointing at it. */
async function publishPhoto(server: ModuleServer, owner: string, photo: Element, by?: ClientSession): Promise<void> {
  const binval = (photo.getChildText('BINVAL') ?? '').replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(binval)) throw new StanzaError('bad-request', 'PHOTO/BINVAL is not base64');
  const bytes = Buffer.from(binval, 'base64');
  if (bytes.length === 0) throw new StanzaError('bad-request', 'PHOTO/BINVAL is empty');
  const id = createHash('sha1').update(bytes).digest('hex');
  const type = photo.getChildText('TYPE')?.trim() || sniffType(bytes) || 'image/png';
  const current = await currentAvatar(server, owner);
  if (current && current.id === id) return;
  const store = pepStore(server);
  const dataExists = await store.getNode(owner, AVATAR_DATA);
  await publishItem(server, {
    owner,
    node: AVATAR_DATA,
    id,
    payload: x('data', { xmlns: AVATAR_DATA }, bytes.toString('base64')),
    options: dataExists ? undefined : NEW_AVATAR_NODE,
    by,
  });
  const metadataExists = await store.getNode(owner, AVATAR_METADATA);
  await publishItem(server, {
    owner,
    node: AVATAR_METADATA,
    id,
    payload: x('metadata', { xmlns: AVATAR_METADATA }, x('info', { id, bytes: bytes.length, type })),
    options: metadataExists ? undefined : NEW_AVATAR_NODE,
    by,
  });
}

/** A vCard without a photo means no avatar (XEP-0153): publish empty metadata (XEP-0084 §4.5). */
async function disableAvatar(server: ModuleServer, owner: string, by?: ClientSession): Promise<void> {
  const current = await currentAvatar(server, owner);
  if (!current) return;
  await publishItem(server, { owner, node: AVATAR_METADATA, id: 'current', payload: x('metadata', { xmlns: AVATAR_METADATA }), by });
}

async function getVCard(server: ModuleServer, owner: string, requester: string): Promise<Element> {
  const [stored, avatar] = await Promise.all([vcardStore(server).get(owner), currentAvatar(server, owner)]);
  const vcard = parse(stored) ?? x('vCard', { xmlns: VCARD });
  if (avatar && (await mayRead(server, avatar, requester))) {
    const item = await pepStore(server).getItem(owner, AVATAR_DATA, avatar.id);
    const data = parse(item?.xml)?.getText().replace(/\s+/g, '');
    if (data) vcard.append(x('PHOTO', {}, x('TYPE', {}, avatar.type), x('BINVAL', {}, data)));
  }
  return vcard;
}

/**
 * XEP-0398 §4: the avatar hash in every available presence a client sends: directed presence on
 * its way ('presence'), a broadcast alongside its first writes ('presence/decorate').
 */
async function injectHash({ server, stanza, to, session }: StanzaEvent): Promise<boolean> {
  if (!session || stanza.attrs.type) return false;
  const update = stanza.getChild('x', VCARD_UPDATE);
  if (update?.getChild('photo')) {
    // A client-set hash stays; an empty one (no avatar yet) may be filled in below.
    if (update.getChildText('photo')?.trim()) return false;
  }
  const avatar = await currentAvatar(server, session.bare);
  if (avatar === undefined && !update) return false; // no avatar ever: nothing to say
  // Broadcasts reach subscribers (presence access); directed presence may reach anyone.
  const visible = avatar && (to ? avatar.data.config.accessModel === 'open' && avatar.metadata.config.accessModel === 'open' : avatar.data.config.accessModel !== 'whitelist');
  if (update) stanza.remove(update);
  stanza.append(x('x', { xmlns: VCARD_UPDATE }, x('photo', {}, visible ? avatar.id : undefined)));
  return false;
}

export const vcardModule: XmppModule = {
  name: 'vcard',
  setup(reg) {
    reg.feature(VCARD);
    reg.feature(CONVERSION, 'account');
    reg.hook('presence', (event) => (event.to ? injectHash(event) : Promise.resolve(false)), 50);
    reg.hook('presence/decorate', injectHash);
    reg.iq('account', VCARD, async ({ server, type, payload, from, to, session }) => {
      if (!payload.is('vCard')) throw new StanzaError('bad-request', 'expected <vCard/>');
      if (type === 'get') {
        if (from.bare !== to.bare && !(await server.store.getUserRoute(to.bare)).exists) throw new StanzaError('service-unavailable');
        return getVCard(server, to.bare, from.bare);
      }
      if (from.bare !== to.bare) throw new StanzaError('forbidden', 'only the owner may change a vCard');
      const vcard = x('vCard', { xmlns: VCARD });
      let photo: Element | undefined;
      for (const child of payload.children) {
        if (typeof child === 'string') continue;
        if (child.name === 'PHOTO' && child.getChild('BINVAL')) photo ??= child;
        else vcard.append(child);
      }
      if (photo) await publishPhoto(server, to.bare, photo, session);
      else if (!payload.getChild('PHOTO')) await disableAvatar(server, to.bare, session);
      await vcardStore(server).put(to.bare, vcard.toString());
      return undefined;
    });
  },
};
