/**
 * Whether a session may be enabling XEP-0198 right now, so that a router's copy of its item (read
 * before the enable) cannot be trusted to say it has none: a post to it then asks the numbering
 * (one conditional write, refused when there is no stream management) instead of going out
 * unnumbered, which the client would count after <enabled/> (docs/mobile.md).
 */
import type { SessionRecord } from './types.ts';

/**
 * How long after its initial presence a session may still enable it: clients enable right after
 * bind, and @xmpp/client right after its initial presence. A later enable waits out older copies
 * (stream-management.ts, enable).
 */
export const SM_LATE_ENABLE_MS = 10_000;

export function mayBeEnablingSm(session: SessionRecord, now = Date.now()): boolean {
  if (session.sm) return false;
  if (session.smOpen) return true;
  return session.availableAt !== undefined && now - session.availableAt < SM_LATE_ENABLE_MS;
}
