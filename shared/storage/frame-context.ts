/**
 * The context of one frame (one inbound stanza, one SQS record): a memo of user routes, the writes
 * still running, and what makes a redelivered frame safe to run again.
 *
 * Routes: one stanza consults the same users' routes (the Query of `sk = account…`: account item,
 * sessions, block list, carbons, archive preferences) from several modules. The memo lives for one
 * frame through AsyncLocalStorage, so nothing is cached across frames, and every write to a user's
 * routing items drops that user's entry, so a frame sees its own writes.
 *
 * Redelivery (SQS is at-least-once; a batch can fail half-way): a frame that carries its queue
 * message id gets
 * - deterministic ids and time (`frameUnique`, `frameNow`): the archive ids, offline keys, stream
 *   ids and delay stamps of a second run are those of the first, so durable writes overwrite
 *   themselves instead of doubling and posts carry the same text;
 * - a journal: every successful post is recorded by key (connection + text + occurrence), and
 *   values that cannot be derived (frameValue); a frame that fails saves them with the connection
 *   (session-manager.ts), and the next run of the same frame skips those posts and reuses the values.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes } from 'node:crypto';
import type { ChannelBindings } from '../sasl/channel-binding.ts';

export interface FrameInput {
  /** The queue message id: the same on every delivery of this frame. */
  id?: string;
  /** When the gateway received the frame (epoch ms): the same on every delivery. */
  receivedAt?: number;
  /** The client's address (brute-force limits count failures per source). */
  sourceIp?: string;
  /** SASL channel binding data of the client's TLS connection (native clients only). */
  channelBindings?: ChannelBindings;
  /** What an earlier run of this frame recorded before it failed (its journal). */
  before?: FrameJournal;
  /**
   * Set when the frame runs on a connection state remembered from an earlier invocation while the
   * stored one is read alongside (session-manager.ts): every effect outside the process (a post, a
   * write, a queued message) waits for it, and it rejects when the remembered state was not current.
   */
  gate?: Promise<void>;
  /**
   * The client connection whose frame this is (none for events and jobs): its frames run one at a
   * time, so what this one posts to the connection lands before the next frame is handled.
   */
  connectionId?: string;
  /** Users' routes read by a run of this frame that was thrown away (StaleSpeculation): still good. */
  routes?: Map<string, Promise<unknown>>;
}

/** What a failed run of a frame leaves for the next run (saved with the connection). */
export interface FrameJournal {
  frame: string;
  /** Keys of the posts it made. */
  posted: string[];
  /** Values it chose that cannot be derived again (frameValue). */
  values?: Record<string, string>;
}

export interface Frame {
  readonly id?: string;
  readonly receivedAt?: number;
  readonly sourceIp?: string;
  readonly channelBindings?: ChannelBindings;
  readonly gate?: Promise<void>;
  readonly connectionId?: string;
  routes: Map<string, Promise<unknown>>;
  /** Writes that may run alongside delivery but must finish before the frame is done. */
  tasks: Promise<unknown>[];
  /** Keys of the posts this run made (in order). */
  readonly posted: string[];
  readonly postedBefore: Set<string>;
  readonly values: Record<string, string>;
  /** Occurrences per label or post, so the n-th id of a label is the same in every run. */
  readonly counters: Map<string, number>;
  /** Posts still running: a failed frame waits for them before it saves its journal. */
  readonly inFlight: Set<Promise<unknown>>;
}

const frames = new AsyncLocalStorage<Frame>();

export function newFrame(input: FrameInput = {}): Frame {
  const before = input.id !== undefined && input.before?.frame === input.id ? input.before : undefined;
  return {
    id: input.id,
    receivedAt: input.receivedAt,
    sourceIp: input.sourceIp,
    channelBindings: input.channelBindings,
    gate: input.gate,
    connectionId: input.connectionId,
    routes: new Map(input.routes),
    tasks: [],
    posted: [],
    postedBefore: new Set(before?.posted ?? []),
    values: { ...before?.values },
    counters: new Map(),
    inFlight: new Set(),
  };
}

