/** XEP-0199: answers pings to the server and to one's own account. */
import { StanzaError } from '../errors.ts';
import type { XmppModule } from '../core/registry.ts';
import { NS } from '../xml/element.ts';

export const pingModule: XmppModule = {
  name: 'ping',
  setup(reg) {
    reg.feature(NS.PING);
    reg.iq('server', NS.PING, async ({ type }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
    });
    reg.iq('account', NS.PING, async ({ type, from, to }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      if (from.bare !== to.bare) throw new StanzaError('service-unavailable');
    });
  },
};
