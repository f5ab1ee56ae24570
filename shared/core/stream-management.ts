/**
 * XEP-0198 stream management for client sessions: acknowledgements both ways, and resumption of a
 * session on a new connection after its socket died (docs/mobile.md).
 *
 * The inbound count ('h' of the stanzas the client sent) is part of the connection state, committed
 * with each frame, so it is exact under redelivery. The outbound side is shared by every handler
 * that posts to the session (storage/sm-store.ts, transport/sm-sender.ts). When a resumable session's
 * socket closes, the session hibernates: it stays available and in its rooms, posts to it are kept,
 * and a timer ends it when the window closes unless a new connection resumed it first.
 *
 * Long because: resumption (take-over, commit, resend and move under the post lease, a run again
 * of it) and the window's end are one protocol over one record; split next, when the code is
 * restructured (issue "A codebase the next engineer can change safely").
 */
import { StanzaError, StreamError } from '../errors.ts';
import { parseJid } from '../jid.ts';
import { log, trace } from '../log.ts';
import { bareJidTargets } from './bare-jid-targets.ts';
import { currentFrame, frameSlot, frameUnique, frameValue, postedByEarlierRun } from '../storage/frame-context.ts';
import { DRAIN_WAIT_MS, resumingNow, type LoggedStanza, type SmRecord } from '../storage/sm-store.ts';
import { parseStored } from '../xml/stored.ts';
import { Element, NS, x } from '../xml/element.ts';
import type { XmppServer } from './server.ts';
import { ClientSession } from './session.ts';
import { drawWithLease, waitForUnnumbered } from '../transport/sm-sender.ts';
import type { ServerConfig } from '../config.ts';
import type { ConnectionState } from './types.ts';

const CARBONS = NS.CARBONS;

/** Offered after authentication (XEP-0198 §3); resumption only where a timer can end a window. */
export function streamManagementFeature(): Element {
  return x('sm', { xmlns: NS.SM });
}

function resumeWindow(server: XmppServer, requested: string | undefined): number {
  const limit = server.timers ? server.config.smResumeSeconds : 0;
  const wanted = Number(requested);
  return Number.isInteger(wanted) && wanted > 0 ? Math.min(wanted, limit) : limit;
}

function failedElement(condition: string, text: string, h?: number): Element {
  return x('failed', { xmlns: NS.SM, h: h === undefined ? undefined : String(h) }, x(condition, { xmlns: NS.STANZA_ERRORS }), x('text', { xmlns: NS.STANZA_ERRORS }, text));
}

async function failed(session: ClientSession, condition: string, text: string, h?: number): Promise<void> {
  await session.send(failedElement(condition, text, h));
}

