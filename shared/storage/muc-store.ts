/**
 * XEP-0045 rooms on the single table (layout in docs/data-model.md):
 *
 *   room#<room>        config           the room: configuration, subject, locked flag
 *   room#<room>        aff#<bare>       an affiliation (owner, admin, member, outcast)
 *   room#<room>        occ#<nick>       an occupant: role, affiliation, presence, sessions (+ TTL)
 *   room#<room>        mam#<id>         the room's archive (archive-store.ts)
 *   mucdir#<service>   <room>           directory entry for disco#items (name, public)
 *   room#<room>        nick#<nick>      a registered nickname (§7.10): whose it is
 *   room#<room>        regnick#<bare>   the nickname a user registered
 *   room#<room>        dlv#<id>#<jid>#<joined>   who posts a message to a session that joined while it was sent (+ TTL)
 *   user#<bare>        mucjoin#<room>/<resource>#<connection>   which rooms a local session is in (+ TTL),
 *                                       so the session's end can take it out of them
 *
 * Occupants are written with a version number and conditional puts: joins, nick changes and
 * leaves of one nick from concurrent Lambda invocations cannot overwrite each other.
 */
import { DeleteCommand, GetCommand, PutCommand } from './commands.ts';
import { claimOnce, conditionally, deleteKeys, isLive as live, nowSeconds, queryAll } from './table-ops.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { keyPart, roomDirectoryPk, roomPk, userPk } from './keys.ts';

export type Role = 'moderator' | 'participant' | 'visitor' | 'none';
export type Affiliation = 'owner' | 'admin' | 'member' | 'outcast' | 'none';

export interface RoomConfig {
  name: string;
  description: string;
  persistent: boolean;
  public: boolean;
  membersOnly: boolean;
  moderated: boolean;
  passwordProtected: boolean;
  password: string;
  /** 0 = no limit. */
  maxUsers: number;
  /** Who sees occupants' real JIDs: 'moderators' (semi-anonymous) or 'anyone' (non-anonymous). */
  whois: 'moderators' | 'anyone';
  /** Participants may change the subject (moderators always may). */
  changeSubject: boolean;
  /** Non-moderators may invite others. */
  allowInvites: boolean;
  /** Who may send private messages. */
  allowPm: 'anyone' | 'participants' | 'moderators' | 'none';
  /** Roles whose presence is broadcast to the room. */
  presenceBroadcast: Role[];
}

export interface Room {
  jid: string;
  config: RoomConfig;
  /** Created with the MUC protocol and not configured yet (XEP-0045 §10.1): only the owner may enter. */
  locked: boolean;
  createdAt: number;
  subject?: { text: string; nick?: string; stamp: string };
}

export interface OccupantSession {
  /** The real full JID. */
  jid: string;
  /** The @connections id of a local session (absent for occupants on other servers). */
  connectionId?: string;
  /** When it joined (epoch ms): a room message of about that time may also reach it as history. */
  joinedAt?: number;
  /** Whether the session had XEP-0198 on when it joined (a later enable is found by the sender itself). */
  sm?: boolean;
  /** Without it: until when the session may enable XEP-0198 (SessionRecord.smOpenUntil). */
  smOpenUntil?: number;
}

export interface Occupant {
  nick: string;
  /** Real bare JID. */
  bare: string;
  role: Role;
  affiliation: Affiliation;
  /** The occupant's last presence (a <presence/> with the client's payload, no addresses). */
  presence?: string;
  sessions: OccupantSession[];
  version: number;
  /** XEP-0421: the same for this real bare JID in this room every time it joins (muc/occupant-id.ts). */
  occupantId?: string;
}

export interface AffiliationItem {
  jid: string;
  affiliation: Exclude<Affiliation, 'none'>;
  reason?: string;
}

export interface JoinRecord {
  room: string;
  nick: string;
  resource: string;
  connectionId: string;
}

/** Occupants and joins expire 3 h after their last write, in case a session's end was lost (sockets live 2 h at most). */
const OCCUPANT_TTL_SECONDS = 3 * 3600;
const DELIVERY_CLAIM_TTL_SECONDS = 3600;


function isConditionFailure(err: unknown): boolean {
  return (err as Error).name === 'ConditionalCheckFailedException';
}

export class MucStore {
  constructor(private readonly db: TableAccess) {}



  // rooms

