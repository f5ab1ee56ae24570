/**
 * The races of a distributed server (docs/architecture.md, "Delivery guarantees"), each run many
 * times (RACE_TRIALS, 50 in CI: about 25 s per race on two cores; 500 before a release) through the local stack with three stream handler instances (one connection's
 * frames spread across them at random, as Lambda may) and a real client library (@xmpp/client).
 * Each trial fires the two sides at the same moment, with a random few milliseconds between them,
 * then waits until both connections' frames are processed (a ping answered on each: frames of
 * one connection are processed in order) and counts what the user got.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const TRIALS = Number(process.env.RACE_TRIALS ?? 50);
/** Trials run this many at a time (distinct users and rooms each). */
const PARALLEL = 8;

let stack: LocalStack & { store: DynamoStore };
let seq = 0;

beforeAll(async () => {
  stack = await startTestStack({ handlerInstances: 3 });
});
afterAll(async () => {
  await stack?.stop();
});

type Client = Awaited<ReturnType<typeof connectXmppJs>>;
type El = ReturnType<typeof xml>;

async function newUsers(...names: string[]): Promise<string[]> {
  seq += 1;
  const locals = names.map((n) => `${n}${seq}`);
  await Promise.all(locals.map((l) => addUser(stack.store, `${l}@localhost`, 'pw')));
  return locals;
}

const connect = (local: string, resource = 'r') => connectXmppJs(stack.wsUrl, local, 'pw', resource);

/** Resolves once every frame this client sent before has been processed (FIFO per connection). */
async function settled(c: Client): Promise<void> {
  await c.client.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })), 20_000);
}

async function rosterGet(c: Client): Promise<void> {
  await c.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })), 20_000);
}

const jitter = () => new Promise((r) => setTimeout(r, Math.floor(Math.random() * 12)));

/** Both sides at about the same moment: one of them first, by a random few milliseconds. */
async function race(a: () => void, b: () => void): Promise<void> {
  if (Math.random() < 0.5) {
    a();
    await jitter();
    b();
  } else {
    b();
    await jitter();
    a();
  }
}

const bare = (el: El) => String(el.attrs.from ?? '').split('/')[0];

async function runTrials(trial: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < TRIALS) await trial(next++);
    }),
  );
}

async function stop(...clients: Client[]): Promise<void> {
  await Promise.all(clients.map((c) => c.client.stop().catch(() => {})));
}

