/**
 * The group chat service (XEP-0045) behind `conference.<domain>`: every stanza addressed to the
 * service, a room or an occupant comes here through the core's host() registration.
 *
 * A room's state lives in DynamoDB (shared/storage/muc-store.ts), never in Lambda memory: any
 * invocation can serve any room. A room message costs one read of the room, one Query of its
 * occupants, one archive write, and one @connections post per occupant session, made
 * FANOUT_CONCURRENCY at a time (see docs/muc-fanout.md).
 */
import { OCCUPANT_ID, occupantIdFor } from './occupant-id.ts';
import { serverSecret } from '../../storage/server-secret.ts';
import { StanzaError, cloneElement, errorReply } from '../../errors.ts';
import { Jid, parseJid, tryParseJid } from '../../jid.ts';
import { log } from '../../log.ts';
import type { IqRequest, StanzaEvent } from '../../core/registry.ts';
import { forEachBounded, type XmppServer } from '../../core/server.ts';
import type { ClientSession } from '../../core/session.ts';
import { frameNow, frameUnique } from '../../storage/frame-context.ts';
import { claimOwner } from '../../storage/table-ops.ts';
import { ReferenceStore } from '../../storage/reference-store.ts';
import { MucStore, type Affiliation, type Occupant, type OccupantSession, type Role, type Room } from '../../storage/muc-store.ts';
import type { ArchivedMessage } from '../../storage/archive-store.ts';
import { roomPk } from '../../storage/keys.ts';
import { readForm, buildForm, type SubmittedForm } from '../../xml/data-form.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { parseStored, tooLargeToPost } from '../../xml/stored.ts';
import { MAM, SID, answerMamQuery, archiveStore, mamQueryForm, parseMamQuery, stripStanzaIds } from '../../lib/mam-query.ts';
import { ROOMCONFIG, applyConfigForm, configFeatures, configForm, defaultConfig } from './config.ts';
import { MODERATE, announcement, isRetracted, parseModeration, tombstone } from './moderation.ts';
import {
  AFFILIATIONS,
  AFFILIATION_RANK,
  FrameTemplate,
  MUC,
  MUC_ADMIN,
  MUC_OWNER,
  MUC_USER,
  ROLES,
  ROOMINFO,
  SELF_PING,
  STABLE_ID,
  defaultRole,
  occupantPresence,
  storedPresence,
  type PresenceOptions,
} from './stanzas.ts';

/** @connections posts in flight at once while a room fans a stanza out (docs/muc-fanout.md). */
export const FANOUT_CONCURRENCY = 32;
/**
 * How far apart a room message and a join can be and still race (each frame's reads and writes
 * fall within one handler invocation, far below this).
 */
const JOIN_RACE_WINDOW_MS = 60_000;
/** Discussion history sent on entering when the client asks for none in particular. */
const DEFAULT_HISTORY = 20;
const MAX_HISTORY = 100;
const MAX_NICK_BYTES = 256;
const PING = 'urn:xmpp:ping';
/** XEP-0045 §7.10 and §7.12: nickname registration, and where a registered nickname is asked for. */
const MUC_REGISTER = 'http://jabber.org/protocol/muc#register';
const ROOMUSER_NODE = 'x-roomuser-item';
/** XEP-0045 §7.13: the form of a voice request. */
const MUC_REQUEST = 'http://jabber.org/protocol/muc#request';
const FORWARDED_IQ = 'mucfwd';

type HostEvent = StanzaEvent & { to: Jid };

interface Target {
  occupant: Occupant;
  session: OccupantSession;
}

/** A room's archive is kept under the room's partition. */
const roomArchive = roomPk;

export class MucService {
  readonly store: MucStore;
  private readonly references: ReferenceStore;

  constructor(
    readonly server: XmppServer,
    readonly domain: string,
  ) {
    this.store = server.store.open(MucStore);
    this.references = server.store.open(ReferenceStore);
  }

  // entry points

  async handle(event: HostEvent): Promise<void> {
    const { stanza, to } = event;
    if (!to.local) return this.serviceStanza(event);
    try {
      if (stanza.name === 'presence') await this.onPresence(event);
      else if (stanza.name === 'message') await this.onMessage(event);
      else if (stanza.name === 'iq') await this.onIq(event);
    } catch (err) {
      if (err instanceof LostRace) return this.replyError(event, busy());
      if (!(err instanceof StanzaError)) throw err;
      await this.replyError(event, err);
    }
  }

  /**
   * Sets an affiliation, and for a local user the reference to it among the user's items, so the
   * account's removal finds it (reference-store.ts). The reference is written first: a crash in
   * between leaves a reference to nothing, never an affiliation nobody can find.
   */
  private async setAffiliation(room: string, bare: string, affiliation: Affiliation, reason?: string): Promise<void> {
    const jid = tryParseJid(bare);
    const local = jid?.local && this.server.isLocalDomain(jid.domain);
    if (local && affiliation !== 'none') await this.references.add(bare, 'muc-affiliation', room);
    await this.store.setAffiliation(room, bare, affiliation, reason);
    if (local && affiliation === 'none') await this.references.remove(bare, 'muc-affiliation', room);
  }

  /** A removed account keeps no affiliation (a new account of the same name is a stranger to the rooms). */
  async accountRemoved(bare: string): Promise<void> {
    for (const room of await this.references.list(bare, 'muc-affiliation')) {
      await this.store.unregisterNick(room, bare);
      await this.setAffiliation(room, bare, 'none');
    }
  }

  /** The session is gone: it leaves every room it was in (XEP-0045 occupants who vanish). */
  async sessionEnded(session: ClientSession): Promise<void> {
    const resource = session.state.resource!;
    const joins = (await this.store.listJoins(session.bare)).filter((j) => j.resource === resource && j.connectionId === session.id);
    for (const join of joins) await this.leaveRoom(join.room, session.jid.toString(), { connectionId: session.id });
  }

  // replies

  private async send(event: HostEvent, el: Element): Promise<void> {
    if (event.session) await event.session.send(el);
    else await this.server.sendTo(event.from, el);
  }

  private async replyError(event: HostEvent, err: StanzaError): Promise<void> {
    const reply = errorReply(event.stanza, err);
    if (!reply) return;
    reply.getChild('error')!.attrs.by = event.to.bare;
    await this.send(event, reply);
  }

