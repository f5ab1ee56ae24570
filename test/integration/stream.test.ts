/**
 * Stream negotiation details and hostile input, with frames written by hand over a real WebSocket
 * to the local gateway: every bad input gets the RFC 6120 error and the server keeps serving.
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectXmppJs, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { ArchiveStore } from '../../shared/storage/archive-store.ts';
import { userArchive } from '../../shared/lib/mam-query.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack({ registration: true });
  await addUser(stack.store, 'mallory@localhost', 'mallory-pass');
  await addUser(stack.store, 'victim@localhost', 'victim-pass');
});

afterAll(async () => {
  await stack?.stop();
});

async function expectStreamError(client: RawClient, condition: string): Promise<void> {
  const frame = await client.next('<stream:error');
  expect(frame).toContain(`<${condition} xmlns="urn:ietf:params:xml:ns:xmpp-streams"/>`);
  await client.next('<close');
  await client.closed;
}

describe('stream negotiation', () => {
  it('advertises SCRAM, PLAIN, registration and XEP-0478 limits before auth; bind, session and limits after', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open();
    const open = await c.next('<open');
    expect(open).toMatch(/from="localhost"/);
    const features = await c.next('</stream:features>');
    expect(features).toContain('<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>');
    expect(features).toContain('<register xmlns="http://jabber.org/features/iq-register"/>');
    expect(features).toContain('<limits xmlns="urn:xmpp:stream-limits:0"><max-bytes>131072</max-bytes><idle-seconds>');
    c.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from('\0mallory\0mallory-pass').toString('base64')}</auth>`);
    await c.next('<success');
    c.open();
    const after = await c.next('</stream:features>');
    expect(after).toContain('<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">');
    expect(after).toContain('<session xmlns="urn:ietf:params:xml:ns:xmpp-session"><optional/></session>');
    expect(after).toContain('<ver xmlns="urn:xmpp:features:rosterver"/>');
    expect(after).not.toContain('<mechanisms');
    c.close();
  });

  it('supports the legacy session iq for old clients', async () => {
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', 'legacy');
    c.send('<iq type="set" id="s1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>');
    expect(await c.next('id="s1"')).toContain('type="result"');
    c.close();
  });

  it('answers <close/> with <close/> and closes the socket', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open();
    await c.next('</stream:features>');
    c.send('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    await c.next('<close');
    await c.closed;
  });

  it('refuses a WebSocket without the xmpp subprotocol', async () => {
    await expect(RawClient.open(stack.wsUrl, ['chat'])).rejects.toThrow();
  });

  it('fails SASL per RFC 6120 §6.5 and closes after repeated failures', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open();
    await c.next('</stream:features>');
    c.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="DIGEST-MD5"/>');
    expect(await c.next('<failure')).toContain('<invalid-mechanism/>');
    c.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">!!notbase64!!</auth>');
    expect(await c.next('<failure')).toContain('<incorrect-encoding/>');
    c.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from('\0mallory\0nope').toString('base64')}</auth>`);
    expect(await c.next('<failure')).toContain('<not-authorized/>');
    await expectStreamError(c, 'policy-violation');
  });

  it('registers an account in-band (XEP-0077) and refuses a taken name', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open();
    await c.next('</stream:features>');
    c.send('<iq type="get" id="r1"><query xmlns="jabber:iq:register"/></iq>');
    expect(await c.next('id="r1"')).toContain('<username/>');
    c.send('<iq type="set" id="r2"><query xmlns="jabber:iq:register"><username>Newbie</username><password>pw</password></query></iq>');
    expect(await c.next('id="r2"')).toContain('type="result"');
    c.send('<iq type="set" id="r3"><query xmlns="jabber:iq:register"><username>newbie</username><password>pw</password></query></iq>');
    expect(await c.next('id="r3"')).toContain('<conflict');
    c.send('<iq type="set" id="r4"><query xmlns="jabber:iq:register"><username>bad user</username><password>pw</password></query></iq>');
    expect(await c.next('id="r4"')).toContain('<not-acceptable');
    c.close();
    const { client, jid } = await connectXmppJs(stack.wsUrl, 'newbie', 'pw', 'first');
    expect(jid).toBe('newbie@localhost/first');
    await client.stop();
  });
});

describe('hostile and malformed input', () => {
  it.each([
    ['a DTD with an entity', '<!DOCTYPE x [<!ENTITY a "aaaa">]><message>&a;</message>', 'restricted-xml'],
    ['a comment', '<message><!-- x --></message>', 'restricted-xml'],
    ['a processing instruction', '<?xml-stylesheet href="x"?><message/>', 'restricted-xml'],
    ['broken XML', '<message><body></message>', 'not-well-formed'],
    ['deep nesting', `${'<a>'.repeat(100)}${'</a>'.repeat(100)}`, 'policy-violation'],
  ])('closes the stream on %s', async (_what, frame, condition) => {
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', `hostile-${condition}-${Math.random()}`);
    c.send(frame);
    await expectStreamError(c, condition);
  });

  it('refuses stanzas before authentication', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open();
    await c.next('</stream:features>');
    c.send('<message to="victim@localhost"><body>spam</body></message>');
    await expectStreamError(c, 'not-authorized');
  });

  it('refuses a stream for another host', async () => {
    const c = await RawClient.open(stack.wsUrl);
    c.open('not-this-server.example');
    await expectStreamError(c, 'host-unknown');
  });

  it('rejects a spoofed from with invalid-from and nothing reaches the victim', async () => {
    const victim = await connectXmppJs(stack.wsUrl, 'victim', 'victim-pass', 'v');
    await victim.client.send((await import('@xmpp/client')).xml('presence'));
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', 'spoof');
    c.send('<message from="admin@localhost/x" to="victim@localhost" type="chat"><body>trust me</body></message>');
    await expectStreamError(c, 'invalid-from');
    // a genuine message sent afterwards arrives; the spoofed one never did
    const honest = await RawClient.open(stack.wsUrl);
    await honest.login('mallory', 'mallory-pass', 'honest');
    honest.send('<message to="victim@localhost" type="chat"><body>honest</body></message>');
    const got = await victim.inbox.wait((s) => s.is('message'), 'message at victim');
    expect(got.getChildText('body')).toBe('honest');
    expect(got.attrs.from).toBe('mallory@localhost/honest');
    honest.close();
    await victim.client.stop();
  });

  it('stamps from on stanzas that carry none', async () => {
    const victim = await connectXmppJs(stack.wsUrl, 'victim', 'victim-pass', 'stamp');
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', 'stamper');
    c.send('<message to="victim@localhost/stamp" type="chat"><body>no from</body></message>');
    const got = await victim.inbox.wait((s) => s.is('message'), 'stamped message');
    expect(got.attrs.from).toBe('mallory@localhost/stamper');
    c.close();
    await victim.client.stop();
  });

  it('answers a malformed JID with jid-malformed and an iq without id with bad-request', async () => {
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', 'jids');
    c.send('<message to="a@b@c" id="j1" type="chat"><body>x</body></message>');
    expect(await c.next('id="j1"')).toContain('<jid-malformed');
    c.send('<iq type="get" id="j2"><a xmlns="x"/><b xmlns="y"/></iq>');
    expect(await c.next('id="j2"')).toContain('<bad-request');
    c.send('<iq type="get" id="j3" to="localhost"><query xmlns="urn:example:unknown"/></iq>');
    expect(await c.next('id="j3"')).toContain('<service-unavailable');
    c.close();
  });

  it('closes a socket whose frame exceeds 128 KiB with 1009, like API Gateway', async () => {
    const c = await RawClient.open(stack.wsUrl);
    await c.login('mallory', 'mallory-pass', 'big');
    c.send(`<message to="victim@localhost"><body>${'x'.repeat(140_000)}</body></message>`);
    expect((await c.closed).code).toBe(1009);
  });

  it('keeps serving other clients after all of that', async () => {
    const { client, jid } = await connectXmppJs(stack.wsUrl, 'victim', 'victim-pass', 'after');
    expect(jid).toBe('victim@localhost/after');
    await client.stop();
  });
});

/** `count` attributes a0…, within the 64-attribute limit of the frame. */
const attrs = (count: number) => Array.from({ length: count }, (_, i) => ` a${i}="${i}"`).join('');

