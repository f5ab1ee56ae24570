/**
 * XEP-0054 vCards, in the account's partition (removed with the account):
 *   user#<bare> / vcard     the vCard without its embedded photo (the photo lives in PEP, XEP-0084)
 */
import { GetCommand, PutCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { userPk } from './keys.ts';

const key = (bare: string) => ({ pk: userPk(bare), sk: 'vcard' });

export class VCardStore {
  constructor(private readonly db: TableAccess) {}

  async get(bare: string): Promise<string | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(bare) }));
    return out.Item?.xml as string | undefined;
  }

  async put(bare: string, xml: string): Promise<void> {
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...key(bare), xml, updatedAt: Date.now() } }));
  }
}
