/**
 * Administration over XMPP: XEP-0050 ad-hoc commands offering the XEP-0133 basics an admin client
 * (Gajim, Psi, Conversations' "execute command", Prosody's own tooling users) expects: add a user,
 * delete users, change a user's password, list online users, send an announcement. Admins are the
 * bare JIDs in XMPP_ADMINS; everyone else sees no commands and is refused them, except the
 * XEP-0401 invitation command, which any local user may run where XMPP_USER_INVITES allows.
 *
 * Each command is one form: `execute` answers with the form, `complete` (or `execute` with the
 * submitted form) runs it. The form carries everything, so no command state is kept between the
 * two requests (any handler may take the second); the session id only lets clients match them.
 */
import { makeCredentials } from '../accounts.ts';
import type { IqRequest, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { StanzaError, StreamError } from '../errors.ts';
import { JidError, normalizeLocal, parseJid } from '../jid.ts';
import { INVITE_NODE, createInvite, inviteLinks } from '../lib/invites.ts';
import { frameUnique } from '../storage/frame-context.ts';
import { Element, NS, x } from '../xml/element.ts';

export const COMMANDS = 'http://jabber.org/protocol/commands';
const ADMIN = 'http://jabber.org/protocol/admin';

type Fields = Map<string, string[]>;
interface FieldSpec {
  var: string;
  type: 'jid-single' | 'jid-multi' | 'text-private' | 'text-single' | 'text-multi';
  label: string;
  required?: boolean;
}
interface Command {
  name: string;
  fields: FieldSpec[];
  /** Who may run it besides admins: every local user where the setting allows (invitations). */
  forUsers?: (server: ModuleServer) => boolean;
  /** The FORM_TYPE of its form (default: the XEP-0133 admin namespace). */
  formType?: string;
  /** Runs the submitted form; resolves to the note shown to the admin (and result fields, if any). */
  run(server: ModuleServer, fields: Fields, requester: string): Promise<{ note: string; result?: Element }>;
}

/** A result form (XEP-0004) of text fields. */
function resultForm(formType: string, values: Record<string, string | undefined>): Element {
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type: 'result' },
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, formType)),
    ...Object.entries(values)
      .filter(([, v]) => v !== undefined)
      .map(([name, v]) => x('field', { var: name, type: 'text-single' }, x('value', {}, v!))),
  );
}

/** XEP-0401 invitations: the requester invites someone as a contact, or (admins) invites an account. */
const INVITE_COMMANDS: Record<string, Command> = {
  [INVITE_NODE]: {
    name: 'Invite someone',
    fields: [],
    forUsers: (server) => server.config.userInvites,
    formType: 'urn:xmpp:invite',
    async run(server, _fields, requester) {
      const invite = await createInvite(server, { inviter: requester, createdBy: requester });
      const { uri, landing } = inviteLinks(server, invite);
      return { note: 'Share this link with the person you invite: it works once', result: resultForm('urn:xmpp:invite', { uri, 'landing-url': landing, expire: new Date(invite.expires * 1000).toISOString() }) };
    },
  },
  ['urn:xmpp:invite#create-account']: {
    name: 'Create an account invitation',
    fields: [{ var: 'username', type: 'text-single', label: 'Username to reserve (optional)' }],
    formType: 'urn:xmpp:invite',
    async run(server, fields, requester) {
      const wanted = fields.get('username')?.[0]?.trim();
      let username: string | undefined;
      if (wanted) {
        try {
          username = normalizeLocal(wanted);
        } catch (err) {
          if (err instanceof JidError) throw new StanzaError('not-acceptable', `invalid username: ${err.message}`);
          throw err;
        }
      }
      const invite = await createInvite(server, { username, createdBy: requester });
      const { uri, landing } = inviteLinks(server, invite);
      return { note: 'An account invitation: it works once', result: resultForm('urn:xmpp:invite', { uri, 'landing-url': landing, expire: new Date(invite.expires * 1000).toISOString() }) };
    },
  },
};

