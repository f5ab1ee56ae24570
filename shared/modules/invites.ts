/**
 * Invitations (XEP-0401 ad-hoc generation, XEP-0445 pre-authenticated registration, XEP-0379 links):
 * someone with an invitation link registers an account even though open registration is off, and
 * when the link came from a user the two are contacts at once (mutual subscription). Links are
 * made by `xmppctl invite create`, by admins, and by users where XMPP_USER_INVITES allows, through
 * the ad-hoc command `urn:xmpp:invite#invite` (admin-commands.ts).
 *
 * Before registering, the client presents the token: `<iq type='set'><preauth xmlns='urn:xmpp:pars:0'
 * token='…'/></iq>`; a valid one is remembered with the stream (checked again, and used up, by the
 * registration itself: register.ts), an unknown or expired one gets item-not-found.
 */
import { StanzaError } from '../errors.ts';
import type { XmppModule } from '../core/registry.ts';
import { InviteStore, PARS } from '../storage/invite-store.ts';
import { IBR_TOKEN } from '../lib/invites.ts';
import { x } from '../xml/element.ts';

export const invitesModule: XmppModule = {
  name: 'invites',
  setup(reg) {
    reg.streamFeature('pre-auth', () => x('register', { xmlns: IBR_TOKEN }));
    for (const ns of PARS) {
      reg.preAuthIq(ns, async ({ server, type, payload, session }) => {
        if (type !== 'set' || !session) throw new StanzaError('bad-request');
        const invite = await server.store.open(InviteStore).get(payload.attrs.token ?? '');
        if (!invite) throw new StanzaError('item-not-found', 'The invitation is invalid or has expired');
        session.update({ invite: invite.token });
        return undefined;
      });
    }
  },
};
