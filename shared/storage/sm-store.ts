/**
 * XEP-0198 outbound state of a session, shared by every handler that posts to it (see
 * docs/mobile.md): under the session's id (the connection it began on), beside its connection item,
 *
 * - `conn#<session>` / `sm`: the SM id, how many stanzas were posted (`out`) and acknowledged
 *   (`acked`), the socket that carries the session now, and, while no socket does, until when it
 *   may be resumed. `out` is bumped by an atomic update before each post, so every handler draws
 *   the next number; the socket comes back in the same answer, so a post after a resumption goes
 *   to the new connection. Before the enable, the same item holds the unnumbered posts on their
 *   way to the session (beginUnnumbered), which the enable waits for.
 * - `conn#<session>` / `sm#q#<out>`: each posted stanza under its number, written before the post,
 *   for resending after a resumption or re-routing when the window ends.
 *
 * Long because: every operation here is a conditional update of one item whose conditions read
 * each other's attributes (numbering, the post lease, acknowledgements, hibernation, the end's
 * owner, unnumbered posts before the enable); split, the conditions would be spread over files.
 */
import { DeleteCommand, GetCommand, PutCommand, QueryCommand, UpdateCommand } from './commands.ts';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { conditionally, nowSeconds } from './table-ops.ts';
import { connectionPk } from './keys.ts';

export interface SmRecord {
  smId: string;
  bare: string;
  resource: string;
  /** Stanzas posted to the session (the number of the last one). */
  out: number;
  /** The client's last acknowledged count. */
  acked: number;
  /** The connection (socket) that carries the session now. */
  socket: string;
  /** Resumption window in seconds; 0 = not resumable. */
  max: number;
  /** Epoch ms until which a hibernated session may be resumed (absent while a socket carries it). */
  hibernatedUntil?: number;
  /** Set when the session is being ended: nothing more is numbered, a resumption is refused. */
  ending?: boolean;
  /**
   * The frame, event or job (its queue message id) that ends the session and hands over what was
   * not acknowledged: only it, run again if it dies, does that hand-over (markEnding).
   */
  endedBy?: string;
  /** Epoch ms when a client began resuming the session (its old connection is being drained): no push then. */
  resumingSince?: number;
  /** The client's count at `acked` (they differ once a number was drawn for a post that never happened, or a post arrived twice). */
  ackedCount?: number;
  /** The number of the stanza being posted now (the post lease), and until when (epoch ms) its poster holds the lease. */
  posting?: number;
  postingUntil?: number;
  /**
   * Written by each draw of a number: the expiry of the lease it found still held (its poster never
   * gave it back), or 0 when it found the lease free. Non-zero means posting now could overtake an
   * earlier stanza (sm-sender.ts).
   */
  leaseBroken?: number;
  /**
   * Posts routed to the session before it enabled XEP-0198, still on their way (unnumbered: the
   * client must get them before <enabled/>, which waits for them), and until when they may take.
   * Kept on the item before the record exists (beginUnnumbered).
   */
  unnumbered?: Set<string>;
  unnumberedUntil?: number;
}

/**
 * How long a poster holds a session's post lease at most. A post takes milliseconds; the lease
 * runs out when its holder died mid-post or its post hangs, and the next poster, finding it so,
 * cuts the socket rather than overtake (sm-sender.ts). With 1 s, holders that were only slow (a
 * throttled log write retried, an event loop stalled) had their leases broken too: the chaos test
 * with stream management cut about 2,400 connections in 17 minutes. Not much longer, because every
 * frame that waits behind a dead holder holds up its connection's queue: with 5 s (before the cut),
 * frames of a connection being resumed outlasted the drain (DRAIN_WAIT_MS) and the same test
 * doubled 15 messages of 500.
 */
export const POST_LEASE_MS = 3000;

/** What drawing a number found: a number and the lease, a lease held by another poster, or no stream management. */
export type Draw = { record: SmRecord } | { busyUntil: number } | undefined;

/** How long a resumption waits for the previous connection's queued frames (stream-management.ts, drain). */
export const DRAIN_WAIT_MS = 5000;

