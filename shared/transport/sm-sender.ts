/**
 * XEP-0198 on the way out: every stanza posted to a session with stream management is numbered
 * and kept before it is posted, whichever handler posts it (docs/mobile.md).
 *
 * Posts are addressed to a session id (the connection it began on; session items, rooms and
 * carbons name it). For a session with stream management one atomic update draws the stanza's
 * number and answers with the socket that carries the session now, so after a resumption posts
 * reach the new connection without anyone rewriting those references. The stanza is logged under
 * its number, then posted. A socket that is gone is not a failed delivery for a resumable session:
 * the stanza waits in the log for the resumption, or is re-routed when the window ends.
 *
 * Non-stanza frames (stream features, SM nonzas, stream errors) are not counted and go where they
 * are addressed. A caller that knows the target has no stream management says so (`sm: false`, from
 * the session item or the room occupant); otherwise such a post costs one refused conditional update.
 */
import { createHash, randomBytes } from 'node:crypto';
import { currentFrame, forgetUndo, frameSlot, frameValuesLike, undoLater, undosOfEarlierRuns } from '../storage/frame-context.ts';
import { POST_LEASE_MS, resumingNow, type SmRecord, type SmStore } from '../storage/sm-store.ts';
import { NS } from '../xml/element.ts';
import { log, trace } from '../log.ts';
import type { ConnectionSender, SendHint } from './connections.ts';

/** Ask the client for an acknowledgement after this many unacknowledged stanzas (and each time again). */
export const ACK_REQUEST_EVERY = 5;
const STANZA = /^<(message|presence|iq)[\s/>]/;
export const ACK_REQUEST = `<r xmlns="${NS.SM}"/>`;

export function isStanzaFrame(frame: string): boolean {
  return STANZA.test(frame);
}

const MESSAGE = /^<message[\s/>]/;

/**
 * How to post to a session, from its item (SessionRecord): numbered (XEP-0198 on), recorded
 * against a possible <enabled/> (its open window after bind), or as it is. The item is trusted
 * after the window: an <enable/> then is refused (stream-management.ts).
 */
export function sessionHint(target: { sm?: boolean; smOpenUntil?: number }, now = Date.now()): SendHint {
  if (target.sm) return { sm: true };
  return (target.smOpenUntil ?? 0) > now ? { enabling: true } : { sm: false };
}

/**
 * The same for a room occupant, whose entry was copied at its join: a session that enabled XEP-0198
 * after joining is found by asking the numbering (no hint).
 */
export function occupantHint(target: { sm?: boolean; smOpenUntil?: number }, now = Date.now()): SendHint | undefined {
  const hint = sessionHint(target, now);
  return hint.sm === false ? undefined : hint;
}

/**
 * `onKept` runs for each message logged for a session that hibernates (no socket carries it): it is
 * safe in the log, and its client may need waking (XEP-0357 push).
 */
