/**
 * Room fan-out through background jobs (docs/muc-fanout.md), across handler instances: a room over
 * the inline limit (3 sessions here, 200 by default) gets its copies from jobs the sender's frame
 * queued, run on any instance. What the tests force: the sender's frame running twice, a job failing
 * half-way and running again elsewhere, and the groups of two messages running side by side in an
 * order of their own. Every occupant gets every message once, in the order it was sent, with the
 * room archive's stanza-id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';
import { ROOM_FANOUT_JOB } from '../../shared/modules/muc/fanout-jobs.ts';

let h: Harness;
let n = 0;

beforeAll(async () => {
  h = await startHarness(3, { XMPP_MUC_INLINE_FANOUT_MAX: '3' });
});

afterAll(() => {
  h?.crash.client.destroy();
});

/** A room of seven users, one of them on two devices (two nicks): eight sessions, over the limit of 3. */
async function bigRoom(): Promise<{ room: string; sender: Connection; all: Connection[] }> {
  const users = await freshUsers(h, 'owner', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6');
  const room = `big${++n}@conference.localhost`;
  const all: Connection[] = [];
  for (const [i, bare] of users.entries()) {
    const devices = i === 1 ? ['phone', 'desk'] : ['desk'];
    for (const resource of devices) {
      const c = new Connection(h);
      await c.online(bare, 'secret', resource);
      await c.frame(`<presence xmlns="jabber:client" to="${room}/${bare.split('@')[0]}-${resource}"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0"/></x></presence>`);
      // The owner accepts the default configuration (an instant room, XEP-0045 §10.1.2).
      if (all.length === 0) await c.frame(`<iq xmlns="jabber:client" type="set" id="instant" to="${room}"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="submit"/></query></iq>`);
      all.push(c);
    }
  }
  expect(h.jobs.queued).toHaveLength(0); // joins broadcast presence from their own frames
  return { room, sender: all[2]!, all };
}

const groupchat = (room: string, text: string) => `<message xmlns="jabber:client" type="groupchat" to="${room}" id="${text}"><body>${text}</body></message>`;

/** Runs every queued job: per group in queue order, groups side by side, spread over the instances. */
async function runJobs(groupOrder: (groups: string[]) => string[] = (g) => g): Promise<void> {
  const jobs = h.jobs.take();
  const groups = new Map<string, typeof jobs>();
  for (const j of jobs) groups.set(j.group, [...(groups.get(j.group) ?? []), j]);
  let next = 0;
  await Promise.all(
    groupOrder([...groups.keys()]).map(async (group) => {
      for (const j of groups.get(group)!) await h.servers[next++ % h.servers.length]!.handleJob(j.job, { id: j.messageId });
    }),
  );
}

const stanzaIds = (frames: string[]) => frames.map((f) => /<stanza-id[^>]*id="([^"]+)"/.exec(f)?.[1]);

