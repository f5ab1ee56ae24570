/**
 * XEP-0352 state of a session, shared by every handler that delivers to it (docs/mobile.md,
 * "Client state indication"): one item, `conn#<session>` / `csi`, beside the connection and XEP-0198
 * items, holding the client's mode and what is held for it: the latest presence and the latest chat
 * state per sender, in a map keyed by kind and sender.
 *
 * Everything is one item so that holding and flushing cannot miss each other or reorder: a stanza is
 * held only on condition that the mode is `inactive` or `flushing` (one conditional update). On
 * `<active/>` the mode becomes `flushing` (stanzas are still held, so none overtakes an older held
 * one), the held ones are posted, and the mode becomes active in one update conditional on nothing
 * having been held meanwhile; if something was, that is posted too and the switch is tried again.
 * A handler that read the session as inactive a moment before either held its stanza while holding
 * was on (the flush posts it, in order) or fails the condition and posts it itself, after the flush.
 */
import { DeleteCommand, GetCommand, UpdateCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { conditionally, nowSeconds } from './table-ops.ts';
import { connectionPk } from './keys.ts';

export interface HeldStanza {
  /** When it was held (epoch µs, unique within a process): the flush posts in this order. */
  at: number;
  xml: string;
}

/** A session lasts at most a connection lifetime (2 h) plus a XEP-0198 window; the item goes with it. */
const TTL_SECONDS = 3 * 3600 + 900;
const CSI = 'csi';
const pk = connectionPk;
let heldInProcess = 0;
/** Microseconds, so two stanzas one handler holds within a millisecond keep their order. */
const heldAt = () => Date.now() * 1000 + (heldInProcess++ % 1000);

export class CsiStore {
  constructor(private readonly db: TableAccess) {}

  /** The client said `<inactive/>`: from now on presence and chat states for it are held. */
  async setInactive(session: string): Promise<void> {
    // An update, not a put: a second <inactive/> keeps what is held already.
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: { pk: pk(session), sk: CSI },
        UpdateExpression: 'SET #m = :i, held = if_not_exists(held, :none), #ttl = :ttl',
        ExpressionAttributeNames: { '#m': 'mode', '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: { ':i': 'inactive', ':none': {}, ':ttl': nowSeconds() + TTL_SECONDS },
      }),
    );
  }

  /** An update of what is held, made only while holding is on (mode inactive or flushing). */
  private whileHolding(session: string, update: string, key: string, values: Record<string, unknown> = {}): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: CSI },
          UpdateExpression: update,
          ConditionExpression: '#m IN (:i, :f)',
          ExpressionAttributeNames: { '#m': 'mode', '#k': key },
          ExpressionAttributeValues: { ':i': 'inactive', ':f': 'flushing', ...values },
        }),
      ),
    );
  }

  /**
   * Holds a stanza under `key` (replacing what that key held), if holding is on. False when it is
   * not (the caller posts the stanza) or when the item would outgrow DynamoDB's 400 KB item limit
   * (a huge roster: the caller posts it; nothing is lost, only less is saved).
   */
  async hold(session: string, key: string, xml: string): Promise<boolean> {
    try {
      return await this.whileHolding(session, 'SET held.#k = :v', key, { ':v': { at: heldAt(), xml } satisfies HeldStanza });
    } catch (err) {
      if ((err as Error).name === 'ValidationException') return false;
      throw err;
    }
  }

  /** Drops what `key` holds (a message from that sender superseded its held chat state). */
  release(session: string, key: string): Promise<boolean> {
    return this.whileHolding(session, 'REMOVE held.#k', key);
  }

  /**
   * The client said `<active/>`: starts the flush and returns what is held, oldest first (empty
   * when nothing was ever held). Stanzas are still held until `finishFlush` succeeds.
   */
  async startFlush(session: string): Promise<Map<string, HeldStanza>> {
    try {
      const out = await this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: CSI },
          UpdateExpression: 'SET #m = :f',
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeNames: { '#m': 'mode' },
          ExpressionAttributeValues: { ':f': 'flushing' },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return heldOf(out.Attributes);
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return new Map();
      throw err;
    }
  }

  /**
   * Ends the flush if what is held is exactly what was posted (`posted`: key and time of each);
   * otherwise returns what is held now, for the caller to post what is new and try again.
   */
  async finishFlush(session: string, posted: Map<string, HeldStanza>): Promise<Map<string, HeldStanza> | undefined> {
    const names: Record<string, string> = { '#m': 'mode' };
    const values: Record<string, unknown> = { ':a': 'active', ':none': {}, ':n': posted.size };
    const same = [...posted].map(([key, held], i) => {
      names[`#k${i}`] = key;
      values[`:t${i}`] = held.at;
      return `held.#k${i}.#at = :t${i}`;
    });
    if (same.length) names['#at'] = 'at';
    try {
      await this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: CSI },
          UpdateExpression: 'SET #m = :a, held = :none',
          ConditionExpression: ['size(held) = :n', ...same].join(' AND '),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return undefined;
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
      const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: pk(session), sk: CSI }, ConsistentRead: true }));
      return out.Item ? heldOf(out.Item) : undefined;
    }
  }

  /** The session ended: held presence and chat states are moot. */
  async remove(session: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: pk(session), sk: CSI } }));
  }
}

function heldOf(item: Record<string, any> | undefined): Map<string, HeldStanza> {
  const held = Object.entries((item?.held ?? {}) as Record<string, HeldStanza>);
  return new Map(held.sort(([, a], [, b]) => a.at - b.at));
}
