/**
 * Invitations (XEP-0401 / XEP-0445 / XEP-0379): a random token that lets its holder register an
 * account even where open registration is off, and, when it names an inviter, makes the two
 * contacts with a mutual subscription at once.
 *
 *   invite#<token> / invite   inviter?, username? (reserved name), createdBy, expires (TTL)
 *
 * One partition per token: no scan can list them, and a token is only ever read by its value.
 * Using one is a conditional delete, so of two registrations racing with one token exactly one wins.
 */
import { randomBytes } from 'node:crypto';
import { DeleteCommand, GetCommand, PutCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { nowSeconds } from './table-ops.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { invitePk } from './keys.ts';

/** XEP-0379's `<preauth/>` namespace: version 0 as XEP-0445 shows it, version 2 as Conversations sends it. */
export const PARS = ['urn:xmpp:pars:0', 'urn:xmpp:pars:2'] as const;

export interface Invite {
  token: string;
  /** The account whose contact the invitee becomes (mutual subscription). */
  inviter?: string;
  /** The only username this token registers, when the invitation named one. */
  username?: string;
  /** Who made it (an admin, a user, or the CLI). */
  createdBy: string;
  /** Epoch seconds. */
  expires: number;
}

const key = (token: string) => ({ pk: invitePk(token), sk: 'invite' });
/** base64url of 18 random bytes: 144 bits, and nothing else is a token. */
const TOKEN = /^[A-Za-z0-9_-]{24}$/;

export class InviteStore {
  constructor(private readonly db: TableAccess) {}

  async create(invite: Omit<Invite, 'token' | 'expires'>, ttlSeconds: number): Promise<Invite> {
    const created: Invite = { ...invite, token: randomBytes(18).toString('base64url'), expires: nowSeconds() + ttlSeconds };
    await this.put(created);
    return created;
  }

  private async put(invite: Invite): Promise<void> {
    const { expires, ...rest } = invite;
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...key(invite.token), ...rest, [TTL_ATTRIBUTE]: expires } }));
  }

  /** A valid (known, not expired) invitation, or undefined. */
  async get(token: string): Promise<Invite | undefined> {
    if (!TOKEN.test(token)) return undefined;
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: key(token), ConsistentRead: true }));
    const item = out.Item;
    if (!item || (item[TTL_ATTRIBUTE] as number) <= nowSeconds()) return undefined;
    return { token, inviter: item.inviter, username: item.username, createdBy: item.createdBy, expires: item[TTL_ATTRIBUTE] as number };
  }

  /** Uses the token up: the invitation if this call took it, undefined if it was gone or expired (or another took it). */
  async take(token: string): Promise<Invite | undefined> {
    if (!TOKEN.test(token)) return undefined;
    try {
      const out = await this.db.doc.send(
        new DeleteCommand({
          TableName: this.db.table,
          Key: key(token),
          ConditionExpression: 'attribute_exists(pk) AND #e > :now',
          ExpressionAttributeNames: { '#e': TTL_ATTRIBUTE },
          ExpressionAttributeValues: { ':now': nowSeconds() },
          ReturnValues: 'ALL_OLD',
        }),
      );
      const item = out.Attributes!;
      return { token, inviter: item.inviter, username: item.username, createdBy: item.createdBy, expires: item[TTL_ATTRIBUTE] as number };
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return undefined;
      throw err;
    }
  }

  /** Puts a taken invitation back (the registration it was taken for failed). */
  restore(invite: Invite): Promise<void> {
    return this.put(invite);
  }
}
