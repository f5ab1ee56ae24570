/**
 * Invitations as the invites module (XEP-0401/0445), the admin commands (XEP-0050 node
 * `urn:xmpp:invite#invite`) and `xmppctl invite create` make them: stored with their expiry, and
 * written as an xmpp: URI with a landing page.
 */
import type { ModuleServer } from '../core/registry.ts';
import { InviteStore, type Invite } from '../storage/invite-store.ts';

export const IBR_TOKEN = 'urn:xmpp:ibr-token:0';
export const INVITE_NODE = 'urn:xmpp:invite#invite';

/** The xmpp: URI of an invitation (XEP-0401 §4) and, when the web client's address is known, its landing page. */
export function inviteLinks(server: Pick<ModuleServer, 'config'>, invite: Invite): { uri: string; landing?: string } {
  const { domain, inviteUrl } = server.config;
  const uri = invite.inviter
    ? `xmpp:${invite.inviter}?roster;preauth=${invite.token};ibr=y`
    : `xmpp:${invite.username ? `${invite.username}@` : ''}${domain}?register;preauth=${invite.token}`;
  const landing = inviteUrl ? `${inviteUrl.replace(/#.*$/, '')}#invite=${invite.token}${invite.inviter ? `&from=${encodeURIComponent(invite.inviter)}` : ''}` : undefined;
  return { uri, landing };
}

/** A new invitation, valid for XMPP_INVITE_TTL_SECONDS. */
export function createInvite(server: ModuleServer, invite: Omit<Invite, 'token' | 'expires'>): Promise<Invite> {
  return server.store.open(InviteStore).create(invite, server.config.inviteTtlSeconds);
}
