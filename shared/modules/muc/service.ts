/**
 * The group chat service (XEP-0045) behind `conference.<domain>`: every stanza addressed to the
 * service, a room or an occupant comes here through the core's host() registration.
 *
 * A room's state lives in DynamoDB (shared/storage/muc-store.ts), never in Lambda memory: any
 * invocation can serve any room. A room message costs one read of the room, one Query of its
 * occupants, one archive write, and one @connections post per occupant session, made
 * FANOUT_CONCURRENCY at a time (see docs/muc-fanout.md).
 *
 * MucService is the coordinator: it owns the stores, dispatches each stanza, and holds what every
 * part shares (replies, affiliation writes, the room lookup). The parts are functions taking the
 * service: presence.ts (entering, nick changes), occupancy.ts (leaving, removal, room end),
 * messages.ts, iq.ts (routing room iqs to disco.ts, owner.ts, admin.ts, archive.ts, register.ts),
 * and fanout.ts (delivery). They import this file for its types only.
 */
import { StanzaError, errorReply } from '../../errors.ts';
import { tryParseJid, type Jid } from '../../jid.ts';
import type { IqRequest, StanzaEvent } from '../../core/registry.ts';
import type { ModuleServer } from '../../core/registry.ts';
import type { ClientSession } from '../../core/session.ts';
import { ReferenceStore } from '../../storage/reference-store.ts';
import { MucStore, type Affiliation, type Room } from '../../storage/muc-store.ts';
import type { Element } from '../../xml/element.ts';
import { serviceStanza } from './disco.ts';
import { onIq } from './iq.ts';
import { LostRace, busy } from './lost-race.ts';
import { onMessage } from './messages.ts';
import { leaveRoom } from './occupancy.ts';
import { onPresence } from './presence.ts';

export { FANOUT_CONCURRENCY } from './fanout.ts';

export type HostEvent = StanzaEvent & { to: Jid };

export class MucService {
  readonly store: MucStore;
  private readonly references: ReferenceStore;

  constructor(
    readonly server: ModuleServer,
    readonly domain: string,
  ) {
    this.store = server.store.open(MucStore);
    this.references = server.store.open(ReferenceStore);
  }

  // entry points

  async handle(event: HostEvent): Promise<void> {
    const { stanza, to } = event;
    if (!to.local) return serviceStanza(this, event);
    try {
      if (stanza.name === 'presence') await onPresence(this, event);
      else if (stanza.name === 'message') await onMessage(this, event);
      else if (stanza.name === 'iq') await onIq(this, event);
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
  async setAffiliation(room: string, bare: string, affiliation: Affiliation, reason?: string): Promise<void> {
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

  /**
   * Takes one session out of a room (occupancy.ts); here so that fanout.ts, which takes gone
   * sessions out, reaches it without importing occupancy.ts (which fans out through it).
   */
  leaveRoom(roomJid: string, sessionJid: string, o: { codes?: string[]; payload?: string; noCleanup?: boolean; connectionId?: string }): Promise<boolean> {
    return leaveRoom(this, roomJid, sessionJid, o);
  }

  async existingRoom(request: IqRequest): Promise<Room> {
    const room = await this.store.getRoom(request.to.bare);
    if (!room) throw new StanzaError('item-not-found', 'no such room');
    return room;
  }

  // replies

  async send(event: HostEvent, el: Element): Promise<void> {
    if (event.session) await event.session.send(el);
    else await this.server.sendTo(event.from, el);
  }

  async replyError(event: HostEvent, err: StanzaError): Promise<void> {
    const reply = errorReply(event.stanza, err);
    if (!reply) return;
    reply.getChild('error')!.attrs.by = event.to.bare;
    await this.send(event, reply);
  }

  answer(event: HostEvent, handler: (request: IqRequest) => Promise<Element | void | undefined>): Promise<void> {
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
}