  private answer(event: HostEvent, handler: (request: IqRequest) => Promise<Element | void | undefined>): Promise<void> {
    const { stanza } = event;
    const type = stanza.attrs.type as 'get' | 'set';
    const payload = stanza.getChildElements()[0]!;
    const guarded = async (request: IqRequest) => {
      try {
        return await handler(request);
      } catch (err) {
        throw err instanceof LostRace ? busy() : err;
      }
    };
    return this.server.answerIq({ server: this.server, stanza, payload, type, from: event.from, to: event.to, session: event.session }, guarded, (el) =>
      this.send(event, el),
    );
  }

  // delivery

  /** Every session of every occupant in `occupants`. */
  private targets(occupants: Occupant[]): Target[] {
    return occupants.flatMap((occupant) => occupant.sessions.map((session) => ({ occupant, session })));
  }

  /**
   * Posts each target its frame, FANOUT_CONCURRENCY at a time. Sessions whose socket is gone
   * (410) leave the room afterwards (status 333) unless `noCleanup`.
   */
  private async fanout(room: string, targets: Target[], frameFor: (t: Target) => string, noCleanup = false, admit?: (t: Target) => Promise<boolean>): Promise<void> {
    const gone: Target[] = [];
    let failed: unknown;
    await forEachBounded(targets, FANOUT_CONCURRENCY, async (t) => {
      if (admit && !(await admit(t))) return;
      const frame = frameFor(t);
      try {
        if (t.session.connectionId) {
          // Only a known yes: a client may join before it enables stream management (@xmpp/client does).
          if (!(await this.server.sender.send(t.session.connectionId, frame, t.session.sm ? { sm: true } : undefined))) gone.push(t);
        } else {
          // Built here, but it may carry a stored message larger than the client limits.
          const el = parseStored(frame, 'room stanza for a remote occupant', { room });
          if (el) await this.server.sendTo(parseJid(t.session.jid), el);
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
        if (t.session.connectionId && (await this.server.store.getConnection(t.session.connectionId))) continue;
        await this.leaveRoom(room, t.session.jid, { codes: ['333'], noCleanup: true, connectionId: t.session.connectionId });
      }
    }
    if (failed !== undefined) throw failed;
  }

  /** Sends `el` to every session of `occupants` (one serialization, `to` filled in per session). */
  private async broadcast(room: string, occupants: Occupant[], el: Element, noCleanup = false, admit?: (t: Target) => Promise<boolean>): Promise<void> {
    const template = new FrameTemplate(el);
    await this.fanout(room, this.targets(occupants), (t) => template.for(t.session.jid), noCleanup, admit);
  }

  /**
   * Whether `id` (an archived room message of time `at`) may go to a session that joined about
   * then: a join and a message racing each other may each see the other (the join the message in
   * the archive, the message the new occupant), and then a claim decides who posts it. Outside
   * that window only one side can see the other, and nothing is claimed.
   */
  private async mayDeliver(room: string, id: string, at: number, session: OccupantSession): Promise<boolean> {
    if (session.joinedAt === undefined || Math.abs(session.joinedAt - at) > JOIN_RACE_WINDOW_MS) return true;
    return this.store.claimDelivery(room, id, session, claimOwner());
  }

  /** Whether `recipient` sees real JIDs in this room. */
  private seesJids(room: Room, recipient: Occupant | undefined): boolean {
    return room.config.whois === 'anyone' || recipient?.role === 'moderator';
  }

  /**
   * Broadcasts an occupant's presence: everyone gets it, with the real JID where they may see it,
   * and the occupant's own sessions get status 110 (plus `selfCodes`).
   */
  private async broadcastPresence(
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
      const jid = self || this.seesJids(room, t.occupant);
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
    await this.fanout(room.jid, this.targets(audience), frameFor, noCleanup);
  }

  // presence

  private async onPresence(event: HostEvent): Promise<void> {
    const { stanza, to } = event;
    const type = stanza.attrs.type;
    if (type === 'error') {
      // The occupant's client or server bounced what the room sent: take that session out (status 333).
      if (to.resource) await this.leaveRoom(to.bare, event.from.toString(), { codes: ['333'], connectionId: event.session?.id });
      return;
    }
    if (!to.resource) {
      if (!type) throw new StanzaError('jid-malformed', 'a room nickname is required');
      return;
    }
    if (type === 'unavailable') return this.onUnavailable(event);
    if (type) return; // probes and subscriptions mean nothing to a room
    if (Buffer.byteLength(to.resource, 'utf8') > MAX_NICK_BYTES) throw new StanzaError('not-acceptable', `nicknames are limited to ${MAX_NICK_BYTES} bytes`);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.onAvailable(event);
      } catch (err) {
        if (!(err instanceof LostRace) || attempt >= 3) throw err;
      }
    }
  }

  private async onAvailable(event: HostEvent): Promise<void> {
    const { stanza, from, to } = event;
    const roomJid = to.bare;
    if (event.session && !(await this.ownsFullJid(event.session))) return;
    const [room, occupants] = await Promise.all([this.store.getRoom(roomJid), this.store.listOccupants(roomJid)]);
    const mine = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
    if (room && mine) {
      if (mine.nick !== to.resource) return this.changeNick(event, room, occupants, mine);
      const fromJid = from.toString();
      const own = event.session && mine.sessions.find((s) => s.jid === fromJid && s.connectionId === event.session!.id);
      const entry = own ?? mine.sessions.find((s) => s.jid === fromJid)!;
      if (event.session && entry.connectionId !== event.session.id) {
        // A new connection on the same full JID (a reconnect) takes the session over. A replaced
        // connection whose end is not processed yet keeps its entry beside it: room messages still
        // queued on it are the occupant's, even if the new connection leaves first; its
        // $disconnect ('session/released') takes it out.
        const newEntry = { jid: fromJid, connectionId: event.session.id, ...(event.session.state.sm ? { sm: true } : {}) };
        const oldStillOpen = entry.connectionId !== undefined && (await this.server.store.getConnection(entry.connectionId)) !== undefined;
        const sessions = oldStillOpen ? [...mine.sessions, newEntry] : mine.sessions.map((s) => (s === entry ? newEntry : s));
        const moved: Occupant = { ...mine, sessions };
        if (!(await this.store.putOccupant(roomJid, moved, mine.version))) throw new LostRace();
        await this.store.putJoin(from.bare, { room: roomJid, nick: mine.nick, resource: from.resource, connectionId: event.session.id });
        return this.sendRoomState(event, room, occupants, moved, false);
      }
      // A join from a session already in the room: it lost track, so it gets the join stanzas again (§7.2.1).
      if (stanza.getChild('x', MUC)) return this.sendRoomState(event, room, occupants, mine, false);
      return this.updatePresence(event, room, occupants, mine);
    }
    return this.join(event, room, occupants);
  }