/** Whether a client is resuming the session right now (markResuming, within the time a drain may take). */
export function resumingNow(record: SmRecord, now = Date.now()): boolean {
  return record.resumingSince !== undefined && now - record.resumingSince < 2 * DRAIN_WAIT_MS;
}

export interface LoggedStanza {
  seq: number;
  xml: string;
  /** Epoch ms when it was numbered and logged, just before its post (absent on items logged before this field). */
  at?: number;
}

/** Items outlive the longest connection (2 h) plus the window; a resumption extends them. */
const BASE_TTL_SECONDS = 3 * 3600;
/** A resumed session's record lives on for another connection lifetime plus the longest window. */
const MAX_TTL_MARGIN = 900;
/** An item that only ever held unnumbered posts (a session that never enabled XEP-0198) goes after an hour. */
const UNNUMBERED_TTL_SECONDS = 3600;
const SM = 'sm';
const QUEUE = 'sm#q#';
const LEASE_FREE = '(attribute_not_exists(postingUntil) OR postingUntil < :now)';
const pk = connectionPk;
const seqKey = (seq: number) => QUEUE + String(seq).padStart(10, '0');

export class SmStore {
  constructor(private readonly db: TableAccess) {}

  private ttl(max: number): number {
    return nowSeconds() + BASE_TTL_SECONDS + max;
  }

