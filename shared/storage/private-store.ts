/**
 * XEP-0049 private XML storage, in the account's partition (removed with the account):
 *   user#<bare> / private#<namespace>#<element name>   the stored element, serialized
 * Namespace and name are URI-encoded in the key. The bookmarks of XEP-0048 are not kept here but
 * in PEP (XEP-0402 compat, see modules/private.ts); only their URL entries, which XEP-0402 has no
 * place for, are.
 */
import { DeleteCommand, GetCommand, PutCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { userPk } from './keys.ts';

const key = (bare: string, ns: string, name: string) => ({
  pk: userPk(bare),
  sk: `private#${encodeURIComponent(ns)}#${encodeURIComponent(name)}`,
});

export class PrivateStore {
  constructor(private readonly db: TableAccess) {}

  async get(bare: string, ns: string, name: string): Promise<string | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(bare, ns, name), ConsistentRead: true }));
    return out.Item?.xml as string | undefined;
  }

  async put(bare: string, ns: string, name: string, xml: string): Promise<void> {
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...key(bare, ns, name), ns, name, xml } }));
  }

  async delete(bare: string, ns: string, name: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: key(bare, ns, name) }));
  }
}
