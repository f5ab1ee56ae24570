/**
 * Service discovery (XEP-0030, XEP-0045 §6): what the service itself answers (its identity and
 * the public room directory) and a room's disco#info (features, muc#roominfo).
 */
import { OCCUPANT_ID } from './occupant-id.ts';
import { StanzaError } from '../../errors.ts';
import type { IqRequest } from '../../core/registry.ts';
import { buildForm } from '../../xml/data-form.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { MAM, SID } from '../../lib/mam-query.ts';
import { configFeatures } from './config.ts';
import { MODERATE } from './moderation.ts';
import { ROOMUSER_NODE, registeredNickInfo } from './register.ts';
import { MUC, ROOMINFO, SELF_PING, STABLE_ID } from './stanzas.ts';
import type { HostEvent, MucService } from './service.ts';

export async function serviceStanza(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza } = event;
  if (stanza.name !== 'iq') {
    if (stanza.name === 'message' && stanza.attrs.type !== 'error') await muc.replyError(event, new StanzaError('service-unavailable'));
    return;
  }
  const type = stanza.attrs.type;
  if (type !== 'get' && type !== 'set') return;
  await muc.answer(event, async ({ payload, type }) => {
    if (payload.is('query', NS.DISCO_INFO)) {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      return x(
        'query',
        { xmlns: NS.DISCO_INFO },
        x('identity', { category: 'conference', type: 'text', name: 'Chatrooms' }),
        ...[NS.DISCO_INFO, NS.DISCO_ITEMS, MUC].map((v) => x('feature', { var: v })),
      );
    }
    if (payload.is('query', NS.DISCO_ITEMS)) {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      const rooms = (await muc.store.listDirectory(muc.domain)).filter((r) => r.public);
      return x('query', { xmlns: NS.DISCO_ITEMS }, ...rooms.map((r) => x('item', { jid: r.room, name: r.name || undefined })));
    }
    throw new StanzaError('service-unavailable');
  });
}

export async function roomInfo(muc: MucService, { type, payload, to, from }: IqRequest): Promise<Element> {
  if (type !== 'get') throw new StanzaError('bad-request');
  if (payload.attrs.node === ROOMUSER_NODE) return registeredNickInfo(muc, to.bare, from.bare);
  if (payload.attrs.node) throw new StanzaError('item-not-found');
  const room = await muc.store.getRoom(to.bare);
  if (!room || (room.locked && (await muc.store.getAffiliation(room.jid, from.bare)) !== 'owner')) throw new StanzaError('item-not-found', 'no such room');
  const occupants = await muc.store.listOccupants(room.jid);
  const features = [NS.DISCO_INFO, MUC, STABLE_ID, SELF_PING, MAM, SID, OCCUPANT_ID, MODERATE, NS.REGISTER, ...configFeatures(room.config)];
  return x(
    'query',
    { xmlns: NS.DISCO_INFO },
    x('identity', { category: 'conference', type: 'text', name: room.config.name || to.local }),
    ...features.map((v) => x('feature', { var: v })),
    buildForm('result', ROOMINFO, [
      { var: 'muc#roominfo_description', values: [room.config.description] },
      { var: 'muc#roominfo_subject', values: [room.subject?.text ?? ''] },
      { var: 'muc#roominfo_subjectmod', type: 'boolean', values: [room.config.changeSubject ? '1' : '0'] },
      { var: 'muc#roominfo_occupants', values: [String(occupants.length)] },
      { var: 'muc#roomconfig_roomname', values: [room.config.name] },
    ]),
  );
}
