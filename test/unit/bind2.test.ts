/**
 * XEP-0386 Bind 2 and XEP-0198 resumption inside SASL2's `<authenticate/>`, at the handler level on
 * three instances sharing one DynamoDB Local table: what the `<success/>` carries, what comes
 * before and after it, and an inline resumption that crashes half-way and runs again elsewhere.
 * The recording sender stands in for @connections (AWS's edge).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStanzaFrame } from '../../shared/transport/sm-sender.ts';
import { Connection, freshUsers, kill, startHarness, type Harness } from './handler-harness.ts';

const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';
const SASL2 = 'urn:xmpp:sasl:2';
const SM = 'urn:xmpp:sm:3';
const plain = (bare: string) => Buffer.from(`\0${bare.split('@')[0]}\0secret`).toString('base64');
const chat = (to: string, body: string) => `<message xmlns="jabber:client" to="${to}" type="chat"><body>${body}</body></message>`;
const bodies = (frames: string[]) => frames.map((f) => /<body>([^<]*)<\/body>/.exec(f)?.[1]).filter((b): b is string => b !== undefined);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const identity = (success: string) => /<authorization-identifier>([^<]*)</.exec(success)![1]!;

let h: Harness;
beforeAll(async () => {
  h = await startHarness(3, { XMPP_SM_RESUME_SECONDS: '30' });
});
afterAll(() => h?.crash.client.destroy());

/** Opens and authenticates by SASL2 (PLAIN, one frame) with `inline` inside `<authenticate/>`. */
async function login(c: Connection, bare: string, inline: string, instance?: number): Promise<string> {
  await c.frame(OPEN, instance);
  await c.frame(
    `<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${plain(bare)}</initial-response><user-agent id="5c0a6e0c-2c5e-4bf4-9d0e-4c8d3b6d1a11"><software>test</software></user-agent>${inline}</authenticate>`,
    instance,
  );
  return c.posts('<success')[0]!;
}

const bind = (...features: string[]) => `<bind xmlns="urn:xmpp:bind:0"><tag>Phone</tag>${features.join('')}</bind>`;
const ENABLE = `<enable xmlns="${SM}" resume="true"/>`;

