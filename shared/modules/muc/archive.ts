/**
 * The room's archive (XEP-0313 §5.1.2): the discussion history a session gets on entering
 * (§7.2.14), MAM queries to the room, and XEP-0425 moderation, which replaces an archived
 * message with a tombstone and announces it. Groupchat messages are archived in messages.ts.
 */
import { StanzaError } from '../../errors.ts';
import type { IqRequest } from '../../core/registry.ts';
import { frameNow, frameUnique } from '../../storage/frame-context.ts';
import type { OccupantSession, Room } from '../../storage/muc-store.ts';
import type { ArchivedMessage } from '../../storage/archive-store.ts';
import { roomPk } from '../../storage/keys.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { parseStored, tooLargeToPost } from '../../xml/stored.ts';
import { SID, answerMamQuery, archiveStore, mamQueryForm, parseMamQuery } from '../../lib/mam-query.ts';
import { announcement, isRetracted, parseModeration, tombstone } from './moderation.ts';
import { broadcast, mayDeliver } from './fanout.ts';
import { AFFILIATION_RANK, MUC_USER } from './stanzas.ts';
import type { HostEvent, MucService } from './service.ts';

/** Discussion history sent on entering when the client asks for none in particular. */
const DEFAULT_HISTORY = 20;
const MAX_HISTORY = 100;

/** A room's archive is kept under the room's partition. */
export const roomArchive = roomPk;

/** §7.2.14: maxchars / maxstanzas / seconds / since, within the service's own limit. */
export async function sendHistory(muc: MucService, event: HostEvent, room: Room, request: Element | undefined, to: string, joining?: OccupantSession): Promise<void> {
  const number = (name: string) => {
    const value = request?.attrs[name];
    if (value === undefined) return undefined;
    const n = Number(value);
    return Number.isInteger(n) && n >= 0 ? n : undefined;
  };
  const maxChars = number('maxchars');
  const maxStanzas = Math.min(number('maxstanzas') ?? DEFAULT_HISTORY, MAX_HISTORY);
  if (maxChars === 0 || maxStanzas === 0) return;
  let since: number | undefined;
  const seconds = number('seconds');
  if (seconds !== undefined) since = Date.now() - seconds * 1000;
  if (request?.attrs.since) {
    const t = Date.parse(request.attrs.since);
    if (!Number.isNaN(t)) since = Math.max(since ?? 0, t);
  }
  let items = await archiveStore(muc.server).latest(roomArchive(room.jid), maxStanzas, since);
  if (joining) {
    // The occupant is written before the archive is read: a message sent meanwhile may go out live too.
    const admitted = await Promise.all(items.map((item) => mayDeliver(muc, room.jid, item.id, Date.parse(item.stamp), joining)));
    items = items.filter((_, i) => admitted[i]);
  }
  // An archived message that cannot be parsed, or is too large to post, is skipped (and logged).
  let frames = items.flatMap((item) => {
    const el = historyMessage(room, item, to);
    const frame = el?.toString();
    if (!el || !frame || tooLargeToPost(frame, muc.server.config.maxFrameBytes, 'room history message', { room: room.jid, id: item.id })) return [];
    return [{ el, frame }];
  });
  if (maxChars !== undefined) {
    // The newest complete stanzas whose total size fits (§7.2.14).
    let total = 0;
    let keep = 0;
    for (let i = frames.length - 1; i >= 0; i--) {
      total += frames[i]!.frame.length;
      if (total > maxChars) break;
      keep++;
    }
    frames = frames.slice(frames.length - keep);
  }
  for (const { el, frame } of frames) {
    if (event.session) await event.session.send(frame);
    else await muc.server.sendTo(event.from, el);
  }
}

function historyMessage(room: Room, item: ArchivedMessage, to: string): Element | undefined {
  const el = parseStored(item.xml, 'room history message', { room: room.jid, id: item.id });
  if (!el) return undefined;
  el.attrs.to = to;
  el.append(x('delay', { xmlns: NS.DELAY, from: room.jid, stamp: item.stamp }));
  el.append(x('stanza-id', { xmlns: SID, by: room.jid, id: item.id }));
  return el;
}

