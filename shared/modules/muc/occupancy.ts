/**
 * Occupants leaving and rooms ending: one session leaving (unavailable presence, a bounce, a dead
 * socket, the session's end), an occupant removed with all its sessions (kick, ban, membership
 * loss), the join records kept per local session, a temporary room closing with its last
 * occupant, and the public room directory.
 */
import { tryParseJid } from '../../jid.ts';
import type { Affiliation, Occupant, OccupantSession, Room } from '../../storage/muc-store.ts';
import { broadcastPresence, fanout } from './fanout.ts';
import { LostRace } from './lost-race.ts';
import { FrameTemplate, occupantPresence } from './stanzas.ts';
import type { MucService } from './service.ts';

/**
 * Takes one session out of a room; the occupant leaves (broadcast) when it was its last session.
 * Resolves false when the session was not in the room.
 */
export async function leaveRoom(muc: MucService, roomJid: string, sessionJid: string, o: { codes?: string[]; payload?: string; noCleanup?: boolean; connectionId?: string }): Promise<boolean> {
  // With a connection id, only that connection's session leaves (not a newer one on the same JID).
  const matches = (s: OccupantSession) => s.jid === sessionJid && (o.connectionId === undefined || s.connectionId === o.connectionId);
  for (let attempt = 0; attempt < 4; attempt++) {
    const [room, occupants] = await Promise.all([muc.store.getRoom(roomJid), muc.store.listOccupants(roomJid)]);
    const mine = occupants.find((occ) => occ.sessions.some(matches));
    if (!room || !mine) return false;
    const leaving = mine.sessions.find(matches)!;
    const remaining = mine.sessions.filter((s) => s !== leaving);
    if (remaining.length) {
      if (!(await muc.store.putOccupant(roomJid, { ...mine, sessions: remaining }, mine.version))) continue;
      await forgetJoin(muc, roomJid, leaving);
      // Only the leaving session hears about it; the occupant stays (§7.14 multi-session).
      const self = occupantPresence(roomJid, mine, { type: 'unavailable', codes: [...(o.codes ?? []), '110'], role: 'none', payload: o.payload });
      await fanout(muc, roomJid, [{ occupant: mine, session: leaving }], () => new FrameTemplate(self).for(leaving.jid), true);
      return true;
    }
    if (!(await muc.store.deleteOccupant(roomJid, mine.nick, mine.version))) continue;
    await forgetJoin(muc, roomJid, leaving);
    await broadcastPresence(muc, room, occupants, mine, { type: 'unavailable', role: 'none', payload: o.payload, codes: o.codes }, [], o.noCleanup);
    await closeIfEmpty(muc, room, occupants.length - 1);
    return true;
  }
  return false;
}

export async function forgetJoin(muc: MucService, room: string, session: OccupantSession): Promise<void> {
  const jid = tryParseJid(session.jid);
  if (session.connectionId && jid && muc.server.isLocalDomain(jid.domain)) await muc.store.deleteJoin(jid.bare, room, jid.resource, session.connectionId);
}

/** A temporary room ends with its last occupant (§10.1). */
async function closeIfEmpty(muc: MucService, room: Room, remaining: number): Promise<void> {
  if (remaining > 0 || room.config.persistent) return;
  if ((await muc.store.listOccupants(room.jid)).length > 0) return;
  await muc.store.deleteRoom(room.jid, muc.domain);
}

/** Removes an occupant with all its sessions (kick, ban, membership loss), with the given status. */
export async function removeOccupant(
  muc: MucService,
  room: Room,
  occupants: Occupant[],
  target: Occupant,
  codes: string[],
  o: { actor?: string; reason?: string; affiliation?: Affiliation } = {},
): Promise<void> {
  if (!(await muc.store.deleteOccupant(room.jid, target.nick, target.version))) throw new LostRace();
  for (const s of target.sessions) await forgetJoin(muc, room.jid, s);
  await broadcastPresence(muc, room, occupants, target, { type: 'unavailable', role: 'none', codes, ...o });
  await closeIfEmpty(muc, room, occupants.length - 1);
}

export async function updateDirectory(muc: MucService, room: Room): Promise<void> {
  if (room.locked || !room.config.public) await muc.store.deleteDirectory(muc.domain, room.jid);
  else await muc.store.putDirectory(muc.domain, room.jid, { name: room.config.name, public: true });
}
