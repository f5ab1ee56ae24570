/**
 * XEP-0313 message archives on the single table. An archive is a partition: a user's archive lives
 * under `user#<bare>` (so deleting the account deletes it), a room's under `room#<jid>`. Items sort
 * by `mam#<id>`, where the id starts with a fixed-width time-and-sequence part: a Query over a sort
 * key range is a time range, in the order the messages were archived.
 */
import { GetCommand, PutCommand, QueryCommand, UpdateCommand, type QueryCommandInput } from './commands.ts';
import { frameNow, frameUnique, frameValue, invalidateRoute } from './frame-context.ts';
import { conditionally, putItems } from './table-ops.ts';
import type { Store, TableAccess } from './store.ts';
import { userPk } from './keys.ts';

const PREFIX = 'mam#';
/** Above every id character (digits, '-', base64url), to close a range at the end of a millisecond. */
const HIGH = '~';
/** Among the account's routing items, so the route read for delivery brings the preferences along. */
export const PREFS_SK = 'account#mamprefs';

export interface ArchivedMessage {
  /** Archive UID, also the XEP-0359 stanza-id. */
  id: string;
  /** When it was archived (ISO 8601). */
  stamp: string;
  /** The message as archived (XML). */
  xml: string;
  /** Bare JID of the other party (user archive) or real bare JID of the sender (room archive). */
  with: string;
  /** Full JID of the other party (user archive) or occupant JID of the sender (room archive). */
  withFull?: string;
  /** 'subject' for a room's subject changes (archived, but not discussion history). */
  kind?: 'subject';
}

export interface ArchiveQuery {
  /** Epoch ms, inclusive. */
  start?: number;
  end?: number;
  /** Only items whose `with` or `withFull` equals one of these (OR). */
  withAny?: { attribute: 'with' | 'withFull'; value: string }[];
  /** RSM: items strictly after this id, oldest first. */
  after?: string;
  /** RSM: items strictly before this id ('' = the last page), newest page first but returned in order. */
  before?: string;
  max: number;
  /** Leave out subject changes (MUC discussion history). */
  messagesOnly?: boolean;
}

export interface ArchivePage {
  items: ArchivedMessage[];
  /** No further items in the paging direction. */
  complete: boolean;
}

export type ArchiveDefault = 'always' | 'never' | 'roster';

export interface ArchivePrefs {
  default: ArchiveDefault;
  always: string[];
  never: string[];
}

let lastMs = 0;
let seq = 0;

/**
 * A new archive id: 13 digits of epoch ms and 3 of sequence (so messages archived by one instance
 * within one millisecond keep their order), then 8 unpredictable characters (XEP-0359). Inside a
 * redeliverable frame the time is the frame's arrival, the sequence is journaled and the suffix is
 * derived from the frame id (frame-context.ts): a second run of the frame rewrites the same item and
 * posts the same stanza-id.
 */
export function newArchiveId(now = frameNow(), archive = ''): string {
  const sequenced = frameValue(`archive-seq:${archive}`, () => {
    if (now <= lastMs) {
      seq += 1;
      if (seq > 999) {
        lastMs += 1;
        seq = 0;
      }
    } else {
      lastMs = now;
      seq = 0;
    }
    return `${String(lastMs).padStart(13, '0')}${String(seq).padStart(3, '0')}`;
  });
  return `${sequenced}-${frameUnique(`archive:${archive}`)}`;
}

/** Whether a string has the shape of an id this store made (anything else cannot be in an archive). */
export function isArchiveId(id: string): boolean {
  return /^\d{16}-[A-Za-z0-9_-]{8}$/.test(id);
}

function timeKey(ms: number, high: boolean): string {
  return `${PREFIX}${String(Math.max(0, Math.floor(ms))).padStart(13, '0')}${high ? `999${HIGH}` : '000'}`;
}

/** One message for one archive, ready to be written. */
export interface ArchiveEntry {
  pk: string;
  item: ArchivedMessage;
}

export class ArchiveStore {
  constructor(private readonly db: TableAccess) {}

  async append(pk: string, message: Omit<ArchivedMessage, 'id' | 'stamp'>, now = frameNow()): Promise<ArchivedMessage> {
    const entry = this.prepare(pk, message, now);
    await this.write([entry]);
    return entry.item;
  }

  /** An archive entry with its id, not yet written (see write()). */
  prepare(pk: string, message: Omit<ArchivedMessage, 'id' | 'stamp'>, now = frameNow()): ArchiveEntry {
    return { pk, item: { id: newArchiveId(now, pk), stamp: new Date(now).toISOString(), ...message } };
  }