describe('XEP-0386 Bind 2', () => {
  it('offers binding and its inline features in SASL2, and binds, enables XEP-0198 and carbons in the one frame', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    const desk = new Connection(h);
    await desk.online(alice!, 'secret', 'desk');
    const c = new Connection(h);
    const success = await login(c, alice!, bind(ENABLE, '<enable xmlns="urn:xmpp:carbons:2"/>'));
    const offered = c.posts('<stream:features')[0]!;
    expect(offered).toContain(`<inline><bind xmlns="urn:xmpp:bind:0"><inline><feature var="${SM}"/>`);
    expect(offered).toContain('<feature var="urn:xmpp:carbons:2"/>');
    expect(offered).toMatch(/<authentication xmlns="urn:xmpp:sasl:2">.*<inline>.*<sm xmlns="urn:xmpp:sm:3"\/>.*<\/inline><\/authentication>/);
    // The full JID: the client's tag, then a part of the server's.
    const jid = identity(success);
    expect(jid).toMatch(new RegExp(`^${alice}/Phone/[\\w-]{12}$`));
    expect(success).toMatch(/<bound xmlns="urn:xmpp:bind:0"><enabled xmlns="urn:xmpp:sm:3" id="[^"]+" resume="true" max="30"\/><\/bound>/);
    // The features that follow offer neither binding nor XEP-0198 again.
    const after = c.posts('<stream:features')[1]!;
    expect(after).not.toContain('xmpp-bind');
    expect(after).not.toContain(`<sm xmlns="${SM}"/>`);
    // Carbons are on: what her desk sends to Bob comes to this session as a <sent/> copy, and
    // XEP-0198 counts it (her <r/> is answered with the count of what she sent: none).
    await desk.frame(chat(bob!, 'from the desk'));
    expect(c.posts('<sent xmlns="urn:xmpp:carbons:2"')).toHaveLength(1);
    await c.frame(`<r xmlns="${SM}"/>`);
    expect(c.posts('<a xmlns')[0]).toContain('h="0"');
    // And it is a session like any: Bob's message to the full JID reaches it.
    const b = new Connection(h);
    await b.login(bob!, 'secret', 'desk');
    await b.frame(chat(jid, 'hello'));
    expect(bodies(c.posts())).toEqual(['from the desk', 'hello']);
  });

  it('posts nothing to the client before its <success/>: a stanza for the session waits until it is out', async () => {
    const [carol, dave] = await freshUsers(h, 'carol', 'dave');
    const d = new Connection(h);
    await d.login(dave!, 'secret', 'desk');
    const c = new Connection(h);
    // As the bind frame is about to post its <success/>, another instance routes a message to the
    // new session (its full JID read from the store, as a contact who learned it would), and has
    // half a second to post it before the <success/> goes.
    let routed: Promise<unknown> | undefined;
    h.sender.beforePost = async ({ connectionId, frame }) => {
      if (routed || connectionId !== c.id || !frame.startsWith('<success')) return;
      const [session] = (await h.store.getUserRoute(carol!)).sessions;
      routed = d.frame(chat(`${carol}/${session!.resource}`, 'early'), 2);
      await sleep(500);
    };
    await login(c, carol!, bind(ENABLE), 0);
    await routed;
    h.sender.beforePost = undefined;
    const frames = c.posts();
    expect(frames.findIndex((f) => f.startsWith('<success'))).toBeLessThan(frames.findIndex(isStanzaFrame));
    expect(bodies(frames)).toEqual(['early']);
  });

  it('resumes inline: <resumed/> in the <success/>, the bind ignored, what she missed resent after it', async () => {
    const [erin, frank] = await freshUsers(h, 'erin', 'frank');
    const f = new Connection(h);
    await f.login(frank!, 'secret', 'desk');
    const a = new Connection(h);
    const first = await login(a, erin!, bind(ENABLE));
    const jid = identity(first);
    const smId = /<enabled[^>]* id="([^"]+)"/.exec(first)![1]!;
    await a.frame('<presence xmlns="jabber:client"/>');
    await kill(a);
    for (let i = 1; i <= 3; i++) await f.frame(chat(jid, `gap${i}`));
    const a2 = new Connection(h);
    const success = await login(a2, erin!, `<resume xmlns="${SM}" previd="${smId}" h="0"/>${bind(ENABLE)}`);
    expect(identity(success)).toBe(jid);
    expect(success).toContain(`<resumed xmlns="${SM}" previd="${smId}" h="1"/>`);
    expect(success).not.toContain('<bound');
    const frames = a2.posts();
    const at = frames.findIndex((p) => p.startsWith('<success'));
    expect(frames[at + 1]).toMatch(/^<stream:features/);
    expect(bodies(frames.slice(at))).toEqual(['gap1', 'gap2', 'gap3']);
    expect((await h.store.getUserRoute(erin!)).sessions).toHaveLength(1);
  });

  it('an inline resumption that crashes after moving the session runs again on another instance: one <success/>, each stanza once', async () => {
    const [gina, hugo] = await freshUsers(h, 'gina', 'hugo');
    const g = new Connection(h);
    await g.login(hugo!, 'secret', 'desk');
    const a = new Connection(h);
    const first = await login(a, gina!, bind(ENABLE));
    const jid = identity(first);
    const smId = /<enabled[^>]* id="([^"]+)"/.exec(first)![1]!;
    await kill(a);
    for (let i = 1; i <= 3; i++) await g.frame(chat(jid, `gap${i}`));
    const a2 = new Connection(h);
    await a2.frame(OPEN, 0);
    // The instance dies right after the write that moved the session here, mid-resend.
    h.sender.beforePost = ({ frame }) => {
      if (frame.includes('gap3')) h.crash.crashAfter('UpdateItemCommand');
    };
    const authenticate = `<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${plain(gina!)}</initial-response><resume xmlns="${SM}" previd="${smId}" h="0"/>${bind(ENABLE)}</authenticate>`;
    await expect(a2.frame(authenticate, 1)).rejects.toThrow(/crash after UpdateItemCommand/);
    h.sender.beforePost = undefined;
    expect((await a2.redeliver(2))?.stage).toBe('bound');
    expect(a2.posts('<success')).toHaveLength(1);
    expect(a2.posts('<stream:features')).toHaveLength(2);
    expect(bodies(a2.posts())).toEqual(['gap1', 'gap2', 'gap3']);
    await g.frame(chat(jid, 'after'));
    expect(bodies(a2.posts())).toEqual(['gap1', 'gap2', 'gap3', 'after']);
  });

  it('the same installation binding anew replaces its hibernated session at once: what that one kept comes now, not when its window ends', async () => {
    const [kate, leo] = await freshUsers(h, 'kate', 'leo');
    const l = new Connection(h);
    await l.login(leo!, 'secret', 'desk');
    const a = new Connection(h);
    const jid = identity(await login(a, kate!, bind(ENABLE)));
    await a.frame('<presence xmlns="jabber:client"/>');
    await kill(a);
    for (let i = 1; i <= 2; i++) await l.frame(chat(jid, `kept${i}`));
    // Her client does not resume (it lost its SM id): the same user agent binds again.
    const a2 = new Connection(h);
    expect(identity(await login(a2, kate!, bind(ENABLE)))).toBe(jid);
    const sessions = (await h.store.getUserRoute(kate!)).sessions;
    expect(sessions.map((s) => s.connectionId)).toEqual([a2.id]);
    await a2.frame('<presence xmlns="jabber:client"/>');
    expect(bodies(a2.posts())).toEqual(['kept1', 'kept2']);
    // Another installation (another user agent id) gets a resource of its own, beside hers.
    const other = new Connection(h);
    await other.frame(OPEN);
    await other.frame(`<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${plain(kate!)}</initial-response><user-agent id="0e6b5c8e-8a43-4c1f-9a57-3f3f1b7a2c90"/>${bind()}</authenticate>`);
    expect(identity(other.posts('<success')[0]!)).not.toBe(jid);
    expect((await h.store.getUserRoute(kate!)).sessions).toHaveLength(2);
  });

  it('a resumption refused inline says why in the <success/>, and the bind makes a new session', async () => {
    const [ivan] = await freshUsers(h, 'ivan');
    const c = new Connection(h);
    const success = await login(c, ivan!, `<resume xmlns="${SM}" previd="bm9uZQ.nothing" h="0"/>${bind()}`);
    expect(success).toContain(`<failed xmlns="${SM}"><item-not-found`);
    expect(success).toContain('<bound xmlns="urn:xmpp:bind:0"/>');
    expect(identity(success)).toMatch(new RegExp(`^${ivan}/Phone/`));
  });

  it('without a <bind/>, the stream is authenticated and binds as RFC 6120 says', async () => {
    const [jane] = await freshUsers(h, 'jane');
    const c = new Connection(h);
    const success = await login(c, jane!, '');
    expect(identity(success)).toBe(jane);
    expect(c.posts('<stream:features')[1]).toContain('urn:ietf:params:xml:ns:xmpp-bind');
    await c.frame('<iq type="set" id="b" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>web</resource></bind></iq>');
    expect(c.posts('id="b"')[0]).toContain(`<jid>${jane}/web</jid>`);
  });
});
