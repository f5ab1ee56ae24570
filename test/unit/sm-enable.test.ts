/**
 * XEP-0198 <enable/> against posts of other handler instances (three instances sharing one
 * DynamoDB Local table): a stanza routed to a session before its enable, which goes out
 * unnumbered, must reach the socket before <enabled/>, or the client counts a stanza the server
 * did not number and a later resumption skips one. And the window after bind within which a
 * client may enable it. The recording sender stands in for @connections (AWS's edge).
 */
import { GetCommand } from '../../shared/storage/commands.ts';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isStanzaFrame } from '../../shared/transport/sm-sender.ts';
import { connectionPk } from '../../shared/storage/keys.ts';
import { authenticated, befriend, Connection, freshUsers, kill, startHarness, type Harness } from './handler-harness.ts';

const SM = 'urn:xmpp:sm:3';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const chat = (to: string, body: string) => `<message xmlns="jabber:client" to="${to}" type="chat"><body>${body}</body></message>`;
const bodies = (frames: string[]) => frames.map((f) => /<body>([^<]*)<\/body>/.exec(f)?.[1]).filter((b): b is string => b !== undefined);
const ENABLE = `<enable xmlns="${SM}" resume="true"/>`;

/** What her client counted: the stanzas after <enabled/>. */
function counted(c: Connection): string[] {
  const since = c.posts().findIndex((f) => f.startsWith('<enabled'));
  return c.posts().slice(since + 1).filter(isStanzaFrame);
}

/**
 * Holds the post of the stanza whose body is `body` to `socket` until `release()`; `reached`
 * resolves when it got there (routed, unnumbered, on its way).
 */
function holdPost(h: Harness, socket: string, body: string) {
  let reached!: () => void;
  let release!: () => void;
  const reachedPost = new Promise<void>((r) => (reached = r));
  const released = new Promise<void>((r) => (release = r));
  h.sender.beforePost = async ({ connectionId, frame }) => {
    if (connectionId !== socket || !frame.includes(`<body>${body}</body>`)) return;
    reached();
    await released;
  };
  return { reached: reachedPost, release };
}

