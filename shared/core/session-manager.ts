/**
 * The one owner of connection and session state. Many handler instances process frames at once,
 * SQS delivers each at least once and hands a connection's next frame to any instance, so:
 *
 * - state is read strongly consistent at the start of each invocation and copied; the caller may
 *   keep the copy this returns for the next frame of the same batch (one instance, in order) and
 *   must drop it on any error.
 * - across invocations, an instance remembers the state each connection's last frame here ended
 *   with, but never trusts it: the next frame it gets for that connection runs on it while the
 *   stored state is read alongside, and lets nothing out (a post, a write, a queued message) until
 *   that read shows the same version; if another instance moved the connection on meanwhile, the
 *   run is thrown away and the frame runs on the stored state. What this saves is time, not reads:
 *   the frame's own first reads overlap the state's (docs/performance.md).
 * - a frame's changes are committed with one conditional write on the version it started from;
 *   a lost race fails the frame and the queue redelivers it against the newer state.
 * - a committed frame records its queue message id: its redelivery is skipped.
 * - a frame that fails saves the keys of the posts it made (frame-context.ts) with the connection;
 *   its redelivery skips them, so nobody receives a stanza twice because a later step failed.
 * - session items (what other connections route by) are created at bind and then changed by
 *   attribute updates only (ClientSession.updateSession), never replaced whole by a module.
 */
import { StreamError } from '../errors.ts';
import { log, trace } from '../log.ts';
import { NS, x } from '../xml/element.ts';
import { frameJournal, frameSettled, inFrame, newFrame, StaleSpeculation, type Frame, type FrameInput } from '../storage/frame-context.ts';
import type { ConnectionItem } from '../storage/store.ts';
import type { XmppServer } from './server.ts';
import { ClientSession } from './session.ts';
import { closeStream, processFrame } from './stream.ts';
import { continueOwnHandOver, endHibernated, handOverUnacknowledged, hibernate } from './stream-management.ts';
import type { TimerEvent } from '../transport/timers.ts';
import type { Job } from '../transport/jobs.ts';
import { releaseEarlierUnnumbered } from '../transport/sm-sender.ts';
import type { ConnectionState } from './types.ts';

export interface FrameDelivery extends FrameInput {
  /** The state this invocation committed with the connection's previous frame, if any. */
  state?: ConnectionState;
}

export function newConnectionState(id: string): ConnectionState {
  return { id, stage: 'connected', streamId: '', connectedAt: Date.now(), authFailures: 0, version: 0 };
}

/** Connection states an instance keeps for the next frame it may get (about 1–3 KB each). */
const REMEMBERED_CONNECTIONS = 2000;

export class SessionManager {
  /** The state each connection's last frame here ended with (see handleFrame); oldest first. */
  private readonly remembered = new Map<string, ConnectionState>();

  constructor(private readonly server: XmppServer) {}

  /**
   * Processes one frame of a connection; frames of one connection come in order, one at a time.
   * Resolves to the committed state (for the caller to pass with the next frame of this batch), or
   * undefined when the stream is closed.
   */
  async handleFrame(connectionId: string, text: string, delivery: FrameDelivery = {}): Promise<ConnectionState | undefined> {
    const remembered = delivery.state ? undefined : this.remembered.get(connectionId);
    if (!remembered) return this.remember(connectionId, await this.runFrame(connectionId, text, delivery, delivery.state ? { state: delivery.state } : undefined));
    if (delivery.id && remembered.lastFrame === delivery.id) {
      trace('frame skipped: this instance committed it', text, { connectionId, delivery: delivery.id });
      return remembered;
    }
    // Runs on the state this instance last saw while the stored one is read alongside: the frame's
    // reads overlap that read, and everything it lets out waits for it (frame-context.ts, gate).
    const loading = this.server.store.loadConnection(connectionId);
    const gate = loading.then((loaded) => {
      const current = loaded.state?.version === remembered.version && !(delivery.id && loaded.journal?.frame === delivery.id);
      if (!current) throw new StaleSpeculation(connectionId);
    });
    gate.catch(() => {}); // awaited by the frame (its effects) and by runFrame
    try {
      return this.remember(connectionId, await this.runFrame(connectionId, text, { ...delivery, gate }, { state: remembered }));
    } catch (err) {
      if (!(err instanceof StaleSpeculation)) throw err;
      trace('frame runs again on the stored state: the remembered one was not current', text, { connectionId, delivery: delivery.id });
      return this.remember(connectionId, await this.runFrame(connectionId, text, { ...delivery, routes: err.routes }, await loading));
    }
  }