describe(`races on three handler instances (${TRIALS} trials each)`, () => {
  it('a subscription request sent while the contact logs in reaches that session exactly once', { timeout: 600_000 }, async () => {
    const counts: number[] = [];
    await runTrials(async () => {
      const [alice, bob] = await newUsers('alice', 'bob');
      const a = await connect(alice!);
      const b = await connect(bob!);
      await rosterGet(b);
      await race(
        () => b.client.send(xml('presence')),
        () => a.client.send(xml('presence', { to: `${bob}@localhost`, type: 'subscribe' })),
      );
      await Promise.all([settled(a), settled(b)]);
      await settled(b);
      counts.push(b.inbox.seen((s) => s.name === 'presence' && s.attrs.type === 'subscribe' && bare(s) === `${alice}@localhost`).length);
      await stop(a, b);
    });
    expect(counts.filter((c) => c !== 1)).toEqual([]);
  });

  it('a message to the bare JID sent while the recipient logs in is delivered exactly once, live or from offline storage', { timeout: 600_000 }, async () => {
    const counts: number[] = [];
    let leftOffline = 0;
    await runTrials(async (i) => {
      const [alice, bob] = await newUsers('alice', 'bob');
      const a = await connect(alice!);
      const b = await connect(bob!);
      await rosterGet(b);
      const body = `m${i}`;
      await race(
        () => b.client.send(xml('presence')),
        () => a.client.send(xml('message', { to: `${bob}@localhost`, type: 'chat', id: body }, xml('body', {}, body))),
      );
      await Promise.all([settled(a), settled(b)]);
      await settled(b);
      counts.push(b.inbox.seen((s) => s.name === 'message' && s.getChildText('body') === body).length);
      leftOffline += (await stack.store.listOffline(`${bob}@localhost`)).length;
      await stop(a, b);
    });
    expect(counts.filter((c) => c !== 1)).toEqual([]);
    expect(leftOffline).toBe(0);
  });

  it('a message sent while the recipient logs out is received in that session or at the next login, exactly once', { timeout: 600_000 }, async () => {
    const totals: number[] = [];
    await runTrials(async (i) => {
      const [alice, bob] = await newUsers('alice', 'bob');
      const a = await connect(alice!);
      const b = await connect(bob!);
      b.client.send(xml('presence'));
      await settled(b);
      const body = `m${i}`;
      let stopped: Promise<unknown> = Promise.resolve();
      await race(
        () => (stopped = b.client.stop().catch(() => {})),
        () => a.client.send(xml('message', { to: `${bob}@localhost`, type: 'chat', id: body }, xml('body', {}, body))),
      );
      await stopped;
      await settled(a);
      const before = b.inbox.seen((s) => s.name === 'message' && s.getChildText('body') === body).length;
      const again = await connect(bob!);
      again.client.send(xml('presence'));
      await settled(again);
      const after = again.inbox.seen((s) => s.name === 'message' && s.getChildText('body') === body).length;
      totals.push(before + after);
      await stop(a, again);
    });
    expect(totals.filter((c) => c !== 1)).toEqual([]);
  });

  it('two contacts coming online at the same moment each see the other available', { timeout: 600_000 }, async () => {
    const missed: number[] = [];
    let doubled = 0;
    await runTrials(async (i) => {
      const [alice, bob] = await newUsers('alice', 'bob');
      for (const [owner, contact] of [[alice, bob], [bob, alice]]) {
        await stack.store.putRosterItem(`${owner}@localhost`, { jid: `${contact}@localhost`, groups: [], subscription: 'both' });
      }
      const a = await connect(alice!);
      const b = await connect(bob!);
      await Promise.all([rosterGet(a), rosterGet(b)]);
      await race(
        () => a.client.send(xml('presence')),
        () => b.client.send(xml('presence')),
      );
      await Promise.all([settled(a), settled(b)]);
      await Promise.all([settled(a), settled(b)]);
      for (const [c, other] of [[a, bob], [b, alice]] as const) {
        const seen = c.inbox.seen((s) => s.name === 'presence' && !s.attrs.type && bare(s) === `${other}@localhost`).length;
        if (seen === 0) missed.push(i);
        if (seen > 1) doubled += 1;
      }
      await stop(a, b);
    });
    expect(missed).toEqual([]);
    // Presence is state, not an event: when both logins see each other the contact is shown
    // available twice (RFC 6121 allows it). Reported, not hidden.
    console.log(`probe vs presence: ${doubled} of ${2 * TRIALS} saw the contact's presence twice`);
  });

  it('a room message sent while someone joins reaches the newcomer exactly once, live or as history', { timeout: 600_000 }, async () => {
    const counts: number[] = [];
    await runTrials(async (i) => {
      const [alice, bob] = await newUsers('alice', 'bob');
      const room = `race${seq}-${i}@conference.localhost`;
      const a = await connect(alice!);
      const b = await connect(bob!);
      a.client.send(xml('presence', { to: `${room}/alice` })); // GC 1.0 join: an instant room
      await a.inbox.wait((s) => s.name === 'presence' && s.attrs.from === `${room}/alice`, 'alice in the room', 20_000);
      const body = `m${i}`;
      await race(
        () => b.client.send(xml('presence', { to: `${room}/bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' }))),
        () => a.client.send(xml('message', { to: room, type: 'groupchat', id: body }, xml('body', {}, body))),
      );
      await Promise.all([settled(a), settled(b)]);
      await settled(b);
      counts.push(b.inbox.seen((s) => s.name === 'message' && s.getChildText('body') === body).length);
      await stop(a, b);
    });
    expect(counts.filter((c) => c !== 1)).toEqual([]);
  });
});