describe('enabling stream management while other instances post to the session', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(3, { XMPP_SM_RESUME_SECONDS: '60' });
  });
  afterAll(() => h?.crash.client.destroy());
  beforeEach(() => {
    h.sender.beforePost = undefined;
  });

  /**
   * Sends `body` to Alice's session through `route` (another instance), holds its post, and has her
   * client enable stream management meanwhile (after initial presence, as @xmpp/client does). The
   * post is let go once the enable is done or has waited a second.
   */
  async function enableWhileSlowPost(a: Connection, body: string, route: () => Promise<unknown>) {
    const slow = holdPost(h, a.id, body);
    const routed = route();
    await slow.reached;
    const enabling = a.frame(ENABLE, 1);
    await Promise.race([enabling, sleep(1000)]);
    slow.release();
    await Promise.all([routed, enabling]);
    h.sender.beforePost = undefined;
  }

  /** Bob and Carol online at their desks, then Alice on her phone, none with stream management yet. */
  async function aliceBobCarolOnline() {
    const [alice, bob, carol] = await freshUsers(h, 'alice', 'bob', 'carol');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const c = new Connection(h);
    await c.online(carol!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    return { alice: alice!, a, b, c };
  }

  /**
   * The post to `socket` of the stanza containing `text` is recorded (unnumbered, before an
   * enable), and its instance dies before posting and before taking the record back: the record
   * stays behind, as when an instance dies.
   */
  function dieAfterRecording(socket: string, text: string): void {
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId !== socket || !frame.includes(text)) return;
      h.crash.crashBefore('UpdateItemCommand');
      throw new Error('the instance died');
    };
  }

  /** The unnumbered posts recorded on a session's SM item (sm-store.ts, beginUnnumbered). */
  async function unnumberedOf(session: string): Promise<string[]> {
    const out = await h.store.doc.send(new GetCommand({ TableName: h.store.table, Key: { pk: connectionPk(session), sk: 'sm' }, ConsistentRead: true }));
    return [...((out.Item?.unnumbered as Set<string> | undefined) ?? [])];
  }

  /** Her socket dies, Carol writes, and she resumes with her client's count: what she gets again. */
  async function resumeWithHerCount(a: Connection, alice: string, carol: Connection): Promise<string[]> {
    const smId = /id="([^"]+)"/.exec(a.posts('<enabled')[0]!)![1]!;
    const h0 = counted(a).length;
    await kill(a);
    await carol.frame(chat(`${alice}/phone`, 'while away'));
    const again = await authenticated(h, alice);
    await again.frame(`<resume xmlns="${SM}" previd="${smId}" h="${h0}"/>`);
    expect(again.posts('<resumed')).toHaveLength(1);
    return bodies(again.posts());
  }

  it('a message routed to her just before <enable/> and slow to reach her socket arrives before <enabled/>: her count is right, and a resumption resends exactly what she lacks', async () => {
    const { alice, a, b, c } = await aliceBobCarolOnline();

    await enableWhileSlowPost(a, 'slow', () => b.frame(chat(`${alice}/phone`, 'slow'), 0));

    const order = a.posts().filter((f) => f.includes('<body>slow</body>') || f.startsWith('<enabled'));
    expect(order[0]).toContain('<body>slow</body>'); // before <enabled/>, so not counted
    expect(order[1]).toMatch(/^<enabled/);
    expect(counted(a)).toEqual([]);
    // Without the wait her count covers 'slow', and the resumption takes 'while away' as received.
    expect(await resumeWithHerCount(a, alice, c)).toEqual(['while away']);
  });

  it('a room message routed to her before <enable/> (she joined without it) and slow to go arrives before <enabled/>: nothing skipped at the resumption', async () => {
    const [alice, bob, carol] = await freshUsers(h, 'alice', 'bob', 'carol');
    const room = `enable${Date.now()}@conference.localhost`;
    const join = (who: Connection, nick: string) =>
      who.frame(`<presence xmlns="jabber:client" to="${room}/${nick}"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0"/></x></presence>`);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    await join(b, 'bob');
    await b.frame(`<iq xmlns="jabber:client" type="set" id="instant" to="${room}"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="submit"/></query></iq>`);
    const c = new Connection(h);
    await c.online(carol!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await join(a, 'alice');

    await enableWhileSlowPost(a, 'to the room', () => b.frame(`<message xmlns="jabber:client" type="groupchat" to="${room}"><body>to the room</body></message>`, 0));

    const order = a.posts().filter((f) => f.includes('<body>to the room</body>') || f.startsWith('<enabled'));
    expect(order.map((f) => (f.startsWith('<enabled') ? 'enabled' : 'room message'))).toEqual(['room message', 'enabled']);
    expect(await resumeWithHerCount(a, alice, c)).toEqual(['while away']);
  });

  // Waiting for the record to expire would take 20 s (UNNUMBERED_WAIT_MAX_MS): past the test's timeout.
  it('the instance posting before <enable/> dies half-way and its frame runs again: the run again takes its record back, so the enable goes on at once, and the message is numbered after <enabled/>', async () => {
    const { alice, a, b, c } = await aliceBobCarolOnline();
    dieAfterRecording(a.id, '<body>died</body>');
    await expect(b.frame(chat(`${alice}/phone`, 'died'), 0)).rejects.toThrow('the instance died');
    h.sender.beforePost = undefined;
    const enabling = a.frame(ENABLE, 1);
    await Promise.race([enabling, sleep(500)]);
    await b.redeliver(2); // the queue hands it out again
    await enabling;
    // The run again found her session with stream management: numbered, after <enabled/>, counted.
    expect(bodies(counted(a))).toEqual(['died']);
    expect(await resumeWithHerCount(a, alice, c)).toEqual(['while away']);
  });

  it('a frame that recorded a post to her and died runs again another way (its connection was replaced meanwhile, so its presence is dropped): the run again still takes the record back, and her enable goes on at once', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    await befriend(h, alice!, bob!);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    // Bob's status change to her records its post and dies.
    dieAfterRecording(a.id, '<status>busy</status>');
    await expect(b.frame('<presence xmlns="jabber:client"><status>busy</status></presence>', 0)).rejects.toThrow('the instance died');
    h.sender.beforePost = undefined;
    // His client binds the same resource anew before the queue hands the frame out again.
    const b2 = new Connection(h);
    await b2.online(bob!, 'secret', 'desk');
    await b.redeliver(2);
    expect(a.posts('<status>busy</status>')).toEqual([]); // dropped with the replaced stream
    // The record is gone, so her enable does not wait for it to expire (20 s).
    expect(await unnumberedOf(a.id)).toEqual([]);
    await a.frame(ENABLE, 1);
    expect(a.posts('<enabled')).toHaveLength(1);
  });

  /**
   * Her client binds the same resource anew (the old socket stalled) while the old connection's
   * <enable/> is under way: `enableAt` says where the enable is when the new bind takes the
   * session over. Carol's message to that resource was routed on a read of the session from before
   * the bind, and is numbered after it. Traced in a chaos run: the bind found no stream management
   * in the old state (the enable had not committed), so no one handed the record over, and two
   * messages numbered into it were lost.
   */
  async function replacedWhileEnabling(enableAt: 'waiting, its record made' | 'about to make its record') {
    const { alice, a, b, c } = await aliceBobCarolOnline();
    const sm = h.servers[1]!.sm;
    const create = sm.create.bind(sm);
    let letCreate = () => {};
    const enabling = (async () => {
      if (enableAt === 'waiting, its record made') {
        // Bob's message, slow to reach her socket, makes the enable wait after its record.
        const slow = holdPost(h, a.id, 'slow');
        const routed = b.frame(chat(`${alice}/phone`, 'slow'), 0);
        await slow.reached;
        const enable = a.frame(ENABLE, 1).catch(() => undefined); // its commit finds the state replaced
        while (!(await sm.get(a.id))) await sleep(20);
        letCreate = slow.release;
        return () => Promise.all([routed, enable]);
      }
      let reachedCreate!: () => void;
      const atCreate = new Promise<void>((r) => (reachedCreate = r));
      const created = new Promise<void>((r) => (letCreate = r));
      sm.create = async (...args) => {
        reachedCreate();
        await created;
        return create(...args);
      };
      const enable = a.frame(ENABLE, 1).catch(() => undefined);
      await atCreate;
      return () => enable;
    })();
    const finishEnable = await enabling;
    // Carol's router reads Alice's session now and acts on what it read after the new bind.
    const getUserRoute = h.store.getUserRoute.bind(h.store);
    let read!: () => void;
    let goOn!: () => void;
    const wasRead = new Promise<void>((r) => (read = r));
    const useIt = new Promise<void>((r) => (goOn = r));
    h.store.getUserRoute = async (bare) => {
      const route = await getUserRoute(bare);
      if (bare !== alice) return route;
      h.store.getUserRoute = getUserRoute;
      read();
      await useIt;
      return route;
    };
    const stale = c.frame(chat(`${alice}/phone`, 'routed before the new bind'), 2);
    await wasRead;
    const a2 = new Connection(h);
    await a2.online(alice, 'secret', 'phone');
    letCreate();
    goOn();
    await Promise.all([stale, finishEnable()]);
    sm.create = create;
    await kill(a); // the old socket's $disconnect
    const offline = (await h.store.listOffline(alice)).map((m) => bodies([m.xml])[0]);
    return { reached: [...bodies(a2.posts()), ...offline], a };
  }

  it('her session is replaced by a new bind of the same resource while its <enable/> waits, its record made: a message numbered for the old session reaches her new one', async () => {
    const { reached } = await replacedWhileEnabling('waiting, its record made');
    expect(reached.filter((b) => b === 'routed before the new bind')).toHaveLength(1);
  });

  it('her session is replaced by a new bind of the same resource just before its <enable/> makes its record: the enable is refused, and a message routed to the old session reaches her new one', async () => {
    const { reached, a } = await replacedWhileEnabling('about to make its record');
    expect(reached.filter((b) => b === 'routed before the new bind')).toHaveLength(1);
    expect(a.posts('<enabled')).toEqual([]);
  });
});

