/**
 * The sender every post of the core goes through: it records each successful post in the frame's
 * journal and skips the posts an earlier run of the same frame already made (frame-context.ts),
 * so a frame redelivered after a failure half-way delivers nothing twice. With fault injection on
 * (tests only), an invocation may crash right after a post took effect.
 */
import { maybeCrash, type FaultSettings } from '../faults.ts';
import { beforeEffect, postKey, recordPost, trackPost } from '../storage/frame-context.ts';
import type { ConnectionSender } from './connections.ts';
import { trace } from '../log.ts';

export function journaledSender(inner: ConnectionSender, faults?: FaultSettings): ConnectionSender {
  return {
    async send(connectionId, frame, hint) {
      await beforeEffect();
      const journal = postKey(connectionId, frame, hint?.journalAs);
      if (journal?.done) {
        trace('post skipped: made by an earlier run of the frame', frame, { to: connectionId });
        return true;
      }
      const ok = await trackPost(
        inner.send(connectionId, frame, hint).then((posted) => {
          if (posted && journal) recordPost(journal.key);
          return posted;
        }),
      );
      trace('post', frame, { to: connectionId, ok, ...(hint?.sm !== undefined ? { sm: hint.sm } : {}) });
      maybeCrash(faults, 'a post');
      return ok;
    },
    close: async (connectionId) => {
      await beforeEffect();
      return inner.close(connectionId);
    },
  };
}
