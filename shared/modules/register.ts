/**
 * XEP-0077 in-band registration: account creation before authentication (when registration is
 * enabled, or with an invitation: invites.ts), and password change (which logs the account's other sessions out) and account removal
 * for a logged-in user (always).
 */
import { makeCredentials } from '../accounts.ts';
import { StanzaError, StreamError } from '../errors.ts';
import { JidError, normalizeLocal } from '../jid.ts';
import type { IqHandler, XmppModule } from '../core/registry.ts';
import { NS, x } from '../xml/element.ts';
import { log } from '../log.ts';
import { startRegistration } from '../sasl/auth-limits.ts';
import { PasswordError, preparePassword } from '../sasl/scram.ts';
import type { ModuleServer } from '../core/registry.ts';
import { doneByEarlierRun, frameSlot, recordDone } from '../storage/frame-context.ts';
import { InviteStore, type Invite } from '../storage/invite-store.ts';
import { saveRosterItem } from '../lib/roster-manager.ts';

const MAX_PASSWORD_LENGTH = 1024;

async function checkPassword(password: string | null | undefined): Promise<string> {
  if (!password) throw new StanzaError('not-acceptable', 'a password is required');
  if (password.length > MAX_PASSWORD_LENGTH) throw new StanzaError('not-acceptable', 'password too long');
  try {
    if ((await preparePassword(password, true)).length === 0) throw new StanzaError('not-acceptable', 'a password is required');
  } catch (err) {
    if (err instanceof PasswordError) throw new StanzaError('not-acceptable', err.message);
    throw err;
  }
  return password;
}

/**
 * Uses up the invitation this stream presented (a rerun of a frame that already took it gets the
 * same one from the frame's journal). Refuses an invitation that is gone, or that was for another name.
 */
async function takeInvite(server: ModuleServer, token: string, local: string): Promise<Invite> {
  const slot = frameSlot(`invite:${token}`);
  const invites = server.store.open(InviteStore);
  const invite = slot?.value ? (JSON.parse(slot.value) as Invite) : await invites.take(token);
  if (!invite) throw new StanzaError('not-authorized', 'the invitation was used or has expired');
  slot?.set(JSON.stringify(invite));
  if (invite.username && invite.username !== local) {
    await invites.restore(invite);
    throw new StanzaError('not-acceptable', `this invitation is for the username ${invite.username}`);
  }
  return invite;
}

export const registerModule: XmppModule = {
  name: 'register',
  setup(reg) {
    reg.streamFeature('pre-auth', (server) => (server.config.registration ? x('register', { xmlns: NS.REGISTER_FEATURE }) : undefined));
    reg.feature(NS.REGISTER);

    reg.preAuthIq(NS.REGISTER, async ({ server, type, payload, session }) => {
      // An invitation (invites.ts) opens registration for this stream even where it is off.
      const token = session?.state.invite;
      if (!server.config.registration && !token) throw new StanzaError('service-unavailable', 'registration is disabled on this server');
      if (type === 'get') {
        return x('query', { xmlns: NS.REGISTER }, x('instructions', {}, `Choose a username and password for ${server.config.domain}.`), x('username'), x('password'));
      }
      if (payload.getChild('remove')) throw new StanzaError('not-authorized', 'log in to remove an account');
      const username = payload.getChildText('username');
      if (!username) throw new StanzaError('not-acceptable', 'a username is required');
      let local: string;
      try {
        local = normalizeLocal(username);
      } catch (err) {
        if (err instanceof JidError) throw new StanzaError('not-acceptable', `invalid username: ${err.message}`);
        throw err;
      }
      const credentials = await makeCredentials(await checkPassword(payload.getChildText('password')), server.config.scramIterations);
      const bare = `${local}@${server.config.domain}`;
      const invite = token ? await takeInvite(server, token, local) : undefined;
      if (!invite) {
        // Counted per source before the account is made (auth-limits.ts); a failed one is taken back.
        const registration = await startRegistration(server.store, server.config.authLimits);
        if (!registration.allowed) {
          log.warn('registration refused: too many from one source');
          throw new StanzaError('policy-violation', 'too many accounts were registered from your address; try again later', 'wait');
        }
        if (!(await server.store.createAccount(bare, credentials))) {
          await registration.failed();
          throw new StanzaError('conflict', 'that username is taken');
        }
        return undefined;
      }
      // With an invitation: the token was taken (used up) first, so two registrations racing with
      // one token make one account; it goes back if the name is taken.
      if (!doneByEarlierRun('invited-account') && !(await server.store.createAccount(bare, credentials))) {
        await server.store.open(InviteStore).restore(invite);
        throw new StanzaError('conflict', 'that username is taken');
      }
      recordDone('invited-account');
      if (invite.inviter && (await server.store.getAccount(invite.inviter))) {
        // XEP-0379: the inviter and the invitee are contacts, both ways, from the start.
        await saveRosterItem(server, bare, { jid: invite.inviter, groups: [], subscription: 'both' });
        await saveRosterItem(server, invite.inviter, { jid: bare, groups: [], subscription: 'both' });
      }
      session!.update({ invite: undefined });
      return undefined;
    });

    // Once logged in, a client changes its password or removes its account with a request to its
    // own bare JID or, as XEP-0077 §3.2/§3.3 show it and Conversations and Gajim send it, to the domain.
    const ownAccount: IqHandler = async ({ server, type, payload, from, to, session }) => {
      const addressed = to.local ? to.bare === from.bare : to.domain === from.domain;
      if (!addressed || !session) throw new StanzaError('service-unavailable');
      if (type === 'get') {
        return x('query', { xmlns: NS.REGISTER }, x('registered'), x('username', {}, from.local));
      }
      if (payload.getChild('remove')) {
        await server.removeAccount(from.bare, session);
        // Answer, then close this stream (XEP-0077 §3.2).
        await session.send(x('iq', { xmlns: NS.CLIENT, type: 'result', id: payload.parent?.attrs.id, to: from.toString() }));
        throw new StreamError('not-authorized', 'account removed');
      }
      const username = payload.getChildText('username');
      if (username && username.toLowerCase() !== from.local) throw new StanzaError('bad-request', 'username does not match');
      const credentials = await makeCredentials(await checkPassword(payload.getChildText('password')), server.config.scramIterations);
      await server.store.setCredentials(from.bare, credentials);
      // Whoever logged in with the old password is logged out (as Prosody does): a changed password
      // is often a taken-over account being recovered. The session that changed it stays.
      const changed = new StreamError('reset', 'the password of this account was changed; log in again');
      for (const s of (await server.store.getUserRoute(from.bare)).sessions) {
        if (s.connectionId !== session.id) await server.closeOther(s.connectionId, changed);
      }
    };
    reg.iq('account', NS.REGISTER, ownAccount);
    reg.iq('server', NS.REGISTER, ownAccount);
  },
};
