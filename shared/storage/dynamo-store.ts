/**
 * Store on one DynamoDB table (layout in docs/data-model.md). Sessions are attributes of the
 * account item, so one Query of the user's routing items answers "does this user exist and where is
 * it connected" (the only read on the hot path of a chat message), and a presence broadcast reads
 * many users' sessions with BatchGetItem.
 *
 * Long because: it is the one implementation of the Store interface (store.ts), and the account
 * item's layout (sessions as attributes, their conditions and TTLs) is shared by most methods;
 * feature data lives in the feature stores beside it.
 */
import { createHash } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { log } from '../log.ts';
import { faultsFromEnv, injectDynamoFaults } from '../faults.ts';
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand, type DocClient } from './commands.ts';
import { lateSdkClientHooks, leanClientHooks, sdkClientHooks, type DynamoHooks } from './dynamo-hooks.ts';
import { sdkDocumentClient } from './sdk-document-client.ts';
import { LeanDynamoClient, leanOptionsFromEnv } from './lean-dynamodb.ts';
import type { Account, ConnectionState, RosterItem, SessionRecord } from '../core/types.ts';
import type { ScramCredentials, ScramHash } from '../sasl/scram.ts';
import type { ConnectionItem, OfflineMessage, SessionChanges, FeatureStoreClass, Store, TableAccess, UserRoute } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { beforeEffect, frameUnique, invalidateRoute, memoizedRoute, rememberNoBlockList, type FrameJournal } from './frame-context.ts';
import { batchGet, claimOnce, claimOwner, conditionally, deleteKeys, isLive as live, nowSeconds, queryAll, scanAll } from './table-ops.ts';
import { connectionPk, rosterSk, userPk } from './keys.ts';
import { FastStore } from './fast-store.ts';

const ACCOUNT = 'account';
const ROSTER = 'roster#';
const PENDING = 'pending#';
const OFFLINE = 'offline#';
const PENDING_CLAIM = 'claim#pending#';
const CONN = 'conn';

/** Connections live at most 2 h on API Gateway; their items expire after 3 h in case $disconnect is lost. */
const CONNECTION_TTL_SECONDS = 3 * 3600;
const OFFLINE_TTL_SECONDS = 30 * 24 * 3600;
/** Longer than the stream queue keeps a message (1 day, cdk/lib/xmpp-service.ts), so no redelivery outlives it. */
const OFFLINE_TOMBSTONE_SECONDS = 24 * 3600 + 600;
/**
 * A claim on a stored stanza (offline message, pending subscription) by a handler that is about to
 * post it; after this long a claim whose handler died is void and another may take the stanza.
 */
const CLAIM_SECONDS = 120;


export interface DynamoStoreOptions {
  tableName: string;
  endpoint?: string;
  /** The SDK's client to use (tests add middleware to it); without it the store makes its own. */
  client?: DynamoDBClient;
}

/** Called with the hooks of every store's client created afterwards, e.g. to count requests. */
export type DynamoClientHook = (hooks: DynamoHooks) => void;

const clientHooks = new Set<DynamoClientHook>();

/**
 * Lets code outside the store instrument the stores other code creates (the benchmark counts
 * requests and consumed capacity on the stream handler's store). Returns a function that removes
 * the hook; stores already created keep what it added.
 */
export function addDynamoClientHook(hook: DynamoClientHook): () => void {
  clientHooks.add(hook);
  return () => clientHooks.delete(hook);
}

/** Commands with no effect: a frame on a remembered connection state may send them before it is confirmed. */
const READS = new Set(['GetItemCommand', 'BatchGetItemCommand', 'QueryCommand', 'ScanCommand', 'TransactGetItemsCommand', 'DescribeTableCommand']);

/**
 * Every other command waits for the frame's gate (frame-context.ts, beforeEffect). It is added
 * last, so it runs inside the other call hooks: nothing such as a test's injected crash sees a
 * write of a frame that is then thrown away.
 */
function gateWrites(hooks: DynamoHooks): void {
  if (hooks.has('frameGate')) return; // a client shared by several stores
  hooks.aroundCall('frameGate', async (call, next) => {
    if (!READS.has(call.name)) await beforeEffect();
    return next();
  });
}