  /** Keeps the state a frame ended with for the connection's next frame on this instance (or forgets it). */
  private remember(connectionId: string, state: ConnectionState | undefined): ConnectionState | undefined {
    this.remembered.delete(connectionId);
    if (state) {
      this.remembered.set(connectionId, state);
      // Oldest first: a Map keeps insertion order.
      if (this.remembered.size > REMEMBERED_CONNECTIONS) this.remembered.delete(this.remembered.keys().next().value!);
    }
    return state;
  }

  /**
   * One run of a frame on `loaded` (read now, or remembered: then `delivery.gate` holds its
   * confirmation, and a run on a state that was not current throws StaleSpeculation having let
   * nothing out, its journal included).
   */
  private async runFrame(connectionId: string, text: string, delivery: FrameDelivery, loaded?: ConnectionItem): Promise<ConnectionState | undefined> {
    const { store } = this.server;
    this.remembered.delete(connectionId); // until this run succeeds
    loaded ??= await store.loadConnection(connectionId);
    const stored = loaded.state;
    if (delivery.id && stored?.lastFrame === delivery.id) {
      trace('frame skipped: committed before', text, { connectionId, delivery: delivery.id });
      return stored; // committed before: a redelivery
    }
    trace('frame', text, { connectionId, delivery: delivery.id, stage: stored?.stage });
    const journal = 'journal' in loaded ? loaded.journal : undefined;
    const state = structuredClone(stored ?? newConnectionState(connectionId));
    const frame = newFrame({ ...delivery, before: journal, connectionId });
    const session = new ClientSession(this.server, state);
    try {
      await inFrame(async () => {
        await releaseEarlierUnnumbered(this.server.sm);
        try {
          await processFrame(session, text);
        } catch (err) {
          if (!(err instanceof StreamError)) throw err;
          await closeStream(session, err);
        }
      }, frame, { own: true });
      await delivery.gate; // a frame that let nothing out still ran on the right state
      if (state.stage === 'closed') return undefined;
      if (!session.isDirty) return state;
      // From the version this frame began with, or from its own commit half-way (commitNow).
      const base = state.version;
      state.version = base + 1;
      state.lastFrame = delivery.id;
      let committed = false;
      try {
        committed = await store.putConnection(state, base);
      } finally {
        if (!committed) state.version = base; // the journal goes with the version the table has
      }
      if (!committed) throw new Error(`connection ${connectionId}: stale state (version ${base})`);
      return state;
    } catch (err) {
      // Throws when the run was on a state that was not current: nothing to save.
      await delivery.gate?.catch((stale: unknown) => {
        if (stale instanceof StaleSpeculation) stale.routes = frame.routes;
        throw stale;
      });
      trace('frame failed', text, { connectionId, delivery: delivery.id, error: String(err).slice(0, 120) });
      await this.saveJournal(connectionId, state.version, frame);
      throw err;
    }
  }