/**
 * Waits until every post the frame started has settled. A step that fails while other posts of a
 * parallel fan-out are still running must not save a journal that misses them.
 */
export async function frameSettled(frame: Frame): Promise<void> {
  while (frame.inFlight.size > 0) await Promise.allSettled([...frame.inFlight]);
}

/** Runs a post of the current frame as one the frame waits for (see frameSettled). */
export function trackPost<T>(post: Promise<T>): Promise<T> {
  const frame = frames.getStore();
  if (!frame) return post;
  frame.inFlight.add(post);
  const done = () => frame.inFlight.delete(post);
  post.then(done, done);
  return post;
}

/** The journal to save when this run of the frame fails: everything done by it and by earlier runs. */
export function frameJournal(frame: Frame): FrameJournal | undefined {
  if (!frame.id || (frame.posted.length === 0 && Object.keys(frame.values).length === 0)) return undefined;
  return { frame: frame.id, posted: [...frame.postedBefore, ...frame.posted], values: frame.values };
}

/**
 * Runs `fn` in a fresh frame, unless it already runs inside one (nested routing shares it; `own`:
 * a frame of its own all the same, for a client frame processed while another runs). The
 * frame ends when `fn` and every task it started with frameTask() are done; a failed task fails the
 * frame (so the queue redelivers it).
 */
