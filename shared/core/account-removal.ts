/**
 * Removing an account (XEP-0077 `<remove/>`, `xmppctl user delete`): every session ends first, while
 * contacts and rooms can still be told (the hooks read the roster and the account); then the modules
 * take the user out of other users' data (subscriptions cancelled both ways, room and node
 * affiliations dropped: docs/security.md, "Account removal"), so a later account of the same name
 * is a stranger; then the account's own items go, the account item last.
 *
 * A frame that runs twice repeats the steps: each is idempotent (posts are journaled), and the
 * account item, deleted last, keeps a half-done removal re-runnable.
 */
import { StreamError } from '../errors.ts';
import type { XmppServer } from './server.ts';
import type { ClientSession } from './session.ts';

/** Ends the account's sessions (but `current`, which the caller closes), cleans references, deletes it. */
export async function removeAccount(server: XmppServer, bare: string, current?: ClientSession): Promise<boolean> {
  const removed = new StreamError('not-authorized', 'account removed');
  for (const s of (await server.store.getUserRoute(bare)).sessions) {
    if (s.connectionId !== current?.id) await server.sessions.closeOther(s.connectionId, removed);
  }
  if (current) await server.sessions.leave(current);
  await server.runAccountRemovalHooks(bare);
  return server.store.deleteAccount(bare);
}
