/**
 * Stream negotiation details and hostile input, with frames written by hand over a real WebSocket
 * to the local gateway: every bad input gets the RFC 6120 error and the server keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectXmppJs, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

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
