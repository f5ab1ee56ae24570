/**
 * XEP-0191 block lists, in the account's partition (removed with the account):
 *   user#<bare> / blocklist     jids: a string set of blocked JIDs (bare, full, domain or domain/resource)
 * Set updates (ADD/DELETE) are atomic, so two resources blocking at once do not lose an entry.
 */
import { GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { TableAccess } from './store.ts';

const key = (bare: string) => ({ pk: `user#${bare}`, sk: 'blocklist' });

export class BlockStore {
  constructor(private readonly db: TableAccess) {}

  async get(bare: string): Promise<string[]> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(bare), ConsistentRead: true }));
    const jids = out.Item?.jids as Set<string> | undefined;
    return jids ? [...jids].sort() : [];
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