  /**
   * Whether this connection still holds its full JID. A stream replaced by a newer one on the same
   * resource may still have a join in flight on another handler; acting on it would hand the
   * occupant back to the dead connection, whose 410 then takes the live one out of the room.
   */
  private async ownsFullJid(session: ClientSession): Promise<boolean> {
    const { sessions } = await this.server.store.getUserRoute(session.bare);
    return sessions.some((s) => s.resource === session.state.resource && s.connectionId === session.id);
  }

  private async join(event: HostEvent, existing: Room | undefined, occupants: Occupant[]): Promise<void> {
    const { stanza, from, to, session } = event;
    const roomJid = to.bare;
    const nick = to.resource;
    const mucX = stanza.getChild('x', MUC);
    let room = existing;
    let created = false;
    if (!room) {
      if (!this.server.isLocalDomain(from.domain)) throw new StanzaError('not-allowed', 'only users of this server may create rooms');
      // With the MUC protocol the room stays locked until configured; a GC 1.0 client gets an instant room (§10.1.1).
      const fresh: Room = { jid: roomJid, config: defaultConfig(), locked: !!mucX, createdAt: Date.now() };
      if (await this.store.createRoom(fresh)) {
        created = true;
        room = fresh;
        await this.setAffiliation(roomJid, from.bare, 'owner');
        await this.updateDirectory(room);
      } else {
        room = await this.store.getRoom(roomJid);
        if (!room) throw new LostRace();
      }
    }
    const affiliation: Affiliation = created ? 'owner' : await this.store.getAffiliation(roomJid, from.bare);
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
    const registered = created ? undefined : await this.store.nickOwner(roomJid, nick);
    if (registered && registered !== from.bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
    if (!holder && room.config.maxUsers && occupants.length >= room.config.maxUsers && rank < AFFILIATION_RANK.admin) {
      throw new StanzaError('service-unavailable', 'the room is full', 'wait');
    }
    const joining: OccupantSession = { jid: from.toString(), connectionId: session?.id, joinedAt: frameNow(), ...(session?.state.sm ? { sm: true } : {}) };
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
          occupantId: occupantIdFor(await serverSecret(this.server.store), roomJid, from.bare),
        };
    if (!(await this.store.putOccupant(roomJid, occupant, holder?.version ?? 0))) throw new LostRace();
    if (session) await this.store.putJoin(from.bare, { room: roomJid, nick, resource: from.resource, connectionId: session.id });
    const others = occupants.filter((o) => o.nick !== nick);
    await this.sendRoomState(event, room, others, occupant, created, !holder, joining);
  }

  /**
   * What a session gets on entering (§7.2): the other occupants' presence, its own (110), and —
   * for a new occupant — its presence to everyone else; then history and the subject.
   */
  private async sendRoomState(event: HostEvent, room: Room, others: Occupant[], occupant: Occupant, created: boolean, announce = false, joining?: OccupantSession): Promise<void> {
    const { stanza, from } = event;
    const me = from.toString();
    others = others.filter((o) => o.nick !== occupant.nick);
    const visible = others.filter((o) => room.config.presenceBroadcast.includes(o.role));
    const seesJids = this.seesJids(room, occupant);
    // The roster can be posted in parallel; only the self-presence has to come after all of it.
    await forEachBounded(visible, FANOUT_CONCURRENCY, async (o) => {
      const realJid = seesJids ? (o.sessions.length === 1 ? o.sessions[0]!.jid : o.bare) : undefined;
      await this.sendToSession(event, occupantPresence(room.jid, o, { realJid }), me);
    });
    const codes = ['110'];
    if (room.config.whois === 'anyone') codes.unshift('100');
    codes.push('170'); // the room's discussions are archived (MAM)
    if (created) codes.push('201');
    const self = occupantPresence(room.jid, occupant, { realJid: me, codes, id: stanza.attrs.id });
    await this.sendToSession(event, self, me);
    if (announce) await this.broadcastPresence(room, others, occupant, {});
    if (!created) await this.sendHistory(event, room, stanza.getChild('x', MUC)?.getChild('history'), me, joining);
    const subject = x(
      'message',
      { xmlns: NS.CLIENT, from: room.subject?.nick ? `${room.jid}/${room.subject.nick}` : room.jid, type: 'groupchat', id: `subject-${Date.now()}` },
      x('subject', {}, room.subject?.text ?? ''),
      room.subject ? x('delay', { xmlns: NS.DELAY, from: room.jid, stamp: room.subject.stamp }) : undefined,
    );
    await this.sendToSession(event, subject, me);
  }

  private async sendToSession(event: HostEvent, el: Element, to: string): Promise<void> {
    el.attrs.to = to;
    await this.send(event, el);
  }

