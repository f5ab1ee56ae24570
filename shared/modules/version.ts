/** XEP-0092 software version of the server (no OS: it would only help attackers). */
import { StanzaError } from '../errors.ts';
import type { XmppModule } from '../core/registry.ts';
import { SOFTWARE_NAME, SOFTWARE_VERSION } from '../version.ts';
import { NS, x } from '../xml/element.ts';

export const versionModule: XmppModule = {
  name: 'version',
  setup(reg) {
    reg.feature(NS.VERSION);
    reg.iq('server', NS.VERSION, async ({ type }) => {
      if (type !== 'get') throw new StanzaError('bad-request');
      return x('query', { xmlns: NS.VERSION }, x('name', {}, SOFTWARE_NAME), x('version', {}, SOFTWARE_VERSION));
    });
  },
};
