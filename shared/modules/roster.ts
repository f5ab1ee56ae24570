/** RFC 6121 §2: roster get/set/remove, pushes to interested resources, roster versioning. */
import { StanzaError } from '../errors.ts';
import { JidError, parseJid } from '../jid.ts';
import type { XmppModule } from '../core/registry.ts';
import type { RosterItem } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { pushRosterItem, rosterItemElement, saveRosterItem } from '../lib/roster-manager.ts';
import { unsubscribeOnRemove } from '../lib/subscriptions.ts';

function parseSetItem(query: Element): { jid: string; name?: string; groups: string[]; remove: boolean } {
  const items = query.getChildren('item');
  if (items.length !== 1) throw new StanzaError('bad-request', 'a roster set carries exactly one item');
  const item = items[0]!;
  let jid: string;
  try {
    jid = parseJid(item.attrs.jid ?? '').toString();
  } catch (err) {
    if (err instanceof JidError) throw new StanzaError('bad-request', `invalid jid: ${err.message}`);
    throw err;
  }
  const groups = item.getChildren('group').map((g) => g.getText().trim());
  if (groups.some((g) => g === '')) throw new StanzaError('not-acceptable', 'empty group name');
  if (new Set(groups).size !== groups.length) throw new StanzaError('bad-request', 'duplicate group');
  const sub = item.attrs.subscription;
  if (sub && sub !== 'remove' && sub !== 'none') throw new StanzaError('bad-request', 'clients may not set a subscription state');
  if (item.attrs.name !== undefined && item.attrs.name.length > 1024) throw new StanzaError('not-acceptable', 'name too long');
  return { jid, name: item.attrs.name || undefined, groups, remove: sub === 'remove' };
}

export const rosterModule: XmppModule = {
  name: 'roster',
  setup(reg) {
    reg.streamFeature('post-auth', () => x('ver', { xmlns: NS.ROSTER_VER }));
    reg.iq('account', NS.ROSTER, async ({ server, type, from, to, payload, session }) => {
      // Only the owner may touch a roster (RFC 6121 §2.1.5).
      if (from.bare !== to.bare || !session) throw new StanzaError('service-unavailable');
      const bare = from.bare;
      if (type === 'get') {
        // Marking the session interested writes the account item, which answers with the roster
        // version: one request instead of two.
        const marked = session.state.interested ? undefined : await session.updateSession({ interested: true });
        const account = marked ?? (await server.store.getAccount(bare));
        const version = String(account?.rosterVersion ?? 0);
        // Versioning: an up-to-date client gets an empty result and relies on pushes.
        if (payload.attrs.ver !== undefined && payload.attrs.ver === version) return undefined;
        const items = await server.store.getRoster(bare);
        return x('query', { xmlns: NS.ROSTER, ver: version }, ...items.map(rosterItemElement));
      }
      const request = parseSetItem(payload);
      const existing = await server.store.getRosterItem(bare, request.jid);
      if (request.remove) {
        if (!existing) throw new StanzaError('item-not-found');
        await unsubscribeOnRemove(server, from.toBare(), existing);
        const version = await server.store.deleteRosterItem(bare, request.jid);
        await pushRosterItem(server, bare, { jid: request.jid, subscription: 'remove' }, version);
        return undefined;
      }
      const item: RosterItem = { ...(existing ?? { jid: request.jid, subscription: 'none' }), name: request.name, groups: request.groups };
      await saveRosterItem(server, bare, item);
      return undefined;
    });
  },
};
