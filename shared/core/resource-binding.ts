/**
 * Binding a resource to a stream (RFC 6120 §7), shared by the `<iq><bind/></iq>` of RFC 6120 and
 * XEP-0386 Bind 2 (bind2.ts): the older session of a conflicting resource is replaced, then this
 * one's session item is written, which makes it routable.
 */
import { StreamError } from '../errors.ts';
import { frameSlot } from '../storage/frame-context.ts';
import type { ClientSession } from './session.ts';
import { enableWindowMs } from './stream-management.ts';

export async function bindResource(session: ClientSession, resource: string): Promise<void> {
  const { server } = session;
  // RFC 6120 §7.7.2.2: on a conflicting resource the older session is replaced. A run again of a
  // bind that began replacing it finishes the replacement, though the old session's item is gone
  // by then (traced in the chaos test: left half-done, the old socket's $disconnect handed its
  // unacknowledged stanzas over a second time, and they arrived twice).
  const { sessions } = await server.store.getUserRoute(session.state.user!);
  const existing = sessions.find((s) => s.resource === resource && s.connectionId !== session.id);
  const replacing = frameSlot('bind-replaces');
  const replaced = existing?.connectionId ?? replacing?.value;
  if (replaced) {
    replacing?.set(replaced);
    await server.sessions.replaceOther(replaced, new StreamError('conflict', 'replaced by a new session with the same resource'));
  }
  // Bound now (not when the socket connected): re-routing after XEP-0198 tells newer sessions by it.
  const boundAt = Date.now();
  // Open to XEP-0198 for a while (SessionRecord.smOpenUntil; stream-management.ts, enableWindowMs).
  const smOpenUntil = server.config.streamManagement ? boundAt + enableWindowMs(server.config) : undefined;
  session.update({ stage: 'bound', resource, available: false, interested: false, priority: 0, directed: [], smOpenUntil });
  await server.store.putSession({ ...session.toRecord(), boundAt, ...(smOpenUntil ? { smOpenUntil } : {}) });
}
