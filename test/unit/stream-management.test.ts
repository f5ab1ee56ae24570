/**
 * XEP-0198 at the handleFrame level on three handler instances sharing one DynamoDB Local table:
 * posts racing a resumption, a resumption that crashes half-way and runs again, the end of the
 * window racing a resumption, and the window's timer delivered twice. The recording sender stands in
 * for @connections and the recording timers for the SQS delay queue (AWS's edge).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { isStanzaFrame } from '../../shared/transport/sm-sender.ts';
import { POST_LEASE_MS } from '../../shared/storage/sm-store.ts';
import { authenticated as authenticatedIn, befriend, Connection, freshUsers, kill, onlineWithSm, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
/** A number per test, for names of its own (rooms, timer events). */
let n = 0;
/** Fresh accounts per test. */
function users(...names: string[]): Promise<string[]> {
  n += 1;
  return freshUsers(h, ...names);
}

/**
 * While set, the next DynamoDB read whose input contains `marker` answers only on `release`: a
 * router holding a copy read then, and using it later (a slow frame under load).
 */
/** The resumption window of these tests, in seconds. */
const WINDOW_SECONDS = 4;
/** Waits until the window of a session hibernated before the call is over. */
const windowPasses = () => sleep(WINDOW_SECONDS * 1000 + 100);

let hold: { marker: string; reached: () => void; release: Promise<void> } | undefined;

beforeEach(async () => {
  // A short window, so a test can let it pass; long enough that a loaded machine (CI runs every
  // file at once) resumes within it where a test means to (at 1 s, CI once took longer).
  if (!h) {
    h = await startHarness(3, { XMPP_SM_RESUME_SECONDS: String(WINDOW_SECONDS) });
    h.crash.client.middlewareStack.add(
      (next, context) => async (args) => {
        const held = hold;
        if (!held || !/Query|Get/.test(context.commandName ?? '') || !JSON.stringify(args.input).includes(held.marker)) return next(args);
        hold = undefined;
        const out = await next(args);
        held.reached();
        await held.release;
        return out;
      },
      { step: 'initialize', name: 'holdRouter' },
    );
  }
  h.sender.beforePost = undefined;
});

const SM = 'urn:xmpp:sm:3';
const chat = (to: string, body: string) => `<message xmlns="jabber:client" to="${to}" type="chat"><body>${body}</body></message>`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const bodies = (frames: string[]) => frames.map((f) => /<body>([^<]*)<\/body>/.exec(f)?.[1]).filter((b): b is string => b !== undefined);

const authenticated = (bare: string) => authenticatedIn(h, bare);

/**
 * Bob online (desk), Alice online with stream management (phone), contacts when asked; then Alice's
 * socket dies and her session hibernates. `before` runs first (connections that must exist before
 * the window starts). Returns the connections, her SM id and the window's timer event.
 */
async function hibernatedAlice(options: { contacts?: boolean; before?: (bob: string) => Promise<void> } = {}) {
  const [alice, bob] = await users('alice', 'bob');
  if (options.contacts) await befriend(h, alice!, bob!);
  const b = new Connection(h);
  await b.online(bob!, 'secret', 'desk');
  await options.before?.(bob!);
  const a = new Connection(h);
  const smId = await onlineWithSm(a, alice!, 'phone');
  const timer = h.timers.scheduled.length;
  await kill(a);
  return { alice: alice!, bob: bob!, a, b, smId, timers: h.timers.scheduled.slice(timer), event: h.timers.scheduled[timer]!.event };
}

/**
 * Bob online on two desks, Alice with stream management on her phone; `counted()` is what her
 * client counted so far (the stanzas after <enabled/>).
 */
/**
 * Holds the post of the stanza with `body` to `socket` (`hung` resolves when it got there) until
 * `release()`, then `then()` decides its end: the socket died meanwhile, or the post fails.
 */
