/**
 * Native client sessions on two stream-service instances sharing one table, as two Fargate tasks
 * behind the load balancer would: stanzas for a session find the instance that holds its socket
 * (its mailbox, named in the connection id), in order per sender, from the other instance and from
 * the stream Lambda at once; and an instance that stops loses nothing: the session hibernates
 * (XEP-0198) and resumes on the other instance, where the messages sent meanwhile arrive, and its
 * contacts never see it go offline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, type LocalStack } from './helpers.ts';
import { RawTcp, connectNative, trustCertificate, xml } from './native-helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { Command, IPv4Address, IPv4ProxyAddress, TransportProtocol, V2ProxyProtocol } from 'proxy-protocol-js';
import { loadConfig } from '../../shared/config.ts';
import { DEFAULT_AUTH_LIMITS } from '../../shared/sasl/auth-limits.ts';
import { generateCertificate, type TlsCredentials } from '../../federation/tls.ts';
import { startFederation, type FederationService } from '../../federation/service.ts';

let stack: LocalStack & { store: DynamoStore };
let tls: TlsCredentials;
const instances: FederationService[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One more stream-service instance on the stack's table and gateway, with native client ports only. */
async function startInstance(faults?: string, leaseMs?: number, more: Partial<Parameters<typeof startFederation>[0]> = {}): Promise<FederationService> {
  // Read once, when the instance's core and store are made: only this instance gets the faults.
  if (faults) process.env.XMPP_FAULTS = faults;
  const started = startFederation({
    config: loadConfig(process.env),
    bind: '127.0.0.1',
    s2sPort: 0,
    dialbackSecret: 'test',
    tls,
    c2s: { port: 0, leaseMs },
    ...more,
  });
  const instance = await started.finally(() => delete process.env.XMPP_FAULTS);
  instances.push(instance);
  return instance;
}