function one(fields: Fields, name: string): string {
  const value = fields.get(name)?.[0]?.trim();
  if (!value) throw new StanzaError('bad-request', `the form needs ${name}`);
  return value;
}

/** A local account's bare JID from a form field. */
function localAccount(server: ModuleServer, value: string): string {
  let jid;
  try {
    jid = parseJid(value);
  } catch (err) {
    if (err instanceof JidError) throw new StanzaError('jid-malformed', err.message);
    throw err;
  }
  if (!jid.local || jid.resource || !server.isLocalDomain(jid.domain)) throw new StanzaError('bad-request', `${value} is not an account of ${server.config.domain}`);
  return jid.bare;
}

function newPassword(fields: Fields, verify: boolean): string {
  const password = one(fields, 'password');
  if (verify && fields.get('password-verify')?.[0] !== password) throw new StanzaError('bad-request', 'the passwords differ');
  return password;
}

const COMMANDS_BY_NODE: Record<string, Command> = {
  [`${ADMIN}#add-user`]: {
    name: 'Add a user',
    fields: [
      { var: 'accountjid', type: 'jid-single', label: 'The Jabber ID of the account to add', required: true },
      { var: 'password', type: 'text-private', label: 'Password', required: true },
      { var: 'password-verify', type: 'text-private', label: 'Password again', required: true },
    ],
    async run(server, fields) {
      const bare = localAccount(server, one(fields, 'accountjid'));
      const created = await server.store.createAccount(bare, await makeCredentials(newPassword(fields, true), server.config.scramIterations));
      if (!created) throw new StanzaError('conflict', `${bare} exists already`);
      return { note: `${bare} was added` };
    },
  },
  [`${ADMIN}#delete-user`]: {
    name: 'Delete users',
    fields: [{ var: 'accountjids', type: 'jid-multi', label: 'The Jabber IDs of the accounts to delete', required: true }],
    async run(server, fields) {
      const accounts = (fields.get('accountjids') ?? []).map((v) => localAccount(server, v.trim()));
      if (!accounts.length) throw new StanzaError('bad-request', 'the form needs accountjids');
      const removed: string[] = [];
      for (const bare of accounts) if (await server.removeAccount(bare)) removed.push(bare);
      return { note: removed.length ? `deleted: ${removed.join(', ')}` : 'no such accounts' };
    },
  },
  [`${ADMIN}#change-user-password`]: {
    name: "Change a user's password",
    fields: [
      { var: 'accountjid', type: 'jid-single', label: 'The Jabber ID of the account', required: true },
      { var: 'password', type: 'text-private', label: 'New password', required: true },
    ],
    async run(server, fields) {
      const bare = localAccount(server, one(fields, 'accountjid'));
      if (!(await server.store.setCredentials(bare, await makeCredentials(newPassword(fields, false), server.config.scramIterations)))) {
        throw new StanzaError('item-not-found', `${bare} does not exist`);
      }
      // As with the user's own change: whoever logged in with the old password is logged out.
      const changed = new StreamError('reset', 'the password of this account was changed; log in again');
      for (const s of (await server.store.getUserRoute(bare)).sessions) await server.closeOther(s.connectionId, changed);
      return { note: `the password of ${bare} was changed` };
    },
  },
  [`${ADMIN}#get-online-users-list`]: {
    name: 'List online users',
    fields: [],
    async run(server) {
      const online = [...new Set((await server.store.listSessions()).filter((s) => s.available).map((s) => s.bare))].sort();
      const result = x(
        'x',
        { xmlns: NS.DATA_FORMS, type: 'result' },
        x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, ADMIN)),
        x('field', { var: 'onlineuserjids', type: 'jid-multi', label: 'Online users' }, ...online.map((j) => x('value', {}, j))),
      );
      return { note: `${online.length} online`, result };
    },
  },
  [`${ADMIN}#announce`]: {
    name: 'Send an announcement to online users',
    fields: [
      { var: 'subject', type: 'text-single', label: 'Subject' },
      { var: 'announcement', type: 'text-multi', label: 'Announcement', required: true },
    ],
    async run(server, fields) {
      const body = (fields.get('announcement') ?? []).join('\n').trim();
      if (!body) throw new StanzaError('bad-request', 'the form needs an announcement');
      const subject = fields.get('subject')?.[0]?.trim();
      const sessions = (await server.store.listSessions()).filter((s) => s.available);
      const message = (to: string) =>
        x('message', { xmlns: NS.CLIENT, from: server.config.domain, to, type: 'headline' }, subject ? x('subject', {}, subject) : undefined, x('body', {}, body));
      let sent = 0;
      for (const s of sessions) if (await server.deliver(s, message(`${s.bare}/${s.resource}`))) sent++;
      return { note: `sent to ${sent} sessions` };
    },
  },
};

