/**
 * XEP-0280 carbons: which sessions of a user enabled them. One item per enabled session among the
 * user's routing items, `user#<bare>` / `account#carbons#<resource>` (so the user's route, read once
 * per frame for delivery anyway, brings them along), holding the session's connection id so a
 * copy is posted without looking the session up; a later session on the same resource does not
 * inherit it (the id differs), and the item expires with the connection.
 */
import { DeleteCommand, PutCommand } from './commands.ts';
import { invalidateRoute } from './frame-context.ts';
import type { Store, TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { userPk } from './keys.ts';
import { isLive, nowSeconds } from './table-ops.ts';

export interface CarbonsSession {
  resource: string;
  connectionId: string;
}

const TTL_SECONDS = 3 * 3600;
const PREFIX = 'account#carbons#';

export class CarbonsStore {
  constructor(
    private readonly db: TableAccess,
    private readonly store: Store,
  ) {}

  async enable(bare: string, session: CarbonsSession): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(
      new PutCommand({
        TableName: this.db.table,
        Item: { pk: userPk(bare), sk: PREFIX + session.resource, ...session, [TTL_ATTRIBUTE]: nowSeconds() + TTL_SECONDS },
      }),
    );
  }

  /** Disables carbons for the session on that connection (a newer session on the resource keeps its own). */
  async disable(bare: string, session: CarbonsSession): Promise<void> {
    invalidateRoute(bare);
    try {
      await this.db.doc.send(
        new DeleteCommand({
          TableName: this.db.table,
          Key: { pk: userPk(bare), sk: PREFIX + session.resource },
          ConditionExpression: 'connectionId = :c',
          ExpressionAttributeValues: { ':c': session.connectionId },
        }),
      );
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
    }
  }

  async list(bare: string): Promise<CarbonsSession[]> {
    const { items } = await this.store.getUserRoute(bare);
    return [...items.values()]
      .filter((i) => (i.sk as string).startsWith(PREFIX))
      .filter(isLive)
      .map((i) => ({ resource: i.resource, connectionId: i.connectionId }));
  }
}
