/**
 * The storage interface the core and its modules use. One implementation, on DynamoDB
 * (dynamo-store.ts); locally it talks to DynamoDB Local, so tests exercise the real queries.
 */
import type { DocClient } from './commands.ts';
import type { Account, ConnectionState, RosterItem, SessionRecord } from '../core/types.ts';
import type { ScramCredentials, ScramHash } from '../sasl/scram.ts';
import type { FrameJournal } from './frame-context.ts';

export interface UserRoute {
  exists: boolean;
  sessions: SessionRecord[];
  /**
   * Every routing item of the user by sort key (`account`, which carries the sessions, and what feature
   * modules keep under `account#…`), so modules read theirs without another request.
   */
  items: Map<string, Record<string, any>>;
}

export interface OfflineMessage {
  key: string;
  xml: string;
  stamp: string;
}

/** What a connection item holds: the committed stream state, and the journal of a frame that failed. */
export interface ConnectionItem {
  state?: ConnectionState;
  /** Posts made by a frame that failed before it committed (session-manager.ts). */
  journal?: FrameJournal;
}

/** Attributes of a session item that its own connection changes after bind; null removes one. */
export interface SessionChanges {
  available?: boolean;
  interested?: boolean;
  priority?: number;
  presence?: string | null;
  /** XEP-0198 was enabled (set once, at <enable/>). */
  sm?: boolean;
  /** Cleared (SessionRecord.smOpenUntil) when the session enables XEP-0198. */
  smOpenUntil?: null;
  /** Set when the session becomes available (SessionRecord.availableAt). */
  availableAt?: number;
  /** XEP-0352 client state; null when active. */
  inactive?: boolean | null;
}

/** The table itself, for feature modules that keep items of their own (rooms, archives, PEP…). */
export interface TableAccess {
  doc: DocClient;
  table: string;
}

/**
 * A feature module's store (rooms, archives, PEP…): built once per server on the table, with the
 * core store for those that read what the user's routing item carries.
 */
export type FeatureStoreClass<T> = new (db: TableAccess, core: Store) => T;

export interface Store {
  readonly db: TableAccess;
  /** The one instance of a feature store for this server (Prosody's module:open_store). */
  open<T>(kind: FeatureStoreClass<T>): T;
  getAccount(bare: string): Promise<Account | undefined>;
  /** Resolves false when the account already exists. */
  createAccount(bare: string, credentials: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean>;
  /** Resolves false when the account does not exist. */
  setCredentials(bare: string, credentials: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean>;
  /** Deletes the account and everything stored under it. Resolves false when it did not exist. */
  deleteAccount(bare: string): Promise<boolean>;
  listAccounts(domain?: string): Promise<string[]>;

  /** One Query: whether the user exists and every bound session. */
  getUserRoute(bare: string): Promise<UserRoute>;
  /** The live sessions of many users in a few batched reads (presence broadcasts); users without an account have none. */
  getSessionsOf(bares: string[]): Promise<Map<string, SessionRecord[]>>;
  /** Creates (or replaces) a session: bind only. */
  putSession(session: SessionRecord): Promise<void>;
  /**
   * Changes attributes of a session item, if it still belongs to `connectionId` (else false): never a
   * whole-item put, so two writers of different attributes cannot erase each other's.
   */
  updateSession(bare: string, resource: string, connectionId: string, changes: SessionChanges): Promise<Account | undefined>;
  /** Extends the session item's expiry (a resumed session outlives its first connection); false when not that session's. */
  refreshSession(bare: string, resource: string, connectionId: string): Promise<boolean>;
  /** Deletes the session if it still belongs to that connection. */
  deleteSession(bare: string, resource: string, connectionId: string): Promise<void>;
  listSessions(): Promise<SessionRecord[]>;

  getConnection(id: string): Promise<ConnectionState | undefined>;
  /** The connection item, strongly consistent: state and a failed frame's journal. */
  loadConnection(id: string): Promise<ConnectionItem>;
  /** Writes if the stored version is `expectedVersion` (or none was committed when 0); false on a lost race. */
  putConnection(state: ConnectionState, expectedVersion: number): Promise<boolean>;
  /** Saves a failed frame's post journal with the connection, under the same version condition. */
  saveJournal(id: string, expectedVersion: number, journal: FrameJournal): Promise<boolean>;
  deleteConnection(id: string): Promise<void>;
  /**
   * Marks a connection replaced and bumps its version, so a frame of it committing at the same
   * moment fails and is redelivered against the replaced state. False when the item is gone.
   */
  markConnectionReplaced(id: string): Promise<boolean>;
  /** The same for a connection whose XEP-0198 session moved on to another connection ('resumed'). */
  markConnection(id: string, stage: 'replaced' | 'resumed'): Promise<boolean>;

  getRoster(bare: string): Promise<RosterItem[]>;
  getRosterItem(bare: string, jid: string): Promise<RosterItem | undefined>;
  /** Stores the item and returns the new roster version. */
  putRosterItem(bare: string, item: RosterItem): Promise<number>;
  deleteRosterItem(bare: string, jid: string): Promise<number>;

  /** Pending inbound subscription requests (RFC 6121 §3.1.3), kept until answered. */
  putPendingSubscription(bare: string, from: string, xml: string): Promise<void>;
  deletePendingSubscription(bare: string, from: string): Promise<boolean>;
  /**
   * Claims showing the request to that connection for this frame (table-ops claimOnce): false when
   * another frame already did.
   */
  claimPendingSubscription(bare: string, from: string, connectionId: string): Promise<boolean>;
  listPendingSubscriptions(bare: string): Promise<{ from: string; xml: string }[]>;

  /**
   * Stores a message once; returns its key (derived from the frame, so a redelivered frame reuses
   * it, and finds the item, or its tombstone once delivered, there already: it writes nothing).
   * `order` sorts messages stored at the same millisecond (the sending connection's frame count);
   * `name`, what the key is made from within the frame (StanzaEvent.storedAs; default, the frame's
   * count of the messages it stored).
   */
  storeOffline(bare: string, xml: string, stamp: string, order?: number, name?: string): Promise<string>;
  listOffline(bare: string): Promise<OfflineMessage[]>;
  /**
   * Claims a stored message for delivery by this frame: false when another frame holds a live claim
   * or the message is gone. Two handlers racing to deliver it: one wins; a redelivered frame keeps
   * its claim.
   */
  claimOffline(bare: string, key: string): Promise<boolean>;
  /** Gives this frame's claim back (the post failed): the message stays for the next login. */
  releaseOffline(bare: string, key: string): Promise<void>;
  /** Retires delivered (or undeliverable) messages, leaving tombstones (see DynamoStore). */
  deleteOffline(bare: string, keys: string[]): Promise<void>;
}
