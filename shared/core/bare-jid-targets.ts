/**
 * RFC 6121 §8.5.2.1.1: which sessions a message to a bare JID goes to. The message module routes by
 * it, carbons and offline delivery follow it, and stream management hands kept messages on by it.
 */
import type { SessionRecord } from './types.ts';

/** The sessions a message to a bare JID goes to: available, non-negative, highest priority. */
export function bareJidTargets(sessions: SessionRecord[]): SessionRecord[] {
  const eligible = sessions.filter((s) => s.available && s.priority >= 0);
  const top = Math.max(...eligible.map((s) => s.priority));
  return eligible.filter((s) => s.priority === top);
}
