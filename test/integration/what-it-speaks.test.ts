/**
 * The README's table of specifications against what the server advertises, both ways: every
 * namespace in its "advertised as" column is advertised somewhere (disco#info of the server, an
 * account, the group chat service, a room, the upload service; stream features over WebSocket and
 * TCP, before and after authentication), and everything advertised is in the column. A token
 * ending in `*` stands for every feature it starts.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import { RawTcp, trustCertificate } from './native-helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { generateCertificate } from '../../federation/tls.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  const tls = await generateCertificate('localhost');
  trustCertificate(tls.cert);
  // Every optional feature on, so that all of them are advertised.
  stack = await startTestStack({
    registration: true,
    federation: { s2sPort: 0, tls, c2s: { port: 0 } },
    env: { XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET: 'turn-secret', XMPP_CONTACT_ADDRESSES: 'abuse=mailto:abuse@example.com' },
  });
  await addUser(stack.store, 'alice@localhost', 'alice-pass');
});

afterAll(async () => {
  await stack?.stop();
});

/** The backticked tokens of the README table's last column. */
function claimed(): string[] {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const table = /<!-- specs:start -->([\s\S]*?)<!-- specs:end -->/.exec(readme)![1]!;
  return table
    .split('\n')
    .filter((line) => /^\| (RFC|XEP|\()/.test(line))
    .flatMap((line) => [...line.split('|').slice(-2)[0]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!));
}

/** Namespaces of the stream features in a `<stream:features>` frame. */
function featureNamespaces(features: string): string[] {
  return [...features.matchAll(/<[a-z-]+ xmlns="([^"]+)"/g)].map((m) => m[1]!).filter((ns) => ns !== 'http://etherx.jabber.org/streams');
}

async function advertised(): Promise<Set<string>> {
  const found = new Set<string>();
  const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'disco');
  const room = 'speaks@conference.localhost';
  await alice.client.send(xml('presence', { to: `${room}/alice` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await alice.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/alice`, 'joined');
  await alice.client.iqCaller.request(
    xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/muc#owner' }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))),
  );
  for (const to of ['localhost', 'alice@localhost', 'conference.localhost', room, 'upload.localhost']) {
    const info = await alice.client.iqCaller.request(xml('iq', { type: 'get', to }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    for (const f of info.getChild('query')!.getChildren('feature')) found.add(f.attrs.var as string);
  }
  await alice.client.stop();

  // Stream features, WebSocket: before and after authentication.
  const ws = await RawClient.open(stack.wsUrl);
  ws.open();
  for (const ns of featureNamespaces(await ws.next('</stream:features>'))) found.add(ns);
  ws.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from('\0alice\0alice-pass').toString('base64')}</auth>`);
  await ws.next('<success');
  ws.open();
  for (const ns of featureNamespaces(await ws.next('</stream:features>'))) found.add(ns);
  ws.close();

  // TCP: STARTTLS, then what the secure stream offers.
  const tcp = await RawTcp.open(stack.federation!.c2sPort!);
  tcp.header();
  for (const ns of featureNamespaces(await tcp.until('</stream:features>'))) found.add(ns);
  await tcp.startTlsOnly();
  tcp.header();
  for (const ns of featureNamespaces(await tcp.until('</stream:features>'))) found.add(ns);
  tcp.close();
  return found;
}

describe('README "Every specification" table', () => {
  it('lists exactly what the server advertises', async () => {
    const actual = await advertised();
    const tokens = claimed();
    const covers = (token: string, feature: string) => (token.endsWith('*') ? feature.startsWith(token.slice(0, -1)) : feature === token);
    const unlisted = [...actual].filter((f) => !tokens.some((t) => covers(t, f))).sort();
    const notAdvertised = tokens.filter((t) => ![...actual].some((f) => covers(t, f))).sort();
    expect(unlisted, 'advertised but not in the README table').toEqual([]);
    expect(notAdvertised, 'in the README table but not advertised').toEqual([]);
  });
});