/** A MAM query to the room (XEP-0313 §5.1.2): who may read, and what they see of who wrote. */
export async function roomArchiveQuery(muc: MucService, request: IqRequest, event: HostEvent): Promise<Element> {
  const room = await muc.existingRoom(request);
  const affiliation = await muc.store.getAffiliation(room.jid, request.from.bare);
  if (affiliation === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
  if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) throw new StanzaError('forbidden', 'the archive of a members-only room is for members');
  const occupants = await muc.store.listOccupants(room.jid);
  const requester = occupants.find((o) => o.sessions.some((s) => s.jid === request.from.toString()));
  // XEP-0313 §5.1.2: only who may enter now may read. A query carries no password, so in a
  // password-protected room that is whoever is inside (they gave it) and its owners (who enter
  // without it, as in join() in presence.ts).
  if (room.config.passwordProtected && !requester && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.owner) {
    throw new StanzaError('forbidden', 'the archive of a password-protected room is for its occupants');
  }
  if (request.payload.name !== 'query') throw new StanzaError('feature-not-implemented');
  if (request.type === 'get') return mamQueryForm();
  const parsed = parseMamQuery(request.payload);
  const seesJids = room.config.whois === 'anyone' || requester?.role === 'moderator' || AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin;
  let withAny: { attribute: 'with' | 'withFull'; value: string }[] | undefined;
  if (parsed.with) {
    if (parsed.with.bare === room.jid && parsed.with.resource) withAny = [{ attribute: 'withFull', value: parsed.with.toString() }];
    else if (seesJids) withAny = [{ attribute: 'with', value: parsed.with.bare }];
    else throw new StanzaError('forbidden', 'real JIDs are not visible to you in this room');
  }
  return answerMamQuery(muc.server, roomArchive(room.jid), room.jid, parsed, (el) => muc.send(event, el), request.stanza.attrs.from!, withAny, (item) => {
    const el = parseStored(item.xml, 'archived room message', { room: room.jid, id: item.id });
    if (!el) return undefined;
    delete el.attrs.to;
    el.children = el.children.filter((c) => typeof c === 'string' || !c.is('x', MUC_USER));
    if (seesJids) el.append(x('x', { xmlns: MUC_USER }, x('item', { jid: item.with })));
    return el;
  });
}

/** XEP-0425: a moderator retracts a message for everyone, in the archive too. */
export async function moderate(muc: MucService, request: IqRequest, event: HostEvent): Promise<undefined> {
  if (request.type !== 'set' || request.payload.name !== 'moderate') throw new StanzaError('bad-request');
  const room = await muc.existingRoom(request);
  const occupants = await muc.store.listOccupants(room.jid);
  const requester = occupants.find((o) => o.sessions.some((s) => s.jid === request.from.toString()));
  if (requester?.role !== 'moderator') throw new StanzaError('forbidden', "only moderators may retract other occupants' messages");
  const { id, reason } = parseModeration(request.payload);
  const archive = archiveStore(muc.server);
  const pk = roomArchive(room.jid);
  const item = await archive.get(pk, id);
  const original = item && item.kind !== 'subject' ? parseStored(item.xml, 'archived room message', { room: room.jid, id }) : undefined;
  if (!item || !original) throw new StanzaError('item-not-found', 'no such message in this room');
  const moderator = { by: `${room.jid}/${requester.nick}`, occupantId: requester.occupantId };
  // Deterministic for this frame (its time, its moderator; a tombstone of the tombstone is the
  // same), so a rerun of this frame recognises its own earlier write and still announces.
  const replacement = tombstone(original, moderator, reason, new Date(frameNow()).toISOString()).toString();
  if (item.xml !== replacement) {
    // Retracted by someone else already (they announce), or they get there first now.
    if (isRetracted(original)) return undefined;
    if (!(await archive.replaceXml(pk, id, item.xml, replacement)) && (await archive.get(pk, id))?.xml !== replacement) return undefined;
  }
  const out = announcement(room.jid, id, frameUnique('moderation'), moderator, reason);
  // Archived like a message, so clients catching up through MAM learn of it too.
  const entry = await archive.append(pk, { xml: out.toString(), with: requester.bare, withFull: moderator.by });
  out.append(x('stanza-id', { xmlns: SID, by: room.jid, id: entry.id }));
  await broadcast(muc, room.jid, await muc.store.listOccupants(room.jid), out);
  return undefined;
}
