/**
 * Offline messages: chat and normal messages for a user with no available session are stored with a
 * XEP-0203 delay stamp and delivered, oldest first, when the user next sends initial presence.
 *
 * A message can be stored while the recipient is coming online, after its login already read the
 * (empty) store. So the sender's handler stores first, then reads the recipient's sessions again
 * (strongly consistent); the login sets the session available first, then reads the store. Of two
 * handlers racing, at least one sees the other's write; when both do, a conditional claim on the
 * stored item decides which one posts it (docs/architecture.md, "Delivery guarantees").
 */
import type { XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { SessionRecord } from '../core/types.ts';
import { frameNow, invalidateRoute, recordDone } from '../storage/frame-context.ts';
import { NS, x } from '../xml/element.ts';
import { parseStored, tooLargeToPost } from '../xml/stored.ts';
import { keepOffline } from '../message-storage.ts';
import { trace } from '../log.ts';
import { bareJidTargets } from '../core/bare-jid-targets.ts';

/**
 * Posts a stored message to one session if it can claim it; deletes it once posted. A message that
 * cannot be parsed, or is larger than a frame may be, can never be delivered: it is deleted (with a
 * log line) and the next one follows.
 */
async function deliverStored(server: ModuleServer, bare: string, key: string, xml: string, target: SessionRecord): Promise<boolean | 'claimed-elsewhere' | 'undeliverable'> {
  const context = { user: bare, key, action: 'deleted' };
  const message = parseStored(xml, 'offline message', context);
  if (!message || tooLargeToPost(message.toString(), server.config.maxFrameBytes, 'offline message', context)) {
    await server.store.deleteOffline(bare, [key]);
    return 'undeliverable';
  }
  if (!(await server.store.claimOffline(bare, key))) return 'claimed-elsewhere';
  if (!(await server.deliver(target, message))) {
    trace('offline: not delivered, kept', xml, { to: target.connectionId, key });
    await server.store.releaseOffline(bare, key);
    return false;
  }
  trace('offline: delivered', xml, { to: target.connectionId, key });
  await server.store.deleteOffline(bare, [key]);
  return true;
}

export const offlineModule: XmppModule = {
  name: 'offline',
  setup(reg) {
    reg.feature('msgoffline');
    reg.hook('message/offline', async ({ server, stanza, to, session, order, storedAs }) => {
      const type = stanza.attrs.type ?? 'normal';
      if (type !== 'chat' && type !== 'normal') return false;
      // Only messages with content are worth keeping (not chat states or receipts alone; message-storage.ts).
      if (!keepOffline(stanza)) return true;
      const bare = to!.bare;
      // The frame's time: a redelivered frame stores the same item under the same key.
      const stamp = new Date(frameNow()).toISOString();
      stanza.append(x('delay', { xmlns: NS.DELAY, from: server.config.domain, stamp }, 'Offline storage'));
      const xml = stanza.toString();
      // Recorded before the write: a second run of this frame comes back here rather than posting
      // live (message.ts), and its write of the same key is refused if the item, or its tombstone
      // once delivered, is there.
      recordDone(`offline:${bare}`);
      // A burst from one sender shares a millisecond: its connection's frame count keeps the order.
      const key = await server.store.storeOffline(bare, xml, stamp, order ?? session?.state.version, storedAs);
      trace('offline: stored', xml, { to: bare, key });
      // Stored first, then a fresh look: a session that became available since may have missed it.
      invalidateRoute(bare);
      for (const target of bareJidTargets((await server.store.getUserRoute(bare)).sessions)) {
        if ((await deliverStored(server, bare, key, xml, target)) !== false) break;
      }
      return true;
    });
    reg.onSession('session/available', async ({ server, session }) => {
      const target = session.toRecord();
      for (const m of await server.store.listOffline(session.bare)) {
        // Stop at the first post that fails (socket gone): the rest stay for the next login, in order.
        if ((await deliverStored(server, session.bare, m.key, m.xml, target)) === false) break;
      }
    });
  },
};