  /**
   * The socket closed (client, timeout or server): ends the XMPP session if one was bound, or lets
   * it hibernate when it can be resumed (XEP-0198, stream-management.ts).
   */
  async handleDisconnect(connectionId: string, delivery: FrameInput = {}): Promise<void> {
    const { store } = this.server;
    this.remembered.delete(connectionId);
    const { state, journal } = await store.loadConnection(connectionId);
    if (!state || state.stage === 'hibernated') return;
    if (state.stage === 'bound' && state.resumingFrame !== undefined && (await this.server.sm.get(state.session ?? state.id))?.socket !== connectionId) {
      // A resumption committed this connection but never moved the session here (it died, or
      // another connection took the session first): the session is not this connection's to end.
      log.debug('connection of a resumption that did not happen: its item goes', { connectionId });
      return store.deleteConnection(connectionId);
    }
    if (state.stage === 'resumed') {
      // A resumption took this connection over. Once it moved the session, the session lives on
      // on the new connection and only this item goes. Until then (still under way, or it failed:
      // its client gave up waiting) the session hibernates here like any other, so the client's
      // next resumption finds it and, failing that, the window's end hands its stanzas over.
      const record = await this.server.sm.get(state.session ?? state.id);
      if (record?.socket !== connectionId) {
        log.debug('connection taken over by a resumption: its item goes', { connectionId, recordSocket: record?.socket });
        return store.deleteConnection(connectionId);
      }
    }
    const frame = newFrame({ ...delivery, before: journal });
    try {
      await inFrame(async () => {
        await releaseEarlierUnnumbered(this.server.sm);
        if (await hibernate(this.server, state)) return;
        if (state.stage === 'resumed') {
          log.debug('connection taken over by a resumption did not hibernate: its item goes', { connectionId });
          return store.deleteConnection(connectionId); // being ended by whoever took it
        }
        await this.endSession(new ClientSession(this.server, structuredClone(state)), { socketGone: true });
      }, frame);
    } catch (err) {
      await this.saveJournal(connectionId, state.version, frame);
      throw err;
    }
  }

  /** A delayed event came due (transport/timers.ts). */
  async handleTimer(event: TimerEvent, delivery: FrameInput = {}): Promise<void> {
    // The event's posts are journaled with the hibernated connection, like a frame's.
    const { state, journal } = await this.server.store.loadConnection(event.socket);
    const frame = newFrame({ ...delivery, before: journal });
    try {
      await inFrame(async () => {
        await releaseEarlierUnnumbered(this.server.sm);
        await endHibernated(this.server, event.session, event.socket);
      }, frame);
    } catch (err) {
      if (state) await this.saveJournal(event.socket, state.version, frame);
      throw err;
    }
  }

  /**
   * A background job's turn came (transport/jobs.ts). Its posts are journaled under the job's queue
   * message id, like a frame's with its connection, so a job run again skips what went out.
   */
  async handleJob(job: Job, delivery: FrameInput = {}): Promise<void> {
    const handler = this.server.jobHandlers.get(job.type);
    if (!handler) {
      log.error('job of an unknown type dropped', { type: job.type });
      return;
    }
    const journalKey = delivery.id ? `job:${delivery.id}` : undefined;
    const { journal } = journalKey ? await this.server.store.loadConnection(journalKey) : {};
    const frame = newFrame({ ...delivery, before: journal });
    try {
      await inFrame(async () => {
        await releaseEarlierUnnumbered(this.server.sm);
        await handler({ server: this.server, job });
      }, frame);
    } catch (err) {
      if (journalKey) await this.saveJournal(journalKey, 0, frame);
      throw err;
    }
  }

  /**
   * Ends a session: the modules' clean-up (unavailable broadcast, leaving rooms) first, while the
   * session is still routable and the account still exists, then its records.
   */
  async endSession(session: ClientSession, { socketGone = false } = {}): Promise<void> {
    await this.leave(session);
    if (session.state.stage === 'replaced') await this.server.runSessionHooks('session/released', session);
    if (session.state.sm) {
      // A socket that died takes what was in flight with it: what the client did not acknowledge is
      // re-routed. A stream closed on an open socket got everything posted before its <close/>
      // (the session left first; see closeStream): re-routing would deliver it twice.
      if (socketGone) await handOverUnacknowledged(this.server, session.id);
      else await this.server.sm.remove(session.id);
    }
    log.debug('session ended', { connectionId: session.state.id, stage: session.state.stage, sm: Boolean(session.state.sm), socketGone });
    session.state.stage = 'closed';
    await this.server.store.deleteConnection(session.state.id);
  }

