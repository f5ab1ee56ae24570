/**
 * xmppctl: account and session administration, against the local stack (default) or a deployed
 * stack (--stack NAME [--region R]), through the same store code the server uses.
 *
 *   xmppctl user add <jid> <password>      xmppctl user delete <jid>
 *   xmppctl user passwd <jid> <password>   xmppctl user list [domain]
 *   xmppctl session list
 *   xmppctl invite create [--from <jid>] [--user <name>]
 * A password of "-" is read from standard input (keeps it out of the process list).
 */
import { parseArgs } from 'node:util';
import { makeCredentials } from '../shared/accounts.ts';
import { loadConfig } from '../shared/config.ts';
import { JidError, normalizeLocal, parseJid } from '../shared/jid.ts';
import { inviteLinks } from '../shared/lib/invites.ts';
import { InviteStore } from '../shared/storage/invite-store.ts';
import { DynamoStore } from '../shared/storage/dynamo-store.ts';
import { createServer } from '../shared/core/create.ts';
import { removeAccount } from '../shared/core/account-removal.ts';
import { openLocalTarget, openStackTarget, type Target } from './targets.ts';

const USAGE = `usage: xmppctl [--stack NAME] [--region REGION] <command>
  user add <jid> <password>     create an account ("-" reads the password from stdin)
  user delete <jid>             delete an account and everything stored for it
  user passwd <jid> <password>  set a new password
  user list [domain]            list accounts
  session list                  list bound sessions
  invite create [--from <jid>] [--user <name>]
                                an invitation link (XEP-0401) that registers one account even with
                                registration off; --from makes the new user that account's contact,
                                --user reserves the username
Without --stack, works on the local stack (XMPP_DATA_DIR, default .data).`;

/** Wrong command line: the message and the usage. */
class UsageError extends Error {}
/** A valid command that cannot be done (e.g. the account exists): the message only. */
class CommandError extends Error {}

async function readPassword(arg: string | undefined): Promise<string> {
  if (arg === undefined) throw new UsageError('a password is required');
  if (arg !== '-') return arg;
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

function accountJid(text: string | undefined, domain: string): string {
  if (!text) throw new UsageError('a JID is required');
  let jid;
  try {
    jid = parseJid(text);
  } catch (err) {
    if (err instanceof JidError) throw new UsageError(`invalid JID "${text}": ${err.message}`);
    throw err;
  }
  if (!jid.local || jid.resource) throw new UsageError(`"${text}" is not a bare account JID like alice@${domain}`);
  if (jid.domain !== domain) throw new CommandError(`${jid.bare} is not on this server's domain "${domain}"`);
  return jid.bare;
}

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      stack: { type: 'string' },
      region: { type: 'string' },
      from: { type: 'string' },
      user: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const [group, command, ...args] = positionals;
  const known = ['user add', 'user delete', 'user passwd', 'user list', 'session list', 'invite create'];
  if (!known.includes(`${group} ${command}`)) throw new UsageError(`unknown command "${positionals.join(' ')}"`);

  const target: Target = values.stack ? await openStackTarget(values.stack, values.region) : await openLocalTarget();
  try {
    const store = new DynamoStore({ tableName: target.tableName, endpoint: target.endpoint });
    const iterations = loadConfig().scramIterations;
    switch (`${group} ${command}`) {
      case 'user add': {
        const bare = accountJid(args[0], target.domain);
        const credentials = await makeCredentials(await readPassword(args[1]), iterations);
        if (!(await store.createAccount(bare, credentials))) throw new CommandError(`${bare} already exists`);
        console.log(`created ${bare}`);
        return 0;
      }
      case 'user delete': {
        const bare = accountJid(args[0], target.domain);
        if (!(await store.getAccount(bare))) throw new CommandError(`${bare} does not exist`);
        // Through the core, as XEP-0077 removal: sessions end, contacts and rooms are told, and the
        // user is taken out of other users' data (docs/security.md, "Account removal").
        const config = loadConfig({
          ...process.env,
          XMPP_DOMAIN: target.domain,
          XMPP_TABLE: target.tableName,
          XMPP_DYNAMODB_ENDPOINT: target.endpoint ?? '',
          XMPP_CONNECTIONS_ENDPOINT: target.connectionsEndpoint ?? '',
          XMPP_S2S_QUEUE_URL: target.s2sQueueUrl ?? '',
        });
        // Without a running stack no socket is open: every post finds its connection gone.
        const server = createServer(config, target.connectionsEndpoint ? {} : { sender: { send: async () => false, close: async () => {} } });
        if (!(await removeAccount(server, bare))) throw new CommandError(`${bare} does not exist`);
        console.log(`deleted ${bare}`);
        return 0;
      }
      case 'user passwd': {
        const bare = accountJid(args[0], target.domain);
        const credentials = await makeCredentials(await readPassword(args[1]), iterations);
        if (!(await store.setCredentials(bare, credentials))) throw new CommandError(`${bare} does not exist`);
        console.log(`password changed for ${bare}`);
        return 0;
      }
      case 'user list':
        for (const bare of await store.listAccounts(args[0])) console.log(bare);
        return 0;
      case 'invite create': {
        const inviter = values.from === undefined ? undefined : accountJid(values.from, target.domain);
        if (inviter && !(await store.getAccount(inviter))) throw new CommandError(`${inviter} does not exist`);
        let username: string | undefined;
        if (values.user !== undefined) {
          try {
            username = normalizeLocal(values.user);
          } catch (err) {
            if (err instanceof JidError) throw new UsageError(`invalid username "${values.user}": ${err.message}`);
            throw err;
          }
        }
        const config = loadConfig({ ...process.env, XMPP_DOMAIN: target.domain, XMPP_INVITE_URL: process.env.XMPP_INVITE_URL || target.webUrl || '' });
        const invite = await store.open(InviteStore).create({ inviter, username, createdBy: 'xmppctl' }, config.inviteTtlSeconds);
        const links = inviteLinks({ config }, invite);
        console.log(links.uri);
        if (links.landing) console.log(links.landing);
        console.log(`valid until ${new Date(invite.expires * 1000).toISOString()}, once`);
        return 0;
      }
      case 'session list': {
        const sessions = await store.listSessions();
        for (const s of sessions.sort((a, b) => a.bare.localeCompare(b.bare))) {
          console.log(`${s.bare}/${s.resource}\t${s.available ? `available (priority ${s.priority})` : 'connected'}\tsince ${new Date(s.boundAt).toISOString()}\t${s.connectionId}`);
        }
        if (sessions.length === 0) console.log('no sessions');
        return 0;
      }
    }
    return 2;
  } finally {
    await target.close();
  }
}

run(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof UsageError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      console.error(`xmppctl: ${(err as Error).message}\n\n${USAGE}`);
      process.exit(2);
    }
    console.error(`xmppctl: ${(err as Error).message}`);
    process.exit(err instanceof CommandError ? 1 : 3);
  },
);
