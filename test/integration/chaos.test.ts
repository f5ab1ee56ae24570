/**
 * Chaos: 10,000+ 1:1 and room messages among 50 clients (@xmpp/client, with its own reconnect)
 * through the local stack with three stream handler instances, while 5 % of DynamoDB requests are
 * throttled, 2 % of @connections posts fail (half 410 with the socket dropped, half never
 * answered), 1 % of a frame's steps crash the invocation right after they took effect, and clients
 * also log out and back in at random. SQS-style redelivery has to make everything right. Rooms of
 * ten are over the inline fan-out limit (7) while full, so their copies go out through fan-out jobs,
 * which the same faults hit.
 *
 * What counts as sent: a frame the gateway accepted (API Gateway took it; from there the server is
 * responsible). At the end every 1:1 message must have reached its recipient exactly once (live,
 * or from offline storage at a login), every room message must be in the room's archive exactly
 * once, and no client may have received any message twice, all by XEP-0359 origin-id, except
 * where the gateway delivered a post after its sender had given up on it (the sender posts it
 * again: a copy API Gateway would deliver too, and that only XEP-0198 can remove). Those are
 * counted and printed.
 *
 * It runs without stream management, or with it (CHAOS_SM, see VARIANTS: XEP-0198 resumption and
 * acks, every cut socket resumed or its session handed over), where the clients' counts decide
 * what the server resends or re-routes and the same "once" must hold.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { client as xmppClient, xml } from '@xmpp/client';
import { addUser, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { MucStore } from '../../shared/storage/muc-store.ts';
import { defaultConfig } from '../../shared/modules/muc/config.ts';
import { queryAll } from '../../shared/storage/table-ops.ts';

/**
 * 10,000 is the issue's figure (CHAOS_MESSAGES=10000: about 15 minutes on two cores, everything in
 * one process); CI runs 2,000 to stay well inside its time budget.
 */
const MESSAGES = Number(process.env.CHAOS_MESSAGES ?? 2_000);
/**
 * The same run with XEP-0198 on (resumption, acks, hand-overs under the same faults): fewer
 * messages, as every socket cut is a resumption (CHAOS_SM_MESSAGES; about 2 minutes here).
 */
const SM_MESSAGES = Number(process.env.CHAOS_SM_MESSAGES ?? 500);
/**
 * Which runs: both (CHAOS_SM unset or `both`: what CI runs); CHAOS_SM=false only the one without
 * stream management, CHAOS_SM=true only the one with it (docs/mobile.md has the series that found each of
 * its faults before it went into CI).
 */
const CHAOS_SM = process.env.CHAOS_SM || 'both';
if (!['both', 'true', 'false'].includes(CHAOS_SM)) throw new Error(`CHAOS_SM=${CHAOS_SM}: unset or both, true (with stream management only), false (without it only)`);
const VARIANTS = [
  { sm: false, messages: MESSAGES },
  { sm: true, messages: SM_MESSAGES },
].filter((v) => CHAOS_SM === 'both' || v.sm === (CHAOS_SM === 'true'));
const CLIENTS = 50;
const ROOMS = 5;
/** Room stanzas to more sessions than this go through fan-out jobs (docs/muc-fanout.md). */
const INLINE_FANOUT_MAX = 7;
const FAULTS = 'throttle=0.05,gone=0.01,timeout=0.01,crash=0.01';
/**
 * Posts answered later than this are retried, and were delivered: on two cores, with clients,
 * gateway and handlers in one saturated process, answers take seconds at times (in AWS,
 * milliseconds), so the test allows more than the 3 s default to keep those copies rare.
 */
const POST_TIMEOUT_MS = 10_000;
const SID = 'urn:xmpp:sid:0';
const MUC = 'http://jabber.org/protocol/muc';

type El = ReturnType<typeof xml>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let stack: (LocalStack & { store: DynamoStore }) | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