  /** Writes entries of one or more archives in one request (both sides of a 1:1 message). */
  async write(entries: ArchiveEntry[]): Promise<void> {
    const items = entries.map(({ pk, item }) => ({ pk, sk: PREFIX + item.id, ...item }));
    if (items.length === 1) {
      await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: items[0] }));
      return;
    }
    await putItems(this.db, items);
  }

  /** One archived message by its id (strongly consistent), or undefined. */
  async get(pk: string, id: string): Promise<ArchivedMessage | undefined> {
    if (!isArchiveId(id)) return undefined;
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk, sk: PREFIX + id }, ConsistentRead: true }));
    if (!out.Item) return undefined;
    const { pk: _pk, sk: _sk, ...item } = out.Item;
    return item as ArchivedMessage;
  }

  /**
   * Replaces an archived message's XML only if it is still `expected` (compare and set): of two
   * handlers rewriting one message at once, exactly one succeeds; false for the other.
   */
  replaceXml(pk: string, id: string, expected: string, xml: string): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk, sk: PREFIX + id },
          UpdateExpression: 'SET #x = :x',
          ConditionExpression: '#x = :expected',
          ExpressionAttributeNames: { '#x': 'xml' },
          ExpressionAttributeValues: { ':x': xml, ':expected': expected },
        }),
      ),
    );
  }

  async exists(pk: string, id: string): Promise<boolean> {
    if (!isArchiveId(id)) return false;
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk, sk: PREFIX + id }, ProjectionExpression: 'pk' }));
    return out.Item !== undefined;
  }

  /**
   * One page of an archive. Reads at most what the page needs (plus one item to know whether it
   * is complete), more only when a `with` filter skips items.
   */
  async query(pk: string, q: ArchiveQuery): Promise<ArchivePage> {
    const backward = q.before !== undefined;
    let low = q.start !== undefined ? timeKey(q.start, false) : PREFIX;
    let high = q.end !== undefined ? timeKey(q.end, true) : PREFIX + HIGH;
    if (q.after) low = maxString(low, PREFIX + q.after);
    if (q.before) high = minString(high, PREFIX + q.before);
    const excluded = new Set([q.after, q.before].filter((v): v is string => !!v).map((v) => PREFIX + v));
    if (low > high) return { items: [], complete: true };

    const values: Record<string, string> = { ':pk': pk, ':low': low, ':high': high };
    const names: Record<string, string> = {};
    const conditions: string[] = [];
    if (q.withAny?.length) {
      const any = q.withAny.map((w, i) => {
        names[`#w${i}`] = w.attribute;
        values[`:w${i}`] = w.value;
        return `#w${i} = :w${i}`;
      });
      conditions.push(`(${any.join(' OR ')})`);
    }
    if (q.messagesOnly) {
      names['#kind'] = 'kind';
      conditions.push('attribute_not_exists(#kind)');
    }
    const filter = conditions.length ? conditions.join(' AND ') : undefined;
    const found: ArchivedMessage[] = [];
    let ExclusiveStartKey: Record<string, unknown> | undefined;
    do {
      const input: QueryCommandInput = {
        TableName: this.db.table,
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :low AND :high',
        ExpressionAttributeValues: values,
        ExpressionAttributeNames: filter ? names : undefined,
        FilterExpression: filter,
        ScanIndexForward: !backward,
        Limit: q.max + 2,
        ExclusiveStartKey,
      };
      const out = await this.db.doc.send(new QueryCommand(input));
      for (const item of out.Items ?? []) {
        if (excluded.has(item.sk as string)) continue;
        found.push({ id: item.id, stamp: item.stamp, xml: item.xml, with: item.with, withFull: item.withFull, kind: item.kind });
      }
      ExclusiveStartKey = out.LastEvaluatedKey;
    } while (ExclusiveStartKey && found.length <= q.max);
    const complete = found.length <= q.max;
    const page = found.slice(0, q.max);
    if (backward) page.reverse();
    return { items: page, complete };
  }

  /** The newest `max` items since `since` (epoch ms), oldest first: MUC discussion history. */
  async latest(pk: string, max: number, since?: number): Promise<ArchivedMessage[]> {
    if (max <= 0) return [];
    return (await this.query(pk, { before: '', start: since, max, messagesOnly: true })).items;
  }

  /** The user's preferences, from the user's route (read once per frame, shared with delivery). */
  async getPrefs(store: Store, bare: string): Promise<ArchivePrefs | undefined> {
    const item = (await store.getUserRoute(bare)).items.get(PREFS_SK);
    if (!item) return undefined;
    return { default: item.default, always: item.always ?? [], never: item.never ?? [] };
  }

  async putPrefs(bare: string, prefs: ArchivePrefs): Promise<void> {
    invalidateRoute(bare);
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { pk: userPk(bare), sk: PREFS_SK, ...prefs } }));
  }
}

function maxString(a: string, b: string): string {
  return a > b ? a : b;
}

function minString(a: string, b: string): string {
  return a < b ? a : b;
}
