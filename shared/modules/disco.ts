/**
 * XEP-0030 service discovery for the server and for accounts; identities, features and account
 * items come from the registry. The server's own XEP-0115 capabilities (a hash of its disco#info)
 * are advertised in the stream features.
 */
import { CAPS_NS, capsVer } from '../caps.ts';
import { StanzaError } from '../errors.ts';
import type { IqTarget, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { Element, NS, x } from '../xml/element.ts';
import { SOFTWARE_NAME } from '../version.ts';
import { CONTACT_KINDS, type ContactAddresses } from '../contact-addresses.ts';

/** The XEP-0115 node of this software. */
export const CAPS_NODE = `urn:xmpp:${SOFTWARE_NAME}`;

/** The disco#info <query/> of the server, or of an account, as registered by the modules. */
export function discoInfo(server: ModuleServer, target: IqTarget): Element {
  const identity = target === 'server' ? { category: 'server', type: 'im', name: 'Serverless XMPP' } : { category: 'account', type: 'registered' };
  const features = target === 'server' ? server.serverFeatures : server.accountFeatures;
  return x(
    'query',
    { xmlns: NS.DISCO_INFO },
    ...[identity, ...server.discoIdentities[target]].map((i) => x('identity', { category: i.category, type: i.type, name: i.name })),
    ...[...features].sort().map((v) => x('feature', { var: v })),
    target === 'server' ? contactForm(server.config.contactAddresses) : undefined,
  );
}

/** XEP-0157: the configured contact addresses as an XEP-0128 extended form (none when nothing is configured). */
function contactForm(addresses: ContactAddresses): Element | undefined {
  const kinds = CONTACT_KINDS.filter((k) => addresses[k]?.length);
  if (!kinds.length) return undefined;
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type: 'result' },
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, 'http://jabber.org/network/serverinfo')),
    ...kinds.map((k) => x('field', { var: `${k}-addresses`, type: 'list-multi' }, ...addresses[k]!.map((uri) => x('value', {}, uri)))),
  );
}

/** Registrations end with setup, so the server's verification string never changes afterwards. */
const serverVers = new WeakMap<ModuleServer, string>();

export function serverCapsVer(server: ModuleServer): string {
  let ver = serverVers.get(server);
  if (ver === undefined) {
    ver = capsVer(discoInfo(server, 'server'), 'sha-1')!;
    serverVers.set(server, ver);
  }
  return ver;
}

/** Others may learn an account exists only if they share a subscription (RFC 6121 privacy). */
async function requireSubscription(server: ModuleServer, from: string, to: string): Promise<void> {
  if (from === to) return;
  const item = await server.store.getRosterItem(to, from);
  if (!item || item.subscription === 'none') throw new StanzaError('service-unavailable');
}

export const discoModule: XmppModule = {
  name: 'disco',
  setup(reg) {
    reg.feature(NS.DISCO_INFO);
    reg.feature(NS.DISCO_ITEMS);
    reg.feature(NS.DISCO_INFO, 'account');
    reg.feature(NS.DISCO_ITEMS, 'account');
    reg.feature(CAPS_NS);
    // XEP-0115 §6.3: the server's capabilities in the stream features.
    const caps = (server: ModuleServer) => x('c', { xmlns: CAPS_NS, hash: 'sha-1', node: CAPS_NODE, ver: serverCapsVer(server) });
    reg.streamFeature('pre-auth', caps);
    reg.streamFeature('post-auth', caps);
    reg.iq('server', NS.DISCO_INFO, async ({ server, payload, type }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      const node = payload.attrs.node;
      // The caps node (node#ver) names this same information.
      if (node && node !== `${CAPS_NODE}#${serverCapsVer(server)}`) throw new StanzaError('item-not-found');
      const info = discoInfo(server, 'server');
      if (node) info.attrs.node = node;
      return info;
    });
    reg.iq('server', NS.DISCO_ITEMS, async (request) => {
      const { server, type, payload } = request;
      if (type !== 'get') throw new StanzaError('bad-request');
      if (payload.attrs.node) {
        const provide = server.serverItemNodes.get(payload.attrs.node);
        if (!provide) throw new StanzaError('item-not-found');
        return x('query', { xmlns: NS.DISCO_ITEMS, node: payload.attrs.node }, ...(await provide(request)));
      }
      // The services hosted beside the server (e.g. conference.<domain>) are its items.
      const items = [...server.hostedDomains].sort(([a], [b]) => a.localeCompare(b));
      return x('query', { xmlns: NS.DISCO_ITEMS }, ...items.map(([jid, { disco }]) => x('item', { jid, name: disco?.name })));
    });
    reg.iq('account', NS.DISCO_INFO, async ({ server, type, payload, from, to }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      await requireSubscription(server, from.bare, to.bare);
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      return discoInfo(server, 'account');
    });
    reg.iq('account', NS.DISCO_ITEMS, async (request) => {
      const { server, type, payload, from, to } = request;
      if (type !== 'get') throw new StanzaError('bad-request');
      await requireSubscription(server, from.bare, to.bare);
      if (payload.attrs.node) throw new StanzaError('item-not-found');
      const items = await Promise.all(server.accountItemProviders.map((provide) => provide(request)));
      return x('query', { xmlns: NS.DISCO_ITEMS }, ...items.flat());
    });
  },
};
