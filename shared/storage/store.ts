/**
 * The storage interface the core and its modules use. One implementation, on DynamoDB
 * (dynamo-store.ts); locally it talks to DynamoDB Local, so tests exercise the real queries.
 */
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Account, ConnectionState, RosterItem, SessionRecord } from '../core/types.ts';
import type { ScramCredentials, ScramHash } from '../sasl/scram.ts';

export interface UserRoute {
  exists: boolean;
  sessions: SessionRecord[];
  /**
   * Every routing item of the user by sort key (`account`, `account#session#…`, and what feature
   * modules keep under `account#…`), so modules read theirs without another request.
   */
  items: Map<string, Record<string, any>>;
}

export interface OfflineMessage {
  key: string;
  xml: string;
  stamp: string;
}

/** The table itself, for feature modules that keep items of their own (rooms, archives, PEP…). */
export interface TableAccess {
  doc: DynamoDBDocumentClient;
  table: string;
}

export interface Store {
  readonly db: TableAccess;
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
  putSession(session: SessionRecord): Promise<void>;
  /** Deletes the session if it still belongs to that connection. */
  deleteSession(bare: string, resource: string, connectionId: string): Promise<void>;
  listSessions(): Promise<SessionRecord[]>;

  getConnection(id: string): Promise<ConnectionState | undefined>;
  /** Writes if the stored version is `expectedVersion` (or absent when 0); false on a lost race. */
  putConnection(state: ConnectionState, expectedVersion: number): Promise<boolean>;
  deleteConnection(id: string): Promise<void>;

  getRoster(bare: string): Promise<RosterItem[]>;
  getRosterItem(bare: string, jid: string): Promise<RosterItem | undefined>;
  /** Stores the item and returns the new roster version. */
  putRosterItem(bare: string, item: RosterItem): Promise<number>;
  deleteRosterItem(bare: string, jid: string): Promise<number>;

  /** Pending inbound subscription requests (RFC 6121 §3.1.3), kept until answered. */
  putPendingSubscription(bare: string, from: string, xml: string): Promise<void>;
  deletePendingSubscription(bare: string, from: string): Promise<boolean>;
  listPendingSubscriptions(bare: string): Promise<{ from: string; xml: string }[]>;

  storeOffline(bare: string, xml: string, stamp: string): Promise<void>;
  listOffline(bare: string): Promise<OfflineMessage[]>;
  deleteOffline(bare: string, keys: string[]): Promise<void>;
}