export function inFrame<T>(fn: () => Promise<T>, frame: Frame = newFrame(), options: { own?: boolean } = {}): Promise<T> {
  if (frames.getStore() && !options.own) return fn();
  return frames.run(frame, async () => {
    let result: T;
    try {
      result = await fn();
    } finally {
      // Tasks may add tasks; wait until none is left, whatever fn did.
      for (let done = 0; done < frame.tasks.length; ) {
        const batch = frame.tasks.slice(done);
        done += batch.length;
        const failed = (await Promise.allSettled(batch)).find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
    }
    return result;
  });
}

/**
 * Thrown by every effect of a frame that ran on a remembered connection state which turned out not
 * to be current: nothing left the process, and the frame runs again on the stored state.
 */
export class StaleSpeculation extends Error {
  /** What the thrown-away run read of users' routes: they do not depend on the connection's state. */
  routes?: Map<string, Promise<unknown>>;

  constructor(connectionId: string) {
    super(`connection ${connectionId}: the remembered state was not current`);
    this.name = 'StaleSpeculation';
  }
}

/**
 * Call before any effect outside the process (a post, a DynamoDB write, a queued message): waits,
 * in a frame that runs on a remembered state, until the stored state has confirmed it (see
 * FrameInput.gate), and throws StaleSpeculation when it did not. Reads need not wait.
 */
export async function beforeEffect(): Promise<void> {
  const gate = frames.getStore()?.gate;
  if (gate) await gate;
}

/** The frame being processed, if any. */
export function currentFrame(): Frame | undefined {
  return frames.getStore();
}

/**
 * Lets a write run alongside the rest of the frame (e.g. archiving while the message is posted)
 * instead of before it; outside a frame it is simply awaited by the caller's promise chain.
 */
export function frameTask(task: Promise<unknown>): Promise<void> {
  const frame = frames.getStore();
  if (!frame) return task.then(() => undefined);
  task.catch(() => {}); // reported when the frame ends
  frame.tasks.push(task);
  return Promise.resolve();
}

/** The memoized value for `bare`, computed by `load` at most once per frame. */
export function memoizedRoute<T>(bare: string, load: () => Promise<T>): Promise<T> {
  const memo = frames.getStore()?.routes;
  if (!memo) return load();
  let pending = memo.get(bare) as Promise<T> | undefined;
  if (!pending) {
    pending = load();
    memo.set(bare, pending);
    // A failed read is not remembered: a retry in the same frame asks again.
    pending.catch(() => memo.delete(bare));
  }
  return pending;
}

/** Call after writing any of a user's routing items (`sk` beginning with `account`). */
export function invalidateRoute(bare: string): void {
  frames.getStore()?.routes.delete(bare);
  frames.getStore()?.routes.delete(NO_BLOCK_LIST + bare);
}

const NO_BLOCK_LIST = 'no-block-list:';

/**
 * The frame read this user's account item and it says the user never blocked anyone (a batched
 * read for a presence broadcast): the blocking check needs no read of the block list.
 */
export function rememberNoBlockList(bare: string): void {
  frames.getStore()?.routes.set(NO_BLOCK_LIST + bare, Promise.resolve(true));
}

export function knownToBlockNobody(bare: string): boolean {
  return frames.getStore()?.routes.has(NO_BLOCK_LIST + bare) ?? false;
}

function nextOccurrence(frame: Frame, key: string): number {
  const n = frame.counters.get(key) ?? 0;
  frame.counters.set(key, n + 1);
  return n;
}

/**
 * An unpredictable id (base64url of `bytes` bytes): random outside a redeliverable frame; inside
 * one, derived from the frame id, the label and how many times the label was used in this frame,
 * so a second run of the frame gets the same ids in the same order.
 */
export function frameUnique(label: string, bytes = 6): string {
  const frame = frames.getStore();
  if (!frame?.id) return randomBytes(bytes).toString('base64url');
  const n = nextOccurrence(frame, `id:${label}`);
  return createHash('sha256').update(`${frame.id}\0${label}\0${n}`).digest().subarray(0, bytes).toString('base64url');
}

/**
 * A value chosen once per frame (`make` on the first run, the journaled value on a redelivery after
 * a failure), for what must be the same in every run but cannot be derived from the frame id, such
 * as an archive sequence that keeps messages of one millisecond in order.
 */
export function frameValue(label: string, make: () => string): string {
  const frame = frames.getStore();
  if (!frame?.id) return make();
  const key = `${label}#${nextOccurrence(frame, `value:${label}`)}`;
  return (frame.values[key] ??= make());
}

/**
 * A value the frame records once it has it (async, unlike frameValue): what an earlier run of the
 * frame recorded under the label's next occurrence, and a setter for this run. Undefined outside
 * a redeliverable frame.
 */
export function frameSlot(label: string): { value?: string; set(value: string): void } | undefined {
  const frame = frames.getStore();
  if (!frame?.id) return undefined;
  const key = `${label}#${nextOccurrence(frame, `value:${label}`)}`;
  return { value: frame.values[key], set: (value) => void (frame.values[key] = value) };
}

/** The frame's values (slots) whose label starts with `prefix`, as earlier runs and this one left them. */
export function frameValuesLike(prefix: string): Array<{ key: string; value: string }> {
  const frame = frames.getStore();
  if (!frame?.id) return [];
  return Object.entries(frame.values)
    .filter(([key]) => key.startsWith(prefix))
    .map(([key, value]) => ({ key, value }));
}

/**
 * Something this run leaves in the world that a run again of the frame must undo first if this
 * one fails (kept in the frame's journal): under `kind`, by `id`, with what undoing it needs.
 * `forgetUndo` when it was undone on the way.
 */
export function undoLater(kind: string, id: string, value: string): void {
  const frame = frames.getStore();
  if (frame?.id) frame.values[`${UNDO}${kind}:${id}`] = value;
}

export function forgetUndo(kind: string, id: string): void {
  const frame = frames.getStore();
  if (frame) delete frame.values[`${UNDO}${kind}:${id}`];
}

/** What earlier runs of the frame left to undo under `kind` (undoLater): `forgetUndo` each once undone. */
export function undosOfEarlierRuns(kind: string): Array<{ id: string; value: string }> {
  const frame = frames.getStore();
  const prefix = `${UNDO}${kind}:`;
  return Object.entries(frame?.values ?? {})
    .filter(([k]) => k.startsWith(prefix))
    .map(([k, value]) => ({ id: k.slice(prefix.length), value }));
}

const UNDO = 'undo:';

/** The address the frame came from, when the adapter knows it. */
export function frameSourceIp(): string | undefined {
  return frames.getStore()?.sourceIp;
}

/** The channel binding data of the connection the current frame came on (none for WebSocket clients). */
export function frameChannelBindings(): ChannelBindings | undefined {
  return frames.getStore()?.channelBindings;
}

/** The frame's arrival time (stable across redelivery), or now outside a frame. */
export function frameNow(): number {
  const frame = frames.getStore();
  if (frame?.receivedAt !== undefined) return frame.receivedAt;
  if (!frame?.id) return Date.now();
  // No arrival time from the queue (timer events, jobs): the first run's clock, kept in the
  // journal, so keys made from it are the same in every run (an offline item stored by a
  // hand-over that died was stored again under a new key, and delivered twice).
  return Number((frame.values[FIRST_RUN_NOW] ??= String(Date.now())));
}

const FIRST_RUN_NOW = 'now';

/** The `to` of a frame's top element (attribute values escape '>', so the tag ends at the first one). */
const ADDRESSEE = /^<[^>\s]+[^>]*\sto=(?:"([^"]*)"|'([^']*)')/;