  async getRoom(room: string): Promise<Room | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: 'config' }, ConsistentRead: true }));
    if (!out.Item) return undefined;
    return { jid: room, config: out.Item.config, locked: out.Item.locked ?? false, createdAt: out.Item.createdAt, subject: out.Item.subject };
  }

  /** Resolves false when the room already exists (someone else created it first). */
  async createRoom(room: Room): Promise<boolean> {
    try {
      await this.db.doc.send(
        new PutCommand({
          TableName: this.db.table,
          Item: { pk: roomPk(room.jid), sk: 'config', config: room.config, locked: room.locked, createdAt: room.createdAt, subject: room.subject },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  async putRoom(room: Room): Promise<void> {
    await this.db.doc.send(
      new PutCommand({
        TableName: this.db.table,
        Item: { pk: roomPk(room.jid), sk: 'config', config: room.config, locked: room.locked, createdAt: room.createdAt, subject: room.subject },
      }),
    );
  }

  /** Deletes every item of the room (configuration, affiliations, occupants, archive) and its directory entry. */
  async deleteRoom(room: string, service: string): Promise<void> {
    // The config item goes first so nobody can join a half-deleted room.
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: 'config' } }));
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: roomDirectoryPk(service), sk: room } }));
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': roomPk(room) },
      ProjectionExpression: 'pk, sk',
    });
    await deleteKeys(this.db, items.map((i) => ({ pk: i.pk as string, sk: i.sk as string })));
  }

  // directory (disco#items of the service)

  async putDirectory(service: string, room: string, entry: { name: string; public: boolean }): Promise<void> {
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { pk: roomDirectoryPk(service), sk: room, room, ...entry } }));
  }

  async deleteDirectory(service: string, room: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: roomDirectoryPk(service), sk: room } }));
  }

  async listDirectory(service: string): Promise<{ room: string; name: string; public: boolean }[]> {
    const items = await queryAll(this.db, { KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': roomDirectoryPk(service) } });
    return items.map((i) => ({ room: i.room, name: i.name ?? '', public: i.public ?? false }));
  }

  // affiliations

  async getAffiliation(room: string, bare: string): Promise<Affiliation> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: `aff#${bare}` }, ConsistentRead: true }));
    return (out.Item?.affiliation as Affiliation | undefined) ?? 'none';
  }

  async listAffiliations(room: string): Promise<AffiliationItem[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': roomPk(room), ':p': 'aff#' },
      ConsistentRead: true,
    });
    return items.map((i) => ({ jid: i.jid, affiliation: i.affiliation, reason: i.reason }));
  }

  async setAffiliation(room: string, bare: string, affiliation: Affiliation, reason?: string): Promise<void> {
    const Key = { pk: roomPk(room), sk: `aff#${bare}` };
    if (affiliation === 'none') {
      await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key }));
      return;
    }
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...Key, jid: bare, affiliation, reason } }));
  }

  // registered nicknames (§7.10)

  /** Whose registered nickname `nick` is, if anyone's. */
  async nickOwner(room: string, nick: string): Promise<string | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: `nick#${nick}` }, ConsistentRead: true }));
    return out.Item?.bare as string | undefined;
  }

  async registeredNick(room: string, bare: string): Promise<string | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: `regnick#${bare}` }, ConsistentRead: true }));
    return out.Item?.nick as string | undefined;
  }

  /**
   * Registers `nick` for `bare`: false when it is someone else's (a conditional put: of two users
   * registering one nickname at once, one gets it). A previous nickname of the user is released.
   */
  async registerNick(room: string, bare: string, nick: string): Promise<boolean> {
    const previous = await this.registeredNick(room, bare);
    const taken = !(await conditionally(
      this.db.doc.send(
        new PutCommand({
          TableName: this.db.table,
          Item: { pk: roomPk(room), sk: `nick#${nick}`, bare, nick },
          ConditionExpression: 'attribute_not_exists(pk) OR bare = :bare',
          ExpressionAttributeValues: { ':bare': bare },
        }),
      ),
    ));
    if (taken) return false;
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { pk: roomPk(room), sk: `regnick#${bare}`, bare, nick } }));
    if (previous && previous !== nick) await this.releaseNick(room, bare, previous);
    return true;
  }

  /** Cancels a user's registration (§7.10.2): the nickname is free again. */
  async unregisterNick(room: string, bare: string): Promise<void> {
    const nick = await this.registeredNick(room, bare);
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: `regnick#${bare}` } }));
    if (nick) await this.releaseNick(room, bare, nick);
  }

  private async releaseNick(room: string, bare: string, nick: string): Promise<void> {
    await conditionally(
      this.db.doc.send(
        new DeleteCommand({
          TableName: this.db.table,
          Key: { pk: roomPk(room), sk: `nick#${nick}` },
          ConditionExpression: 'bare = :bare',
          ExpressionAttributeValues: { ':bare': bare },
        }),
      ),
    );
  }

  // occupants

  /**
   * Claims the delivery of archived message `id` to one stay of a session in the room (its JID and
   * join time) for `owner` (a frame id): true for the first claimant and for the same owner again
   * (a redelivered frame), false for anyone else.
   */
  async claimDelivery(room: string, id: string, session: { jid: string; joinedAt?: number }, owner: string): Promise<boolean> {
    return claimOnce(this.db, { pk: roomPk(room), sk: `dlv#${keyPart(id)}#${keyPart(session.jid)}#${session.joinedAt ?? 0}` }, owner, DELIVERY_CLAIM_TTL_SECONDS);
  }


  async listOccupants(room: string): Promise<Occupant[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': roomPk(room), ':p': 'occ#' },
      ConsistentRead: true,
    });
    return items.map(toOccupant);
  }

  async getOccupant(room: string, nick: string): Promise<Occupant | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: roomPk(room), sk: `occ#${nick}` }, ConsistentRead: true }));
    return out.Item && live(out.Item) ? toOccupant(out.Item) : undefined;
  }

  /**
   * Writes the occupant if the stored one still has `expectedVersion` (0 = must not exist, or be
   * expired); bumps the version. Resolves false on a lost race.
   */
  async putOccupant(room: string, occupant: Occupant, expectedVersion: number): Promise<boolean> {
    const item = { pk: roomPk(room), sk: `occ#${occupant.nick}`, ...occupant, version: expectedVersion + 1, [TTL_ATTRIBUTE]: nowSeconds() + OCCUPANT_TTL_SECONDS };
    try {
      await this.db.doc.send(
        new PutCommand({
          TableName: this.db.table,
          Item: item,
          ConditionExpression: expectedVersion === 0 ? 'attribute_not_exists(pk) OR #e < :now' : 'version = :v',
          ExpressionAttributeNames: expectedVersion === 0 ? { '#e': TTL_ATTRIBUTE } : undefined,
          ExpressionAttributeValues: expectedVersion === 0 ? { ':now': nowSeconds() } : { ':v': expectedVersion },
        }),
      );
      occupant.version = expectedVersion + 1;
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  /** Deletes the occupant if it still has `expectedVersion`; resolves false on a lost race. */
  async deleteOccupant(room: string, nick: string, expectedVersion: number): Promise<boolean> {
    try {
      await this.db.doc.send(
        new DeleteCommand({
          TableName: this.db.table,
          Key: { pk: roomPk(room), sk: `occ#${nick}` },
          ConditionExpression: 'version = :v',
          ExpressionAttributeValues: { ':v': expectedVersion },
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  // which rooms a local session is in

  async putJoin(bare: string, join: JoinRecord): Promise<void> {
    await this.db.doc.send(
      new PutCommand({
        TableName: this.db.table,
        Item: { pk: userPk(bare), sk: joinKey(join.room, join.resource, join.connectionId), ...join, [TTL_ATTRIBUTE]: nowSeconds() + OCCUPANT_TTL_SECONDS },
      }),
    );
  }

  async deleteJoin(bare: string, room: string, resource: string, connectionId: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: userPk(bare), sk: joinKey(room, resource, connectionId) } }));
  }

  async listJoins(bare: string): Promise<JoinRecord[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': userPk(bare), ':p': 'mucjoin#' },
      ConsistentRead: true,
    });
    return items.map((i) => ({ room: i.room, nick: i.nick, resource: i.resource, connectionId: i.connectionId }));
  }
}

/**
 * One item per connection in the room: a new connection on the same full JID (a reconnect) must not
 * take over the record by which the old one's end takes it out of the room.
 */
const joinKey = (room: string, resource: string, connectionId: string) => `mucjoin#${room}/${resource}#${connectionId}`;

function toOccupant(item: Record<string, any>): Occupant {
  return {
    nick: item.nick,
    bare: item.bare,
    role: item.role,
    affiliation: item.affiliation ?? 'none',
    presence: item.presence,
    sessions: item.sessions ?? [],
    version: item.version ?? 0,
    ...(typeof item.occupantId === 'string' ? { occupantId: item.occupantId } : {}),
  };
}