  /** §7.2.14: maxchars / maxstanzas / seconds / since, within the service's own limit. */
  private async sendHistory(event: HostEvent, room: Room, request: Element | undefined, to: string, joining?: OccupantSession): Promise<void> {
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
    let items = await archiveStore(this.server).latest(roomArchive(room.jid), maxStanzas, since);
    if (joining) {
      // The occupant is written before the archive is read: a message sent meanwhile may go out live too.
      const admitted = await Promise.all(items.map((item) => this.mayDeliver(room.jid, item.id, Date.parse(item.stamp), joining)));
      items = items.filter((_, i) => admitted[i]);
    }
    // An archived message that cannot be parsed, or is too large to post, is skipped (and logged).
    let frames = items.flatMap((item) => {
      const el = this.historyMessage(room, item, to);
      const frame = el?.toString();
      if (!el || !frame || tooLargeToPost(frame, this.server.config.maxFrameBytes, 'room history message', { room: room.jid, id: item.id })) return [];
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
      else await this.server.sendTo(event.from, el);
    }
  }

  private historyMessage(room: Room, item: ArchivedMessage, to: string): Element | undefined {
    const el = parseStored(item.xml, 'room history message', { room: room.jid, id: item.id });
    if (!el) return undefined;
    el.attrs.to = to;
    el.append(x('delay', { xmlns: NS.DELAY, from: room.jid, stamp: item.stamp }));
    el.append(x('stanza-id', { xmlns: SID, by: room.jid, id: item.id }));
    return el;
  }

  private async updatePresence(event: HostEvent, room: Room, occupants: Occupant[], mine: Occupant): Promise<void> {
    const updated: Occupant = { ...mine, presence: storedPresence(event.stanza) };
    if (!(await this.store.putOccupant(room.jid, updated, mine.version))) throw new LostRace();
    await this.broadcastPresence(room, occupants.map((o) => (o.nick === mine.nick ? updated : o)), updated, {});
  }

  private async changeNick(event: HostEvent, room: Room, occupants: Occupant[], mine: Occupant): Promise<void> {
    const { stanza, to, from } = event;
    const nick = to.resource;
    if (occupants.some((o) => o.nick === nick)) throw new StanzaError('conflict', 'that nickname is in use');
    const registered = await this.store.nickOwner(room.jid, nick);
    if (registered && registered !== from.bare) throw new StanzaError('conflict', 'that nickname is registered to someone else');
    const renamed: Occupant = { ...mine, nick, presence: storedPresence(stanza), version: 0 };
    if (!(await this.store.putOccupant(room.jid, renamed, 0))) throw new StanzaError('conflict', 'that nickname is in use');
    if (!(await this.store.deleteOccupant(room.jid, mine.nick, mine.version))) {
      await this.store.deleteOccupant(room.jid, nick, renamed.version);
      throw new LostRace();
    }
    for (const s of mine.sessions) {
      const jid = tryParseJid(s.jid);
      if (s.connectionId && jid && this.server.isLocalDomain(jid.domain)) {
        await this.store.putJoin(jid.bare, { room: room.jid, nick, resource: jid.resource, connectionId: s.connectionId });
      }
    }
    const everyone = occupants.map((o) => (o.nick === mine.nick ? renamed : o));
    // The old nick leaves with 303 and the new one, then the new nick arrives (§7.6).
    await this.broadcastPresence(room, everyone, mine, { type: 'unavailable', nick, codes: ['303'] });
    await this.broadcastPresence(room, everyone, renamed, { id: from.toString() === mine.sessions[0]?.jid ? stanza.attrs.id : undefined });
  }

  private async onUnavailable(event: HostEvent): Promise<void> {
    const { stanza, from, to } = event;
    // A local session leaves by its own connection: the same full JID may also hold a replaced
    // connection's entry, still waiting for that connection's end.
    const left = await this.leaveRoom(to.bare, from.toString(), { payload: storedPresence(stanza), connectionId: event.session?.id });
    if (!left) {
      // Not in the room (already gone?): still confirm, so a client waiting for its exit finishes.
      await this.send(
        event,
        x(
          'presence',
          { xmlns: NS.CLIENT, from: to.toString(), to: from.toString(), type: 'unavailable' },
          x('x', { xmlns: MUC_USER }, x('item', { affiliation: 'none', role: 'none' }), x('status', { code: '110' })),
        ),
      );
    }
  }

  /**
   * Takes one session out of a room; the occupant leaves (broadcast) when it was its last session.
   * Resolves false when the session was not in the room.
   */
  async leaveRoom(roomJid: string, sessionJid: string, o: { codes?: string[]; payload?: string; noCleanup?: boolean; connectionId?: string }): Promise<boolean> {
    // With a connection id, only that connection's session leaves (not a newer one on the same JID).
    const matches = (s: OccupantSession) => s.jid === sessionJid && (o.connectionId === undefined || s.connectionId === o.connectionId);
    for (let attempt = 0; attempt < 4; attempt++) {
      const [room, occupants] = await Promise.all([this.store.getRoom(roomJid), this.store.listOccupants(roomJid)]);
      const mine = occupants.find((occ) => occ.sessions.some(matches));
      if (!room || !mine) return false;
      const leaving = mine.sessions.find(matches)!;
      const remaining = mine.sessions.filter((s) => s !== leaving);
      if (remaining.length) {
        if (!(await this.store.putOccupant(roomJid, { ...mine, sessions: remaining }, mine.version))) continue;
        await this.forgetJoin(roomJid, leaving);
        // Only the leaving session hears about it; the occupant stays (§7.14 multi-session).
        const self = occupantPresence(roomJid, mine, { type: 'unavailable', codes: [...(o.codes ?? []), '110'], role: 'none', payload: o.payload });
        await this.fanout(roomJid, [{ occupant: mine, session: leaving }], () => new FrameTemplate(self).for(leaving.jid), true);
        return true;
      }
      if (!(await this.store.deleteOccupant(roomJid, mine.nick, mine.version))) continue;
      await this.forgetJoin(roomJid, leaving);
      await this.broadcastPresence(room, occupants, mine, { type: 'unavailable', role: 'none', payload: o.payload, codes: o.codes }, [], o.noCleanup);
      await this.closeIfEmpty(room, occupants.length - 1);
      return true;
    }
    return false;
  }

  private async forgetJoin(room: string, session: OccupantSession): Promise<void> {
    const jid = tryParseJid(session.jid);
    if (session.connectionId && jid && this.server.isLocalDomain(jid.domain)) await this.store.deleteJoin(jid.bare, room, jid.resource, session.connectionId);
  }

  /** A temporary room ends with its last occupant (§10.1). */
  private async closeIfEmpty(room: Room, remaining: number): Promise<void> {
    if (remaining > 0 || room.config.persistent) return;
    if ((await this.store.listOccupants(room.jid)).length > 0) return;
    await this.store.deleteRoom(room.jid, this.domain);
  }

  /** Removes an occupant with all its sessions (kick, ban, membership loss), with the given status. */
  private async removeOccupant(
    room: Room,
    occupants: Occupant[],
    target: Occupant,
    codes: string[],
    o: { actor?: string; reason?: string; affiliation?: Affiliation } = {},
  ): Promise<void> {
    if (!(await this.store.deleteOccupant(room.jid, target.nick, target.version))) throw new LostRace();
    for (const s of target.sessions) await this.forgetJoin(room.jid, s);
    await this.broadcastPresence(room, occupants, target, { type: 'unavailable', role: 'none', codes, ...o });
    await this.closeIfEmpty(room, occupants.length - 1);
  }

  // messages

  private async onMessage(event: HostEvent): Promise<void> {
    const { stanza, to } = event;
    const type = stanza.attrs.type ?? 'normal';
    if (type === 'error') {
      if (to.resource) await this.leaveRoom(to.bare, event.from.toString(), { codes: ['333'], connectionId: event.session?.id });
      return;
    }
    const [room, occupants] = await Promise.all([this.store.getRoom(to.bare), this.store.listOccupants(to.bare)]);
    if (!room) throw new StanzaError('item-not-found', 'no such room');
    if (to.resource) return this.privateMessage(event, room, occupants);
    if (type === 'groupchat') return this.groupchat(event, room, occupants);
    const mucUser = stanza.getChild('x', MUC_USER);
    if (mucUser?.getChild('invite')) return this.invite(event, room, occupants, mucUser);
    const form = readForm(stanza);
    if (form?.formType === MUC_REQUEST) return this.voiceRequest(event, room, occupants, form);
    if (mucUser?.getChild('decline')) return this.decline(event, room, mucUser.getChild('decline')!);
    throw new StanzaError('bad-request', 'send groupchat messages to the room, or chat messages to an occupant');
  }

  /**
   * §7.13 / §8.6 voice requests: a visitor's submitted muc#request form goes to the moderators as a
   * form to approve; a moderator's approval (muc#request_allow) makes that occupant a participant.
   */
  private async voiceRequest(event: HostEvent, room: Room, occupants: Occupant[], form: SubmittedForm): Promise<void> {
    const sender = this.sender(occupants, event.from);
    const one = (name: string) => form.fields.get(name)?.[0];
    if (form.type === 'submit' && sender.role === 'moderator' && one('muc#roomnick') !== undefined) {
      if (!/^(1|true)$/.test(one('muc#request_allow') ?? '')) return; // declined: nothing to do
      const nick = one('muc#roomnick')!;
      for (let attempt = 0; ; attempt++) {
        const current = await this.store.listOccupants(room.jid);
        const target = current.find((o) => o.nick === nick);
        if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
        if (target.role !== 'visitor') return; // another moderator approved already
        try {
          await this.applyRole(room, current, nick, 'participant', sender.nick);
          return;
        } catch (err) {
          if (!(err instanceof LostRace) || attempt >= 3) throw err;
        }
      }
    }
    if (sender.role !== 'visitor') throw new StanzaError('not-acceptable', 'you have voice already');
    if (one('muc#role') !== 'participant') throw new StanzaError('bad-request', 'only voice (muc#role participant) can be requested');
    const request = buildForm(
      'form',
      MUC_REQUEST,
      [
        { var: 'muc#role', type: 'list-single', label: 'Requested role', values: ['participant'] },
        { var: 'muc#jid', type: 'jid-single', label: 'User ID', values: [event.from.toString()] },
        { var: 'muc#roomnick', type: 'text-single', label: 'Room Nickname', values: [sender.nick] },
        { var: 'muc#request_allow', type: 'boolean', label: 'Grant voice to this person?', values: ['false'] },
      ],
      'Voice request',
    );
    const moderators = occupants.filter((o) => o.role === 'moderator');
    const message = x('message', { xmlns: NS.CLIENT, from: room.jid, id: frameUnique('voice-request') }, request);
    await this.broadcast(room.jid, moderators, message);
  }

  private sender(occupants: Occupant[], from: Jid): Occupant {
    const occupant = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
    if (!occupant) throw new StanzaError('not-acceptable', 'you are not in this room');
    return occupant;
  }

  private async groupchat(event: HostEvent, room: Room, occupants: Occupant[]): Promise<void> {
    const { stanza, from } = event;
    const sender = this.sender(occupants, from);
    if (sender.role === 'visitor') throw new StanzaError('forbidden', 'visitors may not speak in a moderated room');
    const occupantJid = `${room.jid}/${sender.nick}`;
    const body = stanza.getChild('body');
    const subject = stanza.getChild('subject');
    let out: Element;
    if (subject && !body) {
      if (!(sender.role === 'moderator' || (room.config.changeSubject && sender.role === 'participant'))) {
        throw new StanzaError('forbidden', 'only moderators may change the subject');
      }
      room.subject = { text: subject.getText(), nick: sender.nick, stamp: new Date().toISOString() };
      await this.store.putRoom(room);
      out = x('message', { xmlns: NS.CLIENT, from: occupantJid, type: 'groupchat', id: stanza.attrs.id }, x('subject', {}, room.subject.text));
    } else {
      out = x('message', { xmlns: NS.CLIENT, from: occupantJid, type: 'groupchat', id: stanza.attrs.id });
      for (const child of stanza.getChildElements()) {
        // The room's own stanza-id and occupant data are the room's to set (XEP-0359, XEP-0313 §8.4, XEP-0421 §4).
        if (child.is('x', MUC_USER) || child.is('occupant-id', OCCUPANT_ID)) continue;
        out.append(cloneElement(child));
      }
      stripStanzaIds(out, room.jid);
    }
    if (sender.occupantId) out.append(x('occupant-id', { xmlns: OCCUPANT_ID, id: sender.occupantId }));
    if (!body && !subject) return this.broadcast(room.jid, occupants, out);
    // Archived before it goes out, so every copy carries the same stanza-id; and the occupants are
    // read again after that write, so a session joining meanwhile finds the message in the
    // archive as history, or is found here (docs/architecture.md, "room message vs join").
    const item = await archiveStore(this.server).append(roomArchive(room.jid), {
      xml: out.toString(),
      with: sender.bare,
      withFull: occupantJid,
      kind: body ? undefined : 'subject',
    });
    out.append(x('stanza-id', { xmlns: SID, by: room.jid, id: item.id }));
    const current = await this.store.listOccupants(room.jid);
    const at = Date.parse(item.stamp);
    await this.broadcast(room.jid, current, out, false, body ? (t) => this.mayDeliver(room.jid, item.id, at, t.session) : undefined);
  }

  private async privateMessage(event: HostEvent, room: Room, occupants: Occupant[]): Promise<void> {
    const { stanza, from, to } = event;
    if (stanza.attrs.type === 'groupchat') throw new StanzaError('bad-request', 'groupchat messages go to the room');
    const sender = this.sender(occupants, from);
    const policy = room.config.allowPm;
    if (policy === 'none' || (policy === 'moderators' && sender.role !== 'moderator') || (policy === 'participants' && sender.role === 'visitor')) {
      throw new StanzaError('forbidden', 'private messages are not allowed here');
    }
    const target = occupants.find((o) => o.nick === to.resource);
    if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
    const out = x('message', { xmlns: NS.CLIENT, from: `${room.jid}/${sender.nick}`, type: stanza.attrs.type, id: stanza.attrs.id });
    for (const child of stanza.getChildElements()) if (!child.is('x', MUC_USER)) out.append(cloneElement(child));
    out.append(x('x', { xmlns: MUC_USER }));
    const template = new FrameTemplate(out);
    await this.fanout(room.jid, this.targets([target]), (t) => template.for(t.session.jid));
  }

  private async invite(event: HostEvent, room: Room, occupants: Occupant[], mucUser: Element): Promise<void> {
    const { from } = event;
    const inviter = this.sender(occupants, from);
    const affiliation = inviter.affiliation;
    const privileged = AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin || inviter.role === 'moderator';
    if (!room.config.allowInvites && !privileged) throw new StanzaError('forbidden', 'only moderators may invite to this room');
    for (const invite of mucUser.getChildren('invite')) {
      const invitee = tryParseJid(invite.attrs.to);
      if (!invitee) throw new StanzaError('jid-malformed', 'the invitation needs a valid "to"');
      // In a members-only room an invitation by an admin makes the invitee a member (§7.8.2).
      if (room.config.membersOnly && AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin) {
        if ((await this.store.getAffiliation(room.jid, invitee.bare)) === 'none') await this.setAffiliation(room.jid, invitee.bare, 'member');
      }
      const reason = invite.getChildText('reason');
      const message = x(
        'message',
        { xmlns: NS.CLIENT, from: room.jid, to: invitee.toString(), id: event.stanza.attrs.id },
        x(
          'x',
          { xmlns: MUC_USER },
          x('invite', { from: from.toString() }, reason ? x('reason', {}, reason) : undefined),
          room.config.passwordProtected ? x('password', {}, room.config.password) : undefined,
        ),
      );
      await this.server.route(message, parseJid(room.jid));
    }
  }

  private async decline(event: HostEvent, room: Room, decline: Element): Promise<void> {
    const inviter = tryParseJid(decline.attrs.to);
    if (!inviter) throw new StanzaError('jid-malformed', 'the decline needs a valid "to"');
    const reason = decline.getChildText('reason');
    const message = x(
      'message',
      { xmlns: NS.CLIENT, from: room.jid, to: inviter.toString() },
      x('x', { xmlns: MUC_USER }, x('decline', { from: event.from.bare }, reason ? x('reason', {}, reason) : undefined)),
    );
    await this.server.route(message, parseJid(room.jid));
  }

  // iq

  private async serviceStanza(event: HostEvent): Promise<void> {
    const { stanza } = event;
    if (stanza.name !== 'iq') {
      if (stanza.name === 'message' && stanza.attrs.type !== 'error') await this.replyError(event, new StanzaError('service-unavailable'));
      return;
    }
    const type = stanza.attrs.type;
    if (type !== 'get' && type !== 'set') return;
    await this.answer(event, async ({ payload, type }) => {
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
        const rooms = (await this.store.listDirectory(this.domain)).filter((r) => r.public);
        return x('query', { xmlns: NS.DISCO_ITEMS }, ...rooms.map((r) => x('item', { jid: r.room, name: r.name || undefined })));
      }
      throw new StanzaError('service-unavailable');
    });
  }

