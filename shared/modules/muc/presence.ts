/**
 * Presence to a room (XEP-0045 §7.1–§7.6, §7.14): entering (creating the room, the entry checks,
 * the room state a new session gets), presence updates, nickname changes, reconnects taking a
 * session over, and leaving by unavailable presence. Leaving itself is occupancy.ts.
 */
import { occupantIdFor } from './occupant-id.ts';
import { serverSecret } from '../../storage/server-secret.ts';
import { StanzaError } from '../../errors.ts';
import { tryParseJid } from '../../jid.ts';
import { forEachBounded } from '../../core/bounded.ts';
import type { ClientSession } from '../../core/session.ts';
import type { ConnectionState } from '../../core/types.ts';
import { frameNow } from '../../storage/frame-context.ts';
import type { Affiliation, Occupant, OccupantSession, Room } from '../../storage/muc-store.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { defaultConfig } from './config.ts';
import { sendHistory } from './archive.ts';
import { FANOUT_CONCURRENCY, broadcastPresence, seesJids } from './fanout.ts';
import { LostRace } from './lost-race.ts';
import { leaveRoom, updateDirectory } from './occupancy.ts';
import { AFFILIATION_RANK, MAX_NICK_BYTES, MUC, MUC_USER, defaultRole, occupantPresence, storedPresence } from './stanzas.ts';
import type { HostEvent, MucService } from './service.ts';

export async function onPresence(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, to } = event;
  const type = stanza.attrs.type;
  if (type === 'error') {
    // The occupant's client or server bounced what the room sent: take that session out (status 333).
    if (to.resource) await leaveRoom(muc, to.bare, event.from.toString(), { codes: ['333'], connectionId: event.session?.id });
    return;
  }
  if (!to.resource) {
    if (!type) throw new StanzaError('jid-malformed', 'a room nickname is required');
    return;
  }
  if (type === 'unavailable') return onUnavailable(muc, event);
  if (type) return; // probes and subscriptions mean nothing to a room
  if (Buffer.byteLength(to.resource, 'utf8') > MAX_NICK_BYTES) throw new StanzaError('not-acceptable', `nicknames are limited to ${MAX_NICK_BYTES} bytes`);
  for (let attempt = 0; ; attempt++) {
    try {
      return await onAvailable(muc, event);
    } catch (err) {
      if (!(err instanceof LostRace) || attempt >= 3) throw err;
    }
  }
}

async function onAvailable(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, from, to } = event;
  const roomJid = to.bare;
  if (event.session && !(await ownsFullJid(muc, event.session))) return;
  const [room, occupants] = await Promise.all([muc.store.getRoom(roomJid), muc.store.listOccupants(roomJid)]);
  const mine = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
  if (room && mine) {
    if (mine.nick !== to.resource) return changeNick(muc, event, room, occupants, mine);
    const fromJid = from.toString();
    const own = event.session && mine.sessions.find((s) => s.jid === fromJid && s.connectionId === event.session!.id);
    const entry = own ?? mine.sessions.find((s) => s.jid === fromJid)!;
    if (event.session && entry.connectionId !== event.session.id) {
      // A new connection on the same full JID (a reconnect) takes the session over. A replaced
      // connection whose end is not processed yet keeps its entry beside it: room messages still
      // queued on it are the occupant's, even if the new connection leaves first; its
      // $disconnect ('session/released') takes it out.
      const newEntry = { jid: fromJid, connectionId: event.session.id, ...smOfOccupant(event.session.state) };
      const oldStillOpen = entry.connectionId !== undefined && (await muc.server.store.getConnection(entry.connectionId)) !== undefined;
      const sessions = oldStillOpen ? [...mine.sessions, newEntry] : mine.sessions.map((s) => (s === entry ? newEntry : s));
      const moved: Occupant = { ...mine, sessions };
      if (!(await muc.store.putOccupant(roomJid, moved, mine.version))) throw new LostRace();
      await muc.store.putJoin(from.bare, { room: roomJid, nick: mine.nick, resource: from.resource, connectionId: event.session.id });
      return sendRoomState(muc, event, room, occupants, moved, false);
    }
    // A join from a session already in the room: it lost track, so it gets the join stanzas again (§7.2.1).
    if (stanza.getChild('x', MUC)) return sendRoomState(muc, event, room, occupants, mine, false);
    return updatePresence(muc, event, room, occupants, mine);
  }
  return join(muc, event, room, occupants);
}

