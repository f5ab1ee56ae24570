/**
 * RFC 6121 §2: roster items as stored and pushed. Every roster change (a client's roster set, a
 * subscription state change, registration) goes through saveRosterItem, which stores the item and
 * pushes it to the user's interested resources.
 */
import type { ModuleServer } from '../core/registry.ts';
import type { RosterItem } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { frameUnique } from '../storage/frame-context.ts';

export function rosterItemElement(item: RosterItem | { jid: string; subscription: 'remove' }): Element {
  if (item.subscription === 'remove') return x('item', { jid: item.jid, subscription: 'remove' });
  const r = item as RosterItem;
  return x(
    'item',
    { jid: r.jid, name: r.name, subscription: r.subscription, ask: r.ask ? 'subscribe' : undefined, approved: r.approved ? 'true' : undefined },
    ...r.groups.map((g) => x('group', {}, g)),
  );
}

/** Sends a roster push to every interested resource of the user (RFC 6121 §2.1.6). */
export async function pushRosterItem(server: ModuleServer, bare: string, item: RosterItem | { jid: string; subscription: 'remove' }, version: number): Promise<void> {
  const { sessions } = await server.store.getUserRoute(bare);
  await Promise.all(
    sessions
      .filter((s) => s.interested)
      .map((s) =>
        server.deliver(
          s,
          x('iq', { xmlns: NS.CLIENT, type: 'set', id: `push-${version}-${frameUnique('roster-push')}`, to: `${bare}/${s.resource}` },
            x('query', { xmlns: NS.ROSTER, ver: String(version) }, rosterItemElement(item))),
        ),
      ),
  );
}

/** Stores a changed item and pushes it. */
export async function saveRosterItem(server: ModuleServer, bare: string, item: RosterItem): Promise<void> {
  const version = await server.store.putRosterItem(bare, item);
  await pushRosterItem(server, bare, item, version);
}