/**
 * Which client a store without one given uses: the lean one (lean-dynamodb.ts) where credentials
 * are in the environment (Lambda, the local stack), unless XMPP_AWS_CLIENT=sdk; the SDK's
 * otherwise (the Fargate service's credentials come from its container endpoint).
 */
function makeClient(options: DynamoStoreOptions): { doc: DocClient; hooks: DynamoHooks; own: boolean } {
  if (options.client) return { doc: sdkDocumentClient(options.client), hooks: sdkClientHooks(options.client), own: false };
  const lean = process.env.XMPP_AWS_CLIENT === 'sdk' ? undefined : leanOptionsFromEnv(options.endpoint, 5);
  if (lean) {
    const client = new LeanDynamoClient(lean);
    return { doc: client, hooks: leanClientHooks(client), own: true };
  }
  // The SDK's client, made (and its package loaded) at the first request.
  const hooks = lateSdkClientHooks();
  const make = async () => {
    const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb');
    const client = new DynamoDBClient({ endpoint: options.endpoint, maxAttempts: 5 });
    hooks.attach(client);
    return client;
  };
  return { doc: sdkDocumentClient(make), hooks, own: true };
}

export class DynamoStore implements Store {
  readonly doc: DocClient;
  readonly table: string;

  constructor(options: DynamoStoreOptions) {
    const { doc, hooks, own } = makeClient(options);
    for (const hook of clientHooks) hook(hooks);
    const faults = own ? faultsFromEnv() : undefined;
    if (faults) injectDynamoFaults(hooks, faults);
    gateWrites(hooks);
    this.doc = doc;
    this.table = options.tableName;
  }

  get db(): TableAccess {
    return { doc: this.doc, table: this.table };
  }

  private readonly featureStores = new Map<FeatureStoreClass<unknown>, unknown>();

  open<T>(kind: FeatureStoreClass<T>): T {
    let store = this.featureStores.get(kind) as T | undefined;
    if (!store) this.featureStores.set(kind, (store = new kind(this.db, this)));
    return store;
  }