  private async onIq(event: HostEvent): Promise<void> {
    const { stanza, to } = event;
    const type = stanza.attrs.type;
    if (type === 'result' || type === 'error') {
      if (to.resource) await this.forwardIqResponse(event);
      return;
    }
    if (type !== 'get' && type !== 'set') return;
    if (to.resource) return this.occupantIq(event);
    await this.answer(event, async (request) => {
      const ns = request.payload.attrs.xmlns;
      if (request.payload.is('query', NS.DISCO_INFO)) return this.roomInfo(request);
      if (request.payload.is('query', NS.DISCO_ITEMS)) {
        if (request.type !== 'get') throw new StanzaError('bad-request');
        await this.existingRoom(request);
        return x('query', { xmlns: NS.DISCO_ITEMS });
      }
      if (ns === MUC_OWNER) return this.owner(request);
      if (ns === MUC_ADMIN) return this.admin(request);
      if (ns === MAM) return this.roomArchiveQuery(request, event);
      if (ns === MODERATE) return this.moderate(request, event);
      if (ns === NS.REGISTER) return this.registerNick(request);
      throw new StanzaError('service-unavailable');
    });
  }

  private async existingRoom(request: IqRequest): Promise<Room> {
    const room = await this.store.getRoom(request.to.bare);
    if (!room) throw new StanzaError('item-not-found', 'no such room');
    return room;
  }

