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
import type { XmppServer } from '../core/server.ts';
import { InviteStore, PARS, type Invite } from '../storage/invite-store.ts';
import { x } from '../xml/element.ts';

export const IBR_TOKEN = 'urn:xmpp:ibr-token:0';
export const INVITE_NODE = 'urn:xmpp:invite#invite';

/** The xmpp: URI of an invitation (XEP-0401 §4) and, when the web client's address is known, its landing page. */
export function inviteLinks(server: Pick<XmppServer, 'config'>, invite: Invite): { uri: string; landing?: string } {
  const { domain, inviteUrl } = server.config;
  const uri = invite.inviter
    ? `xmpp:${invite.inviter}?roster;preauth=${invite.token};ibr=y`
    : `xmpp:${invite.username ? `${invite.username}@` : ''}${domain}?register;preauth=${invite.token}`;
  const landing = inviteUrl ? `${inviteUrl.replace(/#.*$/, '')}#invite=${invite.token}${invite.inviter ? `&from=${encodeURIComponent(invite.inviter)}` : ''}` : undefined;
  return { uri, landing };
}

/** A new invitation, valid for XMPP_INVITE_TTL_SECONDS. */
export function createInvite(server: XmppServer, invite: Omit<Invite, 'token' | 'expires'>): Promise<Invite> {
  return new InviteStore(server.store.db).create(invite, server.config.inviteTtlSeconds);
}

export const invitesModule: XmppModule = {
  name: 'invites',
  setup(reg) {
    reg.streamFeature('pre-auth', () => x('register', { xmlns: IBR_TOKEN }));
    for (const ns of PARS) {
      reg.preAuthIq(ns, async ({ server, type, payload, session }) => {
        if (type !== 'set' || !session) throw new StanzaError('bad-request');
        const invite = await new InviteStore(server.store.db).get(payload.attrs.token ?? '');
        if (!invite) throw new StanzaError('item-not-found', 'The invitation is invalid or has expired');
        session.update({ invite: invite.token });
        return undefined;
      });
    }
  },
};