  private queryPrefix(bare: string, prefix: string) {
    return queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': userPk(bare), ':prefix': prefix },
      // Rosters, pending requests and offline messages are written by other connections' handlers
      // at the same moment: a frame must see every write that finished before its read.
      ConsistentRead: true,
    });
  }


  // accounts

  async getAccount(bare: string): Promise<Account | undefined> {
    const out = await this.doc.send(new GetCommand({ TableName: this.table, Key: { pk: userPk(bare), sk: ACCOUNT } }));
    return out.Item ? toAccount(out.Item) : undefined;
  }

  async createAccount(bare: string, credentials: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean> {
    invalidateRoute(bare);
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: userPk(bare), sk: ACCOUNT, bare, credentials, createdAt: Date.now(), rosterVersion: 0 },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async setCredentials(bare: string, credentials: Partial<Record<ScramHash, ScramCredentials>>): Promise<boolean> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(bare), sk: ACCOUNT },
          UpdateExpression: 'SET credentials = :c',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':c': credentials },
        }),
      );
      // A new password logs every installation's XEP-0484 token out: whoever had the old one
      // must not keep a way in.
      await new FastStore(this.db).revokeAll(bare);
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async deleteAccount(bare: string): Promise<boolean> {
    invalidateRoute(bare);
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': userPk(bare) },
      ProjectionExpression: 'pk, sk',
    });
    if (!items.some((i) => i.sk === ACCOUNT)) return false;
    // The account item goes last, so a crash half-way leaves a deletable account, not orphans.
    const keys = items.map((i) => ({ pk: i.pk as string, sk: i.sk as string }));
    await deleteKeys(this.db, keys.filter((k) => k.sk !== ACCOUNT));
    await deleteKeys(this.db, keys.filter((k) => k.sk === ACCOUNT));
    return true;
  }

  async listAccounts(domain?: string): Promise<string[]> {
    const items = await scanAll(this.db, { FilterExpression: 'sk = :sk', ExpressionAttributeValues: { ':sk': ACCOUNT }, ProjectionExpression: 'bare' });
    return items.map((item) => item.bare as string).filter((b) => !domain || b.endsWith(`@${domain}`)).sort();
  }

  // sessions

  /**
   * One strongly consistent Query of the user's routing items: the account (with its sessions), and
   * what feature modules keep under `account#…` (block list, carbons, archive preferences).
   * Memoized for the current frame (frame-context.ts).
   */
  getUserRoute(bare: string): Promise<UserRoute> {
    return memoizedRoute(bare, async () => {
      const items = await queryAll(this.db, {
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
        ExpressionAttributeValues: { ':pk': userPk(bare), ':prefix': ACCOUNT },
        ConsistentRead: true,
      });
      const account = items.find((i) => i.sk === ACCOUNT);
      return { exists: account !== undefined, sessions: sessionsOf(account), items: new Map(items.map((i) => [i.sk as string, i])) };
    });
  }

  /**
   * The sessions of many users at once, for a presence broadcast: their account items, with
   * BatchGetItem (100 keys a request, all requests at once, strongly consistent). A user who never
   * blocked anyone is remembered as such for the frame, so the blocking check of the broadcast
   * needs no read of its own (frame-context.ts).
   */
  async getSessionsOf(bares: string[]): Promise<Map<string, SessionRecord[]>> {
    const unique = [...new Set(bares)];
    const found = new Map<string, SessionRecord[]>(unique.map((b) => [b, []]));
    const chunks: string[][] = [];
    for (let i = 0; i < unique.length; i += 100) chunks.push(unique.slice(i, i + 100));
    await Promise.all(
      chunks.map(async (chunk) => {
        const accounts = new Map((await batchGet(this.db, chunk.map((b) => ({ pk: userPk(b), sk: ACCOUNT })), true)).map((a) => [a.bare as string, a]));
        for (const bare of chunk) {
          const account = accounts.get(bare);
          found.set(bare, sessionsOf(account));
          // A user without an account (a stale roster entry) blocks nobody either.
          if (account?.blocking !== true) rememberNoBlockList(bare);
        }
      }),
    );
    return found;
  }

  /**
   * Sessions live on the account item, one attribute each (so the batch above reads them), written
   * only by attribute updates conditional on the connection, never by replacing the item.
   */
  async putSession(s: SessionRecord): Promise<void> {
    invalidateRoute(s.bare);
    const now = nowSeconds();
    let after: Record<string, any> | undefined;
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(s.bare), sk: ACCOUNT },
          UpdateExpression: 'SET #s = :s',
          // An account removed meanwhile gets no session (a bare update would recreate the item).
          ConditionExpression: 'attribute_exists(createdAt)',
          ExpressionAttributeNames: { '#s': sessionAttribute(s.resource) },
          ExpressionAttributeValues: { ':s': { ...s, expires: now + CONNECTION_TTL_SECONDS } },
          ReturnValues: 'ALL_NEW',
        }),
      );
      after = out.Attributes;
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
      log.warn('session of a removed account not recorded', { bare: s.bare });
      return;
    }
    // Sessions whose $disconnect never came (their time is up) go with the next bind.
    const stale = Object.entries(after ?? {}).filter(([k, v]) => isSessionAttribute(k) && !((v as { expires?: number }).expires! > now));
    if (stale.length === 0) return;
    const names = Object.fromEntries(stale.map(([k], i) => [`#x${i}`, k]));
    await conditionally(
      this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(s.bare), sk: ACCOUNT },
          UpdateExpression: `REMOVE ${Object.keys(names).join(', ')}`,
          ConditionExpression: Object.keys(names).map((n) => `${n}.expires <= :now`).join(' AND '),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: { ':now': now },
        }),
      ),
    );
  }

  async updateSession(bare: string, resource: string, connectionId: string, changes: SessionChanges): Promise<Account | undefined> {
    invalidateRoute(bare);
    const set: string[] = [];
    const remove: string[] = [];
    const names: Record<string, string> = { '#s': sessionAttribute(resource), '#c': 'connectionId' };
    const values: Record<string, unknown> = { ':c': connectionId };
    for (const [name, value] of Object.entries(changes)) {
      names[`#${name}`] = name;
      if (value === undefined || value === null) remove.push(`#s.#${name}`);
      else {
        set.push(`#s.#${name} = :${name}`);
        values[`:${name}`] = value;
      }
    }
    if (!set.length && !remove.length) return this.getAccount(bare);
    try {
      const out = await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(bare), sk: ACCOUNT },
          UpdateExpression: [set.length ? `SET ${set.join(', ')}` : '', remove.length ? `REMOVE ${remove.join(', ')}` : ''].join(' ').trim(),
          ConditionExpression: '#s.#c = :c',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          // The account comes back with it: a roster get learns the roster version from this write.
          ReturnValues: 'ALL_NEW',
        }),
      );
      if (!out.Attributes) return undefined;
      // With the sessions as written: a broadcast learns the user's other sessions from this write,
      // and (as from a batched read) whether the user ever blocked anyone.
      if (out.Attributes.blocking !== true) rememberNoBlockList(bare);
      return { ...toAccount(out.Attributes), sessions: sessionsOf(out.Attributes) };
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return undefined;
      throw err;
    }
  }

  refreshSession(bare: string, resource: string, connectionId: string): Promise<boolean> {
    return this.changeOwnSession(bare, resource, connectionId, 'SET #s.expires = :e', { ':e': nowSeconds() + CONNECTION_TTL_SECONDS });
  }

  async deleteSession(bare: string, resource: string, connectionId: string): Promise<void> {
    await this.changeOwnSession(bare, resource, connectionId, 'REMOVE #s');
  }

  /** Updates a session attribute (`#s`) only while it still belongs to `connectionId`; false when it does not. */
  private changeOwnSession(bare: string, resource: string, connectionId: string, update: string, values: Record<string, unknown> = {}): Promise<boolean> {
    invalidateRoute(bare);
    return conditionally(
      this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(bare), sk: ACCOUNT },
          UpdateExpression: update,
          ConditionExpression: '#s.connectionId = :c',
          ExpressionAttributeNames: { '#s': sessionAttribute(resource) },
          ExpressionAttributeValues: { ':c': connectionId, ...values },
        }),
      ),
    );
  }

  async listSessions(): Promise<SessionRecord[]> {
    const accounts = await scanAll(this.db, { FilterExpression: 'sk = :sk', ExpressionAttributeValues: { ':sk': ACCOUNT } });
    return accounts.flatMap((account) => sessionsOf(account));
  }

  // connections

  async getConnection(id: string): Promise<ConnectionState | undefined> {
    return (await this.loadConnection(id)).state;
  }

  async loadConnection(id: string): Promise<ConnectionItem> {
    const out = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: { pk: connectionPk(id), sk: CONN }, ConsistentRead: true }),
    );
    if (!out.Item || !live(out.Item)) return {};
    return { state: out.Item.state as ConnectionState | undefined, journal: out.Item.journal };
  }

  /** The item's `version` attribute is the lock: absent until the first commit (a journal alone has none). */
  private static versionCondition(expectedVersion: number) {
    return expectedVersion === 0
      ? { ConditionExpression: 'attribute_not_exists(version)', ExpressionAttributeValues: undefined }
      : { ConditionExpression: 'version = :v', ExpressionAttributeValues: { ':v': expectedVersion } };
  }

  async putConnection(state: ConnectionState, expectedVersion: number): Promise<boolean> {
    const condition = DynamoStore.versionCondition(expectedVersion);
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: connectionPk(state.id), sk: CONN, state, version: state.version, [TTL_ATTRIBUTE]: nowSeconds() + CONNECTION_TTL_SECONDS },
          ...condition,
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async saveJournal(id: string, expectedVersion: number, journal: FrameJournal): Promise<boolean> {
    const condition = DynamoStore.versionCondition(expectedVersion);
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: connectionPk(id), sk: CONN },
          UpdateExpression: 'SET journal = :j, #ttl = if_not_exists(#ttl, :ttl)',
          // A stream replaced while the frame ran (its version bumped) still gets the journal: the
          // frame is redelivered against the replaced state and must not post again what it posted.
          ConditionExpression: `(${condition.ConditionExpression}) OR #state.stage = :replaced`,
          ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE, '#state': 'state' },
          ExpressionAttributeValues: { ...condition.ExpressionAttributeValues, ':j': journal, ':ttl': nowSeconds() + CONNECTION_TTL_SECONDS, ':replaced': 'replaced' },
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  markConnectionReplaced(id: string): Promise<boolean> {
    return this.markConnection(id, 'replaced');
  }

  markConnection(id: string, stage: 'replaced' | 'resumed'): Promise<boolean> {
    return conditionally(
      this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: connectionPk(id), sk: CONN },
          UpdateExpression: 'SET #state.stage = :replaced, #state.version = version + :one, version = version + :one',
          ConditionExpression: 'attribute_exists(version)',
          ExpressionAttributeNames: { '#state': 'state' },
          ExpressionAttributeValues: { ':replaced': stage, ':one': 1 },
        }),
      ),
    );
  }

  async deleteConnection(id: string): Promise<void> {
    await this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk: connectionPk(id), sk: CONN } }));
  }

  // roster

  async getRoster(bare: string): Promise<RosterItem[]> {
    return (await this.queryPrefix(bare, ROSTER)).map(toRosterItem);
  }

  async getRosterItem(bare: string, jid: string): Promise<RosterItem | undefined> {
    const out = await this.doc.send(
      new GetCommand({ TableName: this.table, Key: { pk: userPk(bare), sk: rosterSk(jid) }, ConsistentRead: true }),
    );
    return out.Item ? toRosterItem(out.Item) : undefined;
  }

  private async bumpRosterVersion(bare: string): Promise<number> {
    invalidateRoute(bare);
    const out = await this.doc.send(
      new UpdateCommand({
        TableName: this.table,
        Key: { pk: userPk(bare), sk: ACCOUNT },
        UpdateExpression: 'ADD rosterVersion :one',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':one': 1 },
        ReturnValues: 'UPDATED_NEW',
      }),
    );
    return out.Attributes?.rosterVersion as number;
  }

  async putRosterItem(bare: string, item: RosterItem): Promise<number> {
    await this.doc.send(new PutCommand({ TableName: this.table, Item: { pk: userPk(bare), sk: rosterSk(item.jid), ...item } }));
    return this.bumpRosterVersion(bare);
  }

  async deleteRosterItem(bare: string, jid: string): Promise<number> {
    await this.doc.send(new DeleteCommand({ TableName: this.table, Key: { pk: userPk(bare), sk: rosterSk(jid) } }));
    return this.bumpRosterVersion(bare);
  }

  // pending subscription requests

  async putPendingSubscription(bare: string, from: string, xml: string): Promise<void> {
    await this.doc.send(new PutCommand({ TableName: this.table, Item: { pk: userPk(bare), sk: PENDING + from, from, xml } }));
  }

  async deletePendingSubscription(bare: string, from: string): Promise<boolean> {
    const out = await this.doc.send(
      new DeleteCommand({ TableName: this.table, Key: { pk: userPk(bare), sk: PENDING + from }, ReturnValues: 'ALL_OLD' }),
    );
    return out.Attributes !== undefined;
  }

  async claimPendingSubscription(bare: string, from: string, connectionId: string): Promise<boolean> {
    return claimOnce(this.db, { pk: userPk(bare), sk: `${PENDING_CLAIM}${from}#${connectionId}` }, claimOwner(), CLAIM_SECONDS * 30);
  }

  async listPendingSubscriptions(bare: string): Promise<{ from: string; xml: string }[]> {
    return (await this.queryPrefix(bare, PENDING)).map((i) => ({ from: i.from as string, xml: i.xml as string }));
  }

  // offline messages

  async storeOffline(bare: string, xml: string, stamp: string, order?: number, name = 'offline'): Promise<string> {
    // The key is the frame's (frame-context.ts): a redelivered frame finds its own item. `order`
    // is only an attribute: a redelivered frame may see another value (a replaced stream's version
    // was bumped) and must still find the same key.
    const key = `${OFFLINE}${stamp}#${frameUnique(name)}`;
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.table,
          Item: { pk: userPk(bare), sk: key, xml, stamp, ...(order === undefined ? {} : { order }), [TTL_ATTRIBUTE]: nowSeconds() + OFFLINE_TTL_SECONDS },
          // Written once: a redelivered frame must not undo a claim on it.
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
    }
    return key;
  }

  async listOffline(bare: string): Promise<OfflineMessage[]> {
    // Oldest first: by stamp, within one millisecond by the sender's order, then by key.
    const byTime = (a: Record<string, any>, b: Record<string, any>) =>
      (a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : 0) || (a.order ?? -1) - (b.order ?? -1) || (a.sk as string).localeCompare(b.sk as string);
    return (await this.queryPrefix(bare, OFFLINE))
      .filter((i) => !i.delivered)
      .sort(byTime)
      .map((i) => ({ key: i.sk as string, xml: i.xml as string, stamp: i.stamp as string }));
  }

  async claimOffline(bare: string, key: string): Promise<boolean> {
    const now = nowSeconds();
    const owner = claimOwner();
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(bare), sk: key },
          UpdateExpression: 'SET claimedBy = :c, claimedAt = :now',
          ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(delivered) AND (attribute_not_exists(claimedBy) OR claimedBy = :c OR claimedAt < :stale)',
          ExpressionAttributeValues: { ':c': owner, ':now': now, ':stale': now - CLAIM_SECONDS },
        }),
      );
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async releaseOffline(bare: string, key: string): Promise<void> {
    const owner = claimOwner();
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.table,
          Key: { pk: userPk(bare), sk: key },
          UpdateExpression: 'REMOVE claimedBy, claimedAt',
          ConditionExpression: 'claimedBy = :c',
          ExpressionAttributeValues: { ':c': owner },
        }),
      );
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
    }
  }

  /**
   * A delivered (or undeliverable) item stays as a small tombstone until the queue could no longer
   * redeliver the frame that stored it: that frame's second run then finds its key taken and stores
   * nothing, where a deleted item would be stored, and delivered, again.
   */
  async deleteOffline(bare: string, keys: string[]): Promise<void> {
    await Promise.all(
      keys.map((sk) =>
        conditionally(
          this.doc.send(
            new UpdateCommand({
              TableName: this.table,
              Key: { pk: userPk(bare), sk },
              UpdateExpression: 'SET delivered = :true, #ttl = :ttl REMOVE xml, claimedBy, claimedAt',
              ConditionExpression: 'attribute_exists(pk)',
              ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
              ExpressionAttributeValues: { ':true': true, ':ttl': nowSeconds() + OFFLINE_TOMBSTONE_SECONDS },
            }),
          ),
        ),
      ),
    );
  }
}

