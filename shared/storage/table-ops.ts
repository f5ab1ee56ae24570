/**
 * The few table operations every store repeats: reading all pages of a Query (skipping items whose
 * TTL has passed but which DynamoDB has not deleted yet), and batched writes that retry what
 * DynamoDB left unprocessed.
 */
import { BatchGetCommand, BatchWriteCommand, PutCommand, QueryCommand, ScanCommand, type QueryCommandInput, type ScanCommandInput } from './commands.ts';
import { randomBytes } from 'node:crypto';
import { currentFrame } from './frame-context.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/** False for an item whose TTL has passed (DynamoDB deletes expired items lazily, up to 48 h later). */
export const isLive = (item: Record<string, unknown>) =>
  typeof item[TTL_ATTRIBUTE] !== 'number' || (item[TTL_ATTRIBUTE] as number) > nowSeconds();

type Page = { Items?: Record<string, any>[]; LastEvaluatedKey?: Record<string, any> };

/** Every live item of a paged read (Query or Scan), all pages. */
async function allPages(read: (ExclusiveStartKey: Record<string, any> | undefined) => Promise<Page>): Promise<Record<string, any>[]> {
  const items: Record<string, any>[] = [];
  let ExclusiveStartKey: Record<string, any> | undefined;
  do {
    const out = await read(ExclusiveStartKey);
    items.push(...(out.Items ?? []).filter(isLive));
    ExclusiveStartKey = out.LastEvaluatedKey;
  } while (ExclusiveStartKey);
  return items;
}

export function queryAll(db: TableAccess, input: Omit<QueryCommandInput, 'TableName'>): Promise<Record<string, any>[]> {
  return allPages((ExclusiveStartKey) => db.doc.send(new QueryCommand({ TableName: db.table, ...input, ExclusiveStartKey })));
}

/** Every live item of a Scan, all pages (administration only: listing accounts and sessions). */
export function scanAll(db: TableAccess, input: Omit<ScanCommandInput, 'TableName'>): Promise<Record<string, any>[]> {
  return allPages((ExclusiveStartKey) => db.doc.send(new ScanCommand({ TableName: db.table, ...input, ExclusiveStartKey })));
}

/** BatchGetItem of at most 100 keys, retrying unprocessed keys with backoff; the live items found, in no order. */
export async function batchGet(db: TableAccess, keys: { pk: string; sk: string }[], consistent: boolean): Promise<Record<string, any>[]> {
  const items: Record<string, any>[] = [];
  let pending: Record<string, any>[] = keys;
  for (let attempt = 0; pending.length > 0; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** (attempt - 1))));
    const out = await db.doc.send(new BatchGetCommand({ RequestItems: { [db.table]: { Keys: pending, ConsistentRead: consistent } } }));
    items.push(...(out.Responses?.[db.table] ?? []).filter(isLive));
    pending = out.UnprocessedKeys?.[db.table]?.Keys ?? [];
  }
  return items;
}

/** BatchWriteItem in chunks of 25, retrying unprocessed requests with backoff. */
export async function batchWrite(db: TableAccess, requests: Record<string, any>[]): Promise<void> {
  for (let i = 0; i < requests.length; i += 25) {
    let pending = requests.slice(i, i + 25);
    for (let attempt = 0; pending.length > 0; attempt++) {
      const out = await db.doc.send(new BatchWriteCommand({ RequestItems: { [db.table]: pending as any } }));
      pending = out.UnprocessedItems?.[db.table] ?? [];
      if (pending.length) await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
    }
  }
}

export function deleteKeys(db: TableAccess, keys: { pk: string; sk: string }[]): Promise<void> {
  return batchWrite(db, keys.map((Key) => ({ DeleteRequest: { Key } })));
}

export function putItems(db: TableAccess, items: Record<string, any>[]): Promise<void> {
  return batchWrite(db, items.map((Item) => ({ PutRequest: { Item } })));
}

/**
 * A claim item: the first owner to write it wins; the same owner may write it again (a redelivered
 * frame claiming what its first run claimed), anyone else gets false. Expires after `ttlSeconds`.
 * Two handlers that may both deliver one stanza to one session claim it, and only the winner posts.
 */
export async function claimOnce(db: TableAccess, key: { pk: string; sk: string }, owner: string, ttlSeconds: number): Promise<boolean> {
  try {
    await db.doc.send(
      new PutCommand({
        TableName: db.table,
        Item: { ...key, owner, [TTL_ATTRIBUTE]: nowSeconds() + ttlSeconds },
        ConditionExpression: 'attribute_not_exists(pk) OR #o = :o',
        ExpressionAttributeNames: { '#o': 'owner' },
        ExpressionAttributeValues: { ':o': owner },
      }),
    );
    return true;
  } catch (err) {
    if ((err as Error).name === 'ConditionalCheckFailedException') return false;
    throw err;
  }
}

/** Runs a conditional write: true when it took effect, false when its condition refused it. */
export async function conditionally(write: Promise<unknown>): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (err) {
    if ((err as Error).name === 'ConditionalCheckFailedException') return false;
    throw err;
  }
}

/** Who claims in the current frame: its queue message id (stable across redelivery), else a one-off id. */
export function claimOwner(): string {
  return currentFrame()?.id ?? randomBytes(9).toString('base64url');
}
