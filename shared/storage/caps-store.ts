/**
 * XEP-0115 capabilities cache, shared by all accounts (a verified hash names the same feature set
 * for everyone):
 *   caps#<hash>#<ver> / caps    features (once verified), or the full JIDs waiting for the answer
 *                                to the one disco#info query sent for that hash
 * Verified entries expire after 90 days unused-or-not (then the next client is asked again);
 * pending entries after an hour.
 */
import { DeleteCommand, GetCommand, UpdateCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { capsPk } from './keys.ts';
import { nowSeconds } from './table-ops.ts';

const VERIFIED_TTL_SECONDS = 90 * 24 * 3600;
const PENDING_TTL_SECONDS = 3600;
/** A query unanswered this long is asked again of the next client. */
export const CAPS_QUERY_TIMEOUT_MS = 30_000;

const key = (hash: string, ver: string) => ({ pk: capsPk(hash, ver), sk: 'caps' });

export class CapsStore {
  constructor(private readonly db: TableAccess) {}

  /** The verified features of a hash, or undefined when not (yet) known. */
  async getFeatures(hash: string, ver: string): Promise<string[] | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(hash, ver) }));
    const item = out.Item;
    if (!item || !Array.isArray(item.features)) return undefined;
    if (typeof item[TTL_ATTRIBUTE] === 'number' && item[TTL_ATTRIBUTE] <= nowSeconds()) return undefined;
    return item.features as string[];
  }

  /**
   * Records that `jid` waits for the features of a hash. Resolves 'known' with the features if
   * they were verified meanwhile, 'ask' when the caller should send the disco#info query (nobody
   * asked, or the last query timed out), 'wait' when a query is already under way.
   */
  async addWaiter(hash: string, ver: string, jid: string): Promise<{ state: 'known'; features: string[] } | { state: 'ask' | 'wait' }> {
    const now = Date.now();
    const out = await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(hash, ver),
        UpdateExpression: 'ADD waiting :jid SET askedAt = if_not_exists(askedAt, :now), #ttl = if_not_exists(#ttl, :ttl)',
        ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: { ':jid': new Set([jid]), ':now': now, ':ttl': nowSeconds() + PENDING_TTL_SECONDS },
        ReturnValues: 'ALL_OLD',
      }),
    );
    const old = out.Attributes;
    if (Array.isArray(old?.features)) return { state: 'known', features: old.features as string[] };
    if (!old?.askedAt) return { state: 'ask' };
    if (now - (old.askedAt as number) < CAPS_QUERY_TIMEOUT_MS) return { state: 'wait' };
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(hash, ver),
        UpdateExpression: 'SET askedAt = :now',
        ExpressionAttributeValues: { ':now': now },
      }),
    );
    return { state: 'ask' };
  }

  /** Stores verified features; resolves the JIDs that were waiting for them. */
  async setFeatures(hash: string, ver: string, features: string[]): Promise<string[]> {
    const out = await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(hash, ver),
        UpdateExpression: 'SET features = :f, #ttl = :ttl REMOVE waiting, askedAt',
        ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: { ':f': features, ':ttl': nowSeconds() + VERIFIED_TTL_SECONDS },
        ReturnValues: 'ALL_OLD',
      }),
    );
    const waiting = out.Attributes?.waiting as Set<string> | undefined;
    return waiting ? [...waiting] : [];
  }

  /** Forgets a pending query whose answer was wrong or an error (the next client with that hash is asked). */
  async dropPending(hash: string, ver: string): Promise<void> {
    await this.db.doc.send(
      new DeleteCommand({
        TableName: this.db.table,
        Key: key(hash, ver),
        ConditionExpression: 'attribute_not_exists(features)',
      }),
    ).catch((err: Error) => {
      if (err.name !== 'ConditionalCheckFailedException') throw err;
    });
  }
}