function toAccount(item: Record<string, any>): Account {
  return { bare: item.bare, credentials: item.credentials ?? {}, createdAt: item.createdAt, rosterVersion: item.rosterVersion ?? 0 };
}

/**
 * A session's attribute on the account item: `s#` and a digest of the resource (a resource may be
 * 1,023 bytes of any text; the name stays short and needs no escaping).
 */
function sessionAttribute(resource: string): string {
  return `s#${createHash('sha256').update(resource).digest('base64url').slice(0, 22)}`;
}

const isSessionAttribute = (name: string) => name.startsWith('s#');

/** The live sessions on an account item (a session whose $disconnect was lost expires after 3 h). */
function sessionsOf(account: Record<string, any> | undefined, now = nowSeconds()): SessionRecord[] {
  if (!account) return [];
  return Object.entries(account)
    .filter(([k, v]) => isSessionAttribute(k) && (v as { expires?: number }).expires! > now)
    .map(([, v]) => toSession({ ...(v as Record<string, any>), bare: account.bare }))
    .sort((a, b) => a.boundAt - b.boundAt);
}

function toSession(item: Record<string, any>): SessionRecord {
  return {
    bare: item.bare,
    resource: item.resource,
    connectionId: item.connectionId,
    available: item.available ?? false,
    interested: item.interested ?? false,
    priority: item.priority ?? 0,
    presence: item.presence,
    boundAt: item.boundAt,
    sm: item.sm === true,
    ...(item.availableAt !== undefined ? { availableAt: item.availableAt } : {}),
    ...(typeof item.smOpenUntil === 'number' ? { smOpenUntil: item.smOpenUntil } : {}),
    ...(item.inactive === true ? { inactive: true } : {}),
  };
}

function toRosterItem(item: Record<string, any>): RosterItem {
  return {
    jid: item.jid,
    name: item.name,
    groups: item.groups ?? [],
    subscription: item.subscription ?? 'none',
    ask: item.ask || undefined,
    approved: item.approved || undefined,
  };
}