export function streamManagementSender(
  inner: ConnectionSender,
  sm: SmStore,
  onKept?: (record: SmRecord, frame: string) => Promise<void>,
  /** The longest a post to a socket may take, retries included (connections.ts, longestPostMs). */
  longestPostMs = UNNUMBERED_WAIT_MAX_MS,
): ConnectionSender {
  return {
    async send(target, frame, hint) {
      if (!isStanzaFrame(frame)) return inner.send(target, frame);
      // A frame of the session's own connection trusts the item it read: an <enable/> of the
      // session is a frame of the same connection, so either it came before (and the item, read
      // consistently, says so) or it comes after this post has landed.
      if (hint?.sm === false || (hint?.enabling && currentFrame()?.connectionId === target)) return inner.send(target, frame);
      if (hint?.enabling) {
        const posted = await postBeforeEnabled(inner, sm, target, frame, longestPostMs);
        if (posted !== undefined) return posted;
      }
      // A frame that failed after numbering this stanza runs again with the same number (its
      // journal keeps it, with the socket it was numbered for): one stanza, one number, however
      // often its post is tried. `p` marks one that was posted already (the frame failed in what
      // followed the post); `b` one whose draw found the lease broken, so its run again, which
      // holds the lease as its own, still cuts rather than posts (traced in a chaos run: the first
      // run died before the cut, the run again posted past a hanging post, and a message was lost).
      const slot = frameSlot(`sm:${target}:${digest(frame)}`);
      // (`17:p` is how journals written before the socket was kept say it.)
      const [pinnedText, postedBefore, numberedFor, brokenBefore] = slot?.value?.split(/[ :]/) ?? [];
      const pinned = pinnedText === undefined ? undefined : Number(pinnedText);
      const record = await drawWithLease(sm, target, pinned);
      if (!record) return inner.send(target, frame);
      const seq = pinned ?? record.out;
      const socketAtNumbering = numberedFor ?? record.socket;
      const leaseBroken = Boolean(record.leaseBroken) || brokenBefore === 'b';
      const remember = (isPosted: boolean) => slot?.set(`${seq} ${isPosted ? 'p' : '-'} ${socketAtNumbering}${leaseBroken ? ' b' : ''}`);
      // What an earlier run did stays said: a run again that fails too must not leave a journal
      // in which the post never went out (traced in a chaos run: the third run posted it again).
      remember(postedBefore === 'p');
      trace('sm: numbered', frame, { session: target, socket: record.socket, seq, hibernated: record.hibernatedUntil !== undefined, postedBefore: postedBefore === 'p' });
      let posted = postedBefore === 'p';
      // Run again after a resumption moved the session: the resumption resent what was logged by
      // then (it takes the lease, which this stanza's first run gave back after logging it).
      if (!posted && pinned !== undefined && record.socket !== socketAtNumbering && (await sm.logged(target, seq, seq)).length > 0) {
        trace('sm: resent by a resumption', frame, { session: target, socket: record.socket, seq });
        posted = true;
        remember(true);
      }
      // The lease is given back once the post is over, whatever came of it. A failure before that
      // (the instance died after logging, the log write failed) keeps it: the next poster waits
      // for this frame's run again or for the lease to expire, and then cuts the socket rather
      // than overtake (traced in a chaos run: a later stanza reached the client first, the
      // client's count then covered the earlier one, and its resumption resent the later twice).
      let over = false;
      try {
        if (!posted) {
          await sm.log(target, seq, frame, record.max);
          if (leaseBroken) await cutForOrder(inner, record.socket, target, seq);
          else posted = await postOnce(inner, record.socket, frame, target, seq);
          if (posted) remember(true);
        } else if (record.leaseBroken) {
          // A run again with nothing to post took over a lease whose post may still hang: giving
          // it back would let the next stanza go out past that one unnoticed.
          await cutForOrder(inner, record.socket, target, seq);
        }
        over = true;
      } finally {
        if (over || posted) await sm.release(target, seq);
      }
      if (record.hibernatedUntil !== undefined && !resumingNow(record) && MESSAGE.test(frame)) await onKept?.(record, frame);
      const unacked = record.out - record.acked;
      if (posted && unacked >= ACK_REQUEST_EVERY && unacked % ACK_REQUEST_EVERY === 0) {
        trace('sm: acknowledgement requested', undefined, { session: target, socket: record.socket, seq, unacked });
        await inner.send(record.socket, ACK_REQUEST);
      }
      // Kept for a resumption (or re-routed when the window ends): delivered, as far as the sender is concerned.
      return posted || record.max > 0;
    },
    close: (connectionId) => inner.close(connectionId),
  };
}

/**
 * A post to a session that may be enabling XEP-0198 right now (within its window after bind): the
 * client counts every stanza that reaches it after <enabled/>, so one that goes out unnumbered
 * must reach it before. Recorded on the session's SM item for as long as it takes; the enable
 * creates the record on that item and waits for what it finds there (waitForUnnumbered). Traced
 * in a chaos run without this: a room message routed just before <enable/> went out unnumbered,
 * reached the socket 0.2 s after <enabled/>, the client's count ran one ahead, and a resumption
 * skipped a stanza. Undefined when the session has enabled it meanwhile: the post is numbered.
 */
async function postBeforeEnabled(
  inner: ConnectionSender,
  sm: SmStore,
  target: string,
  frame: string,
  longestPostMs: number,
): Promise<boolean | undefined> {
  const key = randomBytes(9).toString('base64url');
  const until = Date.now() + Math.min(longestPostMs, UNNUMBERED_WAIT_MAX_MS);
  // Should the frame fail before taking the record back, its run again does it first
  // (releaseEarlierUnnumbered), whichever way that run goes.
  undoLater(UNNUMBERED, key, target);
  if (!(await sm.beginUnnumbered(target, key, until))) {
    forgetUndo(UNNUMBERED, key);
    return undefined;
  }
  trace('sm: unnumbered post recorded', frame, { session: target, key });
  try {
    return await inner.send(target, frame);
  } finally {
    await endUnnumbered(sm, target, key);
    if (Date.now() > until) log.warn('stream management: an unnumbered post outlasted its record: an <enabled/> may have overtaken it', { session: target });
  }
}

/** A failure here is not the post's: a record left behind only makes an enable wait until it expires. */
async function endUnnumbered(sm: SmStore, target: string, key: string): Promise<void> {
  await sm.endUnnumbered(target, key).then(
    () => {
      forgetUndo(UNNUMBERED, key);
      trace('sm: unnumbered post over', undefined, { session: target, key });
    },
    (err) => log.warn('stream management: an unnumbered post may stay recorded', { session: target, key, error: String(err) }),
  );
}

const UNNUMBERED = 'sm-unnumbered';

/**
 * The longest an enable waits for one unnumbered post: its poster may have died without a run again
 * (its record stays until then), and the enabling frame must finish within the stream Lambda's
 * 30 s. A post still going after it (a fourth attempt after three timeouts) may land after
 * <enabled/>: logged ("outlasted its record").
 */
const UNNUMBERED_WAIT_MAX_MS = 20_000;

/**
 * At the start of a run again of a frame (event, job): takes back the records of unnumbered posts
 * an earlier run left (it failed before its post was over). Not left to the post's own run again:
 * the frame may go another way this time (traced in a chaos run: a presence frame that failed
 * after recording its post ran again on a connection replaced meanwhile, posted nothing, and an
 * enable waited for the record until it expired).
 */
