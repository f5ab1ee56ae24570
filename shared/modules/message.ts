/**
 * RFC 6121 §8.5: delivery of messages to local users — full JIDs, bare JIDs by priority, the
 * rules per message type, and the hand-off to offline storage when no session can take it.
 */
import { StanzaError } from '../errors.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import { bareJidTargets } from '../core/bare-jid-targets.ts';
import { doneByEarlierRun, postedByEarlierRun } from '../storage/frame-context.ts';
import { keptByEarlierRun } from '../transport/sm-sender.ts';

async function onMessage(event: StanzaEvent): Promise<boolean> {
  const { server, stanza, from } = event;
  const to = event.to ?? from.toBare();
  const type = stanza.attrs.type ?? 'normal';
  const silent = type === 'error' || type === 'headline';
  if (!to.local) {
    if (!silent) await server.bounce(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  const route = await server.store.getUserRoute(to.bare);
  if (!route.exists) {
    if (!silent) await server.bounce(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  if (type !== 'error' && type !== 'groupchat' && (await server.runHooks('message/in', { ...event, to }))) return true;
  // An earlier run of this frame handed the message to offline storage: so does this one. The
  // stored copy may have reached the recipient since (a login flushed it); a live copy now would be
  // a second one.
  if (doneByEarlierRun(`offline:${to.bare}`) && (await server.runHooks('message/offline', { ...event, to }))) return true;
  // An earlier run numbered and kept it for a session with XEP-0198 that has gone since: its
  // hand-over (or resumption) has it. (One still there gets it from the run again, by its number.)
  const keptFor = await keptByEarlierRun(server.sm, stanza.toString());
  if (keptFor.length > 0 && !route.sessions.some((s) => keptFor.includes(s.connectionId))) return true;
  if (to.resource) {
    const session = route.sessions.find((s) => s.resource === to.resource);
    if (session && (await server.deliver(session, stanza))) return true;
    if (silent) return true;
    if (type === 'groupchat') {
      await server.bounce(stanza, new StanzaError('service-unavailable'));
      return true;
    }
    // chat and normal to an absent resource are treated as sent to the bare JID (RFC 6121 §8.5.3.2.1).
  }
  if (type === 'groupchat') {
    await server.bounce(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  const targets = type === 'headline' ? route.sessions.filter((s) => s.available && s.priority >= 0) : bareJidTargets(route.sessions);
  const delivered = await server.deliverToSessions(targets, stanza);
  // A redelivered frame whose first run posted the message has delivered it, wherever the
  // recipient's sessions are now. One whose first run kept it for a session with XEP-0198 that is
  // still there but no target now (unavailable) left it to that session: its resumption resends
  // it, its hand-over re-routes it (traced in a chaos run: stored offline here, then again by the
  // hand-over).
  if (delivered > 0 || silent || postedByEarlierRun(stanza.toString()) || keptFor.length > 0) return true;
  if (await server.runHooks('message/offline', { ...event, to })) return true;
  await server.bounce(stanza, new StanzaError('service-unavailable'));
  return true;
}

export const messageModule: XmppModule = {
  name: 'message',
  setup(reg) {
    reg.hook('message', onMessage);
  },
};
