/**
 * XEP-0191 block lists, one item among the account's routing items (removed with the account):
 *   user#<bare> / account#blocklist     jids: a string set of blocked JIDs (bare, full, domain or domain/resource)
 * Read through the user's route (one Query per user per frame, shared with delivery), so checking
 * both sides of a message costs no request of its own. The account item carries `blocking` once the
 * user has blocked anyone, so a presence broadcast that read contacts' account items in a batch
 * reads no block list of users without it. Set updates (ADD/DELETE) are atomic, so two
 * resources blocking at once do not lose an entry.
 */
import { UpdateCommand } from './commands.ts';
import { invalidateRoute, knownToBlockNobody } from './frame-context.ts';
import type { Store, TableAccess } from './store.ts';
import { userPk } from './keys.ts';

export const BLOCKLIST_SK = 'account#blocklist';
const key = (bare: string) => ({ pk: userPk(bare), sk: BLOCKLIST_SK });

export class BlockStore {
  constructor(
    private readonly db: TableAccess,
    private readonly store: Store,
  ) {}

  async get(bare: string): Promise<string[]> {
    if (knownToBlockNobody(bare)) return [];
    const jids = (await this.store.getUserRoute(bare)).items.get(BLOCKLIST_SK)?.jids as Set<string> | undefined;
    return jids ? [...jids].sort() : [];
  }

  private async update(bare: string, expression: string, jids?: string[]): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: key(bare),
        UpdateExpression: expression,
        ExpressionAttributeValues: jids ? { ':j': new Set(jids) } : undefined,
      }),
    );
  }

  /**
   * The account item is marked first (`blocking`, never removed): a batched read of account items
   * (a presence broadcast) skips the block list of users without the mark, so the list must never
   * hold an entry while the mark is missing.
   */
  async add(bare: string, jids: string[]): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: { pk: userPk(bare), sk: 'account' },
        UpdateExpression: 'SET blocking = :t',
        ConditionExpression: 'attribute_exists(pk)',
        ExpressionAttributeValues: { ':t': true },
      }),
    );
    return this.update(bare, 'ADD jids :j', jids);
  }

  remove(bare: string, jids: string[]): Promise<void> {
    return this.update(bare, 'DELETE jids :j', jids);
  }

  clear(bare: string): Promise<void> {
    return this.update(bare, 'REMOVE jids');
  }
}