  private async roomInfo({ type, payload, to, from }: IqRequest): Promise<Element> {
    if (type !== 'get') throw new StanzaError('bad-request');
    if (payload.attrs.node === ROOMUSER_NODE) return this.registeredNickInfo(to.bare, from.bare);
    if (payload.attrs.node) throw new StanzaError('item-not-found');
    const room = await this.store.getRoom(to.bare);
    if (!room || (room.locked && (await this.store.getAffiliation(room.jid, from.bare)) !== 'owner')) throw new StanzaError('item-not-found', 'no such room');
    const occupants = await this.store.listOccupants(room.jid);
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

  /** XEP-0410 self-ping is answered here; other iqs to an occupant go to one of its sessions. */
  private async occupantIq(event: HostEvent): Promise<void> {
    const { stanza, from, to } = event;
    const occupants = await this.store.listOccupants(to.bare);
    const sender = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
    if (!sender) throw new StanzaError('not-acceptable', 'you are not in this room');
    const payload = stanza.getChildElements()[0]!;
    if (sender.nick === to.resource && payload.is('ping', PING)) {
      await this.send(event, x('iq', { xmlns: NS.CLIENT, type: 'result', id: stanza.attrs.id, from: to.toString(), to: from.toString() }));
      return;
    }
    const target = occupants.find((o) => o.nick === to.resource);
    if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
    const session = target.sessions[0]!;
    // The id carries the requester, so the answer finds its way back without any state here.
    const id = `${FORWARDED_IQ}:${Buffer.from(from.toString()).toString('base64url')}:${stanza.attrs.id}`;
    const forwarded = x('iq', { xmlns: NS.CLIENT, type: stanza.attrs.type, id, from: `${to.bare}/${sender.nick}`, to: session.jid }, cloneElement(payload));
    await this.fanout(to.bare, [{ occupant: target, session }], () => forwarded.toString());
  }

  private async forwardIqResponse(event: HostEvent): Promise<void> {
    const { stanza, from, to } = event;
    const [tag, requester, ...rest] = (stanza.attrs.id ?? '').split(':');
    if (tag !== FORWARDED_IQ || !requester || !rest.length) return;
    const requesterJid = tryParseJid(Buffer.from(requester, 'base64url').toString());
    if (!requesterJid) return;
    const occupants = await this.store.listOccupants(to.bare);
    const responder = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
    const asker = occupants.find((o) => o.nick === to.resource && o.sessions.some((s) => s.jid === requesterJid.toString()));
    if (!responder || !asker) return;
    const reply = x('iq', { xmlns: NS.CLIENT, type: stanza.attrs.type, id: rest.join(':'), from: `${to.bare}/${responder.nick}`, to: requesterJid.toString() });
    for (const child of stanza.getChildElements()) reply.append(cloneElement(child));
    const session = asker.sessions.find((s) => s.jid === requesterJid.toString())!;
    await this.fanout(to.bare, [{ occupant: asker, session }], () => reply.toString(), true);
  }

  // the room's archive (XEP-0313 §5.1.2)

  private async roomArchiveQuery(request: IqRequest, event: HostEvent): Promise<Element> {
    const room = await this.existingRoom(request);
    const affiliation = await this.store.getAffiliation(room.jid, request.from.bare);
    if (affiliation === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
    if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) throw new StanzaError('forbidden', 'the archive of a members-only room is for members');
    const occupants = await this.store.listOccupants(room.jid);
    const requester = occupants.find((o) => o.sessions.some((s) => s.jid === request.from.toString()));
    // XEP-0313 §5.1.2: only who may enter now may read. A query carries no password, so in a
    // password-protected room that is whoever is inside (they gave it) and its owners (who enter
    // without it, as in the join above).
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
    return answerMamQuery(this.server, roomArchive(room.jid), room.jid, parsed, (el) => this.send(event, el), request.stanza.attrs.from!, withAny, (item) => {
      const el = parseStored(item.xml, 'archived room message', { room: room.jid, id: item.id });
      if (!el) return undefined;
      delete el.attrs.to;
      el.children = el.children.filter((c) => typeof c === 'string' || !c.is('x', MUC_USER));
      if (seesJids) el.append(x('x', { xmlns: MUC_USER }, x('item', { jid: item.with })));
      return el;
    });
  }

  // registered nicknames (§7.10, §7.12)

  /** §7.12: the nickname the requester registered, as the name of an identity (none: no identity). */
  private async registeredNickInfo(room: string, bare: string): Promise<Element> {
    const nick = await this.store.registeredNick(room, bare);
    return x('query', { xmlns: NS.DISCO_INFO, node: ROOMUSER_NODE }, nick ? x('identity', { category: 'conference', type: 'text', name: nick }) : undefined);
  }

  private async registerNick(request: IqRequest): Promise<Element | undefined> {
    const room = await this.existingRoom(request);
    const bare = request.from.bare;
    const affiliation = await this.store.getAffiliation(room.jid, bare);
    if (affiliation === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
    if (request.type === 'get') {
      const nick = await this.store.registeredNick(room.jid, bare);
      if (nick) return x('query', { xmlns: NS.REGISTER }, x('registered'), x('username', {}, nick));
      return x(
        'query',
        { xmlns: NS.REGISTER },
        x('instructions', {}, 'Register a nickname in this room: nobody else can take it, and you become a member.'),
        buildForm('form', MUC_REGISTER, [{ var: 'muc#register_roomnick', type: 'text-single', label: 'Desired Nickname' }], 'Nickname registration'),
      );
    }
    if (request.payload.getChild('remove')) {
      await this.store.unregisterNick(room.jid, bare);
      // §7.10.2: cancelling registration ends membership, not a higher affiliation.
      if (affiliation === 'member') await this.setAffiliation(room.jid, bare, 'none');
      return undefined;
    }
    const form = readForm(request.payload);
    if (!form || form.formType !== MUC_REGISTER || form.type !== 'submit') throw new StanzaError('bad-request', 'submit the muc#register form');
    const nick = form.fields.get('muc#register_roomnick')?.[0]?.trim();
    if (!nick) throw new StanzaError('not-acceptable', 'a nickname is required');
    if (Buffer.byteLength(nick, 'utf8') > MAX_NICK_BYTES) throw new StanzaError('not-acceptable', `nicknames are limited to ${MAX_NICK_BYTES} bytes`);
    // In a members-only room only members register (the owner decides who is one).
    if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) throw new StanzaError('registration-required', 'this room is for members only');
    const inUse = (await this.store.listOccupants(room.jid)).find((o) => o.nick === nick && o.bare !== bare);
    if (inUse || !(await this.store.registerNick(room.jid, bare, nick))) throw new StanzaError('conflict', 'that nickname is taken');
    if (affiliation === 'none') await this.setAffiliation(room.jid, bare, 'member');
    return undefined;
  }

  // XEP-0425: a moderator retracts a message for everyone, in the archive too

  private async moderate(request: IqRequest, event: HostEvent): Promise<undefined> {
    if (request.type !== 'set' || request.payload.name !== 'moderate') throw new StanzaError('bad-request');
    const room = await this.existingRoom(request);
    const occupants = await this.store.listOccupants(room.jid);
    const requester = occupants.find((o) => o.sessions.some((s) => s.jid === request.from.toString()));
    if (requester?.role !== 'moderator') throw new StanzaError('forbidden', "only moderators may retract other occupants' messages");
    const { id, reason } = parseModeration(request.payload);
    const archive = archiveStore(this.server);
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
    await this.broadcast(room.jid, await this.store.listOccupants(room.jid), out);
    return undefined;
  }

  // owner: configuration and destruction (§10)

  private async owner(request: IqRequest): Promise<Element | undefined> {
    const { payload, type, from } = request;
    const room = await this.existingRoom(request);
    if ((await this.store.getAffiliation(room.jid, from.bare)) !== 'owner') throw new StanzaError('forbidden', 'only owners may configure the room');
    if (type === 'get') return x('query', { xmlns: MUC_OWNER }, configForm(room.config));
    const destroy = payload.getChild('destroy');
    if (destroy) {
      await this.destroy(room, destroy);
      return;
    }
    const form = readForm(payload);
    if (!form) throw new StanzaError('bad-request', 'expected a data form or <destroy/>');
    if (form.type === 'cancel') {
      // Cancelling the initial configuration destroys the room (§10.1.3).
      if (room.locked) await this.destroy(room, x('destroy'));
      return;
    }
    if (form.type !== 'submit') throw new StanzaError('bad-request', 'the form must be submitted or cancelled');
    const before = room.config;
    const wasLocked = room.locked;
    const updated: Room = { ...room, config: applyConfigForm(before, form), locked: false };
    await this.store.putRoom(updated);
    await this.updateDirectory(updated);
    if (wasLocked) return;
    const occupants = await this.store.listOccupants(room.jid);
    const codes = ['104'];
    if (before.whois !== updated.config.whois) codes.push(updated.config.whois === 'anyone' ? '172' : '173');
    await this.broadcast(room.jid, occupants, x('message', { xmlns: NS.CLIENT, from: room.jid, type: 'groupchat', id: `config-${Date.now()}` }, x('x', { xmlns: MUC_USER }, ...codes.map((code) => x('status', { code })))));
    if (updated.config.membersOnly && !before.membersOnly) {
      let remaining = occupants;
      for (const o of occupants.filter((occ) => AFFILIATION_RANK[occ.affiliation] < AFFILIATION_RANK.member)) {
        await this.removeOccupant(updated, remaining, o, ['322']);
        remaining = remaining.filter((r) => r.nick !== o.nick);
      }
    }
  }

  private async updateDirectory(room: Room): Promise<void> {
    if (room.locked || !room.config.public) await this.store.deleteDirectory(this.domain, room.jid);
    else await this.store.putDirectory(this.domain, room.jid, { name: room.config.name, public: true });
  }

  private async destroy(room: Room, destroy: Element): Promise<void> {
    const occupants = await this.store.listOccupants(room.jid);
    const alternate = tryParseJid(destroy.attrs.jid);
    const reason = destroy.getChildText('reason');
    const notice = x('destroy', { jid: alternate?.bare }, reason ? x('reason', {}, reason) : undefined);
    await this.store.deleteRoom(room.jid, this.domain);
    for (const o of occupants) for (const s of o.sessions) await this.forgetJoin(room.jid, s);
    // Each occupant is told it was removed, with the reason and where to go (§10.9).
    await this.fanout(
      room.jid,
      this.targets(occupants),
      (t) => new FrameTemplate(occupantPresence(room.jid, t.occupant, { type: 'unavailable', affiliation: 'none', role: 'none', codes: ['110'], destroy: cloneElement(notice) })).for(t.session.jid),
      true,
    );
  }

  // admin: roles and affiliations (§8, §9, §10)

  private async admin(request: IqRequest): Promise<Element | undefined> {
    const { payload, type, from } = request;
    const room = await this.existingRoom(request);
    const [actorAffiliation, occupants] = await Promise.all([this.store.getAffiliation(room.jid, from.bare), this.store.listOccupants(room.jid)]);
    const actor = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
    const actorRank = AFFILIATION_RANK[actorAffiliation];
    const actorRole: Role = actor?.role ?? (actorRank >= AFFILIATION_RANK.admin ? 'moderator' : 'none');
    const items = payload.getChildren('item');
    if (!items.length) throw new StanzaError('bad-request', 'expected <item/>');
    if (type === 'get') return this.adminList(room, occupants, items[0]!, actorAffiliation, actorRole);
    // All-or-nothing: every change is checked before any is applied.
    const changes = await Promise.all(items.map((item) => this.checkAdminChange(room, occupants, item, actorAffiliation, actorRole, actor)));
    let current = occupants;
    for (const change of changes) current = await change(current);
  }

  private async adminList(room: Room, occupants: Occupant[], item: Element, actorAffiliation: Affiliation, actorRole: Role): Promise<Element> {
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
      const list = (await this.store.listAffiliations(room.jid)).filter((a) => a.affiliation === affiliation);
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
  private async checkAdminChange(
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
      const current = await this.store.getAffiliation(room.jid, bare);
      if (actorRank < AFFILIATION_RANK.admin) throw new StanzaError('forbidden', 'only admins and owners change affiliations');
      if (actorAffiliation === 'admin') {
        if (affiliation === 'owner' || affiliation === 'admin') throw new StanzaError('forbidden', 'only owners grant admin or owner');
        if (current === 'owner' || current === 'admin') throw new StanzaError('not-allowed', 'admins cannot change the affiliation of admins or owners');
      }
      if (current === 'owner' && affiliation !== 'owner') {
        const owners = (await this.store.listAffiliations(room.jid)).filter((a) => a.affiliation === 'owner');
        if (owners.length <= 1) throw new StanzaError('conflict', 'a room needs at least one owner');
      }
      return (list) => this.applyAffiliation(room, list, bare!, affiliation, actorNick, reason);
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
      return (list) => this.applyRole(room, list, target.nick, role, actorNick, reason);
    }
    throw new StanzaError('bad-request', 'an item needs an affiliation or a role');
  }

  private async applyRole(room: Room, occupants: Occupant[], nick: string, role: Role, actor?: string, reason?: string): Promise<Occupant[]> {
    const target = occupants.find((o) => o.nick === nick);
    if (!target) return occupants;
    if (role === 'none') {
      await this.removeOccupant(room, occupants, target, ['307'], { actor, reason });
      return occupants.filter((o) => o.nick !== nick);
    }
    const updated: Occupant = { ...target, role };
    if (!(await this.store.putOccupant(room.jid, updated, target.version))) throw new LostRace();
    const list = occupants.map((o) => (o.nick === nick ? updated : o));
    await this.broadcastPresence(room, list, updated, { actor, reason });
    return list;
  }

  private async applyAffiliation(room: Room, occupants: Occupant[], bare: string, affiliation: Affiliation, actor?: string, reason?: string): Promise<Occupant[]> {
    await this.setAffiliation(room.jid, bare, affiliation, reason);
    let list = occupants;
    for (const target of occupants.filter((o) => o.bare === bare)) {
      if (affiliation === 'outcast') {
        await this.removeOccupant(room, list, target, ['301'], { actor, reason, affiliation });
        list = list.filter((o) => o.nick !== target.nick);
        continue;
      }
      if (room.config.membersOnly && AFFILIATION_RANK[affiliation] < AFFILIATION_RANK.member) {
        await this.removeOccupant(room, list, target, ['321'], { actor, reason, affiliation });
        list = list.filter((o) => o.nick !== target.nick);
        continue;
      }
      const wasPrivileged = AFFILIATION_RANK[target.affiliation] >= AFFILIATION_RANK.admin;
      let role = target.role;
      if (AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin) role = 'moderator';
      else if (wasPrivileged) role = defaultRole(affiliation, room.config);
      else if (affiliation === 'member' && role === 'visitor') role = 'participant';
      const updated: Occupant = { ...target, affiliation, role };
      if (!(await this.store.putOccupant(room.jid, updated, target.version))) throw new LostRace();
      list = list.map((o) => (o.nick === target.nick ? updated : o));
      await this.broadcastPresence(room, list, updated, { actor, reason });
    }
    return list;
  }
}

/** The answer when concurrent changes to a room kept winning: try again. */
function busy(): StanzaError {
  return new StanzaError('resource-constraint', 'the room changed meanwhile; try again');
}

/** A conditional write lost to a concurrent change of the same room: the operation is re-run or answered with busy(). */
class LostRace extends Error {
  constructor() {
    super('lost a race with a concurrent change');
  }
}