/**
 * Issue 13: a stanza stored for someone else (offline, archives, room history) must never fail the
 * victim's frames. Stamped input that outgrows the limits is refused with a stanza error; items
 * stored before that (written here straight into the table) are read with trusted limits, and one
 * that still cannot be read or posted is skipped (offline: deleted).
 */
describe('stored stanzas (issue 13)', () => {
  const MAM = 'urn:xmpp:mam:2';
  /** A message as the server would have stored it: stamped from/xmlns push it to 66 attributes. */
  const wide = (to: string, body: string) => `<message xmlns="jabber:client" from="writer@localhost/old" to="${to}" type="chat"${attrs(62)}><body>${body}</body></message>`;
  /** 40 KB of raw `>` as stored: 160 KB of `&gt;`, larger than a frame may be. */
  const escaped = (to: string) => `<message xmlns="jabber:client" from="writer@localhost/old" to="${to}" type="chat"><body>${'&gt;'.repeat(40_000)}</body></message>`;
  const xml11 = (to: string) => `<?xml version="1.1"?><message xmlns="jabber:client" from="writer@localhost/old" to="${to}" type="chat"><body>\u0001</body></message>`;
  const plain = (to: string, body: string) => `<message xmlns="jabber:client" from="writer@localhost/old" to="${to}" type="chat"><body>${body}</body></message>`;
  const mamQuery = (id: string) =>
    `<iq type="set" id="${id}"><query xmlns="${MAM}" queryid="${id}"><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE" type="hidden"><value>${MAM}</value></field></x></query></iq>`;
  const bodies = (c: RawClient, marker: string) => c.frames.seen((f) => f.includes(marker)).map((f) => /<body>([^<]*)<\/body>/.exec(f)?.[1]);

  beforeAll(async () => {
    for (const user of ['writer', 'reader', 'reader2', 'reader3', 'reader4']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
  });

  it('refuses a message that outgrows the limits once stamped with policy-violation; the offline recipient logs in and later messages arrive', async () => {
    const writer = await RawClient.open(stack.wsUrl);
    await writer.login('writer', 'writer-pass', 'w1');
    // 64 attributes as sent (within the limit); 66 once from and xmlns are stamped.
    writer.send(`<message to="reader@localhost" type="chat" id="wide1"${attrs(61)}><body>too wide</body></message>`);
    const wideError = await writer.next('id="wide1"');
    expect(wideError).toContain('type="error"');
    expect(wideError).toContain('<policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>');
    expect(wideError).toContain('more than 64 attributes');
    // 40 KB of raw '>' is 160 KB once escaped.
    writer.send(`<message to="reader@localhost" type="chat" id="big1"><body>${'>'.repeat(40_000)}</body></message>`);
    const bigError = await writer.next('id="big1"');
    expect(bigError).toContain('<policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>');
    expect(bigError.length).toBeLessThan(1000); // no copy of the content
    // Nothing of it was archived: the writer's own archive answers normally.
    writer.send(mamQuery('wq'));
    const fin = await writer.next(/<iq[^>]*id="wq"/);
    expect(fin).toContain('type="result"');
    expect(writer.frames.seen((f) => f.includes('queryid="wq"'))).toEqual([]);

    const reader = await RawClient.open(stack.wsUrl);
    await reader.login('reader', 'reader-pass', 'r1');
    reader.send('<presence/>'); // initial presence: the offline flush
    reader.send('<iq type="get" id="p1" to="localhost"><ping xmlns="urn:xmpp:ping"/></iq>');
    expect(await reader.next('id="p1"')).toContain('type="result"');
    writer.send('<message to="reader@localhost" type="chat" id="later1"><body>later</body></message>');
    expect(await reader.next('id="later1"')).toContain('<body>later</body>');
    expect(reader.frames.seen((f) => f.includes('too wide') || f.includes('&gt;&gt;'))).toEqual([]);
    writer.close();
    reader.close();
  });

  it('delivers offline items stored over the client limits, and deletes the ones that cannot be read or posted', async () => {
    const to = 'reader2@localhost';
    const stamp = (s: number) => new Date(Date.UTC(2024, 0, 1, 0, 0, s)).toISOString();
    await stack.store.storeOffline(to, wide(to, 'stored wide'), stamp(1));
    await stack.store.storeOffline(to, escaped(to), stamp(2));
    await stack.store.storeOffline(to, xml11(to), stamp(3));
    await stack.store.storeOffline(to, '<message><body>garbage', stamp(4));
    await stack.store.storeOffline(to, plain(to, 'stored plain'), stamp(5));
    const reader = await RawClient.open(stack.wsUrl);
    await reader.login('reader2', 'reader2-pass', 'r2');
    reader.send('<presence/>');
    expect(await reader.next('stored plain')).toContain('from="writer@localhost/old"');
    reader.send('<iq type="get" id="p2" to="localhost"><ping xmlns="urn:xmpp:ping"/></iq>');
    expect(await reader.next('id="p2"')).toContain('type="result"');
    // Besides the plain one (taken above), only the wide one came: the others were deleted.
    expect(bodies(reader, '<message')).toEqual(['stored wide']);
    expect(await stack.store.listOffline(to)).toEqual([]);
    const writer = await RawClient.open(stack.wsUrl);
    await writer.login('writer', 'writer-pass', 'w2');
    writer.send(`<message to="${to}" type="chat" id="later2"><body>later</body></message>`);
    expect(await reader.next('id="later2"')).toContain('<body>later</body>');
    writer.close();
    reader.close();
  });

  it('answers a MAM query over an archive holding items stored over the limits, skipping what cannot be read or posted', async () => {
    const to = 'reader3@localhost';
    const archive = new ArchiveStore(stack.store.db);
    const put = (xml: string) => archive.append(userArchive(to), { xml, with: 'writer@localhost', withFull: 'writer@localhost/old' });
    await put(wide(to, 'archived wide'));
    await put(escaped(to));
    await put(xml11(to));
    await put('<message><body>garbage');
    await put(plain(to, 'archived plain'));
    const reader = await RawClient.open(stack.wsUrl);
    await reader.login('reader3', 'reader3-pass', 'r3');
    reader.send(mamQuery('q3'));
    const fin = await reader.next(/<iq[^>]*id="q3"/);
    expect(fin).toContain('type="result"');
    expect(fin).toContain('complete="true"');
    expect(bodies(reader, 'queryid="q3"')).toEqual(['archived wide', 'archived plain']);
    reader.close();
  });

  it('sends room history without the archived items that cannot be read or posted, and the join completes', async () => {
    const room = 'history13@conference.localhost';
    const owner = await RawClient.open(stack.wsUrl);
    await owner.login('writer', 'writer-pass', 'w4');
    owner.send(`<presence to="${room}/owner"/>`); // groupchat 1.0 join: an instant room
    await owner.next(/<presence[^>]*from="history13@conference.localhost\/owner"/);
    const archive = new ArchiveStore(stack.store.db);
    const put = (xml: string) => archive.append(`room#${room}`, { xml, with: 'writer@localhost', withFull: `${room}/owner` });
    const groupchat = (body: string) => `<message xmlns="jabber:client" from="${room}/owner" type="groupchat"${attrs(63)}><body>${body}</body></message>`;
    await put(groupchat('history wide'));
    await put(`<message xmlns="jabber:client" from="${room}/owner" type="groupchat"><body>${'&gt;'.repeat(40_000)}</body></message>`);
    await put(`<?xml version="1.1"?><message xmlns="jabber:client" from="${room}/owner" type="groupchat"><body>\u0001</body></message>`);
    await put('<message><body>garbage');
    await put(`<message xmlns="jabber:client" from="${room}/owner" type="groupchat"><body>history plain</body></message>`);
    const reader = await RawClient.open(stack.wsUrl);
    await reader.login('reader4', 'reader4-pass', 'r4');
    reader.send(`<presence to="${room}/reader"><x xmlns="http://jabber.org/protocol/muc"/></presence>`);
    await reader.next('<subject'); // the subject ends the join (XEP-0045 §7.2.15)
    expect(bodies(reader, 'type="groupchat"').filter(Boolean)).toEqual(['history wide', 'history plain']);
    owner.close();
    reader.close();
  });
});

describe('stanzas from a component that outgrow the limits once stamped (issue 13)', () => {
  const COMPONENT = 'bot.localhost';
  const SECRET = 'bot-secret';
  let fed: LocalStack & { store: DynamoStore };

  beforeAll(async () => {
    fed = await startTestStack({ federation: { s2sPort: 0, componentPort: 0, components: new Map([[COMPONENT, SECRET]]) } });
    await addUser(fed.store, 'human@localhost', 'human-pass');
  });

  afterAll(async () => {
    await fed?.stop();
  });

  /** A raw XEP-0114 component stream; resolves once the handshake is accepted. */
  async function component(decl = "<?xml version='1.0'?>") {
    const socket = connect(fed.federation!.componentPort!, '127.0.0.1');
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
    });
    const next = async (match: RegExp) => {
      const deadline = Date.now() + 10_000;
      while (!match.test(buffer)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${match}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return buffer;
    };
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write(`${decl}<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${COMPONENT}'>`);
    return { socket, next };
  }

  async function handshake(c: Awaited<ReturnType<typeof component>>) {
    const header = await c.next(/<stream:stream[^>]*id='([^']+)'/);
    const id = /id='([^']+)'/.exec(header)![1]!;
    c.socket.write(`<handshake>${createHash('sha1').update(id + SECRET).digest('hex')}</handshake>`);
    await c.next(/<handshake\/>/);
  }

  it('bounces them with policy-violation, and a normal one still arrives', async () => {
    const human = await RawClient.open(fed.wsUrl);
    await human.login('human', 'human-pass', 'h');
    human.send('<presence/>');
    const c = await component();
    await handshake(c);
    // 64 attributes as sent; the core adds xmlns.
    c.socket.write(`<message from='bot@${COMPONENT}' to='human@localhost/h' type='chat' id='c1'${attrs(60)}><body>wide</body></message>`);
    const bounced = await c.next(/<message[^>]*type=['"]error['"][^>]*>[\s\S]*?<\/message>/);
    expect(bounced).toContain('policy-violation');
    expect(bounced).toContain('more than 64 attributes');
    c.socket.write(`<message from='bot@${COMPONENT}' to='human@localhost/h' type='chat' id='c2'><body>${'>'.repeat(40_000)}</body></message>`);
    await c.next(/id=['"]c2['"][^>]*>[\s\S]*?policy-violation/);
    c.socket.write(`<message from='bot@${COMPONENT}' to='human@localhost/h' type='chat' id='c3'><body>fine</body></message>`);
    expect(await human.next('id="c3"')).toContain('<body>fine</body>');
    expect(human.frames.seen((f) => f.includes('id="c1"') || f.includes('id="c2"'))).toEqual([]);
    c.socket.end('</stream:stream>');
    human.close();
  });

  it('ends a component stream that declares XML 1.1 with not-well-formed', async () => {
    const c = await component("<?xml version='1.1'?>");
    const error = await c.next(/<stream:error[\s\S]*<\/stream:error>/);
    expect(error).toContain('<not-well-formed');
    c.socket.destroy();
  });
});
