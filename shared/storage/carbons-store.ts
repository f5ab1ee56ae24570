/**
 * XEP-0280 carbons: which sessions of a user enabled them. One item per enabled session under the
 * user's partition, `user#<bare>` / `carbons#<resource>`, holding the session's connection id so a
 * copy is posted without looking the session up; a later session on the same resource does not
 * inherit it (the id differs), and the item expires with the connection.
 */
import { DeleteCommand, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';

export interface CarbonsSession {
  resource: string;
  connectionId: string;
}

const TTL_SECONDS = 3 * 3600;
const nowSeconds = () => Math.floor(Date.now() / 1000);

export class CarbonsStore {
  constructor(private readonly db: TableAccess) {}

  async enable(bare: string, session: CarbonsSession): Promise<void> {
    await this.db.doc.send(
      new PutCommand({
        TableName: this.db.table,
        Item: { pk: `user#${bare}`, sk: `carbons#${session.resource}`, ...session, [TTL_ATTRIBUTE]: nowSeconds() + TTL_SECONDS },
      }),
    );
  }

  /** Disables carbons for the session on that connection (a newer session on the resource keeps its own). */
  async disable(bare: string, session: CarbonsSession): Promise<void> {
    try {
      await this.db.doc.send(
        new DeleteCommand({
          TableName: this.db.table,
          Key: { pk: `user#${bare}`, sk: `carbons#${session.resource}` },
          ConditionExpression: 'connectionId = :c',
          ExpressionAttributeValues: { ':c': session.connectionId },
        }),
      );
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
    }
  }

  async list(bare: string): Promise<CarbonsSession[]> {
    const out = await this.db.doc.send(
      new QueryCommand({
        TableName: this.db.table,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
        ExpressionAttributeValues: { ':pk': `user#${bare}`, ':p': 'carbons#' },
      }),
    );
    return (out.Items ?? [])
      .filter((i) => typeof i[TTL_ATTRIBUTE] !== 'number' || i[TTL_ATTRIBUTE] > nowSeconds())
      .map((i) => ({ resource: i.resource, connectionId: i.connectionId }));
  }
}