describe('the window for enabling stream management', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(2, { XMPP_SM_ENABLE_SECONDS: '1' });
  });
  afterAll(() => h?.crash.client.destroy());

  it('an <enable/> later than the window after bind is refused (unexpected-request); the session goes on without stream management', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await sleep(1200);
    await a.frame(ENABLE);
    const failed = a.posts('<failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain('<unexpected-request');
    expect(failed[0]).toContain('within 1 seconds');
    expect(a.posts('<enabled')).toEqual([]);
    await b.frame(chat(`${alice}/phone`, 'plain'));
    expect(bodies(a.posts())).toEqual(['plain']);
    expect(await h.servers[0]!.sm.get(a.id)).toBeUndefined();
  });

  it('an <enable/> accepted within the window whose frame dies runs again after the window: it enables, as its first run began to', async () => {
    const [alice] = await freshUsers(h, 'alice');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    // It dies right after creating the record, before <enabled/>.
    h.crash.crashAfter('UpdateItemCommand');
    await expect(a.frame(ENABLE, 0)).rejects.toThrow(/crash after UpdateItemCommand/);
    await sleep(1200);
    await a.redeliver(1);
    expect(a.posts('<failed')).toEqual([]);
    expect(a.posts('<enabled')).toHaveLength(1);
  });
});
