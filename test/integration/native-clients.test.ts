/**
 * Native clients over TCP (RFC 6120: 5222 with STARTTLS, XEP-0368 direct TLS on 5223) through the
 * stream service of the local stack and the same routing core as WebSocket clients: @xmpp/client
 * with `xmpp://` and `xmpps://` against WebSocket users of @xmpp/client and StanzaJS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, connectXmppJs, startTestStack, type LocalStack } from './helpers.ts';
import { RawTcp, connectNative, trustCertificate, xml } from './native-helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { generateCertificate } from '../../federation/tls.ts';

let stack: LocalStack & { store: DynamoStore };
let starttls: string;
let direct: string;

beforeAll(async () => {
  const tls = await generateCertificate('localhost');
  trustCertificate(tls.cert);
  stack = await startTestStack({ federation: { s2sPort: 0, tls, c2s: { port: 0, tlsPort: 0 } } });
  starttls = `xmpp://127.0.0.1:${stack.federation!.c2sPort}`;
  direct = `xmpps://127.0.0.1:${stack.federation!.c2sTlsPort}`;
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'fay', 'gus']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

describe('login over TCP', () => {
  it('negotiates STARTTLS, then SCRAM, then binds (xmpp://)', async () => {
    const { client, jid } = await connectNative(starttls, 'alice', 'alice-pass', 'desktop');
    expect(jid).toBe('alice@localhost/desktop');
    await client.stop();
  });

  it('logs in over direct TLS (xmpps://)', async () => {
    const { client, jid } = await connectNative(direct, 'bob', 'bob-pass', 'phone');
    expect(jid).toBe('bob@localhost/phone');
    await client.stop();
  });

  it('refuses a wrong password', async () => {
    await expect(connectNative(starttls, 'alice', 'wrong')).rejects.toThrow(/not-authorized/);
  });

  it('offers only STARTTLS before TLS and refuses a plaintext password', async () => {
    const raw = await RawTcp.open(stack.federation!.c2sPort!);
    raw.header();
    const features = await raw.until('</stream:features>');
    expect(features).toContain('<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required/></starttls>');
    expect(features).not.toContain('mechanism');
    raw.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from('\0alice\0alice-pass').toString('base64')}</auth>`);
    expect(await raw.until('</stream:stream>')).toContain('<policy-violation');
    await raw.ended;
  });
});

describe('a TCP user and a WebSocket user', () => {
  it('chat both ways', async () => {
    const tcp = await connectNative(starttls, 'carol', 'carol-pass', 'gajim');
    const ws = await connectXmppJs(stack.wsUrl, 'dave', 'dave-pass', 'browser');
    await ws.client.send(xml('message', { to: 'carol@localhost/gajim', type: 'chat', id: 'w1' }, xml('body', {}, 'from the browser')));
    const got = await tcp.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'from the browser', 'message on TCP');
    expect(got.attrs.from).toBe('dave@localhost/browser');
    await tcp.client.send(xml('message', { to: 'dave@localhost/browser', type: 'chat', id: 't1' }, xml('body', {}, 'from the desktop')));
    const back = await ws.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'from the desktop', 'message on WebSocket');
    expect(back.attrs.from).toBe('carol@localhost/gajim');
    await tcp.client.stop();
    await ws.client.stop();
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MUC = 'http://jabber.org/protocol/muc';

/** Mutual subscriptions, written through the store (the roster is not under test here). */
async function befriend(a: string, b: string): Promise<void> {
  await stack.store.putRosterItem(a, { jid: b, groups: [], subscription: 'both' });
  await stack.store.putRosterItem(b, { jid: a, groups: [], subscription: 'both' });
}