beforeAll(async () => {
  tls = await generateCertificate('localhost');
  trustCertificate(tls.cert);
  stack = await startTestStack();
  for (const user of ['carol', 'dave', 'erin', 'hugo', 'ivy']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
  await stack.store.putRosterItem('carol@localhost', { jid: 'erin@localhost', groups: [], subscription: 'both' });
  await stack.store.putRosterItem('erin@localhost', { jid: 'carol@localhost', groups: [], subscription: 'both' });
  await stack.store.putRosterItem('ivy@localhost', { jid: 'erin@localhost', groups: [], subscription: 'both' });
  await stack.store.putRosterItem('erin@localhost', { jid: 'ivy@localhost', groups: [], subscription: 'both' });
});

afterAll(async () => {
  for (const instance of instances) await instance.stopClients().catch(() => {});
  await stack?.stop();
  for (const instance of instances) await instance.stop().catch(() => {});
});

describe('two stream-service instances', () => {
  // A frame that dies holding a session's post lease makes the next post wait out the lease (3 s)
  // and cut the socket for a resumption: a few of those take longer than vitest's default 30 s.
  it('frames that crash half-way and DynamoDB throttling: each message once, in order', { timeout: 90_000 }, async () => {
    const a = await startInstance();
    // Every frame of dave's may crash after any step (a DynamoDB call, a post that went out), and
    // DynamoDB throttles; the instance runs the frame again under the same id.
    const b = await startInstance('crash=0.03,throttle=0.05');
    const carol = await connectNative(`xmpp://127.0.0.1:${a.c2sPort}`, 'carol', 'carol-pass', 'steady');
    const arrived: string[] = [];
    carol.client.on('stanza', (s: ReturnType<typeof xml>) => {
      const body = s.getChildText('body');
      if (body?.startsWith('f')) arrived.push(body);
    });
    // Its frames are run again after a crash (with a pause): answers may take longer than the
    // library's 2 s default, which is not what this test is about.
    const dave = await connectNative(`xmpp://127.0.0.1:${b.c2sPort}`, 'dave', 'dave-pass', 'flaky', 30_000);
    const N = 40;
    for (let i = 1; i <= N; i++) await dave.client.send(xml('message', { to: carol.jid, type: 'chat' }, xml('body', {}, `f${i}`)));
    await carol.inbox.wait((s) => s.getChildText('body') === `f${N}`, `f${N}`, 80_000);
    await sleep(500);
    expect(arrived).toEqual(Array.from({ length: N }, (_, i) => `f${i + 1}`));
    for (const c of [carol.client, dave.client]) await c.stop();
  });

  it('delivers to a session on the other instance, in order per sender, from that instance and from the Lambda at once', async () => {
    const a = await startInstance();
    const b = await startInstance();
    const carol = await connectNative(`xmpp://127.0.0.1:${a.c2sPort}`, 'carol', 'carol-pass', 'on-a');
    const dave = await connectNative(`xmpp://127.0.0.1:${b.c2sPort}`, 'dave', 'dave-pass', 'on-b');
    const erin = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'web');
    const arrived: string[] = [];
    carol.client.on('stanza', (s: ReturnType<typeof xml>) => {
      const body = s.getChildText('body');
      if (body) arrived.push(body);
    });
    const N = 25;
    await Promise.all([
      (async () => {
        for (let i = 1; i <= N; i++) await dave.client.send(xml('message', { to: carol.jid, type: 'chat' }, xml('body', {}, `d${i}`)));
      })(),
      (async () => {
        for (let i = 1; i <= N; i++) await erin.client.send(xml('message', { to: carol.jid, type: 'chat' }, xml('body', {}, `e${i}`)));
      })(),
    ]);
    for (let i = 1; i <= N; i++) {
      await carol.inbox.wait((s) => s.getChildText('body') === `d${i}`, `d${i}`);
      await carol.inbox.wait((s) => s.getChildText('body') === `e${i}`, `e${i}`);
    }
    await sleep(300);
    const sent = (p: string) => Array.from({ length: N }, (_, i) => `${p}${i + 1}`);
    // Each sender's messages in the order sent, each once.
    expect(arrived.filter((b) => b.startsWith('d'))).toEqual(sent('d'));
    expect(arrived.filter((b) => b.startsWith('e'))).toEqual(sent('e'));
    for (const c of [carol.client, dave.client, erin.client]) await c.stop();
  });

  it('an instance that stops: the session resumes on the other one with what was sent meanwhile, and no contact sees it leave', async () => {
    const a = await startInstance();
    const b = await startInstance();
    const erin = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'watcher');
    await erin.client.send(xml('presence'));
    const raw = await RawTcp.open(a.c2sPort!);
    const jid = await raw.login('carol', 'carol-pass', 'phone');
    raw.send(`<enable xmlns="urn:xmpp:sm:3" resume="true"/>`);
    const smId = /id="([^"]+)"/.exec(await raw.until(/<enabled[^>]*>/))![1]!;
    raw.send('<presence/>');
    await erin.inbox.wait((s) => s.is('presence') && s.attrs.from === jid && s.attrs.type === undefined, "carol's presence");

    await a.stopClients(); // the task is replaced: system-shutdown, the session hibernates
    expect(await raw.until('</stream:stream>')).toContain('<system-shutdown');
    for (let i = 1; i <= 5; i++) await erin.client.send(xml('message', { to: jid, type: 'chat' }, xml('body', {}, `while away ${i}`)));

    const back = await RawTcp.open(b.c2sPort!);
    await back.authenticate('carol', 'carol-pass');
    back.send(`<resume xmlns="urn:xmpp:sm:3" previd="${smId}" h="0"/>`);
    await back.until('<resumed');
    await back.until('while away 5</body>');
    await sleep(300);
    const all = back.received();
    for (let i = 1; i <= 5; i++) expect(all.split(`while away ${i}</body>`).length - 1, `while away ${i} once`).toBe(1);
    // Posts to the session now reach instance b.
    await erin.client.send(xml('message', { to: jid, type: 'chat' }, xml('body', {}, 'after the move')));
    await back.until('after the move');
    expect(erin.inbox.seen((s) => s.is('presence') && s.attrs.from === jid && s.attrs.type === 'unavailable')).toEqual([]);
    back.close();
    await erin.client.stop();
  });
});

