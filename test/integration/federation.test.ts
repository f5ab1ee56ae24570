/**
 * Federation against a real Prosody (Debian package) on loopback: our federation service (inside
 * the local stack) and Prosody reach each other over STARTTLS + dialback (self-signed certificates
 * on both sides); clients on both sides are real libraries (StanzaJS on ours, @xmpp/client over
 * Prosody's WebSocket), an XEP-0114 component is @xmpp/component.
 */
import { createHash } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client as xmppClient, xml } from '@xmpp/client';
import { component as xmppComponent } from '@xmpp/component';
import type { Agent } from 'stanza';
import { findFreePort } from '../../local/dynamodb.ts';
import { Inbox, RawClient, connectStanza } from './helpers.ts';
import { startFederatedPair, type Prosody } from './prosody.ts';

type XmlElement = ReturnType<typeof xml>;
type Received = { kind: string; data: Record<string, any> };

const HOME = 'home.test';
const PEER = 'peer.test';
const COMPONENT = 'echo.home.test';
const COMPONENT_SECRET = 'echo-secret';

let stack: Awaited<ReturnType<typeof startFederatedPair>>['stack'];
let prosody: Prosody;
let pair: Awaited<ReturnType<typeof startFederatedPair>>;

async function connectPeer(user: string, password: string, resource = 'web') {
  // @xmpp/client waits 2 s by default for each negotiation step: too short on two shared cores.
  const c = xmppClient({ service: prosody.wsUrl, domain: PEER, username: user, password, resource, timeout: WAIT } as Parameters<typeof xmppClient>[0]);
  const inbox = new Inbox<XmlElement>();
  c.on('stanza', (s: XmlElement) => inbox.push(s));
  c.on('error', () => {});
  const address = await c.start();
  // An "interested" resource (RFC 6121 §2.1.6): Prosody delivers subscription stanzas to those only.
  await c.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
  await c.send(xml('presence'));
  return { client: c, inbox, jid: address.toString() as string };
}

async function connectHome(user: string, resource: string) {
  const agent = await connectStanza(stack.wsUrl, `${user}@${HOME}`, 'homepass', resource);
  const inbox = new Inbox<Received>();
  for (const kind of ['message', 'message:error', 'presence', 'subscribe', 'subscribed'] as const) {
    agent.on(kind as 'message', (data) => inbox.push({ kind, data: data as unknown as Record<string, any> }));
  }
  return { agent, inbox };
}

const available = (p: Received, from: string) => p.kind === 'presence' && p.data.from === from && (!p.data.type || p.data.type === 'available');
const unavailable = (p: Received, from: string) => p.kind === 'presence' && p.data.from === from && p.data.type === 'unavailable';
const WAIT = 20_000;

beforeAll(async () => {
  pair = await startFederatedPair({
    home: HOME,
    peer: PEER,
    homeUser: 'juliet',
    peerUser: 'romeo',
    federation: {
      componentPort: 0,
      components: new Map([[COMPONENT, COMPONENT_SECRET]]),
      timing: { queueTimeoutMs: 6_000, backoffMinMs: 200, backoffMaxMs: 1_000, pingAfterMs: 1_000, pingTimeoutMs: 5_000 },
    },
    prosody: { extraDomains: [COMPONENT] },
  });
  ({ stack, prosody } = pair);
});

afterAll(async () => {
  await pair?.stop();
});