describe('the whole protocol for a TCP user, with WebSocket users around', () => {
  it('presence both ways between a TCP and a WebSocket contact', async () => {
    await befriend('erin@localhost', 'fay@localhost');
    const ws = await connectStanza(stack.wsUrl, 'fay@localhost', 'fay-pass', 'web');
    const seenByWs = new Promise<any>((resolve) => ws.on('available', (p: any) => p.from === 'erin@localhost/dino' && resolve(p)));
    ws.sendPresence({ status: 'on the web' });
    const tcp = await connectNative(starttls, 'erin', 'erin-pass', 'dino');
    await tcp.client.send(xml('presence', {}, xml('status', {}, 'on the desktop')));
    expect((await seenByWs).status).toBe('on the desktop');
    const seenByTcp = await tcp.inbox.wait((s) => s.is('presence') && s.attrs.from === 'fay@localhost/web', "fay's presence on TCP");
    expect(seenByTcp.getChildText('status')).toBe('on the web');
    const gone = tcp.inbox.wait((s) => s.is('presence') && s.attrs.from === 'fay@localhost/web' && s.attrs.type === 'unavailable', "fay's unavailable");
    ws.disconnect();
    await gone;
    await tcp.client.stop();
  });

  it('a room with one TCP and one WebSocket occupant, and the TCP user finds it all in MAM', async () => {
    const ws = await connectStanza(stack.wsUrl, 'gus@localhost', 'gus-pass', 'web');
    ws.sendPresence();
    const room = 'mixed@conference.localhost';
    await ws.joinRoom(room, 'gus');
    await ws.configureRoom(room, { fields: [{ name: 'FORM_TYPE', value: 'http://jabber.org/protocol/muc#roomconfig' }] });
    const groupchat = new Promise<any>((resolve) => ws.on('groupchat', (m: any) => m.body === 'hello from TCP' && resolve(m)));
    const tcp = await connectNative(direct, 'carol', 'carol-pass', 'conversations');
    await tcp.client.send(xml('presence'));
    await tcp.client.send(xml('presence', { to: `${room}/carol` }, xml('x', { xmlns: MUC })));
    await tcp.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/carol`, 'self-presence');
    await tcp.client.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'hello from TCP')));
    expect((await groupchat).from).toBe(`${room}/carol`);
    ws.sendMessage({ to: room, type: 'groupchat', body: 'hello from the web' });
    await tcp.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'hello from the web', 'groupchat on TCP');
    // 1:1 before, then the archive over TCP.
    await ws.sendMessage({ to: 'carol@localhost', type: 'chat', body: 'archived for carol' });
    await tcp.inbox.wait((s) => s.getChildText('body') === 'archived for carol', 'chat on TCP');
    const results: string[] = [];
    tcp.client.on('stanza', (s: any) => {
      const fwd = s.getChild('result', 'urn:xmpp:mam:2')?.getChild('forwarded', 'urn:xmpp:forward:0');
      const body = fwd?.getChild('message')?.getChildText('body');
      if (body) results.push(body);
    });
    const fin = await tcp.client.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: 'urn:xmpp:mam:2', queryid: 'q1' })));
    expect(fin.getChild('fin', 'urn:xmpp:mam:2')).toBeDefined();
    expect(results).toContain('archived for carol');
    await tcp.client.stop();
    ws.disconnect();
  });

  it('carbons between a TCP and a WebSocket resource of the same account', async () => {
    const tcp = await connectNative(starttls, 'alice', 'alice-pass', 'monal');
    const ws = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'converse');
    for (const c of [tcp.client, ws.client]) await c.iqCaller.request(xml('iq', { type: 'set' }, xml('enable', { xmlns: 'urn:xmpp:carbons:2' })));
    const bob = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'desk');
    await bob.client.send(xml('message', { to: 'alice@localhost/monal', type: 'chat' }, xml('body', {}, 'to the phone')));
    await tcp.inbox.wait((s) => s.getChildText('body') === 'to the phone', 'the message on TCP');
    const carbon = await ws.inbox.wait((s) => s.getChild('received', 'urn:xmpp:carbons:2') !== undefined, 'a received carbon on WebSocket');
    expect(carbon.getChild('received', 'urn:xmpp:carbons:2')!.toString()).toContain('to the phone');
    await tcp.client.send(xml('message', { to: 'bob@localhost', type: 'chat' }, xml('body', {}, 'from the phone')));
    const sent = await ws.inbox.wait((s) => s.getChild('sent', 'urn:xmpp:carbons:2') !== undefined, 'a sent carbon on WebSocket');
    expect(sent.getChild('sent', 'urn:xmpp:carbons:2')!.toString()).toContain('from the phone');
    for (const c of [tcp.client, ws.client, bob.client]) await c.stop();
  });

  it('resumes a TCP session whose socket died (XEP-0198), with every message once', async () => {
    const tcp = await connectNative(starttls, 'dave', 'dave-pass', 'siskin');
    const sm = (tcp.client as unknown as { streamManagement: { enabled: boolean; on(e: string, f: () => void): void } }).streamManagement;
    await expect.poll(() => sm.enabled).toBe(true);
    const resumed = new Promise<void>((resolve) => sm.on('resumed', resolve));
    const sender = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'sender');
    (tcp.client as unknown as { socket: { socket: { destroy(): void } } }).socket.socket.destroy();
    for (let i = 1; i <= 10; i++) await sender.client.send(xml('message', { to: tcp.jid, type: 'chat' }, xml('body', {}, `n${i}`)));
    await resumed;
    for (let i = 1; i <= 10; i++) await tcp.inbox.wait((s) => s.getChildText('body') === `n${i}`, `n${i}`);
    await sleep(500);
    expect(tcp.inbox.seen((s) => /^n\d+$/.test(s.getChildText('body') ?? ''))).toEqual([]); // none twice
    await sender.client.stop();
    await tcp.client.stop();
  });
});