interface ChaosClient {
  local: string;
  room: string;
  xmpp: ReturnType<typeof xmppClient>;
  online: boolean;
  /** origin-id → how many times this user received it. */
  received: Map<string, number>;
  /** Errors the server sent back, by condition (diagnostics). */
  errors: Map<string, number>;
  /** origin-id → how each copy came: 'live' or 'delayed' (diagnostics of doubles). */
  how: Map<string, string[]>;
  /**
   * Origin-ids that reached this client's socket after the server's <close/> (a post racing the
   * end of the stream; the client drops them, as clients do). The known window without XEP-0198.
   */
  afterClose: Set<string>;
  /**
   * With XEP-0198, a graceful logout: what arrives after the client's final <a/> (@xmpp/client sends
   * it right before its </close>) is not covered by its count, nor is what arrives after <enabled/>
   * when the logout began before it (then no final <a/> goes out: seen once the enable waited for
   * posts routed before it, docs/mobile.md "Enabling"). The server's </close> tells the
   * client which way it went: when it came, the server closed an open socket, so everything posted
   * before it arrived and is not re-routed (counted as received); when the client closed its socket
   * first (its close timed out behind a backlog), the server finds the socket gone and re-routes
   * what was not acknowledged, as XEP-0198 §4 says: the client drops those (they come again, or
   * count as lost). Origin-ids held meanwhile, and those dropped.
   */
  afterFinalAck: { held: { id: string; how: string }[]; dropped: Set<string> };
  /** A graceful logout is under way (relog): the next <a/> sent is the final one. */
  closing: boolean;
  /** The final <a/> went out (see afterFinalAck). */
  finalAckSent: boolean;
  /** Sessions so far (diagnostics: which session a copy came on). */
  generation: number;
  /**
   * With XEP-0198, a session the client left without the server's </close> and did not resume
   * (a logout on a socket that had died, a resumption refused): the server hands over what it never
   * saw acknowledged, as XEP-0198 §4 says, and the client, which cannot know which of its <a/>
   * arrived, may get again what it got on that session. `sinceResumable`: origin-ids received since
   * the session began or last resumed; `leftUnresumed`: for each, how many sessions so left had
   * it, each of which may bring it once more (counted apart, not as the server's doubles: a run had
   * a message come three times, got on a session left so, handed over to the next, left so too).
   */
  sinceResumable: string[];
  pendingUnresumed: string[];
  leftUnresumed: Map<string, number>;
  /** The server's </close> came on this stream. */
  closedCleanly: boolean;
}

