/**
 * Registered nicknames (XEP-0045 §7.10, §7.12): registering one in a room (which makes the user a
 * member), cancelling it, and the disco#info node that tells a user the nickname it registered.
 */
import { StanzaError } from '../../errors.ts';
import type { IqRequest } from '../../core/registry.ts';
import { readForm, buildForm } from '../../xml/data-form.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { AFFILIATION_RANK, MAX_NICK_BYTES } from './stanzas.ts';
import type { MucService } from './service.ts';

/** XEP-0045 §7.10 and §7.12: nickname registration, and where a registered nickname is asked for. */
const MUC_REGISTER = 'http://jabber.org/protocol/muc#register';
export const ROOMUSER_NODE = 'x-roomuser-item';

/** §7.12: the nickname the requester registered, as the name of an identity (none: no identity). */
export async function registeredNickInfo(muc: MucService, room: string, bare: string): Promise<Element> {
  const nick = await muc.store.registeredNick(room, bare);
  return x('query', { xmlns: NS.DISCO_INFO, node: ROOMUSER_NODE }, nick ? x('identity', { category: 'conference', type: 'text', name: nick }) : undefined);
}

export async function registerNick(muc: MucService, request: IqRequest): Promise<Element | undefined> {
  const room = await muc.existingRoom(request);
  const bare = request.from.bare;
  const affiliation = await muc.store.getAffiliation(room.jid, bare);
  if (affiliation === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
  if (request.type === 'get') {
    const nick = await muc.store.registeredNick(room.jid, bare);
    if (nick) return x('query', { xmlns: NS.REGISTER }, x('registered'), x('username', {}, nick));
    return x(
      'query',
      { xmlns: NS.REGISTER },
      x('instructions', {}, 'Register a nickname in this room: nobody else can take it, and you become a member.'),
      buildForm('form', MUC_REGISTER, [{ var: 'muc#register_roomnick', type: 'text-single', label: 'Desired Nickname' }], 'Nickname registration'),
    );
  }
  if (request.payload.getChild('remove')) {
    await muc.store.unregisterNick(room.jid, bare);
    // §7.10.2: cancelling registration ends membership, not a higher affiliation.
    if (affiliation === 'member') await muc.setAffiliation(room.jid, bare, 'none');
    return undefined;
  }
  const form = readForm(request.payload);
  if (!form || form.formType !== MUC_REGISTER || form.type !== 'submit') throw new StanzaError('bad-request', 'submit the muc#register form');
  const nick = form.fields.get('muc#register_roomnick')?.[0]?.trim();
  if (!nick) throw new StanzaError('not-acceptable', 'a nickname is required');
  if (Buffer.byteLength(nick, 'utf8') > MAX_NICK_BYTES) throw new StanzaError('not-acceptable', `nicknames are limited to ${MAX_NICK_BYTES} bytes`);
  // In a members-only room only members register (the owner decides who is one).
  if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) throw new StanzaError('registration-required', 'this room is for members only');
  const inUse = (await muc.store.listOccupants(room.jid)).find((o) => o.nick === nick && o.bare !== bare);
  if (inUse || !(await muc.store.registerNick(room.jid, bare, nick))) throw new StanzaError('conflict', 'that nickname is taken');
  if (affiliation === 'none') await muc.setAffiliation(room.jid, bare, 'member');
  return undefined;
}