/**
 * Whether this connection still holds its full JID. A stream replaced by a newer one on the same
 * resource may still have a join in flight on another handler; acting on it would hand the
 * occupant back to the dead connection, whose 410 then takes the live one out of the room.
 */
async function ownsFullJid(muc: MucService, session: ClientSession): Promise<boolean> {
  const { sessions } = await muc.server.store.getUserRoute(session.bare);
  return sessions.some((s) => s.resource === session.state.resource && s.connectionId === session.id);
}

async function join(muc: MucService, event: HostEvent, existing: Room | undefined, occupants: Occupant[]): Promise<void> {
  const { stanza, from, to, session } = event;
  const roomJid = to.bare;
  const nick = to.resource;
  const mucX = stanza.getChild('x', MUC);
  let room = existing;
  let created = false;
  if (!room) {
    if (!muc.server.isLocalDomain(from.domain)) throw new StanzaError('not-allowed', 'only users of this server may create rooms');
    // With the MUC protocol the room stays locked until configured; a GC 1.0 client gets an instant room (§10.1.1).
    const fresh: Room = { jid: roomJid, config: defaultConfig(), locked: !!mucX, createdAt: Date.now() };
    if (await muc.store.createRoom(fresh)) {
      created = true;
      room = fresh;
      await muc.setAffiliation(roomJid, from.bare, 'owner');
      await updateDirectory(muc, room);
    } else {
      room = await muc.store.getRoom(roomJid);
      if (!room) throw new LostRace();
    }
  }
  const affiliation: Affiliation = created ? 'owner' : await muc.store.getAffiliation(roomJid, from.bare);
  const rank = AFFILIATION_RANK[affiliation];
  if (!created) {
    if (room.locked && affiliation !== 'owner') throw new StanzaError('item-not-found', 'the room is locked until its owner configures it');
    if (affiliation === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
    if (room.config.membersOnly && rank < AFFILIATION_RANK.member) throw new StanzaError('registration-required', 'this room is for members only');
    if (room.config.passwordProtected && rank < AFFILIATION_RANK.owner && mucX?.getChildText('password') !== room.config.password) {
      throw new StanzaError('not-authorized', 'a password is required to enter');
    }
  }
  const holder = occupants.find((o) => o.nick === nick);
  if (holder && holder.bare !== from.bare) throw new StanzaError('conflict', 'that nickname is in use');
  const registered = created ? undefined : await muc.store.nickOwner(roomJid, nick);
  if (registered && registered !== from.bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
  if (!holder && room.config.maxUsers && occupants.length >= room.config.maxUsers && rank < AFFILIATION_RANK.admin) {
    throw new StanzaError('service-unavailable', 'the room is full', 'wait');
  }
  const joining: OccupantSession = { jid: from.toString(), connectionId: session?.id, joinedAt: frameNow(), ...(session ? smOfOccupant(session.state) : {}) };
  // A second session of the same user under the same nick joins that occupant (multi-session nick).
  const occupant: Occupant = holder
    ? { ...holder, sessions: [...holder.sessions.filter((s) => s.jid !== joining.jid), joining] }
    : {
        nick,
        bare: from.bare,
        role: defaultRole(affiliation, room.config),
        affiliation,
        presence: storedPresence(stanza),
        sessions: [joining],
        version: 0,
        occupantId: occupantIdFor(await serverSecret(muc.server.store), roomJid, from.bare),
      };
  if (!(await muc.store.putOccupant(roomJid, occupant, holder?.version ?? 0))) throw new LostRace();
  if (session) await muc.store.putJoin(from.bare, { room: roomJid, nick, resource: from.resource, connectionId: session.id });
  const others = occupants.filter((o) => o.nick !== nick);
  await sendRoomState(muc, event, room, others, occupant, created, !holder, joining);
}

/**
 * What a session gets on entering (§7.2): the other occupants' presence, its own (110), and —
 * for a new occupant — its presence to everyone else; then history and the subject.
 */
async function sendRoomState(muc: MucService, event: HostEvent, room: Room, others: Occupant[], occupant: Occupant, created: boolean, announce = false, joining?: OccupantSession): Promise<void> {
  const { stanza, from } = event;
  const me = from.toString();
  others = others.filter((o) => o.nick !== occupant.nick);
  const visible = others.filter((o) => room.config.presenceBroadcast.includes(o.role));
  const showJids = seesJids(room, occupant);
  // The roster can be posted in parallel; only the self-presence has to come after all of it.
  await forEachBounded(visible, FANOUT_CONCURRENCY, async (o) => {
    const realJid = showJids ? (o.sessions.length === 1 ? o.sessions[0]!.jid : o.bare) : undefined;
    await sendToSession(muc, event, occupantPresence(room.jid, o, { realJid }), me);
  });
  const codes = ['110'];
  if (room.config.whois === 'anyone') codes.unshift('100');
  codes.push('170'); // the room's discussions are archived (MAM)
  if (created) codes.push('201');
  const self = occupantPresence(room.jid, occupant, { realJid: me, codes, id: stanza.attrs.id });
  await sendToSession(muc, event, self, me);
  if (announce) await broadcastPresence(muc, room, others, occupant, {});
  if (!created) await sendHistory(muc, event, room, stanza.getChild('x', MUC)?.getChild('history'), me, joining);
  const subject = x(
    'message',
    { xmlns: NS.CLIENT, from: room.subject?.nick ? `${room.jid}/${room.subject.nick}` : room.jid, type: 'groupchat', id: `subject-${Date.now()}` },
    x('subject', {}, room.subject?.text ?? ''),
    room.subject ? x('delay', { xmlns: NS.DELAY, from: room.jid, stamp: room.subject.stamp }) : undefined,
  );
  await sendToSession(muc, event, subject, me);
}

async function sendToSession(muc: MucService, event: HostEvent, el: Element, to: string): Promise<void> {
  el.attrs.to = to;
  await muc.send(event, el);
}

async function updatePresence(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[], mine: Occupant): Promise<void> {
  const updated: Occupant = { ...mine, presence: storedPresence(event.stanza) };
  if (!(await muc.store.putOccupant(room.jid, updated, mine.version))) throw new LostRace();
  await broadcastPresence(muc, room, occupants.map((o) => (o.nick === mine.nick ? updated : o)), updated, {});
}

async function changeNick(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[], mine: Occupant): Promise<void> {
  const { stanza, to, from } = event;
  const nick = to.resource;
  if (occupants.some((o) => o.nick === nick)) throw new StanzaError('conflict', 'that nickname is in use');
  const registered = await muc.store.nickOwner(room.jid, nick);
  if (registered && registered !== from.bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
  const renamed: Occupant = { ...mine, nick, presence: storedPresence(stanza), version: 0 };
  if (!(await muc.store.putOccupant(room.jid, renamed, 0))) throw new StanzaError('conflict', 'that nickname is in use');
  if (!(await muc.store.deleteOccupant(room.jid, mine.nick, mine.version))) {
    await muc.store.deleteOccupant(room.jid, nick, renamed.version);
    throw new LostRace();
  }
  for (const s of mine.sessions) {
    const jid = tryParseJid(s.jid);
    if (s.connectionId && jid && muc.server.isLocalDomain(jid.domain)) {
      await muc.store.putJoin(jid.bare, { room: room.jid, nick, resource: jid.resource, connectionId: s.connectionId });
    }
  }
  const everyone = occupants.map((o) => (o.nick === mine.nick ? renamed : o));
  // The old nick leaves with 303 and the new one, then the new nick arrives (§7.6).
  await broadcastPresence(muc, room, everyone, mine, { type: 'unavailable', nick, codes: ['303'] });
  await broadcastPresence(muc, room, everyone, renamed, { id: from.toString() === mine.sessions[0]?.jid ? stanza.attrs.id : undefined });
}

async function onUnavailable(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, from, to } = event;
  // A local session leaves by its own connection: the same full JID may also hold a replaced
  // connection's entry, still waiting for that connection's end.
  const left = await leaveRoom(muc, to.bare, from.toString(), { payload: storedPresence(stanza), connectionId: event.session?.id });
  if (!left) {
    // Not in the room (already gone?): still confirm, so a client waiting for its exit finishes.
    await muc.send(
      event,
      x(
        'presence',
        { xmlns: NS.CLIENT, from: to.toString(), to: from.toString(), type: 'unavailable' },
        x('x', { xmlns: MUC_USER }, x('item', { affiliation: 'none', role: 'none' }), x('status', { code: '110' })),
      ),
    );
  }
}

/** What a room keeps of an occupant session's XEP-0198 (the fan-out's hint: sm-sender.ts, occupantHint). */
function smOfOccupant(state: ConnectionState): Pick<OccupantSession, 'sm' | 'smOpenUntil'> {
  if (state.sm) return { sm: true };
  return state.smOpenUntil !== undefined ? { smOpenUntil: state.smOpenUntil } : {};
}
