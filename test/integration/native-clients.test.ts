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
  for (const user of ['alice', 'bob', 'carol', 'dave']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
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