  /**
   * Creates the record at <enable/>, with the post lease held by the enabling frame (number 0) until
   * it has posted <enabled/> and gives it back: a stanza numbered meanwhile must not reach the socket
   * before <enabled/>, where the client would not count it (and resend it twice at a resumption).
   * False when it exists (a redelivered frame created it already).
   */
  create(session: string, record: Omit<SmRecord, 'out' | 'acked'>, now = Date.now()): Promise<boolean> {
    // An update, not a put: the item may be there already, holding the unnumbered posts (beginUnnumbered).
    const fields: Record<string, unknown> = { ...record, out: 0, acked: 0, posting: 0, postingUntil: now + POST_LEASE_MS, [TTL_ATTRIBUTE]: this.ttl(record.max) };
    const names = Object.keys(fields).filter((n) => fields[n] !== undefined);
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: `SET ${names.map((_, i) => `#f${i} = :f${i}`).join(', ')}`,
          ConditionExpression: 'attribute_not_exists(smId)',
          ExpressionAttributeNames: Object.fromEntries(names.map((n, i) => [`#f${i}`, n])),
          ExpressionAttributeValues: Object.fromEntries(names.map((n, i) => [`:f${i}`, fields[n]])),
        }),
      ),
    );
  }

  /** The session's record; undefined without XEP-0198 (an item holding only unnumbered posts is not one). */
  async get(session: string): Promise<SmRecord | undefined> {
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: { pk: pk(session), sk: SM }, ConsistentRead: true }));
    return out.Item?.smId ? (out.Item as SmRecord) : undefined;
  }

  /**
   * Before an unnumbered post to a session that may be enabling XEP-0198 right now: records it on
   * the session's item (`key`, and until when it may take), so an <enable/> that comes meanwhile
   * waits for it before <enabled/>. False when the session has enabled it: number the post instead.
   * One item, so the two cannot miss each other: this update is either before the record's
   * creation (which then finds it) or after it (and fails).
   */
  beginUnnumbered(session: string, key: string, until: number): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'ADD unnumbered :key SET unnumberedUntil = :until, #ttl = if_not_exists(#ttl, :ttl)',
          ConditionExpression: 'attribute_not_exists(smId)',
          ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
          ExpressionAttributeValues: { ':key': new Set([key]), ':until': until, ':ttl': nowSeconds() + UNNUMBERED_TTL_SECONDS },
        }),
      ),
    );
  }

  /** The unnumbered post `key` is over (whether or not it reached the socket). */
  async endUnnumbered(session: string, key: string): Promise<void> {
    await conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'DELETE unnumbered :key',
          // Not on an item that is gone (the session ended): an update would create it again.
          ConditionExpression: 'attribute_exists(pk)',
          ExpressionAttributeValues: { ':key': new Set([key]) },
        }),
      ),
    );
  }

  /**
   * Draws the number of the next stanza posted to the session and takes its post lease (see
   * post-lease note in sm-sender.ts): one poster at a time per session, so stanzas reach the socket
   * in the order they are numbered. Answers `busyUntil` while another poster holds the lease, and
   * undefined when the session has no stream management (or it is being ended): the post goes out
   * uncounted.
   */
  async count(session: string, now = Date.now()): Promise<Draw> {
    return this.leased(session, now, true, {
      // `leaseBroken`: the lease was still there, expired (its poster never gave it back: its post
      // hangs, or it died). Right-hand sides read the item as it was.
      UpdateExpression: 'ADD #out :one SET posting = #out + :one, postingUntil = :until, leaseBroken = if_not_exists(postingUntil, :zero)',
      ConditionExpression: `attribute_exists(smId) AND attribute_not_exists(ending) AND ${LEASE_FREE}`,
      ExpressionAttributeNames: { '#out': 'out' },
      ExpressionAttributeValues: { ':one': 1, ':now': now, ':until': now + POST_LEASE_MS, ':zero': 0 },
    });
  }

  /**
   * Takes the post lease again for a stanza numbered `seq` before (its frame failed after drawing
   * the number and runs again): it is free, still this stanza's, or expired. Taking over another
   * stanza's expired lease sets `leaseBroken`, as a draw does: that stanza's post may still hang,
   * and giving this lease back would hide it from the next draw (traced in a chaos run: a run
   * again took over and gave back the lease of a post that hung 13 s, ten later stanzas went out
   * past it, the client's count fell one behind the numbers, and its resumption resent one twice).
   */
  async hold(session: string, seq: number, now = Date.now()): Promise<Draw> {
    // Not conditional on `ending`, as before the frame failed: the stanza was numbered, so it is logged.
    const own = await this.leased(session, now, false, {
      UpdateExpression: 'SET posting = :seq, postingUntil = :until, leaseBroken = :zero',
      ConditionExpression: 'attribute_exists(smId) AND (posting = :seq OR attribute_not_exists(postingUntil))',
      ExpressionAttributeValues: { ':seq': seq, ':until': now + POST_LEASE_MS, ':zero': 0 },
    });
    if (!own || 'record' in own || own.busyUntil >= now) return own;
    // Another stanza's lease, expired: taken over as it was read (or waited for, if it moved meanwhile).
    const taken = await this.leased(session, now, false, {
      UpdateExpression: 'SET posting = :seq, postingUntil = :until, leaseBroken = postingUntil',
      ConditionExpression: 'attribute_exists(smId) AND postingUntil = :expired',
      ExpressionAttributeValues: { ':seq': seq, ':until': now + POST_LEASE_MS, ':expired': own.busyUntil },
    });
    return taken && 'busyUntil' in taken ? { busyUntil: now } : taken;
  }

  private async leased(
    session: string,
    now: number,
    /** Whether a session being ended answers 'no stream management' (rather than waiting). */
    endingRefuses: boolean,
    update: { UpdateExpression: string; ConditionExpression: string; ExpressionAttributeNames?: Record<string, string>; ExpressionAttributeValues: Record<string, unknown> },
  ): Promise<Draw> {
    try {
      const out = await this.db.doc.send(
        new UpdateCommand({ TableName: this.db.table, Key: { pk: pk(session), sk: SM }, ...update, ReturnValues: 'ALL_NEW', ReturnValuesOnConditionCheckFailure: 'ALL_OLD' }),
      );
      return { record: out.Attributes as SmRecord };
    } catch (err) {
      if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
      // The document client does not unmarshal the item a failed condition returns.
      const item = (err as { Item?: Record<string, AttributeValue> }).Item;
      const old = item ? (unmarshall(item) as SmRecord) : undefined;
      if (!old?.smId || (old.ending && endingRefuses)) return undefined;
      return { busyUntil: old.postingUntil ?? now };
    }
  }

  /** The post of stanza `seq` is over: the next poster may go (a lease taken over meanwhile is left alone). */
  async release(session: string, seq: number): Promise<void> {
    await conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'REMOVE posting, postingUntil',
          ConditionExpression: 'posting = :seq',
          ExpressionAttributeValues: { ':seq': seq },
        }),
      ),
    );
  }

  async log(session: string, seq: number, xml: string, max: number): Promise<void> {
    await this.db.doc.send(
      new PutCommand({ TableName: this.db.table, Item: { pk: pk(session), sk: seqKey(seq), xml, at: Date.now(), [TTL_ATTRIBUTE]: this.ttl(max) } }),
    );
  }

  /** Logged stanzas numbered first..last (inclusive), in order; at most `limit` of them. */
  async logged(session: string, first: number, last: number, limit = Infinity): Promise<LoggedStanza[]> {
    if (last < first) return [];
    const found: LoggedStanza[] = [];
    let ExclusiveStartKey: Record<string, unknown> | undefined;
    do {
      const out = await this.db.doc.send(
        new QueryCommand({
          TableName: this.db.table,
          KeyConditionExpression: 'pk = :pk AND sk BETWEEN :a AND :b',
          ExpressionAttributeValues: { ':pk': pk(session), ':a': seqKey(first), ':b': seqKey(last) },
          ConsistentRead: true,
          ...(Number.isFinite(limit) ? { Limit: limit - found.length } : {}),
          ExclusiveStartKey,
        }),
      );
      for (const i of out.Items ?? []) found.push({ seq: Number((i.sk as string).slice(QUEUE.length)), xml: i.xml as string, at: i.at as number | undefined });
      ExclusiveStartKey = out.LastEvaluatedKey;
    } while (ExclusiveStartKey && found.length < limit);
    return found;
  }

  /**
   * Where a client count `h` falls in the numbering: the number of the h-th stanza the client got.
   * Counted over the logged stanzas after the last acknowledged one, not by subtraction: a number
   * drawn by a post that never happened (its frame crashed in between) was never logged and is not
   * counted, and a count beyond what was logged (a post the @connections API delivered twice, after
   * an SDK retry) acknowledges everything logged. The anchor (`acked`, `ackedCount`) moves with it,
   * so the difference is absorbed once.
   */
  async locate(session: string, record: SmRecord, h: number): Promise<{ acked: number; ackedCount: number; stale: boolean; ahead: boolean }> {
    const count = record.ackedCount ?? record.acked;
    if (h <= count) return { acked: record.acked, ackedCount: count, stale: true, ahead: false };
    const need = h - count;
    const items = await this.logged(session, record.acked + 1, record.out, need);
    if (items.length >= need) return { acked: items[need - 1]!.seq, ackedCount: h, stale: false, ahead: false };
    return { acked: items.at(-1)?.seq ?? record.acked, ackedCount: h, stale: false, ahead: true };
  }

  /**
   * Records the client's count `h` (see locate). 'ok' when it moved on, 'stale' when it was not above
   * the last one, 'ahead' when it counted more than were logged, 'none' without a record.
   */
  async ack(session: string, h: number): Promise<'ok' | 'stale' | 'ahead' | 'none'> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const record = await this.get(session);
      if (!record) return 'none';
      const at = await this.locate(session, record, h);
      if (at.stale) return 'stale';
      const written = await conditionally(
        this.db.doc.send(
          new UpdateCommand({
            TableName: this.db.table,
            Key: { pk: pk(session), sk: SM },
            UpdateExpression: 'SET acked = :a, ackedCount = :c',
            ConditionExpression: 'acked = :oldA AND (ackedCount = :oldC OR attribute_not_exists(ackedCount))',
            ExpressionAttributeValues: { ':a': at.acked, ':c': at.ackedCount, ':oldA': record.acked, ':oldC': record.ackedCount ?? record.acked },
          }),
        ),
      );
      if (written) return at.ahead ? 'ahead' : 'ok';
    }
    return 'stale'; // acknowledged concurrently again and again: the next acknowledgement will do
  }

  /** A client is resuming the session: its old connection's hibernation is part of that, not a reason to wake it. */
  async markResuming(session: string): Promise<void> {
    await conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'SET resumingSince = :now',
          ConditionExpression: 'attribute_exists(smId)',
          ExpressionAttributeValues: { ':now': Date.now() },
        }),
      ),
    );
  }

  /** The socket is gone: the session waits for a resumption until `until` (epoch ms). */
  hibernate(session: string, socket: string, until: number): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'SET hibernatedUntil = :u',
          ConditionExpression: 'socket = :s AND attribute_not_exists(ending)',
          ExpressionAttributeValues: { ':s': socket, ':u': until },
        }),
      ),
    );
  }

  /**
   * Moves the session to a new socket, provided nothing changed since the caller read it: the same
   * socket, no stanza posted since (`out`), not being ended. Every stanza numbered up to `out` was
   * posted to the old socket and is the caller's to resend; every later one goes to the new socket.
   */
  moveTo(session: string, expected: Pick<SmRecord, 'smId' | 'socket' | 'out'>, socket: string, acked: number, ackedCount: number): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: 'SET socket = :new, acked = :h, ackedCount = :c, #ttl = :ttl REMOVE hibernatedUntil, resumingSince',
          ConditionExpression: 'smId = :id AND socket = :old AND #out = :out AND attribute_not_exists(ending)',
          ExpressionAttributeNames: { '#out': 'out', '#ttl': TTL_ATTRIBUTE },
          ExpressionAttributeValues: {
            ':new': socket,
            ':h': acked,
            ':id': expected.smId,
            ':old': expected.socket,
            ':out': expected.out,
            ':ttl': nowSeconds() + BASE_TTL_SECONDS + MAX_TTL_MARGIN,
            ':c': ackedCount,
          },
        }),
      ),
    );
  }

  /**
   * The window of a hibernated session ended: marks it as ending (nothing more is numbered, a
   * resumption is refused) and answers with the final record. Undefined when it was resumed
   * meanwhile (another socket) or its window is still open.
   */
  async beginEnding(session: string, socket: string, now: number, owner?: string): Promise<SmRecord | undefined> {
    return this.markEnding(session, 'socket = :s AND hibernatedUntil <= :now', { ':s': socket, ':now': now }, owner);
  }

  /** Ends the session now, whatever its window (a new session took its resource), unless another socket carries it. */
  async beginEndingNow(session: string, socket: string, owner?: string): Promise<SmRecord | undefined> {
    return this.markEnding(session, 'socket = :s', { ':s': socket }, owner);
  }

  /** The session ends (any other way): marks it as ending and answers with the final record, if any. */
  finish(session: string, owner?: string): Promise<SmRecord | undefined> {
    return this.markEnding(session, 'attribute_exists(smId)', {}, owner);
  }

  /**
   * Marks the session as ending, for `owner` (a queue message id): undefined when the condition
   * fails or another owner ends it already. Two ways of ending one session can meet (a bind taking
   * its resource and the old socket's $disconnect; measured in a chaos run, each handed the same
   * stanzas over, under keys of its own, and the client got them twice); the first owns the
   * hand-over, and its runs again go on with it.
   */
  private async markEnding(session: string, condition: string, values: Record<string, unknown>, owner?: string): Promise<SmRecord | undefined> {
    try {
      const out = await this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: { pk: pk(session), sk: SM },
          UpdateExpression: owner ? 'SET ending = :t, endedBy = :by' : 'SET ending = :t',
          ConditionExpression: owner ? `(${condition}) AND (attribute_not_exists(endedBy) OR endedBy = :by)` : condition,
          ExpressionAttributeValues: { ...values, ':t': true, ...(owner ? { ':by': owner } : {}) },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return out.Attributes as SmRecord;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return undefined;
      throw err;
    }
  }

  /** The session ended: its record goes (logged stanzas expire on their own). */
  async remove(session: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: pk(session), sk: SM } }));
  }
}
