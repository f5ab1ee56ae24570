/** Bounded concurrency for fan-outs (posts, hooks) inside a frame. */

/**
 * Runs `fn` over items with at most `limit` in flight (fan-out must not hammer @connections).
 * One failure does not stop the rest, and the first error is thrown only when every item is done:
 * a frame that fails here saves its journal after the last post, so its redelivery repeats none.
 */
export async function forEachBounded<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { error: unknown } | undefined;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (error) {
        failed ??= { error };
      }
    }
  });
  await Promise.all(workers);
  if (failed) throw failed.error;
}