export async function releaseEarlierUnnumbered(sm: SmStore): Promise<void> {
  for (const { id: key, value: target } of undosOfEarlierRuns(UNNUMBERED)) await endUnnumbered(sm, target, key);
}

const digest = (frame: string) => createHash('sha256').update(frame).digest('base64url').slice(0, 12);

/**
 * The sessions an earlier run of this frame numbered `frame` for and logged it: it is theirs then
 * (a resumption resends it, a hand-over re-routes it). A run again that no longer finds such a
 * session must not deliver it another way too (traced in a chaos run: a frame logged a message for
 * a session and died before the post, the session ended and its hand-over stored the message
 * offline, and the run again, finding no session, stored it again).
 */
export async function keptByEarlierRun(sm: SmStore, frame: string): Promise<string[]> {
  const marker = `:${digest(frame)}#`;
  const kept: string[] = [];
  for (const { key, value } of frameValuesLike('sm:')) {
    const at = key.indexOf(marker);
    if (at < 0) continue;
    const session = key.slice('sm:'.length, at);
    const seq = Number(value.split(/[ :]/)[0]);
    if (Number.isInteger(seq) && (await sm.logged(session, seq, seq)).length > 0) kept.push(session);
  }
  return kept;
}

/**
 * Before <enabled/>: waits until the unnumbered posts recorded on the session's item are over
 * (postBeforeEnabled), or their time is up (their poster died; a run again of its frame takes the
 * record back sooner). Holds the enabling frame's post lease (number 0) meanwhile, so the posts
 * numbered from now on wait behind the <enabled/> rather than break the lease and cut the socket.
 */
export async function waitForUnnumbered(sm: SmStore, session: string): Promise<void> {
  const started = Date.now();
  // Renewed at the first wait (the lease of the record's creation may be half gone) and then
  // whenever half of it is left.
  let leaseUntil = 0;
  for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
    const record = await sm.get(session);
    const pending = record?.unnumbered?.size ?? 0;
    if (!pending) break;
    if ((record!.unnumberedUntil ?? 0) <= Date.now()) {
      log.warn('stream management: unnumbered posts never reported back: <enabled/> goes', { session, keys: [...record!.unnumbered!] });
      break;
    }
    if (leaseUntil - Date.now() < POST_LEASE_MS / 2) {
      await sm.hold(session, 0);
      leaseUntil = Date.now() + POST_LEASE_MS;
    }
    await sleep(wait);
  }
  if (Date.now() - started > 50) trace('sm: enable waited for unnumbered posts', undefined, { session, ms: Date.now() - started });
}

/**
 * Posts a numbered stanza at most once. When the outcome is unknown (a timeout: the post may have
 * arrived), a retry could deliver it twice and the client would count one stanza more than was
 * numbered, so its next acknowledgement would cover a stanza it never got. Instead the connection
 * is cut: the client resumes with its own count, and the resumption resends exactly what it lacks
 * (the stanza is in the log either way). Resolves false then, like a gone socket.
 */
async function postOnce(inner: ConnectionSender, socket: string, frame: string, session: string, seq: number): Promise<boolean> {
  try {
    return await inner.send(socket, frame, { once: true });
  } catch (err) {
    log.warn('stream management: a post may or may not have arrived: the connection is cut for a resumption', { session, socket, seq, error: String(err) });
    await inner.close(socket).catch(() => {});
    return false;
  }
}

/**
 * The lease was taken over from a poster that never gave it back: its post hangs (an answer that
 * does not come) or its invocation died. Posting now could reach the socket before that earlier
 * stanza, and the client's count, which follows arrival, would then cover the wrong stanzas (a
 * resumption would skip the one still missing: measured in the chaos test). The socket is cut
 * instead: whatever arrived before the cut arrived in order, the client resumes with its count,
 * and the resumption resends this stanza (it is logged) after the missing one.
 */
async function cutForOrder(inner: ConnectionSender, socket: string, session: string, seq: number): Promise<void> {
  log.warn('stream management: an earlier post outlived its lease: the connection is cut rather than overtake it', { session, socket, seq });
  await inner.close(socket).catch(() => {});
}

/**
 * The post lease: one poster per session at a time, from drawing the number to the end of the
 * post. Without it two handlers posting to one session could reach the socket in the other order
 * than they were numbered, and a client count taken between the two (a socket that died then)
 * would be placed on the wrong stanza: one resent twice, the other never (measured: 4 lost and 3
 * doubled of 500 in the chaos test with stream management). Waiting costs only when two posts to
 * one session meet, for as long as one post takes.
 */
export async function drawWithLease(sm: SmStore, session: string, pinned: number | undefined): Promise<SmRecord | undefined> {
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    const draw = pinned === undefined ? await sm.count(session) : await sm.hold(session, pinned);
    if (!draw) return undefined;
    if ('record' in draw) return draw.record;
    await sleep(Math.max(1, Math.min(wait, draw.busyUntil - Date.now() + 1)));
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
