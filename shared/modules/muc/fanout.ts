/**
 * Delivery: how one room stanza reaches many sessions. fanout() posts a frame per session,
 * FANOUT_CONCURRENCY at a time, and takes sessions whose socket is gone out of the room;
 * broadcast() and broadcastPresence() build the frames (one serialization per variant); and
 * mayDeliver() settles a room message racing a join (docs/muc-fanout.md). Everything else in the
 * service sends through here.
 *
 * A gone session leaves through the service (MucService.leaveRoom), not occupancy.ts directly:
 * leaving broadcasts through this file, so importing it here would make a cycle.
 */
import { forEachBounded } from '../../core/bounded.ts';
import { parseJid } from '../../jid.ts';
import { log } from '../../log.ts';
import { claimOwner } from '../../storage/table-ops.ts';
import type { Occupant, OccupantSession, Room } from '../../storage/muc-store.ts';
import type { Element } from '../../xml/element.ts';
import { parseStored } from '../../xml/stored.ts';
import { FrameTemplate, occupantPresence, type PresenceOptions } from './stanzas.ts';
import type { MucService } from './service.ts';
import { occupantHint } from '../../transport/sm-sender.ts';

/** @connections posts in flight at once while a room fans a stanza out (docs/muc-fanout.md). */
export const FANOUT_CONCURRENCY = 32;
/**
 * How far apart a room message and a join can be and still race (each frame's reads and writes
 * fall within one handler invocation, far below this).
 */
const JOIN_RACE_WINDOW_MS = 60_000;

export interface Target {
  occupant: Occupant;
  session: OccupantSession;
}

/** Every session of every occupant in `occupants`. */
export function targets(occupants: Occupant[]): Target[] {
  return occupants.flatMap((occupant) => occupant.sessions.map((session) => ({ occupant, session })));
}

/**
 * Posts each target its frame, FANOUT_CONCURRENCY at a time. Sessions whose socket is gone
 * (410) leave the room afterwards (status 333) unless `noCleanup`.
 */
export async function fanout(muc: MucService, room: string, targets: Target[], frameFor: (t: Target) => string, noCleanup = false, admit?: (t: Target) => Promise<boolean>): Promise<void> {
  const gone: Target[] = [];
  let failed: unknown;
  await forEachBounded(targets, FANOUT_CONCURRENCY, async (t) => {
    if (admit && !(await admit(t))) return;
    const frame = frameFor(t);
    try {
      if (t.session.connectionId) {
        // Only a known yes: a client may join before it enables stream management (@xmpp/client does).
        if (!(await muc.server.sender.send(t.session.connectionId, frame, occupantHint(t.session)))) gone.push(t);
      } else {
        // Built here, but it may carry a stored message larger than the client limits.
        const el = parseStored(frame, 'room stanza for a remote occupant', { room });
        if (el) await muc.server.sendTo(parseJid(t.session.jid), el);
      }
    } catch (err) {
      // One failed post (after the SDK's retries) does not stop the others; the frame fails
      // afterwards, and its redelivery posts only what did not go out (the frame's journal).
      log.warn('muc: post failed', { room, to: t.session.jid, error: (err as Error).message });
      failed ??= err;
    }
  });
  if (!noCleanup) {
    for (const t of gone) {
      // A local session whose connection has not ended yet leaves when it ends (its $disconnect
      // comes after its last frames): leaving now would refuse a message it sent before the socket died.
      if (t.session.connectionId && (await muc.server.store.getConnection(t.session.connectionId))) continue;
      await muc.leaveRoom(room, t.session.jid, { codes: ['333'], noCleanup: true, connectionId: t.session.connectionId });
    }
  }
  if (failed !== undefined) throw failed;
}

/** Sends `el` to every session of `occupants` (one serialization, `to` filled in per session). */
export async function broadcast(muc: MucService, room: string, occupants: Occupant[], el: Element, noCleanup = false, admit?: (t: Target) => Promise<boolean>): Promise<void> {
  const template = new FrameTemplate(el);
  await fanout(muc, room, targets(occupants), (t) => template.for(t.session.jid), noCleanup, admit);
}

/**
 * Whether `id` (an archived room message of time `at`) may go to a session that joined about
 * then: a join and a message racing each other may each see the other (the join the message in
 * the archive, the message the new occupant), and then a claim decides who posts it. Outside
 * that window only one side can see the other, and nothing is claimed.
 */
export async function mayDeliver(muc: MucService, room: string, id: string, at: number, session: OccupantSession): Promise<boolean> {
  if (session.joinedAt === undefined || Math.abs(session.joinedAt - at) > JOIN_RACE_WINDOW_MS) return true;
  return muc.store.claimDelivery(room, id, session, claimOwner());
}

/** Whether `recipient` sees real JIDs in this room. */
export function seesJids(room: Room, recipient: Occupant | undefined): boolean {
  return room.config.whois === 'anyone' || recipient?.role === 'moderator';
}

/**
 * Broadcasts an occupant's presence: everyone gets it, with the real JID where they may see it,
 * and the occupant's own sessions get status 110 (plus `selfCodes`).
 */
export async function broadcastPresence(
  muc: MucService,
  room: Room,
  occupants: Occupant[],
  subject: Occupant,
  options: PresenceOptions,
  selfCodes: string[] = [],
  noCleanup = false,
): Promise<void> {
  const realJid = subject.sessions.length === 1 ? subject.sessions[0]!.jid : subject.bare;
  const variants = new Map<string, FrameTemplate>();
  const frameFor = (t: Target) => {
    const self = t.occupant.nick === subject.nick && t.occupant.bare === subject.bare;
    const jid = self || seesJids(room, t.occupant);
    const key = `${self}|${jid}`;
    let template = variants.get(key);
    if (!template) {
      const codes = [...(options.codes ?? []), ...(self ? ['110', ...selfCodes] : [])];
      template = new FrameTemplate(occupantPresence(room.jid, subject, { ...options, realJid: jid ? realJid : undefined, codes }));
      variants.set(key, template);
    }
    return template.for(t.session.jid);
  };
  // Presence of roles the room does not broadcast reaches only the occupant itself.
  const audience = room.config.presenceBroadcast.includes(subject.role) ? occupants : occupants.filter((o) => o.nick === subject.nick);
  await fanout(muc, room.jid, targets(audience), frameFor, noCleanup);
}