function chaosClient(wsUrl: string, local: string, room: string): ChaosClient {
  // The stream restart after SASL waits for the server's <open/>: a post held by the timeout fault
  // arrives after the SDK's 10 s retry, past the library's 2 s default (whose rejection it leaves
  // unhandled). 30 s outlasts one held post.
  const xmpp = xmppClient({ service: wsUrl, domain: 'localhost', username: local, password: 'pw', resource: 'chaos', timeout: 30_000 } as Parameters<typeof xmppClient>[0]);
  const trace = (what: string) => {
    if (process.env.CHAOS_TRACE) console.log(`${new Date().toISOString()} client ${local} ${what}`);
  };
  /** @xmpp/client's stream management state (not in its types). */
  const sm = (xmpp as unknown as { streamManagement?: { id: string; enabled: boolean; inbound: number; outbound_q: unknown[]; on(e: string, f: (s: El) => void): void } })
    .streamManagement;
  const c: ChaosClient = { local, room, xmpp, online: false, received: new Map(), errors: new Map(), how: new Map(), afterClose: new Set(), afterFinalAck: { held: [], dropped: new Set() }, closing: false, finalAckSent: false, generation: 0, sinceResumable: [], pendingUnresumed: [], leftUnresumed: new Map(), closedCleanly: false };
  (xmpp as unknown as { reconnect: { delay: number } }).reconnect.delay = 200;
  xmpp.on('error', () => {});
  // A frame after the server's <close/> is dropped (@xmpp/client throws on it otherwise).
  const connection = xmpp as unknown as { parser: unknown; _onData(data: unknown): void };
  const onData = connection._onData.bind(xmpp);
  connection._onData = (data) => {
    if (connection.parser) return onData(data);
    for (const m of String(data).matchAll(/<origin-id[^>]*id="([^"]+)"/g)) c.afterClose.add(m[1]!);
  };
  xmpp.on('offline', () => (c.online = false));
  // A resumed stream is online again: @xmpp/client emits no 'online' for it (its status is set
  // directly), so without this a client stopped sending after its first resumption.
  sm?.on('resumed', () => {
    // A logout whose socket died before the server's </close>, and the library resumed: the count
    // in <resume/> covered what was held, and the stream goes on.
    if (c.afterFinalAck.held.length > 0) trace(`counts ${c.afterFinalAck.held.map((h) => h.id).join(' ')}: no <a/> covers them, then resumed with them counted`);
    for (const { id, how } of c.afterFinalAck.held.splice(0)) count(id, how);
    c.closing = false;
    c.finalAckSent = false;
    c.online = true;
    // Its count in <resume/> told the server what arrived: nothing of it comes again.
    c.pendingUnresumed = [];
    c.sinceResumable = [];
    c.closedCleanly = false;
  });
  xmpp.on('send', (el: El) => {
    if (!c.closing || !el.is('a', 'urn:xmpp:sm:3')) return;
    // Its count covers what arrived so far: acknowledged, so the server re-routes none of it.
    for (const { id, how } of c.afterFinalAck.held.splice(0)) count(id, how);
    c.finalAckSent = true;
    trace(`final <a h="${el.attrs.h}"/>`);
  });
  // The server's </close> came (a clean stream close): what was held arrived before it.
  xmpp.on('close', (info?: { clean?: boolean }) => {
    if (!info?.clean) return;
    c.closedCleanly = true;
    if (c.afterFinalAck.held.length > 0) trace(`counts ${c.afterFinalAck.held.map((h) => h.id).join(' ')}: no <a/> covers them, but the server's </close> came`);
    for (const { id, how } of c.afterFinalAck.held.splice(0)) count(id, how);
  });
  xmpp.on('disconnect', () => {
    if (c.afterFinalAck.held.length > 0) trace(`drops ${c.afterFinalAck.held.map((h) => h.id).join(' ')}: no <a/> covers them, and no </close> from the server`);
    for (const { id } of c.afterFinalAck.held.splice(0)) c.afterFinalAck.dropped.add(id);
    // Left without the server's </close>: unless it resumes, what it got may come again.
    if (sm?.id && !c.closedCleanly) c.pendingUnresumed.push(...c.sinceResumable);
    c.sinceResumable = [];
    c.closedCleanly = false;
    // @xmpp/client 0.14.0: stanzas sent while its <enable/> was on its way stay queued when the
    // socket drops before <enabled/> came, and the next connection's enable then fails its own
    // assertion ("queue should be empty after enable") and never takes <enabled/>: the client
    // counts from its start, not from <enabled/>, while the server numbers (traced in a chaos run:
    // `<a h="22"/>` with 6 numbered, and what the server re-routed by its count came twice). What
    // the library does on 'offline', done on a reconnect that cannot resume.
    if (sm && !sm.id) sm.outbound_q = [];
  });
  if (process.env.CHAOS_TRACE) {
    // Stanzas the client library gave up on (XEP-0198: not acknowledged when a resumption failed
    // or the stream ended), resumptions and new sessions, with the time and the server's session
    // id (the first part of the SM id) to line them up with the server's trace lines.
    const session = () => Buffer.from((sm?.id ?? '').split('.')[0] ?? '', 'base64url').toString('utf8');
    sm?.on('fail', (s: El) => trace(`gave up on ${s.getChild('origin-id', SID)?.attrs.id ?? s.attrs.id ?? s.name}`));
    sm?.on('resumed', () => trace(`resumed session ${session()} (inbound ${sm?.inbound})`));
    xmpp.on('online', () => trace(`online, generation ${c.generation + 1}, session ${session()}`));
    xmpp.on('disconnect', () => trace(`socket closed (session ${session()}, inbound ${sm?.inbound})`));
  }
  xmpp.on('disconnect', () => {
    c.online = false;
    // @xmpp/client's SASL exchange listens for 'nonza' until it ends, and nothing ends it when the
    // socket drops mid-exchange (the gone fault): it then answers the next connection's challenge
    // from the old exchange, the server rightly refuses that, and the library's rejection has no
    // handler (an unhandled SASLError). Only these procedures listen for 'nonza'; drop them with
    // the socket.
    xmpp.removeAllListeners('nonza');
  });
  xmpp.on('online', () => {
    c.closing = false;
    c.finalAckSent = false;
    c.generation += 1;
    // A new session, not a resumption: the one left before is handed over by the server.
    for (const id of new Set(c.pendingUnresumed.splice(0))) c.leftUnresumed.set(id, (c.leftUnresumed.get(id) ?? 0) + 1);
    c.sinceResumable = [];
    c.closedCleanly = false;
    // Initial presence (flushes offline storage), and back into the room without history: a
    // client that reconnects catches up with MAM, not with join history.
    xmpp.send(xml('presence')).catch(() => {});
    xmpp.send(xml('presence', { to: `${room}/${local}` }, xml('x', { xmlns: MUC }, xml('history', { maxstanzas: '0' })))).catch(() => {});
    c.online = true;
  });
  xmpp.on('stanza', (s: El) => {
    if (s.attrs.type === 'error') {
      const condition = `${s.name}:${s.getChild('error')?.getChildElements()[0]?.name}`;
      c.errors.set(condition, (c.errors.get(condition) ?? 0) + 1);
      return;
    }
    if (s.name !== 'message' || !s.getChild('body')) return;
    const id = s.getChild('origin-id', SID)?.attrs.id;
    if (!id) return;
    const how = `${s.attrs.type}:${s.getChild('delay', 'urn:xmpp:delay') ? 'delayed' : 'live'}@${c.generation}/${s.getChild('stanza-id', SID)?.attrs.id?.slice(-6)}`;
    // During a logout with stream management on, a stanza no <a/> of the client covers yet (its
    // final one, or the close began before <enabled/> came, so none was sent) is held.
    if (c.closing && sm?.enabled) c.afterFinalAck.held.push({ id, how });
    else count(id, how);
  });
  function count(id: string, how: string): void {
    if (sm?.enabled) c.sinceResumable.push(id);
    c.received.set(id, (c.received.get(id) ?? 0) + 1);
    c.how.set(id, [...(c.how.get(id) ?? []), how]);
  }
  return c;
}

