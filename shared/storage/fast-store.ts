/**
 * XEP-0484 FAST tokens of one client installation: the item `user#<bare>` / `fast#<client>`, where
 * `<client>` is a hash of the SASL2 user agent's id, holding the XEP's two slots (§6, "Business
 * rules"): `next`, issued and not used yet, and `current`, the one the client used last. A token
 * is used from `next` by moving it to `current` (over what was there: an older token goes as soon
 * as a newer one is used); issuing one writes `next` only, so a client that never got the new
 * token still logs in with the one it has. The item expires with the later of its tokens (TTL).
 *
 * The tokens are stored as issued: the HT mechanisms key an HMAC with the token, so checking one
 * needs it (a hash of what the client sends would be all an attacker needs just the same). They
 * are random, per installation, short-lived and revoked with every password change.
 */
import { createHash } from 'node:crypto';
import { DeleteCommand, GetCommand, UpdateCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { conditionally, deleteKeys, queryAll } from './table-ops.ts';
import { userPk } from './keys.ts';

export interface FastToken {
  token: string;
  /** The mechanism it was issued for; it works with no other (§4). */
  mechanism: string;
  /** Epoch ms. */
  expiry: number;
}

export interface FastSlots {
  current?: FastToken;
  next?: FastToken;
}

const PREFIX = 'fast#';
const sk = (userAgentId: string) => `${PREFIX}${createHash('sha256').update(userAgentId).digest('base64url')}`;
const ttl = (expiry: number) => Math.ceil(expiry / 1000);

export class FastStore {
  constructor(private readonly db: TableAccess) {}

  async get(bare: string, userAgentId: string): Promise<FastSlots> {
    const { Item } = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: userPk(bare), sk: sk(userAgentId) }, ConsistentRead: true }));
    return { current: Item?.current as FastToken | undefined, next: Item?.next as FastToken | undefined };
  }

  /** A new token in the `next` slot (the client's current one keeps working until it uses this). */
  async issue(bare: string, userAgentId: string, token: FastToken): Promise<void> {
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: { pk: userPk(bare), sk: sk(userAgentId) },
        UpdateExpression: 'SET #next = :t, #ttl = :ttl',
        ExpressionAttributeNames: { '#next': 'next', '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: { ':t': token, ':ttl': ttl(token.expiry) },
      }),
    );
  }

  /**
   * The client used the `next` token: it becomes `current`, the older one goes. Conditional on
   * `next` still being it, so a login that read the item before another issued a newer token
   * does not throw that one away.
   */
  async promote(bare: string, userAgentId: string, used: FastToken): Promise<void> {
    await conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: userPk(bare), sk: sk(userAgentId) },
          UpdateExpression: 'SET #current = :t REMOVE #next',
          ConditionExpression: '#next.#token = :token',
          ExpressionAttributeNames: { '#current': 'current', '#next': 'next', '#token': 'token' },
          ExpressionAttributeValues: { ':t': used, ':token': used.token },
        }),
      ),
    );
  }

  /** The client asked for the token it used to be invalidated (§5): the installation's item goes. */
  async invalidate(bare: string, userAgentId: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: userPk(bare), sk: sk(userAgentId) } }));
  }

  /** Every installation's tokens of the account (its password changed). */
  async revokeAll(bare: string): Promise<void> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': userPk(bare), ':prefix': PREFIX },
      ProjectionExpression: 'pk, sk',
    });
    await deleteKeys(this.db, items.map((i) => ({ pk: i.pk as string, sk: i.sk as string })));
  }
}