describe('room fan-out through jobs, across handler instances', () => {
  it('the sender\'s frame queues the copies; jobs on other instances post each occupant session one, with the archive\'s id', async () => {
    const { room, sender, all } = await bigRoom();
    await sender.frame(groupchat(room, 'hello-big'));
    for (const c of all) expect(c.posts('hello-big')).toHaveLength(0); // nothing posted by the frame itself
    const queued = h.jobs.queued;
    expect(queued.length).toBeGreaterThan(1);
    expect(queued.every((j) => j.job.type === ROOM_FANOUT_JOB && j.group.startsWith(`${room}#`))).toBe(true);
    await runJobs();
    const ids = new Set<string | undefined>();
    for (const c of all) {
      expect(c.posts('hello-big')).toHaveLength(1);
      for (const id of stanzaIds(c.posts('hello-big'))) ids.add(id);
    }
    expect(ids.size).toBe(1);
    expect([...ids][0]).toBeTruthy();
  });

  it('a sender frame delivered twice queues its jobs once: one copy each', async () => {
    const { room, sender, all } = await bigRoom();
    await sender.frame(groupchat(room, 'twice-big'));
    const first = h.jobs.queued.length;
    await sender.redeliver(1); // SQS hands the same record to another instance
    expect(h.jobs.queued.length).toBe(first);
    await runJobs();
    for (const c of all) expect(c.posts('twice-big')).toHaveLength(1);
  });

  it('a job that fails half-way runs again on another instance and posts only what is missing', async () => {
    const { room, sender, all } = await bigRoom();
    await sender.frame(groupchat(room, 'retry-big'));
    const jobs = h.jobs.take();
    // The biggest job, with a post that fails once in its middle.
    const job = jobs.reduce((a, b) => ((b.job.targets as unknown[]).length > (a.job.targets as unknown[]).length ? b : a));
    const targets = job.job.targets as Array<{ session: { connectionId: string } }>;
    expect(targets.length).toBeGreaterThan(1);
    const victim = targets[targets.length - 1]!.session.connectionId;
    let failed = 0;
    h.sender.beforePost = (post) => {
      if (post.connectionId === victim && post.frame.includes('retry-big') && failed++ === 0) throw new Error('post failed (injected)');
    };
    try {
      await expect(h.servers[0]!.handleJob(job.job, { id: job.messageId })).rejects.toThrow(/injected/);
      const others = all.filter((c) => c.id !== victim && targets.some((t) => t.session.connectionId === c.id));
      for (const c of others) expect(c.posts('retry-big')).toHaveLength(1); // the rest went out before the job failed
      await h.servers[1]!.handleJob(job.job, { id: job.messageId }); // the queue's redelivery
      for (const j of jobs.filter((j) => j !== job)) await h.servers[2]!.handleJob(j.job, { id: j.messageId });
    } finally {
      h.sender.beforePost = undefined;
    }
    for (const c of all) expect(c.posts('retry-big')).toHaveLength(1);
  });

  it('two messages whose groups run side by side, in reverse order: each occupant gets them in the order sent', async () => {
    const { room, sender, all } = await bigRoom();
    await sender.frame(groupchat(room, 'first-big'));
    await sender.frame(groupchat(room, 'second-big'));
    await runJobs((groups) => groups.reverse());
    for (const c of all) {
      const frames = c.posts(/-big<\/body>/).filter((f) => f.includes('first-big') || f.includes('second-big'));
      expect(frames.map((f) => (f.includes('first-big') ? 'first' : 'second'))).toEqual(['first', 'second']);
    }
  });

  it('a message posted from the frame that fails half-way, in a room that grew over the limit before the frame ran again: the run again posts what is missing, from the frame (jobs would post again what went out, and cannot take over the first run\'s join-race claims: here e2 got nothing)', async () => {
    const users = await freshUsers(h, 'edge', 'e1', 'e2', 'late');
    const room = `edge${++n}@conference.localhost`;
    const join = async (bare: string) => {
      const c = new Connection(h);
      await c.online(bare, 'secret', 'desk');
      await c.frame(`<presence xmlns="jabber:client" to="${room}/${bare.split('@')[0]}"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0"/></x></presence>`);
      return c;
    };
    const owner = await join(users[0]!);
    await owner.frame(`<iq xmlns="jabber:client" type="set" id="instant" to="${room}"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="submit"/></query></iq>`);
    const e1 = await join(users[1]!);
    const e2 = await join(users[2]!);
    // Three sessions, at the limit: the frame posts the copies itself, and the post to e2 fails.
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (connectionId === e2.id && frame.includes('at-the-edge')) throw new Error('post failed (injected)');
    };
    await expect(owner.frame(groupchat(room, 'at-the-edge'), 0)).rejects.toThrow(/injected/);
    h.sender.beforePost = undefined;
    expect(e1.posts('at-the-edge')).toHaveLength(1);
    // A fourth session joins before the queue hands the frame over again: over the limit now.
    await join(users[3]!);
    await owner.redeliver(1);
    await runJobs();
    for (const c of [owner, e1, e2]) expect(c.posts('at-the-edge')).toHaveLength(1);
  });

  it('a room under the limit is still served from the sender\'s frame', async () => {
    const [a, b] = await freshUsers(h, 'small', 'smaller');
    const room = `small${++n}@conference.localhost`;
    const ca = new Connection(h);
    const cb = new Connection(h);
    await ca.online(a!, 'secret', 'desk');
    await ca.frame(`<presence xmlns="jabber:client" to="${room}/a"/>`);
    await cb.online(b!, 'secret', 'desk');
    await cb.frame(`<presence xmlns="jabber:client" to="${room}/b"/>`);
    await ca.frame(groupchat(room, 'small-room'));
    expect(h.jobs.queued).toHaveLength(0);
    expect(cb.posts('small-room')).toHaveLength(1);
    expect(ca.posts('small-room')).toHaveLength(1);
  });
});
