/**
 * muc#admin (XEP-0045 §8, §9, §10.3–§10.8): reading the affiliation and role lists, and changing
 * roles and affiliations (kick, ban, voice, membership, admin and owner), every requested change
 * checked before any is applied.
 */
import { StanzaError } from '../../errors.ts';
import { tryParseJid } from '../../jid.ts';
import type { IqRequest } from '../../core/registry.ts';
import type { Affiliation, Occupant, Role, Room } from '../../storage/muc-store.ts';
import { Element, x } from '../../xml/element.ts';
import { broadcastPresence } from './fanout.ts';
import { LostRace } from './lost-race.ts';
import { removeOccupant } from './occupancy.ts';
import { AFFILIATIONS, AFFILIATION_RANK, MUC_ADMIN, ROLES, defaultRole } from './stanzas.ts';
import type { MucService } from './service.ts';

export async function admin(muc: MucService, request: IqRequest): Promise<Element | undefined> {
  const { payload, type, from } = request;
  const room = await muc.existingRoom(request);
  const [actorAffiliation, occupants] = await Promise.all([muc.store.getAffiliation(room.jid, from.bare), muc.store.listOccupants(room.jid)]);
  const actor = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
  const actorRank = AFFILIATION_RANK[actorAffiliation];
  const actorRole: Role = actor?.role ?? (actorRank >= AFFILIATION_RANK.admin ? 'moderator' : 'none');
  const items = payload.getChildren('item');
  if (!items.length) throw new StanzaError('bad-request', 'expected <item/>');
  if (type === 'get') return adminList(muc, room, occupants, items[0]!, actorAffiliation, actorRole);
  // All-or-nothing: every change is checked before any is applied.
  const changes = await Promise.all(items.map((item) => checkAdminChange(muc, room, occupants, item, actorAffiliation, actorRole, actor)));
  let current = occupants;
  for (const change of changes) current = await change(current);
}

async function adminList(muc: MucService, room: Room, occupants: Occupant[], item: Element, actorAffiliation: Affiliation, actorRole: Role): Promise<Element> {
  const rank = AFFILIATION_RANK[actorAffiliation];
  const affiliation = item.attrs.affiliation as Affiliation | undefined;
  const role = item.attrs.role as Role | undefined;
  if (affiliation) {
    if (!AFFILIATIONS.includes(affiliation) || affiliation === 'none') throw new StanzaError('bad-request', 'unknown affiliation');
    // Members of a members-only room may read who else belongs: the member list, and in a
    // non-anonymous room (real JIDs visible anyway) the owners and admins too, which group OMEMO
    // needs to encrypt to members who are offline (Prosody allows the same).
    const memberMayRead = affiliation === 'member' || (room.config.whois === 'anyone' && (affiliation === 'admin' || affiliation === 'owner'));
    const allowed = rank >= AFFILIATION_RANK.admin || (memberMayRead && rank >= AFFILIATION_RANK.member && room.config.membersOnly);
    if (!allowed) throw new StanzaError('forbidden', 'you may not see that list');
    const list = (await muc.store.listAffiliations(room.jid)).filter((a) => a.affiliation === affiliation);
    return x(
      'query',
      { xmlns: MUC_ADMIN },
      ...list.map((a) => x('item', { affiliation: a.affiliation, jid: a.jid, nick: occupants.find((o) => o.bare === a.jid)?.nick }, a.reason ? x('reason', {}, a.reason) : undefined)),
    );
  }
  if (role) {
    if (role !== 'moderator' && role !== 'participant' && role !== 'visitor') throw new StanzaError('bad-request', 'unknown role');
    const allowed = role === 'moderator' ? rank >= AFFILIATION_RANK.admin : actorRole === 'moderator';
    if (!allowed) throw new StanzaError('forbidden', 'you may not see that list');
    return x(
      'query',
      { xmlns: MUC_ADMIN },
      ...occupants.filter((o) => o.role === role).map((o) => x('item', { nick: o.nick, role: o.role, affiliation: o.affiliation, jid: o.bare })),
    );
  }
  throw new StanzaError('bad-request', 'ask for an affiliation or a role');
}

