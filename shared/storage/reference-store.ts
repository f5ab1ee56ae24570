/**
 * Where a local user is named in other users' data (a room affiliation, a PEP node affiliation):
 * one small item per reference among the user's own items, `user#<bare>` / `ref#<kind>#<target>`,
 * written beside the reference, so removing the account finds and removes every reference without
 * scanning rooms or nodes (docs/security.md, "Account removal").
 */
import { DeleteCommand, PutCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { queryAll } from './table-ops.ts';
import { userPk } from './keys.ts';

export type ReferenceKind = 'muc-affiliation' | 'pep-affiliation';

const PREFIX = 'ref#';
const key = (bare: string, kind: ReferenceKind, target: string) => ({ pk: userPk(bare), sk: `${PREFIX}${kind}#${encodeURIComponent(target)}` });

export class ReferenceStore {
  constructor(private readonly db: TableAccess) {}

  async add(bare: string, kind: ReferenceKind, target: string): Promise<void> {
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...key(bare, kind, target), kind, target } }));
  }

  async remove(bare: string, kind: ReferenceKind, target: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: key(bare, kind, target) }));
  }

  /** The user's references of one kind: their targets. */
  async list(bare: string, kind: ReferenceKind): Promise<string[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': userPk(bare), ':p': `${PREFIX}${kind}#` },
      ConsistentRead: true,
    });
    return items.map((i) => i.target as string);
  }
}
