/**
 * XEP-0191 block lists, in the account's partition (removed with the account):
 *   user#<bare> / blocklist     jids: a string set of blocked JIDs (bare, full, domain or domain/resource)
 * Set updates (ADD/DELETE) are atomic, so two resources blocking at once do not lose an entry.
 */
import { BatchGetCommand, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { TableAccess } from './store.ts';

const key = (bare: string) => ({ pk: `user#${bare}`, sk: 'blocklist' });

export class BlockStore {
  constructor(private readonly db: TableAccess) {}

  async get(bare: string): Promise<string[]> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(bare), ConsistentRead: true }));
    const jids = out.Item?.jids as Set<string> | undefined;
    return jids ? [...jids].sort() : [];
  }

  /** Several users' lists in one request (strongly consistent), by bare JID. */
  async getMany(bares: string[]): Promise<Map<string, string[]>> {
    const lists = new Map(bares.map((b) => [b, [] as string[]]));
    let keys: Record<string, any>[] = bares.map(key);
    for (let attempt = 0; keys.length > 0; attempt++) {
      const out = await this.db.doc.send(new BatchGetCommand({ RequestItems: { [this.db.table]: { Keys: keys, ConsistentRead: true } } }));
      for (const item of out.Responses?.[this.db.table] ?? []) {
        lists.set((item.pk as string).slice('user#'.length), [...((item.jids as Set<string> | undefined) ?? [])].sort());
      }
      keys = out.UnprocessedKeys?.[this.db.table]?.Keys ?? [];
      if (keys.length) await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
    }
    return lists;
  }

  async add(bare: string, jids: string[]): Promise<void> {
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(bare),
        UpdateExpression: 'ADD jids :j',
        ExpressionAttributeValues: { ':j': new Set(jids) },
      }),
    );
  }

  async remove(bare: string, jids: string[]): Promise<void> {
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(bare),
        UpdateExpression: 'DELETE jids :j',
        ExpressionAttributeValues: { ':j': new Set(jids) },
      }),
    );
  }

  async clear(bare: string): Promise<void> {
    await this.db.doc.send(new UpdateCommand({ TableName: this.db.table, Key: key(bare), UpdateExpression: 'REMOVE jids' }));
  }
}
