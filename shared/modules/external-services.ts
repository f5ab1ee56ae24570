/**
 * XEP-0215 External Service Discovery: the STUN and TURN servers that audio and video calls
 * (Jingle: Conversations, Dino, Movim, Monal) need, with time-limited TURN credentials. This server
 * runs no TURN server; it points at one the operator runs (coturn, eturnal) and shares a secret
 * with it: the TURN REST API scheme (coturn's `use-auth-secret`, Prosody's mod_turn_external):
 * username `<expiry>:<bare JID>`, password base64(HMAC-SHA1(secret, username)), so the TURN server
 * checks a credential without asking anyone, and it stops working at the expiry.
 *
 * Only the server's own logged-in users are answered (credentials for a relay cost the operator
 * bandwidth). Configured with XMPP_TURN_HOST and XMPP_TURN_SECRET (config.ts); without them the
 * module advertises nothing.
 */
import { createHmac } from 'node:crypto';
import type { XmppModule } from '../core/registry.ts';
import type { TurnSettings } from '../config.ts';
import { StanzaError } from '../errors.ts';
import { Element, x } from '../xml/element.ts';

export const EXTDISCO = 'urn:xmpp:extdisco:2';

interface Service {
  type: 'stun' | 'turn' | 'turns';
  transport: 'udp' | 'tcp';
  port: number;
}

function services(turn: TurnSettings): Service[] {
  const list: Service[] = [
    { type: 'stun', transport: 'udp', port: turn.port },
    { type: 'turn', transport: 'udp', port: turn.port },
    { type: 'turn', transport: 'tcp', port: turn.port },
  ];
  if (turn.tlsPort) list.push({ type: 'turns', transport: 'tcp', port: turn.tlsPort });
  return list;
}

/** TURN REST API credentials for `user`, valid until `expires` (epoch s). */
export function turnCredentials(secret: string, user: string, expires: number): { username: string; password: string } {
  const username = `${expires}:${user}`;
  return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
}

function serviceElement(turn: TurnSettings, s: Service, user: string, now: number): Element {
  const base = { type: s.type, host: turn.host, port: s.port, transport: s.transport };
  if (s.type === 'stun') return x('service', base);
  const expires = Math.floor(now / 1000) + turn.ttlSeconds;
  const { username, password } = turnCredentials(turn.secret, user, expires);
  return x('service', { ...base, restricted: '1', username, password, expires: new Date(expires * 1000).toISOString() });
}

export const externalServicesModule: XmppModule = {
  name: 'external-services',
  setup(reg) {
    const turn = reg.config.turn;
    if (!turn) return;
    reg.feature(EXTDISCO);
    reg.iq('server', EXTDISCO, async ({ server, type, payload, from, session }) => {
      if (type !== 'get') throw new StanzaError('bad-request', 'external services are read with iq get');
      if (!session || !server.isLocalDomain(from.domain)) throw new StanzaError('forbidden', 'external services are for users of this server');
      const now = Date.now();
      const all = services(turn);
      if (payload.name === 'services') {
        const wanted = payload.attrs.type;
        return x('services', { xmlns: EXTDISCO, type: wanted }, ...all.filter((s) => !wanted || s.type === wanted).map((s) => serviceElement(turn, s, from.bare, now)));
      }
      if (payload.name === 'credentials') {
        // §3.3: fresh credentials for one service, named by host and type (and port when given).
        const asked = payload.getChild('service');
        const match = all.find((s) => asked && asked.attrs.host === turn.host && asked.attrs.type === s.type && (!asked.attrs.port || Number(asked.attrs.port) === s.port));
        if (!match || match.type === 'stun') throw new StanzaError('item-not-found', 'no such service with credentials here');
        return x('credentials', { xmlns: EXTDISCO }, serviceElement(turn, match, from.bare, now));
      }
      throw new StanzaError('bad-request', `<${payload.name}/> is not a XEP-0215 request`);
    });
  },
};
