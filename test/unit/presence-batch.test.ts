/**
 * Presence broadcasts read every local contact's sessions with batched reads of their account items
 * (docs/data-model.md), on three handler instances sharing one DynamoDB Local table: more contacts
 * than one batch holds, a contact who blocked the user, sessions of one user bound and changed at
 * the same moment by two instances, a session whose $disconnect was lost, and a broadcast that
 * crashes right after its batched read and runs again. The recording sender stands in for
 * @connections (AWS's edge).
 */
import { UpdateCommand } from '../../shared/storage/commands.ts';
import { beforeAll, describe, expect, it } from 'vitest';
import { addAccount, befriend, Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
/** DynamoDB commands sent while `counting` (by name). */
let commands: string[] = [];
let counting = false;

beforeAll(async () => {
  // The contacts' sessions are past the window in which they could enable XEP-0198 (posts to a
  // session within it are recorded, sm-sender.ts): the steady state these tests measure.
  h = await startHarness(3, { XMPP_SM_ENABLE_SECONDS: '1' });
  h.crash.client.middlewareStack.add(
    (next, context) => async (args) => {
      if (counting) commands.push(context.commandName ?? '?');
      return next(args);
    },
    { step: 'initialize', name: 'countCommands' },
  );
});

/** The window of 1 s (and its margin of as much) after the last bind passes. */
const enableWindowPasses = () => new Promise<void>((r) => setTimeout(r, 2100));
const presence = (status: string) => `<presence xmlns="jabber:client"><status>${status}</status></presence>`;
const statuses = (c: Connection, from: string) => c.posts(new RegExp(`^<presence[^>]*from="${from}/`)).map((p) => /<status>([^<]*)<\/status>/.exec(p)?.[1] ?? 'available');

describe('presence broadcast with batched session reads', () => {
  it('reaches the available sessions of 150 contacts in two batched reads; a contact who blocked the user gets nothing', async () => {
    const [alice, bob, carol, dave] = await freshUsers(h, 'alice', 'bob', 'carol', 'dave');
    // 146 more contacts that exist but are offline, so the roster needs two batches of 100.
    const offline = Array.from({ length: 146 }, (_, i) => alice!.replace('alice', `offline${i}-`));
    for (const bare of offline) await addAccount(h, bare);
    for (const contact of [bob!, carol!, dave!, ...offline]) await befriend(h, alice!, contact);
    const b = new Connection(h);
    const c = new Connection(h);
    const d = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    await c.online(carol!, 'secret', 'desk');
    await d.online(dave!, 'secret', 'desk');
    await d.frame(`<iq xmlns="jabber:client" type="set" id="bl"><block xmlns="urn:xmpp:blocking"><item jid="${alice}"/></block></iq>`);
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    await enableWindowPasses();

    commands = [];
    counting = true;
    // On the instance that ran the login's last frame: it runs on the state it remembers (an
    // instance whose remembered state is not current runs the frame twice: session-manager tests).
    await a.frame(presence('away'), 2);
    counting = false;
    expect(statuses(b, alice!)).toEqual(['available', 'away']);
    expect(statuses(c, alice!)).toEqual(['available', 'away']);
    expect(statuses(d, alice!)).toEqual([]);
    // Two BatchGetItem for the user and 149 contacts, no read per contact: Queries only of the
    // roster, the avatar (XEP-0153 hash) and the block list of the one contact who has one.
    expect(commands.filter((n) => n === 'BatchGetItemCommand')).toHaveLength(2);
    expect(commands.filter((n) => n === 'QueryCommand')).toHaveLength(3);
    // A status change leaves the connection's own state as it was: nothing to commit.
    expect(commands).not.toContain('PutItemCommand');
    expect(commands.length).toBeLessThanOrEqual(8);
  });

  it("a change to 100 contacts is one batched read: the user's own other sessions come back with the session's update", async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    const offline = Array.from({ length: 99 }, (_, i) => alice!.replace('alice', `away${i}-`));
    for (const bare of offline) await addAccount(h, bare);
    for (const contact of [bob!, ...offline]) await befriend(h, alice!, contact);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const [phone, laptop] = [new Connection(h), new Connection(h)];
    await laptop.online(alice!, 'secret', 'laptop');
    await phone.online(alice!, 'secret', 'phone');
    await enableWindowPasses();

    commands = [];
    counting = true;
    await phone.frame(presence('in a meeting'), 2);
    counting = false;
    expect(statuses(b, alice!).filter((s) => s === 'in a meeting')).toHaveLength(1);
    expect(laptop.posts(new RegExp(`^<presence[^>]*from="${alice}/phone"[^>]*>.*in a meeting`))).toHaveLength(1);
    // The connection, the roster, the avatar, the session's update (which returns the account
    // item with the user's sessions) and one batch of 100 contacts: N/50 + 3 for N = 100.
    expect(commands.filter((n) => n === 'BatchGetItemCommand')).toHaveLength(1);
    expect(commands.length).toBeLessThanOrEqual(5);
  });

  it('a status change commits no connection state, and the next frame on another instance still knows the session is available', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    await befriend(h, alice!, bob!);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    const committed = (await h.store.loadConnection(a.id)).state!;
    await a.frame(presence('away'), 0);
    await a.frame(presence('back'), 1);
    expect((await h.store.loadConnection(a.id)).state!.version).toBe(committed.version);
    // Going offline on a third instance: it loads the state the initial presence committed, which
    // says available, so contacts are told.
    await a.frame('<presence xmlns="jabber:client" type="unavailable"/>', 2);
    const fromAlice = b.posts(new RegExp(`^<presence[^>]*from="${alice}/phone"`));
    expect(fromAlice.map((p) => /type="unavailable"/.test(p))).toEqual([false, false, false, true]);
    expect(statuses(b, alice!).slice(0, 3)).toEqual(['available', 'away', 'back']);
    expect((await h.store.loadConnection(a.id)).state!.available).toBe(false);
  });

  it('an iq from a session is answered straight to it: a ping costs one request, the connection read', async () => {
    const [alice] = await freshUsers(h, 'alice');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    commands = [];
    counting = true;
    await a.frame('<iq xmlns="jabber:client" type="get" id="ping1"><ping xmlns="urn:xmpp:ping"/></iq>', 1);
    counting = false;
    expect(a.posts(/^<iq[^>]*id="ping1"/)).toEqual([expect.stringMatching(/type="result"/)]);
    expect(commands).toEqual(['GetItemCommand']);
  });

  it('two sessions of one user bound and made available at once on two instances: both are kept, and each learns of the other', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    await befriend(h, alice!, bob!);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const [phone, laptop] = [new Connection(h), new Connection(h)];
    await Promise.all([phone.login(alice!, 'secret', 'phone'), laptop.login(alice!, 'secret', 'laptop')]);
    await Promise.all([phone.frame(presence('on the phone'), 0), laptop.frame(presence('at the laptop'), 1)]);
    const route = await h.store.getUserRoute(alice!);
    expect(route.sessions.map((s) => [s.resource, s.available]).sort()).toEqual([
      ['laptop', true],
      ['phone', true],
    ]);
    // Of two sessions coming online at once at least one sees the other (docs/architecture.md); the
    // other learns of it from the first one's broadcast to its own resources.
    expect(phone.posts(`from="${alice}/laptop"`).length).toBeGreaterThanOrEqual(1);
    expect(laptop.posts(`from="${alice}/phone"`).length).toBeGreaterThanOrEqual(1);
    expect(statuses(b, alice!).sort()).toEqual(['at the laptop', 'on the phone']);
    // One ends: the other stays.
    await phone.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>', 2);
    expect((await h.store.getUserRoute(alice!)).sessions.map((s) => s.resource)).toEqual(['laptop']);
  });

  it('a session whose $disconnect was lost is not a target once its time is up, and goes at the next bind', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    await befriend(h, alice!, bob!);
    const b = new Connection(h);
    await b.online(bob!, 'secret', 'desk');
    const account = (await h.store.getUserRoute(bob!)).items.get('account')!;
    const attribute = Object.keys(account).find((k) => k.startsWith('s#'))!;
    // Its socket died 3 hours ago and nobody told us.
    await h.store.db.doc.send(
      new UpdateCommand({
        TableName: h.store.db.table,
        Key: { pk: `user#${bob}`, sk: 'account' },
        UpdateExpression: 'SET #s.expires = :past',
        ExpressionAttributeNames: { '#s': attribute },
        ExpressionAttributeValues: { ':past': Math.floor(Date.now() / 1000) - 1 },
      }),
    );
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    expect(b.posts(`from="${alice}/phone"`)).toEqual([]);
    expect(a.posts(`from="${bob}/desk"`)).toEqual([]);
    const b2 = new Connection(h);
    await b2.online(bob!, 'secret', 'tablet');
    const after = (await h.store.getUserRoute(bob!)).items.get('account')!;
    expect(Object.keys(after).filter((k) => k.startsWith('s#'))).toHaveLength(1);
    expect(a.posts(`from="${bob}/tablet"`)).toHaveLength(1);
  });

  it('a broadcast that crashes right after its batched read runs again: every contact gets the presence once', async () => {
    const [alice, bob, carol] = await freshUsers(h, 'alice', 'bob', 'carol');
    await befriend(h, alice!, bob!);
    await befriend(h, alice!, carol!);
    const [b, c] = [new Connection(h), new Connection(h)];
    await b.online(bob!, 'secret', 'desk');
    await c.online(carol!, 'secret', 'desk');
    const a = new Connection(h);
    await a.online(alice!, 'secret', 'phone');
    h.crash.crashAfter('BatchGetItemCommand');
    await expect(a.frame(presence('busy'), 0)).rejects.toThrow(/crash after BatchGetItemCommand/);
    await a.redeliver(2);
    expect(statuses(b, alice!)).toEqual(['available', 'busy']);
    expect(statuses(c, alice!)).toEqual(['available', 'busy']);
  });
});