function hangPost(socket: string, body: string, then: () => void) {
  let hanging!: () => void;
  const hung = new Promise<void>((r) => (hanging = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  h.sender.beforePost = async ({ connectionId, frame }) => {
    if (connectionId !== socket || !frame.includes(`<body>${body}</body>`)) return;
    hanging();
    await released;
    then();
  };
  return { hung, release };
}

/** Bob online (desk), Alice online with stream management (phone). */
async function bobAndAlice() {
  const [alice, bob] = await users('alice', 'bob');
  const b = new Connection(h);
  await b.online(bob!, 'secret', 'desk');
  const a = new Connection(h);
  await onlineWithSm(a, alice!, 'phone');
  return { alice: alice!, a, b };
}

async function aliceAndTwoDesks() {
  const [alice, bob] = await users('alice', 'bob');
  const desks = [0, 1].map(() => new Connection(h));
  for (const [i, d] of desks.entries()) await d.online(bob!, 'secret', `desk${i}`);
  const a = new Connection(h);
  const smId = await onlineWithSm(a, alice!, 'phone');
  const since = a.posts().findIndex((f) => f.startsWith('<enabled'));
  const counted = () => a.posts().slice(since).filter(isStanzaFrame).length;
  return { alice: alice!, desks, a, smId, counted };
}

describe('stream management on several handler instances', () => {
  it('hibernates on $disconnect: contacts see nothing, posts are kept, one timer is set for the window', async () => {
    const { alice, a, b, timers } = await hibernatedAlice({ contacts: true });
    expect((await h.store.getConnection(a.id))?.stage).toBe('hibernated');
    expect(timers).toEqual([{ event: { type: 'sm-expire', session: a.id, socket: a.id }, delaySeconds: WINDOW_SECONDS }]);
    expect(b.posts(/type="unavailable"/)).toEqual([]);
    // Bob still finds her available, so his message is taken (and kept for her), not stored offline.
    await b.frame(chat(`${alice}/phone`, 'while away'));
    expect(await h.store.listOffline(alice!)).toEqual([]);
  });

  it('resumes while other instances post to the session: every message exactly once, in the order numbered', async () => {
    const senders = Array.from({ length: 3 }, () => new Connection(h));
    const { alice, b, smId } = await hibernatedAlice({
      before: async (bob) => {
        for (const [i, s] of senders.entries()) await s.online(bob, 'secret', `desk${i}`);
      },
    });
    for (let i = 1; i <= 3; i++) await b.frame(chat(`${alice}/phone`, `gap${i}`));

    const a2 = await authenticated(alice!); // within the window
    // Slow posts, so Bob's messages below are numbered while the resumption is under way.
    h.sender.beforePost = () => sleep(5);
    const racing = senders.flatMap((s, i) => [1, 2, 3].map((j) => s.frame(chat(`${alice}/phone`, `race${i}-${j}`), (i + j) % 3)));
    await Promise.all([a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1), ...racing]);
    h.sender.beforePost = undefined;

    const got = bodies(a2.posts());
    const expected = ['gap1', 'gap2', 'gap3', ...senders.flatMap((_, i) => [1, 2, 3].map((j) => `race${i}-${j}`))];
    expect([...got].sort()).toEqual([...expected].sort()); // each once, none lost
    expect(got.slice(0, 3)).toEqual(['gap1', 'gap2', 'gap3']);
    expect(a2.posts('<resumed')).toHaveLength(1);
    // The session goes on on the new connection.
    await b.frame(chat(`${alice}/phone`, 'later'));
    expect(a2.posts('later')).toHaveLength(1);
  });

  it('a resumption of a session that other instances keep posting to moves it at once: no new stanza slips in between its resends and the move', async () => {
    const { alice, b, smId } = await hibernatedAlice();
    for (let i = 1; i <= 3; i++) await b.frame(chat(`${alice}/phone`, `gap${i}`));
    const a2 = await authenticated(alice!);
    // Each stanza resent to her new socket sets off another message to her on another instance (a
    // busy session): a resumption that retried its move each time something new was numbered
    // would not finish (it gives up after 20 tries).
    let more = 0;
    let resuming = true;
    const extra: Promise<unknown>[] = [];
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (!resuming || connectionId !== a2.id || !isStanzaFrame(frame) || more >= 60) return;
      more += 1;
      const routed = b.frame(chat(`${alice}/phone`, `more${more}`), more % 3);
      extra.push(routed);
      await Promise.race([routed, sleep(300)]);
    };
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1);
    resuming = false;
    for (let settled = 0; settled < extra.length; ) {
      const now = extra.length;
      await Promise.all(extra.slice(0, now));
      settled = now;
    }
    h.sender.beforePost = undefined;
    const got = bodies(a2.posts());
    expect(got.slice(0, 3)).toEqual(['gap1', 'gap2', 'gap3']);
    expect(new Set(got).size).toBe(got.length); // each once
    expect(got.filter((g) => g.startsWith('more'))).toHaveLength(more);
    expect(a2.posts('<resumed')).toHaveLength(1);
  });

  it('two resumptions of one session at once: the one that moves it first keeps it, the other lets go without ending it', async () => {
    const { alice, b, smId } = await hibernatedAlice({ contacts: true });
    await b.frame(chat(`${alice}/phone`, 'kept'));
    const [a2, a3] = [await authenticated(alice!), await authenticated(alice!)];
    // Her client gave up on a2 (its <resumed/> was slow) and resumed again on a3, which finishes
    // first, while a2 is between its own commit and its move.
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (connectionId !== a2.id || !frame.startsWith('<resumed')) return;
      h.sender.beforePost = undefined;
      await a3.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1);
    };
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 0);
    expect(bodies(a3.posts())).toEqual(['kept']);
    expect(h.sender.closed).toContain(a2.id);
    await a2.disconnect(2);
    // The session lives on on a3: contacts saw nothing, and what comes next reaches a3 only.
    await b.frame(chat(`${alice}/phone`, 'next'));
    expect(bodies(a3.posts())).toEqual(['kept', 'next']);
    expect(bodies(a2.posts())).not.toContain('next');
    expect(b.posts(/type="unavailable"/)).toEqual([]);
  });

  it('carbon copies are counted like any stanza: one sent while the session hibernates comes with the resumption, and the count stays right', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const desk = new Connection(h);
    await desk.online(alice!, 'secret', 'desk');
    const phone = new Connection(h);
    const smId = await onlineWithSm(phone, alice!, 'phone');
    await phone.frame('<iq xmlns="jabber:client" type="set" id="carbons"><enable xmlns="urn:xmpp:carbons:2"/></iq>');
    await kill(phone);
    await desk.frame(chat(bob!, 'from the desk'));

    const again = await authenticated(alice!);
    // Her phone had received her desk's presence and the carbons result.
    await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="2"/>`);
    expect(again.posts('<resumed')).toHaveLength(1);
    expect(again.posts(/<sent xmlns="urn:xmpp:carbons:2">.*from the desk/)).toHaveLength(1);
    // The copy was numbered: an ack that counts it is in range (one above what was sent is an error).
    await again.frame(`<a xmlns="${SM}" h="3"/>`);
    expect(again.posts(/<failed|<stream:error|undefined-condition/)).toEqual([]);
  });

  it('a post whose outcome is unknown (arrived, never answered) is not posted again: the connection is cut, and the resumption resends only what the client lacks', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice!, 'phone');
    await b.frame(chat(`${alice}/phone`, 'one'));
    let timedOut = 0;
    h.sender.afterPost = ({ frame }, hint) => {
      if (frame.includes('<body>two</body>') && timedOut++ === 0) {
        expect(hint?.once).toBe(true); // numbered posts are never retried by the SDK
        throw Object.assign(new Error('socket timed out'), { name: 'TimeoutError' });
      }
    };
    await b.frame(chat(`${alice}/phone`, 'two'));
    h.sender.afterPost = undefined;
    expect(h.sender.closed).toContain(a.id);
    expect(bodies(a.posts())).toEqual(['one', 'two']); // it did arrive, once
    await a.disconnect(); // the cut connection's $disconnect: the session hibernates

    // Her client counted every stanza it got, the one that timed out included.
    const received = a.posts().filter(isStanzaFrame).length;
    const again = await authenticated(alice!);
    await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="${received}"/>`);
    expect(again.posts('<resumed')).toHaveLength(1);
    expect(bodies(again.posts())).toEqual([]); // nothing resent: she has it all
    await b.frame(chat(`${alice}/phone`, 'three'));
    expect(bodies(again.posts())).toEqual(['three']);
    await again.frame(`<a xmlns="${SM}" h="${received + 1}"/>`);
    expect(again.posts(/<stream:error|<failed/)).toEqual([]);
  });

  it('a resent stanza whose outcome is unknown is not resent again on that socket: the socket is cut, and the next resumption resends only what the client lacks', async () => {
    const { alice, b, smId } = await hibernatedAlice();
    for (const body of ['one', 'two', 'three']) await b.frame(chat(`${alice}/phone`, body));
    const again = await authenticated(alice!);
    let timedOut = 0;
    h.sender.afterPost = ({ frame }, hint) => {
      if (frame.includes('<body>two</body>') && timedOut++ === 0) {
        expect(hint?.once).toBe(true); // resends are never retried by the SDK
        throw Object.assign(new Error('socket timed out'), { name: 'TimeoutError' });
      }
    };
    try {
      await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`);
    } finally {
      h.sender.afterPost = undefined;
    }
    expect(bodies(again.posts())).toEqual(['one', 'two']); // 'two' arrived once; 'three' waits for the next socket
    expect(h.sender.closed).toContain(again.id);
    await again.disconnect(); // the cut socket's $disconnect: the session hibernates again

    // Her client counted both: the next resumption resends exactly 'three'.
    const third = await authenticated(alice!);
    await third.frame(`<resume xmlns="${SM}" previd="${smId}" h="2"/>`);
    expect(third.posts('<resumed')).toHaveLength(1);
    expect(bodies(third.posts())).toEqual(['three']);
    await b.frame(chat(`${alice}/phone`, 'four'));
    expect(bodies(third.posts())).toEqual(['three', 'four']);
    await third.frame(`<a xmlns="${SM}" h="4"/>`);
    expect(third.posts(/<stream:error|<failed/)).toEqual([]);
  });

  it('a message routed on her session item as it was before <enable/> and posted after <enabled/> is numbered: a resumption with her count resends exactly what she lacks', async () => {
    const [alice, bob, carol] = await users('alice', 'bob', 'carol');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const c = new Connection(h);
    await c.online(carol!, 'secret', 'desk');
    const a = new Connection(h);
    await a.login(alice!, 'secret', 'phone'); // bound; <enable/> is next in her queue
    // Bob's message reads her account (her session: no XEP-0198 yet), and is slow to go on.
    let reached!: () => void;
    const readHers = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    hold = { marker: `user#${alice}`, reached, release: new Promise<void>((r) => (release = r)) };
    const routed = b.frame(chat(`${alice}/phone`, 'held'), 0);
    await readHers;
    await a.frame(`<enable xmlns="${SM}" resume="true"/>`, 1);
    const smId = /id="([^"]+)"/.exec(a.posts('<enabled')[0]!)![1]!;
    await c.frame(chat(`${alice}/phone`, 'first'), 2);
    release();
    await routed;
    // Her client counts every stanza after <enabled/>: two. Then her socket dies, and carol writes again.
    const enabledAt = a.posts().findIndex((f) => f.startsWith('<enabled'));
    const counted = a.posts().slice(enabledAt + 1).filter(isStanzaFrame);
    expect(bodies(counted)).toEqual(['first', 'held']);
    await kill(a);
    await c.frame(chat(`${alice}/phone`, 'while-away'));
    // Her count covers exactly what she got: the resumption resends what she lacks, no more, no less
    // (an unnumbered 'held' would have made her count cover 'while-away').
    const again = await authenticated(alice!);
    await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted.length}"/>`);
    expect(again.posts('<resumed')).toHaveLength(1);
    expect(bodies(again.posts())).toEqual(['while-away']);
  });

  it('a message numbered while <enabled/> is on its way (enable after initial presence, as @xmpp/client does) reaches her after it: her count covers it, and a resumption resends nothing twice', async () => {
    const [alice, carol] = await users('alice', 'carol');
    const c = new Connection(h);
    await c.online(carol!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    // The enabling frame (instance 1) has created the record and marked her session item when its
    // <enabled/> is slow to go: carol's message (instance 2) is routed and numbered meanwhile.
    let routed: Promise<unknown> | undefined;
    h.sender.beforePost = async ({ frame }) => {
      if (!frame.startsWith('<enabled') || routed) return;
      routed = c.frame(chat(`${alice}/phone`, 'during enable'), 2);
      await Promise.race([routed, sleep(500)]);
    };
    await a.frame(`<enable xmlns="${SM}" resume="true"/>`, 1);
    h.sender.beforePost = undefined;
    await routed;
    const smId = /id="([^"]+)"/.exec(a.posts('<enabled')[0]!)![1]!;
    const enabledAt = a.posts().findIndex((f) => f.startsWith('<enabled'));
    const counted = a.posts().slice(enabledAt + 1).filter(isStanzaFrame);
    expect(bodies(counted)).toEqual(['during enable']);
    // Her socket dies with her count at what reached her after <enabled/>: nothing is resent twice.
    await kill(a);
    await c.frame(chat(`${alice}/phone`, 'while away'));
    const again = await authenticated(alice!);
    await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted.length}"/>`);
    expect(again.posts('<resumed')).toHaveLength(1);
    expect(bodies(again.posts())).toEqual(['while away']);
  });

  it('the window ends: a session bound before a kept message but available only after it gets it, not nothing', async () => {
    const { alice, b, event } = await hibernatedAlice({ contacts: true });
    const tablet = new Connection(h);
    await tablet.login(alice!, 'secret', 'tablet'); // bound, no initial presence yet
    await b.frame(chat(alice!, 'kept before the tablet was available')); // to the bare JID: only the hibernated phone takes it
    await tablet.frame('<presence xmlns="jabber:client"/>');
    await windowPasses();
    await h.servers[1]!.handleTimer(event, { id: `due-${n}` });
    expect(bodies(tablet.posts())).toEqual(['kept before the tablet was available']);
    expect(await h.store.listOffline(alice!)).toEqual([]);
  });

  it('a resumption that crashes after moving the session runs again without resending twice', async () => {
    const { alice, b, smId } = await hibernatedAlice();
    for (let i = 1; i <= 3; i++) await b.frame(chat(`${alice}/phone`, `gap${i}`));
    const a2 = await authenticated(alice!);
    // The instance dies right after the conditional write that moved the session here.
    h.sender.beforePost = ({ frame }) => {
      if (frame.includes('gap3')) h.crash.crashAfter('UpdateItemCommand');
    };
    await expect(a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 0)).rejects.toThrow(/crash after UpdateItemCommand/);
    h.sender.beforePost = undefined;
    expect((await a2.redeliver(2))?.stage).toBe('bound');
    expect(bodies(a2.posts())).toEqual(['gap1', 'gap2', 'gap3']);
    expect(a2.posts('<resumed')).toHaveLength(1);
    await b.frame(chat(`${alice}/phone`, 'after'));
    expect(bodies(a2.posts())).toEqual(['gap1', 'gap2', 'gap3', 'after']);
  });

  it('a resumption that dies before moving the session runs again after one more stanza was kept, the same text as one it resent (a contact away again): that one is resent too, not taken as resent (traced in a chaos run: the count fell one behind)', { timeout: 20_000 }, async () => {
    const { alice, bob, b, smId } = await hibernatedAlice({ contacts: true });
    const away = '<presence xmlns="jabber:client" type="unavailable"/>';
    await b.frame(away);
    await b.frame('<presence xmlns="jabber:client"/>');
    const a2 = await authenticated(alice);
    // The instance dies after resending both, before the write that moves the session here.
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a2.id && frame.startsWith('<presence') && !frame.includes('unavailable')) h.crash.crashBefore('UpdateItemCommand');
    };
    await expect(a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 0)).rejects.toThrow(/crash before UpdateItemCommand/);
    h.sender.beforePost = undefined;
    // Bob goes away again (kept: the session has not moved), and the queue hands the resumption out again.
    await b.frame(away, 1);
    await a2.redeliver(2);
    const fromBob = a2.posts().filter((f) => f.startsWith('<presence') && f.includes(`from="${bob}/desk"`));
    // Her count was 0: his presence from her login, then away, back, and away again.
    expect(fromBob.map((f) => (f.includes('type="unavailable"') ? 'away' : 'back'))).toEqual(['back', 'away', 'back', 'away']);
    expect(a2.posts('<resumed')).toHaveLength(1);
  });

  it('the end of the window racing a resumption: either resumed with everything, or ended with everything offline, never both', async () => {
    const { alice, b, smId, event } = await hibernatedAlice({ contacts: true });
    await b.frame(chat(`${alice}/phone`, 'pending'));
    const a2 = await authenticated(alice!);
    await windowPasses(); // the window is over: the timer is due, and a resumption just in time may still be in flight
    await Promise.all([a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 0), h.servers[1]!.handleTimer(event, { id: `timer-${n}` })]);
    const resumed = a2.posts('<resumed').length === 1;
    const offline = (await h.store.listOffline(alice!)).map((m) => bodies([m.xml])[0]);
    if (resumed) {
      expect(bodies(a2.posts())).toEqual(['pending']);
      expect(offline).toEqual([]);
      expect(b.posts(/from="alice\d+@localhost\/phone"[^>]*type="unavailable"/)).toEqual([]);
    } else {
      expect(a2.posts('<failed')[0]).toContain('item-not-found');
      expect(offline).toEqual(['pending']);
      expect(b.posts(/type="unavailable"/).length).toBe(1);
    }
  });

  it('the window ends once however often its timer is delivered: contacts told once, messages stored once', async () => {
    const { alice, a, b, event } = await hibernatedAlice({ contacts: true });
    const timer = h.timers.scheduled.length;
    await b.frame(chat(`${alice}/phone`, 'one'));
    await b.frame(chat(alice!, 'two')); // to the bare JID: she has no other session, so it is hers alone
    // Early (the queue may deliver a little early): nothing ends, the timer is set again.
    await h.servers[0]!.handleTimer(event, { id: `early-${n}` });
    expect((await h.store.getConnection(a.id))?.stage).toBe('hibernated');
    expect(h.timers.scheduled.length).toBe(timer + 1);
    await windowPasses();
    // The instance crashes after the session left; the event runs again on another instance, and once more.
    h.crash.crashAfter('DeleteItemCommand');
    await expect(h.servers[1]!.handleTimer(event, { id: `due-${n}` })).rejects.toThrow(/crash after DeleteItemCommand/);
    await h.servers[2]!.handleTimer(event, { id: `due-${n}` });
    await h.servers[0]!.handleTimer(event, { id: `due-${n}` });
    expect((await h.store.listOffline(alice!)).map((m) => bodies([m.xml])[0]).sort()).toEqual(['one', 'two']);
    expect(b.posts(/type="unavailable"/)).toHaveLength(1);
    expect(await h.store.getConnection(a.id)).toBeUndefined();
  });

  it('the window ends and the hand-over dies half-way; she logs in before it runs again: each kept message reaches her once (traced in a chaos run: stored offline by the first run, flushed at her login, then posted live by the run again)', async () => {
    const { alice, b, event } = await hibernatedAlice({ contacts: true });
    for (const body of ['one', 'two', 'three']) await b.frame(chat(`${alice}/phone`, body));
    await windowPasses();
    // The first run stores 'one' offline (no session is left) and dies right after.
    h.crash.crashAfter('PutItemCommand');
    await expect(h.servers[1]!.handleTimer(event, { id: `due-${n}` })).rejects.toThrow(/crash after PutItemCommand/);
    expect((await h.store.listOffline(alice!)).map((m) => bodies([m.xml])[0])).toEqual(['one']);
    const tablet = new Connection(h);
    await tablet.online(alice!, 'secret', 'tablet'); // her login flushes what is stored
    expect(bodies(tablet.posts())).toEqual(['one']);
    await h.servers[2]!.handleTimer(event, { id: `due-${n}` }); // the queue's redelivery
    expect(bodies(tablet.posts()).sort()).toEqual(['one', 'three', 'two']);
    expect(await h.store.listOffline(alice!)).toEqual([]);
  });

  it('the window ends after she logged in again elsewhere: the new session gets what the hibernated one kept, a session that was there already does not get it twice', async () => {
    const { alice, b, event } = await hibernatedAlice({ contacts: true });
    const tablet = new Connection(h);
    await b.frame(chat(alice!, 'kept for the phone')); // to the bare JID: her only available session is the hibernated phone
    await tablet.online(alice!, 'secret', 'tablet'); // bound after that message was routed
    await b.frame(chat(alice!, 'both had it')); // the phone (kept) and the tablet (live)
    await windowPasses();
    await h.servers[1]!.handleTimer(event, { id: `due-${n}` });
    expect(bodies(tablet.posts())).toEqual(['both had it', 'kept for the phone']);
    expect(await h.store.listOffline(alice!)).toEqual([]);
    const laptop = new Connection(h);
    await laptop.online(alice!, 'secret', 'laptop');
    expect(bodies(laptop.posts())).toEqual([]); // nothing left in offline storage for a later login
  });

  it('a client resuming while a frame of its old connection is in flight: the frame finishes first, is counted in <resumed h/>, and is routed once', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice!, 'phone'); // the client has sent one stanza since <enable/> (its presence)
    const a2 = await authenticated(alice!);
    // The old connection's message is routed but held in its post to Bob until the resumption
    // has begun (the client lost its network and resumed before the server noticed).
    h.sender.beforePost = async ({ frame }) => {
      if (!frame.includes('in flight')) return;
      for (let i = 0; i < 100 && !h.sender.closed.includes(a.id); i++) await sleep(20);
    };
    const inFlight = a.frame(chat(`${bob}/desk`, 'in flight'), 0);
    const resuming = a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1);
    // Its $disconnect comes after its last frame (one FIFO group per connection).
    await inFlight;
    await a.disconnect(2);
    await resuming;
    h.sender.beforePost = undefined;

    // Counted: the client will not send it again.
    expect(a2.posts('<resumed')[0]).toContain('h="2"');
    expect(bodies(b.posts())).toEqual(['in flight']);
    await b.frame(chat(`${alice}/phone`, 'after'));
    expect(bodies(a2.posts())).toEqual(['after']);
  });

  /**
   * Alice (phone, stream management) and Bob (desk) online; her client resumes on a new connection
   * before the server noticed the old one died. The drain closes the old socket and its $disconnect
   * comes (on another instance), then the instance resuming dies after it took the old connection
   * over, before <resumed/> went out: her client gives up on that connection too.
   */
  async function resumptionDiedAfterTakeOver() {
    const [alice, bob] = await users('alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice!, 'phone');
    const a2 = await authenticated(alice!);
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a2.id && frame.startsWith('<resumed')) throw new Error('the instance died');
    };
    const resuming = a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 0);
    for (let i = 0; i < 100 && !h.sender.closed.includes(a.id); i++) await sleep(20);
    await a.disconnect(1);
    await expect(resuming).rejects.toThrow(/died/);
    h.sender.beforePost = undefined;
    expect((await h.store.getConnection(a.id))?.stage).toBe('resumed');
    await a2.disconnect(2);
    await b.frame(chat(alice!, 'while she reconnects'));
    return { alice: alice!, bob: bob!, b, smId };
  }

  it('a resumption that died after taking the old connection over: the next one resumes the session and nothing is lost', { timeout: 20_000 }, async () => {
    const { alice, b, smId } = await resumptionDiedAfterTakeOver();
    const a3 = await authenticated(alice);
    await a3.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1);
    expect(a3.posts('<resumed')).toHaveLength(1);
    expect(a3.posts('<resumed')[0]).toContain('h="1"'); // her initial presence
    expect(bodies(a3.posts())).toEqual(['while she reconnects']);
    expect(b.posts(/type="unavailable"/)).toEqual([]);
  });

  it('a resumption that died after taking the old connection over, and her client binds anew: the old session ends, what it kept reaches the new one', { timeout: 20_000 }, async () => {
    const { alice } = await resumptionDiedAfterTakeOver();
    const a3 = new Connection(h);
    await a3.online(alice, 'secret', 'phone');
    expect(bodies(a3.posts())).toEqual(['while she reconnects']);
    expect((await h.store.getSessionsOf([alice])).get(alice)?.map((s) => s.connectionId)).toEqual([a3.id]); // the old session went
  });

  it('a resumption that dies after <resumed/> and before moving the session, and her client binds anew: what her <resume h/> counted is not handed over again (traced in a chaos run: three messages she had came again from offline storage)', { timeout: 20_000 }, async () => {
    const { alice, desks, a, smId, counted } = await aliceAndTwoDesks();
    for (const body of ['one', 'two', 'three']) await desks[0]!.frame(chat(`${alice}/phone`, body));
    expect(bodies(a.posts())).toEqual(['one', 'two', 'three']);
    await kill(a); // she never sent <a/>: her count reaches the server only in <resume h/>
    const a2 = await authenticated(alice);
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a2.id && frame.startsWith('<resumed')) throw new Error('the instance died');
    };
    await expect(a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted()}"/>`, 0)).rejects.toThrow(/died/);
    h.sender.beforePost = undefined;
    await a2.disconnect(1); // her client gave up on that socket before the frame ran again
    const a3 = new Connection(h);
    await a3.online(alice, 'secret', 'phone'); // a new session takes the resource: the old one is handed over
    expect(bodies(a3.posts())).toEqual([]);
    await desks[1]!.frame(chat(`${alice}/phone`, 'four'));
    expect(bodies(a3.posts())).toEqual(['four']);
  });

  it("a client resuming while its old connection's queue is stuck (a post that hangs): the resumption is refused, the stuck frames are handled once when they come, and a new session gets what the old one kept and she did not count", { timeout: 30_000 }, async () => {
    const [alice, bob] = await users('alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice!, 'phone');
    await b.frame(chat(`${alice}/phone`, 'she got this one'));
    // What her client counted: the stanzas after <enabled/>.
    const since = a.posts().findIndex((f) => f.startsWith('<enabled'));
    const counted = a.posts().slice(since).filter(isStanzaFrame).length;
    // Her old connection's frame hangs in its post to Bob (longer than the drain waits); the one
    // queued behind it, and its $disconnect, come only after it.
    let release!: () => void;
    const hung = new Promise<void>((r) => (release = r));
    h.sender.beforePost = async ({ frame }) => {
      if (frame.includes('hangs')) await hung;
    };
    const stuck = a.frame(chat(`${bob}/desk`, 'hangs'), 0);
    const a2 = await authenticated(alice!);
    await b.frame(chat(`${alice}/phone`, 'sent as her network went'), 2); // numbered, never reached her
    // The resume frame's instance dies once its <failed/> has reached her socket (unanswered).
    h.sender.afterPost = ({ frame }) => {
      if (!frame.startsWith('<failed')) return;
      h.sender.afterPost = undefined;
      throw new Error('the instance died after posting');
    };
    await expect(a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted}"/>`, 1)).rejects.toThrow('died after posting');
    expect(a2.posts('<failed')).toHaveLength(1);
    expect(a2.posts('<failed')[0]).toContain('item-not-found');
    expect(a2.posts('<resumed')).toEqual([]);
    // The old connection's queue moves again: the hung frame finishes, the next one (sent just
    // before the network went) is handled too, then its $disconnect.
    release();
    await stuck;
    h.sender.beforePost = undefined;
    await a.frame(chat(`${bob}/desk`, 'queued behind it'), 2);
    await a.disconnect(0);
    expect(bodies(b.posts())).toEqual(['hangs', 'queued behind it']); // each once
    // The resume frame runs again, the old connection drained by now: refused again, as her
    // client was told (traced in a chaos run: it resumed the session and resent nine stanzas).
    await a2.redeliver(2);
    expect(a2.posts('<resumed')).toEqual([]);
    expect(bodies(a2.posts())).toEqual([]);
    // Her client binds anew (the same resource) on the connection whose resumption failed: the new
    // session gets what the old one kept and her count in <resume/> did not cover, not what it did.
    await a2.frame('<iq type="set" id="bind" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>phone</resource></bind></iq>');
    await a2.frame('<presence xmlns="jabber:client"/>');
    await b.frame(chat(alice!, 'after'));
    expect(bodies(a2.posts())).toEqual(['sent as her network went', 'after']);
    expect(bodies(b.posts())).toEqual(['hangs', 'queued behind it']);
  });

  it('posts of several instances to one session reach its socket in the order they are numbered: a count from after the socket died resends exactly what the client missed', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const desks = [0, 1, 2].map(() => new Connection(h));
    for (const [i, d] of desks.entries()) await d.online(bob!, 'secret', `desk${i}`);
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice!, 'phone');
    // What her client counted so far: the stanzas after <enabled/>.
    const since = a.posts().findIndex((f) => f.startsWith('<enabled'));
    const counted = () => a.posts().slice(since).filter(isStanzaFrame).length;
    const before = counted();
    // The first racing post to reach the socket is slow: any post that could, would overtake it.
    let first = true;
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (connectionId !== a.id || !frame.includes('race') || !first) return;
      first = false;
      await sleep(80);
    };
    await Promise.all(desks.map((d, i) => d.frame(chat(`${alice}/phone`, `race${i}`), i)));
    h.sender.beforePost = undefined;

    const arrived = bodies(a.posts()).filter((b) => b.startsWith('race'));
    const record = (await h.servers[0]!.sm.get(a.id))!;
    const numbered = bodies((await h.servers[0]!.sm.logged(a.id, 1, record.out)).map((l) => l.xml)).filter((b) => b.startsWith('race'));
    expect(arrived).toHaveLength(3);
    expect(arrived).toEqual(numbered);
    expect(record.posting).toBeUndefined(); // every lease given back

    // The socket dies; her client had received the first two when it did, and resumes with that count.
    await kill(a);
    const a2 = await authenticated(alice!);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${before + 2}"/>`);
    expect(a2.posts('<resumed')).toHaveLength(1);
    expect(bodies(a2.posts())).toEqual([arrived[2]]);
  });

  it('a post that outlives its lease is not overtaken: the next poster cuts the socket, and the resumption resends both in order', async () => {
    const { alice, desks, a, smId, counted } = await aliceAndTwoDesks();
    // The first post hangs past its lease (an answer that does not come for seconds), and the
    // socket dies before it arrives.
    const { hung, release } = hangPost(a.id, 'slow', () => h.sender.gone.add(a.id));
    const slow = desks[0]!.frame(chat(`${alice}/phone`, 'slow'), 0);
    await hung;
    await sleep(POST_LEASE_MS + 200); // past the lease
    await desks[1]!.frame(chat(`${alice}/phone`, 'fast'), 1);
    release();
    await slow;
    h.sender.beforePost = undefined;
    // Nothing overtook the hanging post: her client got neither.
    expect(bodies(a.posts())).toEqual([]);
    expect(h.sender.closed).toContain(a.id);
    await a.disconnect();
    const a2 = await authenticated(alice!);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted()}"/>`);
    expect(a2.posts('<resumed')).toHaveLength(1);
    expect(bodies(a2.posts())).toEqual(['slow', 'fast']);
  });

  it('a frame that posted a stanza and died runs again while a later post hangs past its lease: the run again does not hide the hanging post, nothing overtakes it, and the resumption resends each once, in order (traced in a chaos run: a later stanza went out past it, the count fell one behind, one stanza came twice and one never)', { timeout: 20_000 }, async () => {
    const { alice, desks, a, smId, counted } = await aliceAndTwoDesks();
    // 'posted' reaches her, and its instance dies right after giving the lease back.
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a.id && frame.includes('<body>posted</body>')) h.crash.crashAfter('UpdateItemCommand');
    };
    await expect(desks[0]!.frame(chat(`${alice}/phone`, 'posted'), 0)).rejects.toThrow(/crash after UpdateItemCommand/);
    // The next stanza's post hangs past its lease, and in the end fails without having arrived.
    const { hung, release } = hangPost(a.id, 'hanging', () => {
      throw new Error('the post timed out');
    });
    const slow = desks[1]!.frame(chat(`${alice}/phone`, 'hanging'), 1);
    await hung;
    await sleep(POST_LEASE_MS + 200); // past the lease
    await desks[0]!.redeliver(2); // 'posted' runs again: nothing to post, the lease taken and given back
    await desks[0]!.frame(chat(`${alice}/phone`, 'after'), 0);
    release();
    await slow;
    h.sender.beforePost = undefined;
    const got = bodies(a.posts());
    expect(got).toEqual(['posted']); // nothing went out past the hanging post
    await a.disconnect();
    const a2 = await authenticated(alice);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted()}"/>`);
    expect(a2.posts('<resumed')).toHaveLength(1);
    expect([...got, ...bodies(a2.posts())]).toEqual(['posted', 'hanging', 'after']);
  });

  it('a frame whose draw found the lease broken (an earlier post hangs past it) dies before cutting the socket: its run again cuts it too, rather than post past the hanging one (traced in a chaos run: a message lost)', { timeout: 20_000 }, async () => {
    const { alice, desks, a, smId, counted } = await aliceAndTwoDesks();
    const { hung, release } = hangPost(a.id, 'slow', () => h.sender.gone.add(a.id));
    const slow = desks[0]!.frame(chat(`${alice}/phone`, 'slow'), 0);
    await hung;
    await sleep(POST_LEASE_MS + 200); // past the lease
    // The next stanza draws its number, finding the lease broken, and its instance dies before logging it.
    h.crash.crashBefore('PutItemCommand');
    await expect(desks[1]!.frame(chat(`${alice}/phone`, 'fast'), 1)).rejects.toThrow(/crash before PutItemCommand/);
    await desks[1]!.redeliver(2);
    release();
    await slow;
    h.sender.beforePost = undefined;
    expect(bodies(a.posts())).toEqual([]); // nothing went out past the hanging post
    await a.disconnect();
    const a2 = await authenticated(alice);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted()}"/>`);
    expect(bodies(a2.posts())).toEqual(['slow', 'fast']);
  });

  it('a frame that dies after numbering a stanza and before posting it keeps its lease: the next post does not overtake it, and the resumption resends both in order (traced in a chaos run: the later one reached the client first, and its count then covered the wrong stanza)', { timeout: 20_000 }, async () => {
    const { alice, desks, a, smId, counted } = await aliceAndTwoDesks();
    // The instance dies right after the stanza was numbered and logged, before its post.
    h.crash.crashAfter('PutItemCommand');
    await expect(desks[0]!.frame(chat(`${alice}/phone`, 'first'), 0)).rejects.toThrow(/crash after PutItemCommand/);
    await desks[1]!.frame(chat(`${alice}/phone`, 'second'), 1);
    await desks[0]!.redeliver(2); // the queue hands the first frame over again
    // Her client's socket dies now; what it got, it got in the order numbered.
    const got = bodies(a.posts());
    expect(['first', 'second'].slice(0, got.length)).toEqual(got);
    await kill(a);
    const a2 = await authenticated(alice!);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="${counted()}"/>`);
    expect(a2.posts('<resumed')).toHaveLength(1);
    expect([...got, ...bodies(a2.posts())]).toEqual(['first', 'second']);
  });

  it('a frame that kept a message for her session and died before posting it runs again after her new login replaced that session: she gets it once, from the hand-over (traced in a chaos run: stored offline twice)', { timeout: 20_000 }, async () => {
    const { alice, a, b } = await bobAndAlice();
    // Numbered and logged for her session, then the instance dies before the post.
    h.crash.crashAfter('PutItemCommand');
    await expect(b.frame(chat(`${alice}/phone`, 'once'), 0)).rejects.toThrow(/crash after PutItemCommand/);
    await kill(a);
    const a2 = new Connection(h);
    await a2.online(alice!, 'secret', 'phone'); // binds the resource anew: the hibernated session is handed over
    await b.redeliver(1);
    const offline = (await h.store.listOffline(alice!)).map((m) => bodies([m.xml])[0]);
    expect([...bodies(a2.posts()), ...offline]).toEqual(['once']);
  });

  it('a frame that kept a message for her session and died runs again when that session, still there, is no longer a target (unavailable): not stored offline as well; she gets it once, from the hand-over (traced in a chaos run: stored offline twice)', { timeout: 20_000 }, async () => {
    const { alice, a, b } = await bobAndAlice();
    // To her bare JID: numbered and logged for her session, then the instance dies before the post.
    h.crash.crashAfter('PutItemCommand');
    await expect(b.frame(chat(alice!, 'once'), 0)).rejects.toThrow(/crash after PutItemCommand/);
    await a.frame('<presence xmlns="jabber:client" type="unavailable"/>'); // her session stays, as no target of a bare-JID message
    await b.redeliver(1);
    expect(await h.store.listOffline(alice!)).toEqual([]); // her session's log has it
    await kill(a);
    const a2 = new Connection(h);
    await a2.online(alice!, 'secret', 'phone'); // a new session takes the resource: the old one is handed over
    const offline = (await h.store.listOffline(alice!)).map((m) => bodies([m.xml])[0]);
    expect([...bodies(a2.posts()), ...offline]).toEqual(['once']);
  });

  it('a </close> processed after the socket died: what the client never acknowledged goes to offline storage, not nowhere', async () => {
    const [alice, bob] = await users('alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    await onlineWithSm(a, alice!, 'phone');
    await b.frame(chat(`${alice}/phone`, 'before'));
    h.sender.gone.add(a.id); // the socket dies; its $disconnect is still queued behind her </close>
    await b.frame(chat(`${alice}/phone`, 'after'));
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    // Neither was acknowledged: both are undeliverable to that session (XEP-0198 §4), and stored.
    const stored = bodies((await h.store.listOffline(alice!)).map((m) => m.xml));
    expect(stored.sort()).toEqual(['after', 'before']);
  });

  it('a frame that died after numbering and logging a stanza for a hibernated session runs again after a resumption resent it: not posted twice', async () => {
    const { alice, b, a, smId } = await hibernatedAlice();
    // The post to her dead socket fails; the next UpdateItem gives the lease back, and the instance dies after it.
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a.id && frame.includes('kept')) h.crash.crashAfter('UpdateItemCommand');
    };
    await expect(b.frame(chat(`${alice}/phone`, 'kept'), 0)).rejects.toThrow(/crash after UpdateItemCommand/);
    h.sender.beforePost = undefined;
    const a2 = await authenticated(alice!);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`, 1);
    expect(bodies(a2.posts())).toEqual(['kept']);
    // The frame runs again (its journal has the stanza's number): the resumption resent it already.
    await b.redeliver(2);
    expect(bodies(a2.posts())).toEqual(['kept']);
    await b.frame(chat(`${alice}/phone`, 'next'), 0);
    expect(bodies(a2.posts())).toEqual(['kept', 'next']);
    await a2.frame(`<a xmlns="${SM}" h="2"/>`);
    expect(a2.posts(/<stream:error|<failed/)).toEqual([]);
  });

  /**
   * Alice's phone (stream management) got 'first' and 'second' from Bob but never acknowledged them,
   * and its socket died ($disconnect later); she is authenticated again on a new connection, about
   * to bind the same resource.
   */
  async function phoneDiedWithTwoKept() {
    const { alice, a: phone, b } = await bobAndAlice();
    h.sender.gone.add(phone.id);
    await b.frame(chat(`${alice}/phone`, 'first'));
    await b.frame(chat(`${alice}/phone`, 'second'));
    const again = await authenticated(alice);
    return { alice, phone, again };
  }
  const BIND_PHONE = `<iq type="set" id="bind" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>phone</resource></bind></iq>`;

  it("a bind that replaces her session and dies while handing over what it kept: its run again finishes the replacement, and the old socket's $disconnect hands nothing over twice", async () => {
    const { alice, phone, again } = await phoneDiedWithTwoKept();
    // The bind ends the old session (its item goes) and hands over what it never acknowledged, and
    // the instance dies before the hand-over is done.
    const crashName = `crashAtSmRemoval${n}`;
    h.crash.client.middlewareStack.add(
      (next, context) => async (args) => {
        const key = (args.input as { Key?: { sk?: unknown } }).Key;
        if (context.commandName === 'DeleteItemCommand' && key?.sk === 'sm') {
          h.crash.client.middlewareStack.remove(crashName);
          throw new Error('crash before the stream management record goes');
        }
        return next(args);
      },
      { step: 'initialize', name: crashName },
    );
    await expect(again.frame(BIND_PHONE)).rejects.toThrow(/crash before the stream management record goes/);
    // Run again, it finds no session item of that resource any more, and still finishes the replacement.
    await again.redeliver();
    expect((await h.store.getConnection(phone.id))?.stage).toBe('replaced');
    expect(await h.servers[0]!.sm.get(phone.id)).toBeUndefined();
    await again.frame('<presence xmlns="jabber:client"/>');
    await phone.disconnect();
    await again.frame('<iq type="get" id="r" xmlns="jabber:client"><query xmlns="jabber:iq:roster"/></iq>');
    expect(bodies(again.posts('<message'))).toEqual(['first', 'second']);
  });

  it("a bind that replaces her session dies half-way through the hand-over, and the old socket's $disconnect comes before it runs again: the hand-over is the bind's, each kept message reaches her once", async () => {
    const { alice, phone, again } = await phoneDiedWithTwoKept();
    // The bind hands over what the old session never acknowledged (offline: she has no other
    // session) and dies after storing the first.
    h.crash.crashAfter('PutItemCommand');
    await expect(again.frame(BIND_PHONE, 0)).rejects.toThrow(/crash after PutItemCommand/);
    expect(bodies((await h.store.listOffline(alice!)).map((m) => m.xml))).toEqual(['first']);
    // The old socket's $disconnect, on another instance, before the bind runs again (traced in a
    // chaos run: it handed the same stanzas over under keys of its own, and she got them twice).
    await phone.disconnect(1);
    await again.redeliver(2);
    await again.frame('<presence xmlns="jabber:client"/>', 0);
    expect(bodies(again.posts('<message'))).toEqual(['first', 'second']);
    expect(await h.store.listOffline(alice!)).toEqual([]);
    expect(await h.servers[0]!.sm.get(phone.id)).toBeUndefined();
  });

  /** Bob's message 'once' to Alice (stream management on) is posted, and the instance dies as it gives the lease back. */
  async function postedThenDied() {
    const { alice, a, b } = await bobAndAlice();
    // After the post, the next UpdateItem is the one that gives the lease back: the instance dies after it.
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === a.id && frame.includes('once')) h.crash.crashAfter('UpdateItemCommand');
    };
    await expect(b.frame(chat(`${alice}/phone`, 'once'), 0)).rejects.toThrow(/crash after UpdateItemCommand/);
    h.sender.beforePost = undefined;
    return { alice, a, b };
  }

  it('a frame that dies right after its post gave the lease back runs again without posting twice', async () => {
    const { alice, a, b } = await postedThenDied();
    await b.redeliver(1);
    expect(bodies(a.posts())).toEqual(['once']);
    expect((await h.servers[0]!.sm.get(a.id))?.posting).toBeUndefined();
    await b.frame(chat(`${alice}/phone`, 'next'), 2);
    expect(bodies(a.posts())).toEqual(['once', 'next']);
  });

  it('a frame that dies right after its post, then dies again after its run again skipped the post, runs a third time without posting twice (traced in a chaos run: the second run forgot the first had posted)', async () => {
    const { a, b } = await postedThenDied();
    // The run again skips the post (its journal says it went out) and dies too, as it gives the lease back.
    h.crash.client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        if (JSON.stringify(args.input).includes('REMOVE posting')) throw new Error('crash after the lease went back');
        return out;
      },
      { step: 'initialize', name: 'crashAtRelease' },
    );
    try {
      await expect(b.redeliver(1)).rejects.toThrow(/crash after the lease went back/);
    } finally {
      h.crash.client.middlewareStack.remove('crashAtRelease');
    }
    await b.redeliver(2);
    expect(bodies(a.posts())).toEqual(['once']);
  });
});