  /**
   * The session stops being one (once, however it ends): the 'session/ended' hooks tell contacts
   * and rooms, then its session item goes. The stream itself may still send (e.g. a last reply).
   */
  async leave(session: ClientSession, details: { replaced?: boolean } = {}): Promise<void> {
    const { state } = session;
    if ((state.stage !== 'bound' && state.stage !== 'hibernated') || session.ended) return;
    session.ended = true;
    await this.server.runSessionHooks('session/ended', session, details);
    await this.server.store.deleteSession(state.user!, state.resource!, session.id);
  }

  /**
   * Ends another connection's stream from this frame (a resource conflict, account removal): the
   * stream error and close go to its socket, then its session ends as if it had disconnected.
   */
  async closeOther(sessionId: string, error: StreamError): Promise<void> {
    const state = await this.currentConnection(sessionId);
    if (!state || state.stage === 'closed' || state.stage === 'resumed') return;
    await closeStream(new ClientSession(this.server, structuredClone(state)), error);
  }

  /**
   * The connection that carries a session now: its own, or after a XEP-0198 resumption the one it
   * moved to (sessions are named by the connection they began on).
   */
  async currentConnection(sessionId: string): Promise<ConnectionState | undefined> {
    const sm = await this.server.sm.get(sessionId);
    return this.server.store.getConnection(sm?.socket ?? sessionId);
  }

  /**
   * A new bind of the same resource replaces another connection's session (RFC 6120 §7.7.2.2): the
   * stream error and close go to its socket and its session ends, but its connection item stays,
   * marked 'replaced', until its $disconnect. Frames its client sent before it saw the close may
   * still be queued (a stalled post made the client reconnect): their messages are routed, not
   * dropped against a missing state. Its rooms keep the full JID (the new session takes the
   * occupancy over at its join; 'session/released' at the old $disconnect ends what is left), so a
   * queued room message is still the occupant's. Marking bumps the version, so a frame of the old
   * connection committing at this moment fails and is redelivered against the replaced state.
   */
  async replaceOther(sessionId: string, error: StreamError): Promise<void> {
    const state = await this.currentConnection(sessionId);
    // A hibernated session (XEP-0198) has no socket to tell: it ends now, as its window would. So
    // does one whose resumption never finished (its connection taken over, the session not moved):
    // the client binding anew gave up on it.
    if (state?.stage === 'hibernated' || state?.stage === 'resumed') return endHibernated(this.server, sessionId, state.id, true);
    // A run again of this bind after its first run began the hand-over: the old connection may be
    // marked replaced or gone (its $disconnect) by now, and the hand-over goes on.
    if (!state || state.stage !== 'bound') return continueOwnHandOver(this.server, sessionId);
    const old = new ClientSession(this.server, structuredClone(state));
    await old.send(error.toElement());
    await this.leave(old, { replaced: true });
    await old.send(x('close', { xmlns: NS.FRAMING }));
    await this.server.sender.close(old.socket);
    // Not resumable any more: nothing is numbered for it from now on, and what it did not acknowledge
    // is re-routed. Also when its state says no stream management: an <enable/> of its own may be
    // under way (its record made, its state not yet committed), and a router that read the session
    // before it left numbers into that record; with no one to hand it over, a chaos run lost two.
    // After the leave: an enable that makes its record later finds the session gone (enable()).
    await handOverUnacknowledged(this.server, sessionId);
    await this.server.store.markConnectionReplaced(old.socket);
  }

  /** Best effort: a journal that cannot be written only means the redelivery may repeat posts. */
  private async saveJournal(connectionId: string, version: number, frame: Frame): Promise<void> {
    await frameSettled(frame); // posts of a parallel fan-out still running when a step failed
    const journal = frameJournal(frame);
    if (!journal) return;
    try {
      if (!(await this.server.store.saveJournal(connectionId, version, journal))) {
        log.warn('the journal of a failed frame was not saved: the connection moved on', { connectionId });
      }
    } catch (err) {
      log.warn('could not save the journal of a failed frame', { connectionId, error: String(err) });
    }
  }
}