/** Validates one muc#admin item and returns the function that applies it. */
async function checkAdminChange(
  muc: MucService,
  room: Room,
  occupants: Occupant[],
  item: Element,
  actorAffiliation: Affiliation,
  actorRole: Role,
  actor: Occupant | undefined,
): Promise<(current: Occupant[]) => Promise<Occupant[]>> {
  const actorRank = AFFILIATION_RANK[actorAffiliation];
  const reason = item.getChildText('reason') ?? undefined;
  const actorNick = actor?.nick;
  if (item.attrs.affiliation !== undefined) {
    const affiliation = item.attrs.affiliation as Affiliation;
    if (!AFFILIATIONS.includes(affiliation)) throw new StanzaError('bad-request', 'unknown affiliation');
    let bare: string | undefined;
    if (item.attrs.jid) {
      const jid = tryParseJid(item.attrs.jid);
      if (!jid) throw new StanzaError('jid-malformed', `"${item.attrs.jid}" is not a JID`);
      bare = jid.bare;
    } else if (item.attrs.nick) {
      bare = occupants.find((o) => o.nick === item.attrs.nick)?.bare;
      if (!bare) throw new StanzaError('item-not-found', 'no occupant with that nickname');
    } else {
      throw new StanzaError('bad-request', 'an affiliation change needs a jid');
    }
    const current = await muc.store.getAffiliation(room.jid, bare);
    if (actorRank < AFFILIATION_RANK.admin) throw new StanzaError('forbidden', 'only admins and owners change affiliations');
    if (actorAffiliation === 'admin') {
      if (affiliation === 'owner' || affiliation === 'admin') throw new StanzaError('forbidden', 'only owners grant admin or owner');
      if (current === 'owner' || current === 'admin') throw new StanzaError('not-allowed', 'admins cannot change the affiliation of admins or owners');
    }
    if (current === 'owner' && affiliation !== 'owner') {
      const owners = (await muc.store.listAffiliations(room.jid)).filter((a) => a.affiliation === 'owner');
      if (owners.length <= 1) throw new StanzaError('conflict', 'a room needs at least one owner');
    }
    return (list) => applyAffiliation(muc, room, list, bare!, affiliation, actorNick, reason);
  }
  if (item.attrs.role !== undefined) {
    const role = item.attrs.role as Role;
    if (!ROLES.includes(role)) throw new StanzaError('bad-request', 'unknown role');
    if (!item.attrs.nick) throw new StanzaError('bad-request', 'a role change needs a nick');
    if (actorRole !== 'moderator') throw new StanzaError('forbidden', 'only moderators change roles');
    const target = occupants.find((o) => o.nick === item.attrs.nick);
    if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
    const targetRank = AFFILIATION_RANK[target.affiliation];
    const privileged = targetRank >= AFFILIATION_RANK.admin;
    if (role === 'moderator' && actorRank < AFFILIATION_RANK.admin) throw new StanzaError('forbidden', 'only admins and owners grant moderator');
    if (role !== 'moderator' && (privileged || (target.role === 'moderator' && targetRank > actorRank))) {
      throw new StanzaError('not-allowed', 'that occupant outranks you');
    }
    if (target.role === 'moderator' && role !== 'moderator' && actorRank < AFFILIATION_RANK.admin) throw new StanzaError('not-allowed', 'only admins and owners revoke moderator');
    return (list) => applyRole(muc, room, list, target.nick, role, actorNick, reason);
  }
  throw new StanzaError('bad-request', 'an item needs an affiliation or a role');
}

export async function applyRole(muc: MucService, room: Room, occupants: Occupant[], nick: string, role: Role, actor?: string, reason?: string): Promise<Occupant[]> {
  const target = occupants.find((o) => o.nick === nick);
  if (!target) return occupants;
  if (role === 'none') {
    await removeOccupant(muc, room, occupants, target, ['307'], { actor, reason });
    return occupants.filter((o) => o.nick !== nick);
  }
  const updated: Occupant = { ...target, role };
  if (!(await muc.store.putOccupant(room.jid, updated, target.version))) throw new LostRace();
  const list = occupants.map((o) => (o.nick === nick ? updated : o));
  await broadcastPresence(muc, room, list, updated, { actor, reason });
  return list;
}

async function applyAffiliation(muc: MucService, room: Room, occupants: Occupant[], bare: string, affiliation: Affiliation, actor?: string, reason?: string): Promise<Occupant[]> {
  await muc.setAffiliation(room.jid, bare, affiliation, reason);
  let list = occupants;
  for (const target of occupants.filter((o) => o.bare === bare)) {
    if (affiliation === 'outcast') {
      await removeOccupant(muc, room, list, target, ['301'], { actor, reason, affiliation });
      list = list.filter((o) => o.nick !== target.nick);
      continue;
    }
    if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) {
      await removeOccupant(muc, room, list, target, ['321'], { actor, reason, affiliation });
      list = list.filter((o) => o.nick !== target.nick);
      continue;
    }
    const wasPrivileged = AFFILIATION_RANK[target.affiliation] >= AFFILIATION_RANK.admin;
    let role = target.role;
    if (AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin) role = 'moderator';
    else if (wasPrivileged) role = defaultRole(affiliation, room.config);
    else if (affiliation === 'member' && role === 'visitor') role = 'participant';
    const updated: Occupant = { ...target, affiliation, role };
    if (!(await muc.store.putOccupant(room.jid, updated, target.version))) throw new LostRace();
    list = list.map((o) => (o.nick === target.nick ? updated : o));
    await broadcastPresence(muc, room, list, updated, { actor, reason });
  }
  return list;
}
