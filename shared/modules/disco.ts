/** XEP-0030 service discovery for the server and for accounts; features come from the registry. */
import { StanzaError } from '../errors.ts';
import type { XmppModule } from '../core/registry.ts';
import { NS, x } from '../xml/element.ts';

export const discoModule: XmppModule = {
  name: 'disco',
  setup(reg) {
    reg.feature(NS.DISCO_INFO);
    reg.feature(NS.DISCO_ITEMS);
    reg.feature(NS.DISCO_INFO, 'account');
    reg.iq('server', NS.DISCO_INFO, async ({ server, payload, type }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      return x(
        'query',
        { xmlns: NS.DISCO_INFO },
        x('identity', { category: 'server', type: 'im', name: 'Serverless XMPP' }),
        ...[...server.serverFeatures].sort().map((v) => x('feature', { var: v })),
      );
    });
    reg.iq('server', NS.DISCO_ITEMS, async ({ server, type, payload }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      // The services hosted beside the server (e.g. conference.<domain>) are its items.
      const items = [...server.hostedDomains].sort(([a], [b]) => a.localeCompare(b));
      return x('query', { xmlns: NS.DISCO_ITEMS }, ...items.map(([jid, { disco }]) => x('item', { jid, name: disco?.name })));
    });
    reg.iq('account', NS.DISCO_INFO, async ({ server, type, from, to }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      // Others may learn an account exists only if they share a subscription (RFC 6121 privacy).
      if (from.bare !== to.bare) {
        const item = await server.store.getRosterItem(to.bare, from.bare);
        if (!item || item.subscription === 'none') throw new StanzaError('service-unavailable');
      }
      return x(
        'query',
        { xmlns: NS.DISCO_INFO },
        x('identity', { category: 'account', type: 'registered' }),
        ...[...server.accountFeatures].sort().map((v) => x('feature', { var: v })),
      );
    });
    reg.iq('account', NS.DISCO_ITEMS, async ({ type, from, to }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (from.bare !== to.bare) throw new StanzaError('service-unavailable');
      return x('query', { xmlns: NS.DISCO_ITEMS });
    });
  },
};