let pings = 0;
/**
 * A ping sent as a plain stanza, its answer awaited on the 'stanza' event. Not through
 * `iqCaller.request`: @xmpp/iq's caller (with @xmpp/client 0.14.0) ends the middleware chain on
 * an answer to its own request, before the stream management middleware counts it, so each such
 * answer left the client's `h` one short, and its next resumption got resent stanzas it already
 * had (traced: o168, received live twice, in a run of 2026-12-07).
 */
function ping(c: ChaosClient): Promise<boolean> {
  const id = `chaos-ping-${++pings}`;
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      c.xmpp.off('stanza', answer);
      resolve(ok);
    };
    const answer = (s: El) => {
      if (s.is('iq') && s.attrs.id === id) done(s.attrs.type === 'result');
    };
    const timer = setTimeout(() => done(false), 15_000);
    c.xmpp.on('stanza', answer);
    c.xmpp.send(xml('iq', { type: 'get', to: 'localhost', id }, xml('ping', { xmlns: 'urn:xmpp:ping' }))).catch(() => done(false));
  });
}

/**
 * Logs out gracefully and back in (the 'online' handler sends presence and rejoins). With stream
 * management, @xmpp/client sends a final <a/> right before its </close>, as XEP-0198 §4 recommends;
 * what arrives after it counts by how the stream ended (ChaosClient.afterFinalAck).
 */
async function relog(c: ChaosClient): Promise<void> {
  c.online = false; // nothing is sent after our own </close>
  c.closing = true;
  try {
    await c.xmpp.stop();
  } catch {}
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await c.xmpp.start();
      return;
    } catch {
      await sleep(200);
    }
  }
}

describe('chaos', () => {
  for (const { sm, messages } of VARIANTS) {
    it(`${messages} messages among ${CLIENTS} clients under faults, ${sm ? 'with stream management (XEP-0198)' : 'without stream management'}: none lost, none doubled by the server, archived once`, { timeout: 1_500_000 }, () => runChaos(sm, messages));
  }
});