/** An SM element (<enable/>, <r/>, <a/>, <resume/>) from the client. */
export async function streamManagementElement(session: ClientSession, el: Element): Promise<void> {
  const { stage } = session.state;
  if (!session.server.config.streamManagement) throw new StreamError('unsupported-stanza-type', 'stream management is not offered');
  if (stage !== 'bound' && stage !== 'auth-open') throw new StreamError('not-authorized', 'stream management needs an authenticated stream');
  switch (el.name) {
    case 'enable':
      if (stage !== 'bound') return failed(session, 'unexpected-request', 'bind a resource first');
      return answer(session, await enableStreamManagement(session, el));
    case 'resume':
      // A run again of the frame whose resumption committed this connection half-way (see resume).
      if (isResumptionRunAgain(session)) return answer(session, await resumeAgain(session, el));
      if (stage !== 'auth-open') return failed(session, 'unexpected-request', 'a session is already bound to this stream');
      return answer(session, await resumeSession(session, el));
    case 'r':
      if (!session.state.sm) return failed(session, 'unexpected-request', 'stream management is not enabled');
      await session.send(x('a', { xmlns: NS.SM, h: String(session.state.sm.inbound) }));
      return;
    case 'a':
      if (!session.state.sm) return;
      return acknowledged(session, el);
    default:
      throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stream management element`);
  }
}

/**
 * How much longer than the enable itself routers treat a session as possibly enabling XEP-0198:
 * an enable accepted at the end of its window still commits well before any router takes the
 * window as closed (the enable's two writes after its check, which take milliseconds; clock skew
 * between handlers). 5 s, less for a shorter window (tests).
 */
function enableMarginMs(config: Pick<ServerConfig, 'smEnableSeconds'>): number {
  return Math.min(5_000, config.smEnableSeconds * 1000);
}

/** How long after bind routers treat a session as possibly enabling XEP-0198 (SessionRecord.smOpenUntil). */
export function enableWindowMs(config: Pick<ServerConfig, 'smEnableSeconds'>): number {
  return config.smEnableSeconds * 1000 + enableMarginMs(config);
}

/**
 * What an `<enable/>` or a `<resume/>` answers (`<enabled/>`, `<resumed/>`, `<failed/>`; none when
 * the connection let go), and what must follow the answer's post: numbered posts wait for it (the
 * lease of an enable), a resumption resends after it. The caller posts the answer on its own or
 * inside XEP-0388's `<success/>` (sasl2.ts).
 */
export interface SmAnswer {
  answer?: Element;
  afterAnswer?: () => Promise<void>;
}

/** Posts the answer, then what follows it. */
export async function answer(session: ClientSession, result: SmAnswer): Promise<void> {
  if (result.answer) await session.send(result.answer);
  await result.afterAnswer?.();
}

/**
 * Enables XEP-0198 on a bound session. The answer is the caller's to post (on its own, or inside
 * XEP-0386's `<bound/>`); posts numbered for the session wait until `afterAnswer`, so none reaches
 * the client before it knows the count has started.
 */
export async function enableStreamManagement(session: ClientSession, el: Element): Promise<SmAnswer> {
  const { server, state } = session;
  const refused = (text: string): SmAnswer => ({ answer: failedElement('unexpected-request', text) });
  if (state.sm) return refused('stream management is already enabled');
  const resumable = el.attrs.resume === 'true' || el.attrs.resume === '1';
  const max = resumable ? resumeWindow(server, el.attrs.max) : 0;
  // The session id travels in the SM id (a resumption finds the session without an index); the
  // random part makes it unguessable. Derived from the frame id, so a redelivery makes the same one.
  const smId = `${Buffer.from(session.id).toString('base64url')}.${frameUnique('sm-id', 16)}`;
  // After its window routers post to the session as its item says, unnumbered, without asking: a
  // post decided so could reach the socket after <enabled/>, and the client would count a stanza
  // the server did not number. So later than that it is refused (a run again of an enable that
  // was accepted finds its record).
  const open = state.smOpenUntil !== undefined && Date.now() < state.smOpenUntil - enableMarginMs(server.config);
  if (!open && (await server.sm.get(session.id))?.smId !== smId) {
    return refused(`stream management can be enabled within ${server.config.smEnableSeconds} seconds of binding a resource`);
  }
  await server.sm.create(session.id, { smId, bare: session.bare, resource: state.resource!, socket: session.socket, max });
  // Routers read the session item: from now on they number their posts to this session. Those that
  // read it before ask the numbering (within the window: sessionHint) and find the record, or were
  // told there was none and post unnumbered: those are recorded on the same item, and waited for.
  if (!(await server.store.updateSession(session.bare, state.resource!, session.id, { sm: true, smOpenUntil: null }))) {
    // A bind of the same resource took the session over meanwhile, and its hand-over may have come
    // before this record: what a router numbered into it since goes where undeliverable stanzas go.
    await handOverUnacknowledged(server, session.id);
    return refused('the session was replaced by a new one with the same resource');
  }
  await waitForUnnumbered(server.sm, session.id);
  session.update({ sm: { id: smId, inbound: 0, max }, smOpenUntil: undefined });
  return {
    answer: x('enabled', { xmlns: NS.SM, id: max ? smId : undefined, resume: max ? 'true' : undefined, max: max ? String(max) : undefined }),
    // The lease the record was created with (sm-store.ts, create): numbered posts may go now.
    afterAnswer: () => server.sm.release(session.id, 0),
  };
}


function sessionOfSmId(smId: string): string | undefined {
  const [encoded, secret] = smId.split('.');
  if (!encoded || !secret) return undefined;
  return Buffer.from(encoded, 'base64url').toString('utf8') || undefined;
}

async function acknowledged(session: ClientSession, el: Element): Promise<void> {
  const h = Number(el.attrs.h);
  if (!/^\d+$/.test(el.attrs.h ?? '')) throw new StreamError('invalid-xml', "<a/> needs a count in 'h'");
  // More than were logged: a post delivered twice (an SDK retry of one that had arrived) is counted
  // twice by the client. XEP-0198 would end the stream; the double is the transport's, not the
  // client's, so the count is taken as everything and the difference absorbed (sm-store.ts).
  trace('sm: acknowledged', undefined, { session: session.id, socket: session.socket, h });
  if ((await session.server.sm.ack(session.id, h)) === 'ahead') log.warn('stream management: the client counts more stanzas than were sent', { session: session.id, h });
}

/** Counts a stanza from the client (called for each one the session handles). */
export function countInbound(session: ClientSession): void {
  const { sm } = session.state;
  if (sm) session.update({ sm: { ...sm, inbound: sm.inbound + 1 } });
}

// --- resumption ---------------------------------------------------------------------------------

/** Whether this frame is a run again of the one whose resumption committed this connection half-way (see resumeSession). */
export function isResumptionRunAgain(session: ClientSession): boolean {
  const { state } = session;
  return state.stage === 'bound' && state.resumingFrame !== undefined && state.resumingFrame === currentFrame()?.id;
}

/** Resumes the session of `<resume/>` (XEP-0198 §5) on this authenticated connection. */
export async function resumeSession(session: ClientSession, el: Element): Promise<SmAnswer> {
  const { server } = session;
  const previd = el.attrs.previd ?? '';
  if (!/^\d+$/.test(el.attrs.h ?? '')) return { answer: failedElement('bad-request', "<resume/> needs a count in 'h'") };
  const h = Number(el.attrs.h);
  // A refusal is final: a run again of this frame (it failed after posting <failed/>) refuses
  // again, whatever it would find now. Traced in a chaos run: the first run refused (the old
  // connection had not drained), died after the post, and its run again, the old connection
  // drained by then, resumed the session the client had given up: it resent nine stanzas, which
  // came once more from the session's hand-over after the client's fresh login.
  const refusal = frameSlot('sm-resume-refused');
  const refuse = (text: string): SmAnswer => {
    refusal?.set(text);
    return { answer: failedElement('item-not-found', text) };
  };
  if (refusal?.value) return refuse(refusal.value);
  const sessionId = sessionOfSmId(previd);
  const record = sessionId ? await server.sm.get(sessionId) : undefined;
  const open =
    record &&
    record.smId === previd &&
    record.bare === session.bare &&
    record.max > 0 &&
    !record.ending &&
    (record.hibernatedUntil === undefined || record.hibernatedUntil >= Date.now());
  if (!sessionId || !record || !open) {
    log.debug('stream management: resumption refused', { connectionId: session.socket, previd, reason: !record ? 'no record' : record.ending ? 'ending' : 'not open' });
    return refuse('no session to resume: bind a resource');
  }
  // Her count is an acknowledgement whatever comes of this resumption: recorded before anything
  // else, so that a hand-over re-routes only what she did not get. (Traced in a chaos run: a
  // resumption died between <resumed/> and the move that records it; her client bound anew, and
  // the hand-over stored offline three messages she had counted.)
  await server.sm.ack(sessionId, h);

  // The connection that carried the session (an earlier run of this frame may have moved it here).
  const previous = frameValue('sm-resume-from', () => record.socket);
  // An earlier run of this frame began to take the session over, and meanwhile another connection
  // of the client resumed it: that one has it now.
  if (record.socket !== previous && record.socket !== session.socket) {
    log.debug('stream management: resumption refused', { connectionId: session.socket, previd, reason: 'resumed elsewhere' });
    return refuse('the session was resumed on another connection');
  }
  if (previous !== session.socket && !(await drain(server, sessionId, previous))) {
    log.info('stream management: resumption refused: the previous connection did not drain', { connectionId: session.socket, previd, previous });
    return refuse('the previous connection is still busy: bind a resource');
  }
  const from = previous === session.socket ? undefined : await takeOverFrom(server, previous, session.bare);
  if (!from?.sm) {
    log.debug('stream management: resumption refused', { connectionId: session.socket, previd, previous, reason: 'previous connection gone' });
    return refuse('no session to resume: bind a resource');
  }

  session.update({
    stage: 'bound',
    resource: from.resource,
    available: from.available,
    interested: from.interested,
    priority: from.priority,
    directed: from.directed,
    session: sessionId,
    sm: { id: previd, inbound: from.sm.inbound, max: record.max },
    resumingFrame: currentFrame()?.id,
    resumingFrom: previous,
  });
  // This connection carries the session from here on, committed before the session moves to it:
  // a resumption that takes it over meanwhile (its client gave up on this one) finds a connection
  // with the session, and its $disconnect hibernates the session rather than dropping it. A commit
  // refused (taken over already) stops this one before the move; the run again is dropped.
  // (Measured: a move that came after the take-over left the session on a dead socket, no window
  // running, and what was posted to it reached nobody: 6 lost in a chaos run.)
  if (!(await session.commitNow())) throw new Error(`connection ${session.socket}: taken over while resuming`);
  return {
    answer: x('resumed', { xmlns: NS.SM, previd, h: String(from.sm.inbound) }),
    afterAnswer: async () => {
      // Read again: the drain may have hibernated the session meanwhile.
      const current = (await server.sm.get(sessionId)) ?? record;
      await resendUnacknowledged(session, current, await server.sm.locate(sessionId, current, h));
      await server.store.refreshSession(session.bare, from.resource!, sessionId);
    },
  };
}

/**
 * Another connection resumed the session while this one was resuming it: this one lets go of it
 * (its $disconnect then only deletes its item; ending the session here would end it there) and
 * closes, and its client resumes again or binds anew.
 */
async function letGo(session: ClientSession, holder: string | undefined): Promise<void> {
  log.debug('stream management: resumed elsewhere meanwhile; this connection lets go', { connectionId: session.socket, holder });
  session.update({ stage: 'resumed' });
  await session.server.sender.close(session.socket);
}

/**
 * The frame of a resumption runs again after it committed this connection as the session's: the
 * `<resumed/>` (journaled) and the resends go on from where they were.
 */
export async function resumeAgain(session: ClientSession, el: Element): Promise<SmAnswer> {
  const { server, state } = session;
  const sessionId = state.session!;
  const record = await server.sm.get(sessionId);
  if (!record || record.smId !== el.attrs.previd || record.ending || (record.socket !== session.socket && record.socket !== state.resumingFrom)) {
    await letGo(session, record?.socket);
    return {};
  }
  return {
    answer: x('resumed', { xmlns: NS.SM, previd: record.smId, h: String(state.sm!.inbound) }),
    afterAnswer: async () => {
      await resendUnacknowledged(session, record, await server.sm.locate(sessionId, record, Number(el.attrs.h)));
      await server.store.refreshSession(session.bare, state.resource!, sessionId);
    },
  };
}

/**
 * A client that lost its network usually resumes before the server noticed: its previous connection
 * is still open here and may have frames queued or in flight. Taking the session over at once
 * would drop those frames (the client sends again what `<resumed h/>` does not count), and a frame
 * that had routed its stanza but not committed would then be routed twice. So the previous socket
 * is closed first; its `$disconnect` comes after its last frame (one FIFO group), and hibernates
 * the session. Once it has, every frame of it was handled and counted. Waits at most DRAIN_WAIT_MS
 * and says whether it drained. When it did not (a post that hangs, a frame in redelivery), a
 * take-over would race the frame that starts next: it reads the connection as bound, routes its
 * stanza, and its commit fails, so the stanza is routed but not counted and the client sends it
 * again (traced: a chaos run's one double, docs/mobile.md). The resumption is refused instead: the
 * client binds anew, the old connection's frames are handled when they come, once.
 */
async function drain(server: XmppServer, sessionId: string, socket: string): Promise<boolean> {
  const state = await server.store.getConnection(socket);
  if (state?.stage !== 'bound') return true;
  await server.sm.markResuming(sessionId);
  await server.sender.close(socket);
  for (let waited = 0; waited < DRAIN_WAIT_MS; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
    if ((await server.store.getConnection(socket))?.stage !== 'bound') return true;
  }
  return false;
}

/**
 * Stops the connection that carried the session: marked 'resumed' (its queued frames are dropped:
 * the client sends again what the new connection's 'h' does not count) with a version bump, so a
 * frame of it committing at this moment fails; then its final state. Its socket is closed in case
 * it is still open (a client that lost the network resumes before the server notices).
 */
async function takeOverFrom(server: XmppServer, socket: string, bare: string): Promise<ConnectionState | undefined> {
  if (!(await server.store.markConnection(socket, 'resumed'))) {
    log.debug('stream management: previous connection has no item', { socket });
    return undefined;
  }
  const state = await server.store.getConnection(socket);
  if (!state?.sm || state.user !== bare) {
    log.debug('stream management: previous connection does not carry the session', { socket, stage: state?.stage, sm: Boolean(state?.sm), user: state?.user });
    return undefined;
  }
  await server.sender.close(socket);
  return state;
}

/**
 * Resends what the client has not acknowledged, then moves the session to this socket. Other
 * handlers may be posting to the session meanwhile (to the old socket, each numbered and logged
 * first): the move succeeds only if nothing was numbered since the last look, so every stanza up to
 * the move was resent here and every later one is posted here by its handler, in order.
 */
async function resendUnacknowledged(session: ClientSession, record: SmRecord, { acked, ackedCount }: { acked: number; ackedCount: number }): Promise<void> {
  const { server } = session;
  const sessionId = session.id;
  if (record.socket === session.socket) {
    // Moved by an earlier run of this frame: resend what it had to (its posts are journaled).
    const movedAt = Number(frameValue('sm-moved-at', () => String(acked)));
    await resendOnce(server, sessionId, session.socket, await loggedStanzas(server, sessionId, acked + 1, movedAt));
    return;
  }
  // The post lease, under a number of this frame's own (negative: no stanza's), while the log is
  // resent and the session moved: nothing is numbered meanwhile, so the move's condition (nothing
  // numbered since the last look) holds at the first attempt. Without it a busy session, posted to
  // by several handlers, kept the move failing for seconds while the client waited (chaos test).
  const lease = -1 - Buffer.from(frameUnique('sm-resume-lease', 4), 'base64url').readUInt32BE(0);
  const leased = await drawWithLease(server.sm, sessionId, lease);
  if (!leased) throw new StreamError('undefined-condition', 'the session ended while it was being resumed');
  try {
    // Still on the connection this resumption took it from, or another resumption has it now.
    const from = session.state.resumingFrom ?? record.socket;
    if (leased.socket !== from) return letGo(session, leased.socket);
    let expected = leased;
    let next = acked + 1;
    for (let attempt = 0; ; attempt++) {
      if (attempt === 20) throw new Error(`session ${sessionId}: still busy after 20 attempts to resume it`);
      await resendOnce(server, sessionId, session.socket, await loggedStanzas(server, sessionId, next, expected.out));
      next = Math.max(next, expected.out + 1);
      if (await server.sm.moveTo(sessionId, expected, session.socket, acked, ackedCount)) {
        frameValue('sm-moved-at', () => String(expected.out));
        return;
      }
      // Only if the lease ran out while resending (a poster took it over, and cut the socket).
      const now = await server.sm.get(sessionId);
      if (!now || now.smId !== record.smId || now.ending) throw new StreamError('undefined-condition', 'the session ended while it was being resumed');
      if (now.socket !== from) return letGo(session, now.socket);
      expected = now;
    }
  } finally {
    await server.sm.release(sessionId, lease);
  }
}

/**
 * Resends logged stanzas to the resuming socket, each at most once, as numbered posts go
 * (sm-sender.ts, postOnce): a resend retried after a timeout may arrive twice, and the client would
 * count one stanza more than it was sent, so that a later acknowledgement covers one it never got.
 * When a resend's outcome is unknown the socket is cut instead and the rest are not sent: the
 * session moves on to it all the same and hibernates when its $disconnect comes, and the client
 * resumes again with its own count.
 */
async function resendOnce(server: XmppServer, sessionId: string, socket: string, stanzas: LoggedStanza[]): Promise<void> {
  for (const s of stanzas) {
    trace('sm: resent', s.xml, { session: sessionId, socket, seq: s.seq });
    try {
      // Journaled by number: two logged stanzas may be the same text (traced in a chaos run: a
      // run again of a resumption skipped a contact's second unavailable presence as posted, the
      // client's count fell one behind, and a later resumption resent a message it had).
      const hint = { once: true, journalAs: `sm-resend:${sessionId}:${s.seq}` };
      if (!(await server.socketSender.send(socket, s.xml, hint))) return; // gone: the next resumption resends
    } catch (err) {
      log.warn('stream management: a resent stanza may or may not have arrived: the connection is cut for another resumption', { session: sessionId, socket, seq: s.seq, error: String(err) });
      await server.socketSender.close(socket).catch(() => {});
      return;
    }
  }
}

/**
 * The logged stanzas first..last. A handler that drew a number a moment ago may not have written
 * its stanza yet: wait briefly for the missing ones, then go on without them (logged).
 */
async function loggedStanzas(server: XmppServer, sessionId: string, first: number, last: number): Promise<LoggedStanza[]> {
  if (last < first) return [];
  let found: LoggedStanza[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    found = await server.sm.logged(sessionId, first, last);
    if (found.length === last - first + 1) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  log.warn('stream management: stanzas numbered but never logged', { sessionId, first, last, found: found.length });
  return found;
}

// --- hibernation and the end of the window ------------------------------------------------------

/**
 * The socket of a resumable session closed without a stream close: the session hibernates (still
 * available, still in its rooms, posts kept) and a timer ends it when the window closes. Resolves
 * false when it cannot (not resumable, no timers, or no longer this socket's session).
 */
export async function hibernate(server: XmppServer, state: ConnectionState): Promise<boolean> {
  const sm = state.sm;
  // 'resumed': taken over by a resumption that has not moved the session (session-manager.ts, handleDisconnect).
  if ((state.stage !== 'bound' && state.stage !== 'resumed') || !sm || sm.max <= 0 || !server.timers) return false;
  const sessionId = state.session ?? state.id;
  if (!(await server.sm.hibernate(sessionId, state.id, Date.now() + sm.max * 1000))) return false;
  await server.timers.schedule({ type: 'sm-expire', session: sessionId, socket: state.id }, sm.max);
  const hibernated: ConnectionState = { ...state, stage: 'hibernated', version: state.version + 1 };
  if (!(await server.store.putConnection(hibernated, state.version))) throw new Error(`connection ${state.id}: stale state while hibernating`);
  // What the client never acknowledged may never have reached it (a socket dies silently before
  // its close is noticed); posts from now on see the hibernation themselves (sm-sender.ts).
  const record = await server.sm.get(sessionId);
  // Not when the hibernation is a resumption draining this connection: the client is awake.
  if (record && !resumingNow(record) && record.out > record.acked) {
    const unacked = await server.sm.logged(sessionId, record.acked + 1, record.out);
    await server.runHibernatedMessageHooks(record.bare, record.resource, unacked.map((s) => s.xml));
  }
  return true;
}

/**
 * Ends a hibernated session whose window closed (`force`: now, because a new session took its
 * resource): it leaves like a session that disconnected (contacts see it go, rooms lose it), then
 * what the client never acknowledged is handled as undeliverable to it (XEP-0198 §4, RFC 6121
 * §8.5.3.2.1): messages go to the user's other sessions or offline storage, requests are answered
 * with an error, the rest is dropped. A window that is not over yet is waited for again.
 */
export async function endHibernated(server: XmppServer, sessionId: string, socket: string, force = false): Promise<void> {
  let record = await server.sm.get(sessionId);
  if (!record) {
    // Ended: by an earlier run of this event that died before its last step, or another way.
    // Finish what may be left (leaving is journaled per event: contacts are told once).
    const state = await server.store.getConnection(socket);
    if (state?.stage === 'hibernated') await server.sessions.leave(new ClientSession(server, structuredClone(state)));
    // 'resumed': the session moved on and ended there; nothing of it is left here but the item.
    if (state?.stage === 'hibernated' || state?.stage === 'resumed') await server.store.deleteConnection(socket);
    return;
  }
  if (record.socket !== socket) {
    // Resumed on another connection: this one's item is all that is left of it here.
    const stage = (await server.store.getConnection(socket))?.stage;
    if (stage === 'hibernated' || stage === 'resumed') await server.store.deleteConnection(socket);
    return;
  }
  if (!record.ending) {
    if (record.hibernatedUntil === undefined && !force) return;
    const left = (record.hibernatedUntil ?? 0) - Date.now();
    if (!force && left > 0) {
      await server.timers?.schedule({ type: 'sm-expire', session: sessionId, socket }, Math.max(1, left / 1000));
      return;
    }
    record = force ? await server.sm.beginEndingNow(sessionId, socket, handOverOwner()) : await server.sm.beginEnding(sessionId, socket, Date.now(), handOverOwner());
    if (!record) return;
  } else if (!ownsHandOver(record)) {
    return; // another frame or event is ending it, and hands over what it kept
  }
  const state = await server.store.getConnection(socket);
  if (state && (state.stage === 'hibernated' || state.stage === 'bound' || state.stage === 'resumed')) {
    await server.sessions.leave(new ClientSession(server, { ...structuredClone(state), stage: state.stage === 'resumed' ? 'hibernated' : state.stage }));
  }
  await handOverUnacknowledged(server, sessionId, record);
  await server.store.deleteConnection(socket);
}

/**
 * A session with stream management ends without a resumption (its window closed, a new session
 * took its resource, the stream closed or failed): nothing more is numbered for it, and what the
 * client never acknowledged is handled as undeliverable to it, after it left (so it is not a
 * target itself). `record` is the final one when the caller already marked the session as ending.
 */
export async function handOverUnacknowledged(server: XmppServer, sessionId: string, record?: SmRecord): Promise<void> {
  const final = record ?? (await server.sm.finish(sessionId, handOverOwner()));
  // None: ended and removed already, or another frame or event is handing it over.
  if (!final) return;
  trace('sm: handing over what was not acknowledged', undefined, { session: sessionId, acked: final.acked, out: final.out });
  for (const s of await loggedStanzas(server, sessionId, final.acked + 1, final.out)) await reroute(server, final, s);
  await server.sm.remove(sessionId);
}

/**
 * A run again of the frame that began ending the session (it owns the hand-over) finds the session
 * where the first run left it, or its connection gone meanwhile (the old socket's $disconnect):
 * the hand-over goes on from the record. Anything else does nothing.
 */
export async function continueOwnHandOver(server: XmppServer, sessionId: string): Promise<void> {
  const record = await server.sm.get(sessionId);
  if (record?.ending && record.endedBy !== undefined && ownsHandOver(record)) await handOverUnacknowledged(server, sessionId, record);
}

/** Who ends a session: the queue message id of the frame, event or job running (the same on each run of it). */
function handOverOwner(): string | undefined {
  return currentFrame()?.id;
}

function ownsHandOver(record: SmRecord): boolean {
  return record.endedBy === undefined || record.endedBy === handOverOwner();
}

async function reroute(server: XmppServer, record: SmRecord, logged: LoggedStanza): Promise<void> {
  const stanza = parseStored(logged.xml, 'unacknowledged stanza', { bare: record.bare });
  trace('sm: re-routing', logged.xml, { from: `${record.bare}/${record.resource}`, seq: logged.seq });
  if (!stanza?.attrs.to || !stanza.attrs.from) return;
  const type = stanza.attrs.type;
  if (stanza.name === 'iq') {
    if (type === 'get' || type === 'set') await server.bounce(stanza, new StanzaError('service-unavailable'));
    return;
  }
  if (stanza.name !== 'message' || (type !== undefined && type !== 'chat' && type !== 'normal')) return;
  if (stanza.getChild('sent', CARBONS) || stanza.getChild('received', CARBONS)) return; // a copy: the original has its own fate
  const to = parseJid(stanza.attrs.to);
  const sessions = (await server.store.getUserRoute(record.bare)).sessions;
  // Where an earlier run of this frame sent it, it goes again: a hand-over that died half-way
  // and ran again after the user logged in had posted live what its first run had stored
  // offline, and her login had flushed (a chaos run: 20 doubles for one user).
  const slot = frameSlot(`sm-reroute:${record.smId}:${logged.seq}`);
  let way = slot?.value;
  if (way === undefined) {
    let targets = bareJidTargets(sessions);
    if (!to.resource && targets.length > 0) {
      // A message to the bare JID went to the other sessions of the same priority as well, those
      // that were available then: a session available only since (the user logged in again while
      // this one hibernated, or its initial presence came later) never saw it. Offline storage is
      // only for when no session is left. (By bind time, a session bound before the message but
      // available after it was skipped here, and the message dropped: the chaos test lost 3 of 500.)
      targets = targets.filter((s) => logged.at === undefined || s.availableAt === undefined || s.availableAt > logged.at);
      trace('sm: re-routed to the sessions bound since', logged.xml, { to: targets.map((t) => t.connectionId) });
      if (targets.length === 0) return slot?.set(NOWHERE);
    }
    way = targets.length > 0 ? targets.map((t) => t.connectionId).join(' ') : OFFLINE_WAY;
    slot?.set(way);
  }
  if (way === NOWHERE) return;
  if (way !== OFFLINE_WAY) {
    const chosen = new Set(way.split(' '));
    if ((await server.deliverToSessions(sessions.filter((s) => chosen.has(s.connectionId)), stanza)) > 0) return;
    if (postedByEarlierRun(stanza.toString())) return;
    slot?.set(OFFLINE_WAY);
  }
  await server.runHooks('message/offline', { server, stanza, from: parseJid(stanza.attrs.from), to: to.toBare(), order: logged.seq, storedAs: `sm-offline:${record.smId}:${logged.seq}` });
}

/** The ways of a re-routed stanza an earlier run may have recorded (besides the connections it chose). */
const OFFLINE_WAY = 'offline';
const NOWHERE = 'nowhere';
