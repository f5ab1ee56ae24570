/**
 * XEP-0357 push registrations, one item each among the account's routing items (removed with the
 * account):
 *   user#<bare> / account#push#<app server JID>#<node>   jid, node, options (the publish-options form, XML)
 * Both parts are URI-encoded in the key, so no JID or node can reach into another's key. Read
 * through the user's route (one Query per user per frame, shared with delivery): deciding whether a
 * message for an offline user needs a notification costs no request of its own.
 */
import { DeleteCommand, PutCommand } from './commands.ts';
import { invalidateRoute } from './frame-context.ts';
import type { Store, TableAccess } from './store.ts';
import { userPk } from './keys.ts';

export interface PushRegistration {
  /** The app server's JID (XEP-0357 "push service"). */
  jid: string;
  node: string;
  /** The `publish-options` data form the client gave (its secret, typically), as XML; sent with each publish. */
  options?: string;
}

const PREFIX = 'account#push#';
const sk = (jid: string, node: string) => `${PREFIX}${encodeURIComponent(jid)}#${encodeURIComponent(node)}`;

export class PushStore {
  constructor(
    private readonly db: TableAccess,
    private readonly store: Store,
  ) {}

  async list(bare: string): Promise<PushRegistration[]> {
    const { items } = await this.store.getUserRoute(bare);
    return [...items.entries()]
      .filter(([key]) => key.startsWith(PREFIX))
      .map(([, i]) => ({ jid: i.jid as string, node: i.node as string, ...(i.options ? { options: i.options as string } : {}) }));
  }

  /** Adds or replaces the registration for that app server and node (enabling twice is not an error). */
  async put(bare: string, registration: PushRegistration): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(
      new PutCommand({ TableName: this.db.table, Item: { pk: userPk(bare), sk: sk(registration.jid, registration.node), ...registration } }),
    );
  }

  async remove(bare: string, jid: string, node: string): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: userPk(bare), sk: sk(jid, node) } }));
  }
}
