/**
 * XEP-0425 moderation across handler instances, forced into the races the integration test can
 * only hope for: two moderators whose handlers both read the message before either rewrites it
 * (a barrier holds both reads), and a frame that crashes right after its archive write and runs
 * again. Either way the room announces the retraction exactly once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
let n = 0;
/** While set, archive reads (GetItem of a mam# item) wait until `parties` of them are under way. */
let barrier: { parties: number; arrived: number; open: Promise<void>; release: () => void } | undefined;

beforeAll(async () => {
  h = await startHarness(2);
  h.crash.client.middlewareStack.add(
    (next, context) => async (args) => {
      const key = (args.input as { Key?: { sk?: { S?: string } } }).Key?.sk?.S;
      const b = barrier;
      if (b && context.commandName === 'GetItemCommand' && key?.startsWith('mam#')) {
        const out = await next(args);
        if (++b.arrived >= b.parties) b.release();
        await Promise.race([b.open, new Promise((r) => setTimeout(r, 3000))]);
        return out;
      }
      return next(args);
    },
    { step: 'initialize', name: 'archiveReadBarrier' },
  );
});

afterAll(() => {
  h?.crash.client.destroy();
});

const moderate = (room: string, id: string, iqId: string) =>
  `<iq xmlns="jabber:client" type="set" id="${iqId}" to="${room}"><moderate xmlns="urn:xmpp:message-moderate:1" id="${id}"><retract xmlns="urn:xmpp:message-retract:1"/></moderate></iq>`;

/** A room owned by alice with dave as admin (both moderators) and bob in it; bob's message's stanza-id. */
async function roomWithMessage(): Promise<{ room: string; alice: Connection; dave: Connection; bob: Connection; id: string }> {
  const [alice, dave, bob] = await freshUsers(h, 'alice', 'dave', 'bob');
  const room = `mod${++n}@conference.localhost`;
  const c = { alice: new Connection(h), dave: new Connection(h), bob: new Connection(h) };
  await c.alice.online(alice!, 'secret', 'desk');
  await c.alice.frame(`<presence xmlns="jabber:client" to="${room}/alice"/>`);
  await c.alice.frame(`<iq xmlns="jabber:client" type="set" id="aff" to="${room}"><query xmlns="http://jabber.org/protocol/muc#admin"><item affiliation="admin" jid="${dave}"/></query></iq>`);
  await c.dave.online(dave!, 'secret', 'desk');
  await c.dave.frame(`<presence xmlns="jabber:client" to="${room}/dave"/>`);
  await c.bob.online(bob!, 'secret', 'desk');
  await c.bob.frame(`<presence xmlns="jabber:client" to="${room}/bob"/>`);
  await c.bob.frame(`<message xmlns="jabber:client" type="groupchat" to="${room}"><body>spam spam</body></message>`);
  const id = /<stanza-id[^>]*id="([^"]+)"/.exec(c.alice.posts('spam spam')[0]!)![1]!;
  return { room, ...c, id };
}

const announcements = (c: Connection, id: string) => c.posts(new RegExp(`<retract xmlns="urn:xmpp:message-retract:1" id="${id}"`));

describe('XEP-0425 across handler instances', () => {
  it('two moderators whose handlers both read the message first: one tombstone, one announcement', async () => {
    const { room, alice, dave, bob, id } = await roomWithMessage();
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    barrier = { parties: 2, arrived: 0, open, release };
    await Promise.all([alice.frame(moderate(room, id, 'm-alice'), 0), dave.frame(moderate(room, id, 'm-dave'), 1)]);
    barrier = undefined;
    expect(alice.posts('id="m-alice"')[0]).toContain('type="result"');
    expect(dave.posts('id="m-dave"')[0]).toContain('type="result"');
    expect(announcements(bob, id)).toHaveLength(1);
    expect(announcements(alice, id)).toHaveLength(1);
  });

  it('a moderation frame that crashes after its archive write runs again and announces once', async () => {
    const { room, alice, bob, id } = await roomWithMessage();
    h.crash.crashAfter('UpdateItemCommand');
    await expect(alice.frame(moderate(room, id, 'm1'))).rejects.toThrow(/crash after UpdateItemCommand/);
    expect(announcements(bob, id)).toHaveLength(0);
    await alice.redeliver(); // SQS hands the failed record out again
    expect(announcements(bob, id)).toHaveLength(1);
    expect(alice.posts('id="m1"')).toHaveLength(1);
  });
});
