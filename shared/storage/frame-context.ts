/**
 * The context of one frame: a memo of user routes, and the writes still running.
 *
 * A per-frame memo of user routes (the one Query that returns a user's account item, sessions and
 * the other routing items under `sk = account…`).
 *
 * One stanza consults the same users' routes from several modules (blocking, carbons, archiving
 * preferences, delivery). Without a memo each asks DynamoDB again; with it, a chat message costs one
 * Query per user involved. The memo lives for one frame (one inbound stanza) through
 * AsyncLocalStorage, so nothing is cached across frames, and every write to a user's routing items
 * drops that user's entry, so a frame sees its own writes.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

interface Frame {
  routes: Map<string, Promise<unknown>>;
  /** Writes that may run alongside delivery but must finish before the frame is done. */
  tasks: Promise<unknown>[];
}

const frames = new AsyncLocalStorage<Frame>();

/**
 * Runs `fn` with a fresh memo, unless it already runs inside one (nested routing shares it). The
 * frame ends when `fn` and every task it started with frameTask() are done; a failed task fails the
 * frame (so the queue redelivers it).
 */
export function inFrame<T>(fn: () => Promise<T>): Promise<T> {
  if (frames.getStore()) return fn();
  const frame: Frame = { routes: new Map(), tasks: [] };
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
}
