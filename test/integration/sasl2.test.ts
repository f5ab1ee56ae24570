/**
 * XEP-0388 SASL2, XEP-0386 Bind 2 and XEP-0484 FAST with a real client library: @xmpp/client 0.14
 * uses them when offered (as Conversations and Monal do), enabling XEP-0198 inside the bind, asking
 * for a token, and resuming inside the authentication with the token. StanzaJS, which speaks only RFC 6120's SASL, is the other party, so both
 * logins meet on one server. Through the local stack: the WebSocket gateway, the FIFO queue per
 * connection, DynamoDB Local.
 */
import type { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addFreshUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack, type XmppJsClient } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };
beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => {
  await stack?.stop();
});

const SASL2 = 'urn:xmpp:sasl:2';
const smOf = (client: XmppJsClient) => client.streamManagement as XmppJsClient['streamManagement'] & EventEmitter & { enabled: boolean; id: string };

describe('SASL2 and Bind 2 with @xmpp/client', () => {
  it('logs in without a stream restart, bound and with XEP-0198 on from its <success/>, and talks to a client of RFC 6120', async () => {
    const alice = await addFreshUser(stack.store, 'alice');
    const bob = await addFreshUser(stack.store, 'bob');
    const a = await connectXmppJs(stack.wsUrl, alice, `${alice}-pass`);
    const success = await a.nonzas.wait((el) => el.is('success', SASL2), 'SASL2 success');
    // The server made the resource; the client took its JID from the <success/>.
    expect(a.jid).toMatch(new RegExp(`^${alice}@localhost/[\\w-]{12}$`));
    expect(success.getChildText('authorization-identifier')).toBe(a.jid);
    expect(success.getChild('bound', 'urn:xmpp:bind:0')?.getChild('enabled', 'urn:xmpp:sm:3')?.attrs.resume).toBe('true');
    expect(smOf(a.client).enabled).toBe(true);
    // No RFC 6120 bind and no second <enable/> went out: the features after <success/> offered neither.
    expect(a.nonzas.seen((el) => el.is('enabled', 'urn:xmpp:sm:3') || el.is('failed', 'urn:xmpp:sm:3'))).toEqual([]);

    const b = await connectStanza(stack.wsUrl, `${bob}@localhost`, `${bob}-pass`, 'desk');
    const toBob = new Promise<string>((resolve) => b.on('message', (m: { from: string; body?: string }) => m.body && resolve(`${m.from} ${m.body}`)));
    await a.client.send(xml('message', { to: `${bob}@localhost/desk`, type: 'chat' }, xml('body', {}, 'via SASL2')));
    expect(await toBob).toBe(`${a.jid} via SASL2`);
    b.sendMessage({ to: a.jid, type: 'chat', body: 'back' });
    expect((await a.inbox.wait((s) => s.getChildText('body') === 'back', 'reply')).attrs.from).toBe(`${bob}@localhost/desk`);
    await a.client.stop();
    b.disconnect();
  });

  it('resumes inside the authentication, with a FAST token, after its socket died: the same JID, every message once', async () => {
    const carol = await addFreshUser(stack.store, 'carol');
    const dave = await addFreshUser(stack.store, 'dave');
    const c = await connectXmppJs(stack.wsUrl, carol, `${carol}-pass`);
    await c.nonzas.wait((el) => el.is('success', SASL2), 'first success');
    const d = await connectStanza(stack.wsUrl, `${dave}@localhost`, `${dave}-pass`, 'desk');
    // Its first login asked for a XEP-0484 token; the reconnect logs in with it.
    await expect((c.client as unknown as { fast: { fetch(): Promise<{ token: string } | undefined> } }).fast.fetch()).resolves.toMatchObject({ token: expect.any(String) });
    const mechanisms: string[] = [];
    c.client.on('send', (el: ReturnType<typeof xml>) => void (el.is('authenticate', SASL2) && mechanisms.push(el.attrs.mechanism as string)));
    const resumed = new Promise<void>((resolve) => smOf(c.client).once('resumed', resolve));
    const socket = (c.client as unknown as { socket: { socket: { terminate?: () => void; close: () => void } } }).socket.socket;
    (socket.terminate ?? socket.close).call(socket);
    for (let i = 1; i <= 5; i++) d.sendMessage({ to: c.jid, type: 'chat', body: `gap${i}` });
    await resumed;
    const again = await c.nonzas.wait((el) => el.is('success', SASL2), 'second success');
    expect(again.getChild('resumed', 'urn:xmpp:sm:3')).toBeDefined();
    expect(mechanisms).toEqual(['HT-SHA-256-NONE']);
    expect(again.getChildText('authorization-identifier')).toBe(c.jid);
    const got: string[] = [];
    for (let i = 1; i <= 5; i++) got.push((await c.inbox.wait((s) => s.getChildText('body') === `gap${i}`, `gap${i}`)).getChildText('body')!);
    expect(got).toEqual(['gap1', 'gap2', 'gap3', 'gap4', 'gap5']);
    // One session, not a second one bound beside the first.
    expect((await stack.store.getUserRoute(`${carol}@localhost`)).sessions).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.inbox.seen((s) => /^gap\d$/.test(s.getChildText('body') ?? ''))).toEqual([]); // none twice
    await c.client.stop();
    d.disconnect();
  });
});
