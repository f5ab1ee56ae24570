/**
 * Federation against a real Prosody (Debian package) on loopback: our federation service (inside
 * the local stack) and Prosody reach each other over STARTTLS + dialback; clients on both sides are
 * real libraries (StanzaJS on ours, @xmpp/client over Prosody's WebSocket).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client as xmppClient, xml } from '@xmpp/client';
import type { Agent } from 'stanza';
import { parseRoutes, type Target } from '../../federation/resolve.ts';
import { Inbox, addUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import { createProsody, removeProsodyDir, type Prosody } from './prosody.ts';

type XmlElement = ReturnType<typeof xml>;

const HOME = 'home.test';
const PEER = 'peer.test';

let stack: LocalStack & { store: Awaited<ReturnType<typeof startTestStack>>['store'] };
let prosody: Prosody;
const routes = new Map<string, Target>();

async function connectPeer(user: string, password: string, resource = 'web') {
  const c = xmppClient({ service: prosody.wsUrl, domain: PEER, username: user, password, resource });
  const inbox = new Inbox<XmlElement>();
  c.on('stanza', (s: XmlElement) => inbox.push(s));
  c.on('error', () => {});
  const address = await c.start();
  await c.send(xml('presence'));
  return { client: c, inbox, jid: address.toString() as string };
}

function stanzaInbox(agent: Agent) {
  const inbox = new Inbox<{ kind: string; data: Record<string, unknown> }>();
  agent.on('message', (m) => inbox.push({ kind: 'message', data: m as unknown as Record<string, unknown> }));
  agent.on('presence', (p) => inbox.push({ kind: 'presence', data: p as unknown as Record<string, unknown> }));
  return inbox;
}

beforeAll(async () => {
  stack = await startTestStack({
    domain: HOME,
    federation: { s2sPort: 0, routes, timing: { queueTimeoutMs: 8_000, backoffMinMs: 200, backoffMaxMs: 1_000 } },
  });
  prosody = await createProsody({ domain: PEER, homeDomain: HOME, homePort: stack.federation!.s2sPort });
  for (const [k, v] of parseRoutes(`${PEER}=127.0.0.1:${prosody.s2sPort}`)) routes.set(k, v);
  for (const user of ['romeo', 'mercutio']) prosody.register(user, 'peerpass');
  await prosody.start();
  for (const user of ['juliet', 'nurse']) await addUser(stack.store, `${user}@${HOME}`, 'homepass');
});

afterAll(async () => {
  await stack?.stop();
  await prosody?.stop();
  removeProsodyDir(prosody);
});

describe('federation with Prosody', () => {
  it('carries chat messages both ways', async () => {
    const juliet = await connectStanza(stack.wsUrl, `juliet@${HOME}`, 'homepass', 'balcony');
    const julietInbox = stanzaInbox(juliet);
    const romeo = await connectPeer('romeo', 'peerpass');
    try {
      juliet.sendMessage({ to: `romeo@${PEER}`, type: 'chat', body: 'Wherefore art thou?' });
      const got = await romeo.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'Wherefore art thou?', 'message at Prosody', 20_000);
      expect(got.attrs.from).toBe(`juliet@${HOME}/balcony`);
      await romeo.client.send(xml('message', { to: `juliet@${HOME}/balcony`, type: 'chat' }, xml('body', {}, 'Here, by the orchard')));
      const back = await julietInbox.wait((m) => m.kind === 'message' && m.data.body === 'Here, by the orchard', 'message from Prosody', 20_000);
      expect(back.data.from).toBe(`romeo@${PEER}/web`);
    } finally {
      await romeo.client.stop();
      juliet.disconnect();
    }
  });
});
