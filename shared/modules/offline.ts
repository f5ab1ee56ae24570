/**
 * Offline messages: chat and normal messages for a user with no available session are stored with a
 * XEP-0203 delay stamp and delivered, oldest first, when the user next sends initial presence.
 */
import type { XmppModule } from '../core/registry.ts';
import { NS, x } from '../xml/element.ts';
import { parseFrame } from '../xml/parse.ts';

export const offlineModule: XmppModule = {
  name: 'offline',
  setup(reg) {
    reg.feature('msgoffline');
    reg.hook('message/offline', async ({ server, stanza, to }) => {
      const type = stanza.attrs.type ?? 'normal';
      if (type !== 'chat' && type !== 'normal') return false;
      // Only messages with content are worth keeping (not chat states or receipts alone).
      if (!stanza.getChild('body') && !stanza.getChild('subject')) return true;
      const stamp = new Date().toISOString();
      stanza.append(x('delay', { xmlns: NS.DELAY, from: server.config.domain, stamp }, 'Offline storage'));
      await server.store.storeOffline(to!.bare, stanza.toString(), stamp);
      return true;
    });
    reg.onSession('session/available', async ({ server, session }) => {
      const messages = await server.store.listOffline(session.bare);
      const sent: string[] = [];
      for (const m of messages) {
        // Deleted only after the post succeeded, so a dropped socket loses nothing.
        if (!(await session.send(parseFrame(m.xml)))) break;
        sent.push(m.key);
      }
      if (sent.length) await server.store.deleteOffline(session.bare, sent);
    });
  },
};
