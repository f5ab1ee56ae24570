/**
 * Native clients over TCP (RFC 6120: 5222 with STARTTLS, XEP-0368 direct TLS on 5223) through the
 * stream service of the local stack and the same routing core as WebSocket clients: @xmpp/client
 * with `xmpp://` and `xmpps://` against WebSocket users of @xmpp/client and StanzaJS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Stanzas } from 'stanza';
import type { Element } from '../../shared/xml/element.ts';
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
    const seenByWs = new Promise<Stanzas.ReceivedPresence>((resolve) => ws.on('available', (p) => p.from === 'erin@localhost/dino' && resolve(p)));
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
    const groupchat = new Promise<Stanzas.ReceivedMessage>((resolve) => ws.on('groupchat', (m) => m.body === 'hello from TCP' && resolve(m)));
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
    tcp.client.on('stanza', (s: Element) => {
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

  it('gets an HTTP upload slot (XEP-0363) and the file can be put and fetched', async () => {
    const tcp = await connectNative(direct, 'gus', 'gus-pass', 'uploader');
    const slot = await tcp.client.iqCaller.request(
      xml('iq', { type: 'get', to: 'upload.localhost' }, xml('request', { xmlns: 'urn:xmpp:http:upload:0', filename: 'note.txt', size: '5', 'content-type': 'text/plain' })),
    );
    const put = slot.getChild('slot', 'urn:xmpp:http:upload:0')!.getChild('put')!.attrs.url as string;
    const get = slot.getChild('slot', 'urn:xmpp:http:upload:0')!.getChild('get')!.attrs.url as string;
    expect((await fetch(put, { method: 'PUT', body: 'hello', headers: { 'content-type': 'text/plain' } })).ok).toBe(true);
    expect(await (await fetch(get)).text()).toBe('hello');
    await tcp.client.stop();
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

describe('hostile input over TCP', () => {
  /** Logs in over STARTTLS with PLAIN and returns the raw stream, ready for stanzas. */
  async function loggedIn(user: string): Promise<RawTcp> {
    const raw = await RawTcp.open(stack.federation!.c2sPort!);
    await raw.login(user, `${user}-pass`, `hostile-${Math.random().toString(36).slice(2)}`);
    return raw;
  }

  it.each([
    // Inside a document a DTD is not even well-formed XML; before the header see the next test.
    ['a DTD inside the stream', 'not-well-formed', '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><message>&b;</message>'],
    ['a comment', 'restricted-xml', '<message><!-- x --></message>'],
    ['a processing instruction', 'restricted-xml', '<?xml-stylesheet href="x"?><message/>'],
    ['broken XML', 'not-well-formed', '<message><body></message>'],
    ['deep nesting', 'policy-violation', `<message>${'<a>'.repeat(100)}${'</a>'.repeat(100)}</message>`],
    ['an oversized stanza', 'policy-violation', `<message to="bob@localhost"><body>${'x'.repeat(300_000)}</body></message>`],
  ])('ends the stream on %s with %s', async (_what, condition, input) => {
    const raw = await loggedIn('alice');
    raw.send(input);
    const end = await raw.until('</stream:stream>');
    expect(end, end.slice(-300)).toContain(`<${condition} xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>`);
    await raw.ended;
  });

  it('ends a stream that opens with a DTD (an XML bomb) before TLS and after it, with restricted-xml', async () => {
    const bomb = `<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>`;
    const header = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>&b;`;
    const plain = await RawTcp.open(stack.federation!.c2sPort!);
    plain.send(bomb + header);
    expect(await plain.until('</stream:stream>')).toContain('<restricted-xml');
    const secure = await RawTcp.open(stack.federation!.c2sTlsPort!, true);
    secure.send(bomb + header);
    expect(await secure.until('</stream:stream>')).toContain('<restricted-xml');
  });

  it('ends a stream that sends garbage before its header, and one that is not jabber:client', async () => {
    const garbage = await RawTcp.open(stack.federation!.c2sPort!);
    garbage.send('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(await garbage.until('</stream:stream>')).toContain('<not-well-formed');
    await garbage.ended;
    const server = await RawTcp.open(stack.federation!.c2sTlsPort!, true);
    server.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>`);
    expect(await server.until('</stream:stream>')).toContain('<invalid-namespace');
    await server.ended;
  });

  it('refuses to start TLS twice and a stream for another domain', async () => {
    const other = await RawTcp.open(stack.federation!.c2sTlsPort!, true);
    other.header('example.org');
    expect(await other.until('</stream:stream>')).toContain('<host-unknown');
    const twice = await RawTcp.open(stack.federation!.c2sTlsPort!, true);
    twice.header();
    await twice.until('</stream:features>');
    twice.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
    expect(await twice.until('</stream:stream>')).toMatch(/<(policy-violation|unsupported-stanza-type|not-authorized)/);
  });

  it('keeps serving: after all of that a TCP user and a WebSocket user still chat', async () => {
    const tcp = await connectNative(starttls, 'bob', 'bob-pass', 'after');
    const ws = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'after');
    await ws.client.send(xml('message', { to: 'bob@localhost/after', type: 'chat' }, xml('body', {}, 'still here')));
    await tcp.inbox.wait((s) => s.getChildText('body') === 'still here', 'a message after the hostile input');
    await tcp.client.stop();
    await ws.client.stop();
  });
});