/**
 * The journal key of a post about to be made, and whether an earlier run of this frame already
 * made it (then the caller skips it). Undefined outside a redeliverable frame.
 *
 * A stanza to a full JID is one delivery to that session whichever connection took it: a redelivery
 * after the recipient reconnected (or after a replaced connection's room entry went) must not post
 * again what an earlier connection received, so it is keyed by its text alone, once. Anything else
 * (stream-level frames, a message to a bare JID that several resources get) is keyed by connection
 * and by how many times the same text went there in this frame. A caller that knows what the post
 * is names it (`journalAs`): a resumption's resends, by stanza number.
 */
export function postKey(connectionId: string, text: string, journalAs?: string): { key: string; done: boolean } | undefined {
  const frame = frames.getStore();
  if (!frame?.id) return undefined;
  const digest = createHash('sha256').update(text).digest().subarray(0, 9).toString('base64url');
  if (journalAs !== undefined) {
    // Named by the caller (SendHint.journalAs); the digest stays in it for postedByEarlierRun.
    const key = `as:${journalAs}:${digest}:`;
    return { key, done: frame.postedBefore.has(key) };
  }
  const to = ADDRESSEE.exec(text);
  if ((to?.[1] ?? to?.[2])?.includes('/')) {
    const key = `to:${digest}:session`;
    return { key, done: frame.postedBefore.has(key) };
  }
  const base = `${connectionId}:${digest}`;
  const key = `${base}:${nextOccurrence(frame, `post:${base}`)}`;
  return { key, done: frame.postedBefore.has(key) };
}

/**
 * Whether an earlier run of this frame posted exactly this text to any connection: a redelivered
 * message whose recipient has gone since counts as delivered, not as one to store offline.
 */
export function postedByEarlierRun(text: string): boolean {
  const frame = frames.getStore();
  if (!frame?.id || frame.postedBefore.size === 0) return false;
  const digest = `:${createHash('sha256').update(text).digest().subarray(0, 9).toString('base64url')}:`;
  for (const key of frame.postedBefore) if (key.includes(digest)) return true;
  return false;
}

/** Whether an earlier run of this frame completed the effect `label` (see recordDone). */
export function doneByEarlierRun(label: string): boolean {
  return frames.getStore()?.values[`done:${label}`] !== undefined;
}

/**
 * Records that a durable effect of this frame is complete (e.g. a message stored offline), so a
 * redelivery does not do it again after someone else already consumed it.
 */
export function recordDone(label: string): void {
  const frame = frames.getStore();
  if (frame?.id) frame.values[`done:${label}`] = '1';
}

/** Records a successful post of the current frame. */
export function recordPost(key: string): void {
  frames.getStore()?.posted.push(key);
}