function formOf(node: string, command: Command): Element {
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type: 'form' },
    x('title', {}, command.name),
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, command.formType ?? ADMIN)),
    ...command.fields.map((f) => x('field', { var: f.var, type: f.type, label: f.label }, f.required ? x('required') : undefined)),
  );
}

function submitted(form: Element | undefined): Fields | undefined {
  if (!form || form.attrs.type !== 'submit') return undefined;
  return new Map(form.getChildren('field').map((f) => [f.attrs.var ?? '', f.getChildren('value').map((v) => v.getText())]));
}

function isAdmin({ server, from, session }: Pick<IqRequest, 'server' | 'from' | 'session'>): boolean {
  return session !== undefined && server.config.admins.includes(from.bare);
}

/** Admins run every command; a logged-in local user those meant for users, where allowed. */
function mayRun(request: Pick<IqRequest, 'server' | 'from' | 'session'>, command: Command): boolean {
  if (isAdmin(request)) return true;
  return request.session !== undefined && command.forUsers?.(request.server) === true && request.server.isLocalDomain(request.from.domain);
}

const ALL_COMMANDS: Record<string, Command> = { ...COMMANDS_BY_NODE, ...INVITE_COMMANDS };

export const adminCommandsModule: XmppModule = {
  name: 'admin-commands',
  setup(reg) {
    reg.feature(COMMANDS);
    // The command list is a disco#items node of the server (XEP-0050 §2.2): admins see them all.
    reg.serverItems(COMMANDS, async (request) =>
      Object.entries(ALL_COMMANDS)
        .filter(([, c]) => mayRun(request, c))
        .map(([node, c]) => x('item', { jid: request.server.config.domain, node, name: c.name })),
    );
    reg.iq('server', COMMANDS, async (request) => {
      const { payload, type } = request;
      if (type !== 'set') throw new StanzaError('bad-request', 'commands are run with iq set');
      const node = payload.attrs.node ?? '';
      const command = ALL_COMMANDS[node];
      if (!command) throw new StanzaError('item-not-found', `no command ${node}`);
      if (!mayRun(request, command)) throw new StanzaError('forbidden', 'only admins of this server run this command');
      const sessionid = payload.attrs.sessionid ?? frameUnique('adhoc');
      const action = payload.attrs.action ?? 'execute';
      const answer = (status: string, ...children: (Element | undefined)[]) => x('command', { xmlns: COMMANDS, node, sessionid, status }, ...children);
      if (action === 'cancel') return answer('canceled');
      if (action !== 'execute' && action !== 'complete') throw new StanzaError('bad-request', `action ${action} is not offered`);
      const fields = submitted(payload.getChild('x', NS.DATA_FORMS));
      if (!fields && command.fields.length) return answer('executing', x('actions', { execute: 'complete' }, x('complete')), formOf(node, command));
      const { note, result } = await command.run(request.server, fields ?? new Map(), request.from.bare);
      return answer('completed', x('note', { type: 'info' }, note), result);
    });
  },
};