/** One run: the clients send and log out and in under the faults, then everything is counted. */
async function runChaos(sm: boolean, messages: number): Promise<void> {
  /** origin-id → who should get it ('room' for room messages), counted when the gateway accepted the frame. */
  const sent = new Map<string, { from: string; to: string; room?: string; accepted: number; resent: number; connectionId?: string; at?: string }>();
  let deadLetters = 0;
  /** `user|origin-id` of posts delivered after their sender gave up on them (see the header). */
  const repeatedPosts = new Set<string>();
  stack = await startTestStack({
    handlerInstances: 3,
    // Without XEP-0198: the delivery guarantees of issue 12 for clients that do not resume. With
    // it: the same faults, every cut socket resumed or its session handed over (docs/mobile.md).
    env: {
      XMPP_FAULTS: FAULTS,
      XMPP_POST_TIMEOUT_MS: String(POST_TIMEOUT_MS),
      XMPP_SM: String(sm),
      // A room of ten goes through fan-out jobs while more than 7 of its sessions are in, and is
      // posted from the sender's frame when relogs thin it out: both paths under the same faults.
      XMPP_MUC_INLINE_FANOUT_MAX: String(INLINE_FANOUT_MAX),
    },
    gateway: {
      redeliveryDelayMs: 50,
      maxReceiveCount: 50,
      onDeadLetter: () => void deadLetters++,
      onLateDelivery: (_connectionId, body) => {
        const to = /^<message[^>]* to="([^"/]+)/.exec(body)?.[1];
        const id = /<origin-id[^>]*id="([^"]+)"/.exec(body)?.[1];
        if (to && id) repeatedPosts.add(`${to}|${id}`);
      },
      onFrame: (connectionId, body) => {
        const id = /<origin-id[^>]*id="([^"]+)"/.exec(body)?.[1];
        const entry = id ? sent.get(id) : undefined;
        if (!entry) return;
        // @xmpp/client sends again, stamped with a delay, what a resumed stream's count did not
        // cover (XEP-0198): the client's resend, not a second message.
        if (/<delay xmlns="urn:xmpp:delay"/.test(body)) entry.resent += 1;
        else entry.accepted += 1;
        entry.connectionId = connectionId;
      },
    },
  });
  const { store } = stack;
  // Everything (clients, gateway, handlers) shares this process's event loop: a stall longer
  // than the post timeout makes a delivered post look timed out, and its retry a double.
  const lag = monitorEventLoopDelay({ resolution: 20 });
  lag.enable();
  const locals = Array.from({ length: CLIENTS }, (_, i) => `chaos${i}`);
  await Promise.all(locals.map((l) => addUser(store, `${l}@localhost`, 'pw')));
  const muc = new MucStore(store.db);
  const rooms = Array.from({ length: ROOMS }, (_, i) => `chaosroom${i}@conference.localhost`);
  for (const jid of rooms) await muc.createRoom({ jid, config: { ...defaultConfig(), persistent: true }, locked: false, createdAt: Date.now() });

  const clients = locals.map((l, i) => chaosClient(stack!.wsUrl, l, rooms[i % ROOMS]!));
  await Promise.all(clients.map((c) => relog(c)));

  // Sending, with random logouts alongside, until `messages` frames were accepted.
  const accepted = () => [...sent.values()].reduce((n, e) => n + (e.accepted + e.resent > 0 ? 1 : 0), 0);
  let seq = 0;
  let sending = true;
  const senders = clients.map(async (c) => {
    while (sending) {
      await sleep(20 + Math.random() * 80);
      if (!c.online || !sending) continue;
      const id = `o${seq++}`;
      const toRoom = Math.random() < 0.2;
      const to = toRoom ? c.room : `${locals[(locals.indexOf(c.local) + 1 + Math.floor(Math.random() * (CLIENTS - 1))) % CLIENTS]}@localhost`;
      sent.set(id, { from: c.local, to: toRoom ? `${to} from ${c.local}` : to, room: toRoom ? c.room : undefined, accepted: 0, resent: 0, at: new Date().toISOString() });
      c.xmpp
        .send(xml('message', { to, type: toRoom ? 'groupchat' : 'chat', id }, xml('body', {}, id), xml('origin-id', { xmlns: SID, id })))
        .catch(() => {});
    }
  });
  const relogs = (async () => {
    while (sending) {
      await sleep(1000);
      const c = clients[Math.floor(Math.random() * CLIENTS)]!;
      if (c.online) void relog(c);
    }
  })();
  const started = Date.now();
  while (accepted() < messages) {
    await sleep(500);
    if (Date.now() - started > 1_200_000) break;
  }
  sending = false;
  await Promise.all([...senders, relogs]);

  // Quiet down: every client back online and caught up (a ping answered means its earlier frames
  // were processed), offline stores drained by logins.
  for (let round = 0; round < 20; round++) {
    // Clients reconnecting by themselves are left to it; only a stopped one is started here.
    await Promise.all(clients.map(async (c) => {
      for (let wait = 0; wait < 50 && c.xmpp.status !== 'online' && c.xmpp.status !== 'offline'; wait++) await sleep(100);
      if (c.xmpp.status === 'offline') await relog(c);
      // Only an authenticated stream may ping: a stanza before SASL is a stream error.
      else if (c.xmpp.status === 'online') await ping(c);
    }));
    // Frames still queued on sockets that closed (a replaced stream's backlog) are processed too.
    await Promise.race([stack!.gateway.idle(), sleep(30_000)]);
    const pending = (await Promise.all(locals.map(async (l) => (await store.listOffline(`${l}@localhost`)).length))).reduce((a, b) => a + b, 0);
    if (pending === 0 && clients.every((c) => c.online)) break;
    await Promise.all(clients.map((c) => (c.xmpp.status === 'online' ? relog(c) : undefined)));
  }
  await Promise.all(clients.map((c) => (c.xmpp.status === 'online' ? ping(c) : false)));
  await Promise.race([stack!.gateway.idle(), sleep(30_000)]);
  await sleep(2000);

  // Count.
  const direct = [...sent].filter(([, e]) => e.accepted + e.resent > 0 && !e.room);
  const roomMessages = [...sent].filter(([, e]) => e.accepted + e.resent > 0 && e.room);
  const byUser = new Map(clients.map((c) => [`${c.local}@localhost`, c]));
  let directLost = 0;
  let directDoubled = 0;
  let directAfterClose = 0;
  for (const [id, e] of direct) {
    const recipient = byUser.get(e.to)!;
    const n = recipient.received.get(id) ?? 0;
    // Reached the client's socket, and the server took it as delivered: after its own </close>
    // (without XEP-0198), or after the client's final <a/> when the server's </close> posted
    // fine just as the client gave up waiting for it (so nothing was re-routed).
    if (n === 0 && (recipient.afterClose.has(id) || recipient.afterFinalAck.dropped.has(id))) directAfterClose++;
    else if (n === 0) directLost++;
    if (n > 1) directDoubled++;
  }
  const archived = new Map<string, number>();
  for (const room of rooms) {
    const items = await queryAll(store.db, { KeyConditionExpression: 'pk = :pk AND begins_with(sk, :m)', ExpressionAttributeValues: { ':pk': `room#${room}`, ':m': 'mam#' } });
    for (const item of items) {
      const id = /<origin-id[^>]*id="([^"]+)"/.exec(item.xml as string)?.[1];
      if (id) archived.set(id, (archived.get(id) ?? 0) + 1);
    }
  }
  const roomLost = roomMessages.filter(([id]) => !archived.has(id)).length;
  const roomDoubled = roomMessages.filter(([id]) => (archived.get(id) ?? 0) > 1).length;
  const receivedTwice = clients.reduce((n, c) => n + [...c.received.values()].filter((v) => v > 1).length, 0);
  // Received on a session left without </close> and not resumed, and once more from its hand-over
  // (for each such session that had it).
  const againAfterUnresumed = (c: ChaosClient, id: string, v: number) => v - 1 <= (c.leftUnresumed.get(id) ?? 0);
  const doubledByServer = clients.reduce(
    (n, c) => n + [...c.received].filter(([id, v]) => v > 1 && !repeatedPosts.has(`${c.local}@localhost|${id}`) && !againAfterUnresumed(c, id, v)).length,
    0,
  );
  const acceptedTwice = [...sent.values()].filter((e) => e.accepted > 1).length;
  const leftOffline = (await Promise.all(locals.map(async (l) => (await store.listOffline(`${l}@localhost`)).length))).reduce((a, b) => a + b, 0);
  const report = {
    accepted: direct.length + roomMessages.length,
    direct: direct.length,
    room: roomMessages.length,
    directLost,
    directDoubled,
    directAfterClose,
    droppedAfterFinalAck: clients.reduce((n, c) => n + c.afterFinalAck.dropped.size, 0),
    roomLost,
    roomDoubledInArchive: roomDoubled,
    receivedTwiceByAnyClient: receivedTwice,
    ofWhichDeliveredLate: clients.reduce((n, c) => n + [...c.received].filter(([id, v]) => v > 1 && repeatedPosts.has(`${c.local}@localhost|${id}`)).length, 0),
    ofWhichAfterAnUnresumedSession: clients.reduce((n, c) => n + [...c.received].filter(([id, v]) => v > 1 && againAfterUnresumed(c, id, v)).length, 0),
    acceptedTwice,
    resentAfterResumption: [...sent.values()].filter((e) => e.resent > 0).length,
    leftOffline,
    deadLetters,
    maxEventLoopStallMs: Math.round(lag.max / 1e6),
    seconds: Math.round((Date.now() - started) / 1000),
  };
  console.log(`chaos: ${JSON.stringify(report)}`);
  const lostFrom = new Map<string, number>();
  for (const [id, e] of [...direct, ...roomMessages]) {
    const r = byUser.get(e.to)!;
    const lost = e.room ? !archived.has(id) : (r.received.get(id) ?? 0) === 0 && !r.afterClose.has(id) && !r.afterFinalAck.dropped.has(id);
    if (lost) lostFrom.set(e.from, (lostFrom.get(e.from) ?? 0) + 1);
    if (lost && process.env.CHAOS_TRACE) console.log(`lost ${id} from ${e.from} on ${e.connectionId} to ${e.to}, sent at ${e.at}`);
  }
  console.log(`chaos diagnostics: lost by sender ${JSON.stringify(Object.fromEntries(lostFrom))}`);
  const errors = new Map<string, number>();
  for (const c of clients) for (const [k, v] of c.errors) errors.set(k, (errors.get(k) ?? 0) + v);
  const doubles = clients.flatMap((c) => [...c.how].filter(([, h]) => h.length > 1).map(([id, h]) => `${c.local}:${id}:${h.join(',')}`));
  const sharedConnections: string[] = [];
  for (const room of rooms) {
    const seen = new Map<string, string>();
    for (const o of await muc.listOccupants(room)) {
      for (const sess of o.sessions) {
        const key = sess.connectionId ?? '';
        if (seen.has(key)) sharedConnections.push(`${room}:${o.nick}/${seen.get(key)}:${key}`);
        seen.set(key, o.nick);
      }
    }
  }
  console.log(`chaos diagnostics: connections in two occupant entries ${JSON.stringify(sharedConnections)}; senders of doubles ${clients.flatMap((c) => [...c.how].filter(([, h]) => h.length > 1).map(([id]) => `${id}<-${sent.get(id)?.to}`)).slice(0, 10).join(' ')}`);
  console.log(`chaos diagnostics: errors ${JSON.stringify(Object.fromEntries(errors))}; doubles ${doubles.slice(0, 20).join(' ')}`);
  await Promise.all(clients.map((c) => c.xmpp.stop().catch(() => {})));

  expect(report.accepted).toBeGreaterThanOrEqual(messages);
  expect(acceptedTwice).toBe(0);
  // Nothing lost: every 1:1 message reached its recipient (live or from offline storage), every
  // room message is in the room's archive, once; no frame was given up, nothing left offline.
  expect({ directLost, roomLost, roomDoubled, leftOffline, deadLetters }).toEqual({ directLost: 0, roomLost: 0, roomDoubled: 0, leftOffline: 0, deadLetters: 0 });
  // Nothing doubled by the server: every copy a client got twice is a post delivered after its
  // sender gave up on it (printed above; docs/architecture.md, "Delivery guarantees").
  expect(doubledByServer).toBe(0);
}