describe('federation with Prosody', () => {
  let juliet: Awaited<ReturnType<typeof connectHome>>;
  let romeo: Awaited<ReturnType<typeof connectPeer>>;

  beforeAll(async () => {
    juliet = await connectHome('juliet', 'balcony');
    juliet.agent.sendPresence();
    romeo = await connectPeer('romeo', 'peerpass');
  });

  afterAll(async () => {
    await romeo?.client.stop().catch(() => {});
    juliet?.agent.disconnect();
  });

  it('carries chat messages both ways', async () => {
    juliet.agent.sendMessage({ to: `romeo@${PEER}`, type: 'chat', body: 'Wherefore art thou?' });
    const got = await romeo.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'Wherefore art thou?', 'message at Prosody', WAIT);
    expect(got.attrs.from).toBe(`juliet@${HOME}/balcony`);
    await romeo.client.send(xml('message', { to: `juliet@${HOME}`, type: 'chat' }, xml('body', {}, 'Here, by the orchard')));
    const back = await juliet.inbox.wait((m) => m.kind === 'message' && m.data.body === 'Here, by the orchard', 'message from Prosody', WAIT);
    expect(back.data.from).toBe(`romeo@${PEER}/web`);
  });

  it('subscription requests and approvals both ways, then presence flows', async () => {
    // Ours asks, Prosody's user approves.
    juliet.agent.subscribe(`romeo@${PEER}`);
    await romeo.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === `juliet@${HOME}`, 'subscribe at Prosody', WAIT);
    await romeo.client.send(xml('presence', { to: `juliet@${HOME}`, type: 'subscribed' }));
    await juliet.inbox.wait((p) => p.kind === 'subscribed' && p.data.from === `romeo@${PEER}`, 'subscribed', WAIT);
    await juliet.inbox.wait((p) => available(p, `romeo@${PEER}/web`), "romeo's presence after approval", WAIT);
    const roster = await juliet.agent.getRoster();
    expect(roster.items.find((i) => i.jid === `romeo@${PEER}`)?.subscription).toBe('to');

    // Prosody's user asks, ours approves.
    await romeo.client.send(xml('presence', { to: `juliet@${HOME}`, type: 'subscribe' }));
    await juliet.inbox.wait((p) => p.kind === 'subscribe' && p.data.from === `romeo@${PEER}`, 'subscribe from Prosody', WAIT);
    juliet.agent.acceptSubscription(`romeo@${PEER}`);
    await romeo.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribed' && s.attrs.from === `juliet@${HOME}`, 'subscribed at Prosody', WAIT);
    await romeo.inbox.wait((s) => s.is('presence') && !s.attrs.type && s.attrs.from === `juliet@${HOME}/balcony`, "juliet's presence at Prosody", WAIT);
    const after = await juliet.agent.getRoster();
    expect(after.items.find((i) => i.jid === `romeo@${PEER}`)?.subscription).toBe('both');
  });

  it('presence updates, logouts and probes cross the link', async () => {
    juliet.agent.sendPresence({ show: 'away', status: 'at the window' });
    const away = await romeo.inbox.wait((s) => s.is('presence') && s.attrs.from === `juliet@${HOME}/balcony` && s.getChildText('show') === 'away', 'away at Prosody', WAIT);
    expect(away.getChildText('status')).toBe('at the window');

    // Logout on our side: Prosody's user sees it; login again: both sides see each other (our probe).
    juliet.agent.disconnect();
    await romeo.inbox.wait((s) => s.is('presence') && s.attrs.type === 'unavailable' && s.attrs.from === `juliet@${HOME}/balcony`, 'unavailable at Prosody', WAIT);
    juliet = await connectHome('juliet', 'garden');
    juliet.agent.sendPresence();
    await romeo.inbox.wait((s) => s.is('presence') && !s.attrs.type && s.attrs.from === `juliet@${HOME}/garden`, 'juliet back', WAIT);
    await juliet.inbox.wait((p) => available(p, `romeo@${PEER}/web`), 'probe answered by Prosody', WAIT);

    // Logout on Prosody's side.
    await romeo.client.stop();
    await juliet.inbox.wait((p) => unavailable(p, `romeo@${PEER}/web`), 'unavailable from Prosody', WAIT);
    romeo = await connectPeer('romeo', 'peerpass');
    await juliet.inbox.wait((p) => available(p, `romeo@${PEER}/web`), 'romeo back', WAIT);
    // Prosody probed us for juliet's presence at romeo's login: answered.
    await romeo.inbox.wait((s) => s.is('presence') && !s.attrs.type && s.attrs.from === `juliet@${HOME}/garden`, 'probe answered by us', WAIT);
  });

  it('tells a contact on Prosody of a new OMEMO device list published here (both OMEMO namespaces)', async () => {
    // Juliet's other device publishes its device lists, as an OMEMO client does at first start.
    const device = await RawClient.open(stack.wsUrl);
    await device.login('juliet', 'homepass', 'tablet', HOME);
    const lists = [
      { node: 'eu.siacs.conversations.axolotl.devicelist', item: `<list xmlns="eu.siacs.conversations.axolotl"><device id="4242"/></list>` },
      { node: 'urn:xmpp:omemo:2:devices', item: `<devices xmlns="urn:xmpp:omemo:2"><device id="4242"/></devices>` },
    ];
    for (const [i, { node, item }] of lists.entries()) {
      device.send(`<iq type="set" id="pub${i}"><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="${node}"><item id="current">${item}</item></publish></pubsub></iq>`);
      expect(await device.next(`id="pub${i}"`)).toContain('type="result"');
    }
    for (const { node } of lists) {
      const event = await romeo.inbox.wait(
        (s) => s.is('message') && s.attrs.from === `juliet@${HOME}` && s.getChild('event', 'http://jabber.org/protocol/pubsub#event')?.getChild('items')?.attrs.node === node,
        `${node} at Prosody`,
        WAIT,
      );
      expect(event.toString()).toContain('id="4242"');
    }
    device.close();
  });

  it('sends the last device list to a contact on Prosody when its presence with caps arrives (XEP-0163 §6.1.2)', async () => {
    // Romeo's client: entity capabilities asking for device-list notifications, answered to the
    // disco#info query our server makes once per caps hash (XEP-0115 §5.1 verification string).
    const features = ['eu.siacs.conversations.axolotl.devicelist+notify', 'http://jabber.org/protocol/disco#info', 'urn:xmpp:omemo:2:devices+notify'].sort();
    const ver = createHash('sha1').update(`client/pc//Romeo<${features.join('<')}<`).digest('base64');
    const node = 'https://romeo.example/caps';
    romeo.client.iqCallee.get('http://jabber.org/protocol/disco#info', 'query', () =>
      xml('query', { xmlns: 'http://jabber.org/protocol/disco#info', node: `${node}#${ver}` }, xml('identity', { category: 'client', type: 'pc', name: 'Romeo' }), ...features.map((v) => xml('feature', { var: v }))),
    );
    await romeo.client.send(xml('presence', {}, xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node, ver })));
    for (const list of ['eu.siacs.conversations.axolotl.devicelist', 'urn:xmpp:omemo:2:devices']) {
      const last = await romeo.inbox.wait(
        (s) =>
          s.is('message') &&
          s.attrs.from === `juliet@${HOME}` &&
          s.attrs.to === `romeo@${PEER}/web` &&
          s.getChild('event', 'http://jabber.org/protocol/pubsub#event')?.getChild('items')?.attrs.node === list,
        `the last ${list} item at Prosody`,
        WAIT,
      );
      expect(last.toString()).toContain('id="4242"');
    }
  });

  it('pings a quiet link (XEP-0199) and keeps it while the peer answers', async () => {
    const link = stack.federation!.router.link(HOME, PEER);
    const before = link.pingsAnswered;
    await new Promise((r) => setTimeout(r, 2_500));
    expect(link.pingsAnswered).toBeGreaterThan(before);
    expect(link.state).toBe('ready');
  });

  it('answers iq pings between the servers, both ways', async () => {
    await juliet.agent.ping(PEER); // rejects on an error or no answer
    const result = await romeo.client.iqCaller.request(xml('iq', { type: 'get', to: HOME }, xml('ping', { xmlns: 'urn:xmpp:ping' })), WAIT);
    expect(result.attrs.type).toBe('result');
    expect(result.attrs.from).toBe(HOME);
  });

  it('bounces a message for a domain that has no server (remote-server-not-found)', async () => {
    juliet.agent.sendMessage({ to: 'ghost@nowhere.invalid', type: 'chat', body: 'anyone?', id: 'lost-1' });
    const error = await juliet.inbox.wait((m) => m.kind === 'message:error' && m.data.id === 'lost-1', 'bounce', WAIT);
    expect(error.data.error.condition).toBe('remote-server-not-found');
    expect(error.data.from).toBe('ghost@nowhere.invalid');
  });

  it('bounces a message for a server that does not answer, after the bounded wait (remote-server-timeout)', async () => {
    const closed = await findFreePort();
    pair.routes.set('down.test', { host: '127.0.0.1', port: closed, directTls: false });
    juliet.agent.sendMessage({ to: 'nobody@down.test', type: 'chat', body: 'hello?', id: 'late-1' });
    const error = await juliet.inbox.wait((m) => m.kind === 'message:error' && m.data.id === 'late-1', 'bounce', WAIT);
    expect(error.data.error.condition).toBe('remote-server-timeout');
  });

  it('delivers a message sent while the peer was down once it is back', async () => {
    await romeo.client.stop().catch(() => {});
    await prosody.stop();
    juliet.agent.sendMessage({ to: `romeo@${PEER}`, type: 'chat', body: 'Are you there, after all?', id: 'queued-1' });
    await new Promise((r) => setTimeout(r, 1000));
    await prosody.start();
    romeo = await connectPeer('romeo', 'peerpass');
    const got = await romeo.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'Are you there, after all?', 'queued message', WAIT);
    expect(got.attrs.from).toBe(`juliet@${HOME}/garden`);
    expect(juliet.inbox.seen((m) => m.kind === 'message:error' && m.data.id === 'queued-1')).toEqual([]);
  });

  it('serves an XEP-0114 component to local users and to the other server', async () => {
    const echo = xmppComponent({ service: `xmpp://127.0.0.1:${stack.federation!.componentPort}`, domain: COMPONENT, password: COMPONENT_SECRET });
    // @xmpp/connection waits 2 s by default for the stream header, the handshake answer and the close:
    // too short for a worker that shares two cores with another suite. No reconnection either.
    echo.timeout = WAIT;
    echo.reconnect.stop();
    echo.on('error', () => {});
    echo.on('stanza', (s: XmlElement) => {
      if (s.is('message') && s.attrs.type !== 'error' && s.getChildText('body')) {
        echo.send(xml('message', { from: s.attrs.to, to: s.attrs.from, type: 'chat' }, xml('body', {}, `echo: ${s.getChildText('body')}`))).catch(() => {});
      }
    });
    try {
      await echo.start();
      juliet.agent.sendMessage({ to: `bot@${COMPONENT}`, type: 'chat', body: 'ping from home' });
      const local = await juliet.inbox.wait((m) => m.kind === 'message' && m.data.body === 'echo: ping from home', 'echo to juliet', WAIT);
      expect(local.data.from).toBe(`bot@${COMPONENT}`);
      await romeo.client.send(xml('message', { to: `bot@${COMPONENT}`, type: 'chat' }, xml('body', {}, 'ping from afar')));
      const remote = await romeo.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'echo: ping from afar', 'echo to romeo', WAIT);
      expect(remote.attrs.from).toBe(`bot@${COMPONENT}`);
    } finally {
      await echo.stop();
    }
    // Not connected any more: bounced, not lost.
    juliet.agent.sendMessage({ to: `bot@${COMPONENT}`, type: 'chat', body: 'still there?', id: 'comp-gone' });
    const error = await juliet.inbox.wait((m) => m.kind === 'message:error' && m.data.id === 'comp-gone', 'bounce', WAIT);
    expect(error.data.error.condition).toBe('service-unavailable');
  });

  it('refuses a server that claims a domain it cannot prove (dialback invalid)', async () => {
    const frames = await impostor(stack.federation!.s2sPort);
    expect(frames).toMatch(/<db:result[^>]*type=["']invalid["']/);
    expect(frames).toMatch(/<not-authorized/);
  });
});

/** A hand-written server claiming to be peer.test with a made-up dialback key. */
function impostor(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const raw = tcpConnect(port, '127.0.0.1');
    const header = `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='${PEER}' to='${HOME}' version='1.0'>`;
    raw.once('connect', () => raw.write(header));
    raw.on('error', reject);
    const onPlain = (d: Buffer) => {
      text += d.toString();
      if (text.includes('</stream:features>')) {
        text = '';
        raw.write(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
      } else if (text.includes('<proceed')) {
        raw.off('data', onPlain);
        const secure = tls.connect({ socket: raw, servername: HOME, rejectUnauthorized: false }, () => secure.write(header));
        let phase = 0;
        secure.on('data', (d) => {
          text += d.toString();
          if (phase === 0 && text.includes('</stream:features>')) {
            phase = 1;
            secure.write(`<db:result from='${PEER}' to='${HOME}'>${'0'.repeat(64)}</db:result>`);
          }
        });
        secure.on('close', () => resolve(text));
        secure.on('error', () => resolve(text));
        setTimeout(() => {
          secure.destroy();
          resolve(text);
        }, 15_000);
      }
    };
    raw.on('data', onPlain);
  });
}