describe('an instance that dies without a goodbye (a killed task)', () => {
  const LEASE = 1500;

  it('its sessions end by the sweep of another instance: contacts see them leave, and messages go offline, not nowhere', async () => {
    const a = await startInstance(undefined, LEASE);
    const b = await startInstance(undefined, LEASE);
    const erin = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'watch-crash');
    await erin.client.send(xml('presence'));
    const raw = await RawTcp.open(a.c2sPort!);
    const jid = await raw.login('ivy', 'ivy-pass', 'crashing');
    raw.send('<presence/>');
    await erin.inbox.wait((s) => s.is('presence') && s.attrs.from === jid && s.attrs.type === undefined, "ivy's presence");
    await a.c2s!.vanish();
    // Nobody told the core; b's sweep does once a's lease has run out.
    await erin.inbox.wait((s) => s.is('presence') && s.attrs.from === jid && s.attrs.type === 'unavailable', "ivy's unavailable", 15_000);
    await erin.client.send(xml('message', { to: 'ivy@localhost', type: 'chat' }, xml('body', {}, 'kept for later')));
    const back = await connectNative(`xmpp://127.0.0.1:${b.c2sPort}`, 'ivy', 'ivy-pass', 'later');
    await back.client.send(xml('presence'));
    await back.inbox.wait((s) => s.getChildText('body') === 'kept for later', 'the offline message');
    await back.client.stop();
    await erin.client.stop();
  });

  it('a session with stream management hibernates instead and resumes on another instance with every message once', async () => {
    const a = await startInstance(undefined, LEASE);
    const b = await startInstance(undefined, LEASE);
    const hugo = await connectXmppJs(stack.wsUrl, 'hugo', 'hugo-pass', 'sender');
    const raw = await RawTcp.open(a.c2sPort!);
    const jid = await raw.login('dave', 'dave-pass', 'resumable');
    raw.send(`<enable xmlns="urn:xmpp:sm:3" resume="true"/>`);
    const smId = /id="([^"]+)"/.exec(await raw.until(/<enabled[^>]*>/))![1]!;
    await a.c2s!.vanish();
    // Sent while nobody knows the socket is gone: posts to a's mailbox fail, the stanzas stay in the session's log.
    for (let i = 1; i <= 5; i++) await hugo.client.send(xml('message', { to: jid, type: 'chat' }, xml('body', {}, `lost socket ${i}`)));
    await sleep(2 * LEASE); // b's sweep hibernates the session
    const back = await RawTcp.open(b.c2sPort!);
    await back.authenticate('dave', 'dave-pass');
    back.send(`<resume xmlns="urn:xmpp:sm:3" previd="${smId}" h="0"/>`);
    await back.until('<resumed');
    await back.until('lost socket 5</body>');
    await sleep(300);
    for (let i = 1; i <= 5; i++) expect(back.received().split(`lost socket ${i}</body>`).length - 1, `lost socket ${i} once`).toBe(1);
    back.close();
    await hugo.client.stop();
  });
});

describe('behind the load balancer (PROXY protocol v2)', () => {
  /** The header an NLB sends before the client's first byte, saying where the client really is. */
  const proxyHeader = (source: [number, number, number, number]) =>
    new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM, new IPv4ProxyAddress(IPv4Address.createFrom(source), 40_000, IPv4Address.createFrom([10, 0, 0, 1]), 5222)).build();

  it('counts failed logins by the client address in the header, on both ports, and refuses connections without one', async () => {
    const config = { ...loadConfig(process.env), authLimits: { ...DEFAULT_AUTH_LIMITS, failuresPerSource: 2 } };
    const lb = await startInstance(undefined, undefined, { config, c2s: { port: 0, tlsPort: 0, proxyProtocol: true } });
    const attacker = proxyHeader([203, 0, 113, 9]);
    for (let i = 0; i < 2; i++) {
      const raw = await RawTcp.open(lb.c2sPort!, false, attacker);
      expect(await raw.plain('carol', 'wrong')).toContain('<not-authorized/>');
      raw.close();
    }
    // Over the limit for that address: even the right password is refused there…
    const blocked = await RawTcp.open(lb.c2sTlsPort!, true, attacker);
    expect(await blocked.plain('carol', 'carol-pass')).toContain('<temporary-auth-failure/>');
    blocked.close();
    // …while the same account from another address (the same load balancer address!) logs in.
    const user = await RawTcp.open(lb.c2sTlsPort!, true, proxyHeader([198, 51, 100, 7]));
    expect(await user.plain('carol', 'carol-pass')).toContain('<success');
    user.close();
    // A connection without the header is not from the load balancer: closed before any XML.
    const direct = await RawTcp.open(lb.c2sPort!);
    direct.header();
    await direct.ended;
    expect(direct.received()).toBe('');
  });
});
