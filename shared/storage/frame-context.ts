/**
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

const frames = new AsyncLocalStorage<Map<string, Promise<unknown>>>();

/** Runs `fn` with a fresh memo, unless it already runs inside one (nested routing shares it). */
export function inFrame<T>(fn: () => Promise<T>): Promise<T> {
  return frames.getStore() ? fn() : frames.run(new Map(), fn);
}

/** The memoized value for `bare`, computed by `load` at most once per frame. */
export function memoizedRoute<T>(bare: string, load: () => Promise<T>): Promise<T> {
  const memo = frames.getStore();
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
  frames.getStore()?.delete(bare);
}
