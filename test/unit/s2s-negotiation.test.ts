/**
 * Stream negotiation between two of our own federation endpoints on loopback (no core, no
 * database): STARTTLS, then SASL EXTERNAL when both certificates chain to a trusted CA, else
 * Server Dialback; stanzas flow once authenticated; and the XML stream parser under it.
 */
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ComponentRegistry } from '../../federation/component.ts';
import { DEFAULT_TIMING, type S2sContext } from '../../federation/context.ts';
import { S2sRouter, inboundHandler, serverSecureContext } from '../../federation/service.ts';
import { generateCertificate, type TlsCredentials } from '../../federation/tls.ts';
import type { Target } from '../../federation/resolve.ts';
import type { StanzaError } from '../../shared/errors.ts';
import type { Jid } from '../../shared/jid.ts';
import { NS, x, type Element } from '../../shared/xml/element.ts';
import { DEFAULT_XML_LIMITS, XmlStreamParser, type StreamHeader } from '../../shared/xml/parse.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const routes = new Map<string, Target>();
const running: (() => Promise<void>)[] = [];

interface Side {
  domain: string;
  router: S2sRouter;
  received: { stanza: Element; from: Jid }[];
  bounced: { stanza: Element; error: StanzaError }[];
}

async function side(
  domain: string,
  tls: TlsCredentials | undefined,
  secret = `${domain}-secret`,
  secure: { secureAuth?: boolean; insecureDomains?: string[] } = {},
): Promise<Side> {
  const received: Side['received'] = [];
  const bounced: Side['bounced'] = [];
  const ctx: S2sContext = {
    domain,
    isOurDomain: (d) => d === domain,
    secret,
    tls,
    requireTls: tls !== undefined,
    secureAuth: secure.secureAuth ?? false,
    insecureDomains: new Set(secure.insecureDomains ?? []),
    routes,
    limits: DEFAULT_XML_LIMITS,
    timing: { ...DEFAULT_TIMING, connectTimeoutMs: 5000, queueTimeoutMs: 3000, backoffMinMs: 100, backoffMaxMs: 200 },
    log: quiet,
    bounce: async (stanza, error) => void bounced.push({ stanza, error }),
  };
  const router = new S2sRouter(ctx, new ComponentRegistry(new Map(), quiet, async () => {}));
  const deliver = async (stanza: Element, from: Jid) => void received.push({ stanza, from });
  const server = net.createServer(inboundHandler(router, ctx, deliver, tls ? serverSecureContext(tls) : undefined));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  routes.set(domain, { host: '127.0.0.1', port: (server.address() as AddressInfo).port, directTls: false });
  running.push(async () => {
    router.stop();
    await new Promise((resolve) => server.close(resolve));
  });
  return { domain, router, received, bounced };
}

async function until<T>(check: () => T | undefined, what: string, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const chat = (from: string, to: string, body: string) => x('message', { xmlns: NS.CLIENT, from, to, type: 'chat' }, x('body', {}, body));

afterEach(async () => {
  for (const stop of running.splice(0)) await stop();
  routes.clear();
});

describe('server-to-server negotiation', () => {
  it('STARTTLS then dialback when certificates cannot be verified (self-signed)', async () => {
    const a = await side('a.test', await generateCertificate('a.test'));
    const b = await side('b.test', await generateCertificate('b.test'));
    await expect(a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'over dialback'))).resolves.toBe('sent');
    const got = await until(() => b.received[0], 'stanza at b');
    expect(got.from.toString()).toBe('alice@a.test/x');
    expect(got.stanza.attrs.xmlns).toBe(NS.CLIENT);
    expect(got.stanza.getChildText('body')).toBe('over dialback');
    const link = a.router.link('a.test', 'b.test');
    expect(link.auth).toBe('dialback');
    expect(link.certificateValid).toBe(false);
  });

  it('SASL EXTERNAL when both certificates chain to a trusted CA and name the domains', async () => {
    const ca = await generateCertificate('Test CA', { ca: true });
    const cert = async (d: string) => ({ ...(await generateCertificate(d, { issuer: ca })), ca: [ca.cert] });
    const a = await side('a.test', await cert('a.test'));
    const b = await side('b.test', await cert('b.test'));
    await a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'over EXTERNAL'));
    await until(() => b.received[0], 'stanza at b');
    const link = a.router.link('a.test', 'b.test');
    expect(link.certificateValid).toBe(true);
    expect(link.auth).toBe('sasl-external');
  });

  it('reuses one stream per remote domain, in order', async () => {
    const a = await side('a.test', await generateCertificate('a.test'));
    const b = await side('b.test', await generateCertificate('b.test'));
    await Promise.all([1, 2, 3, 4, 5].map((n) => a.router.deliver(chat('alice@a.test/x', 'bob@b.test', `n${n}`))));
    await until(() => b.received.length === 5 || undefined, 'five stanzas');
    expect(b.received.map((r) => r.stanza.getChildText('body'))).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);
    expect(a.router.links.size).toBe(1);
  });

  it('without certificates: plaintext dialback', async () => {
    const a = await side('a.test', undefined);
    const b = await side('b.test', undefined);
    await a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'plain'));
    await until(() => b.received[0], 'stanza at b');
    expect(a.router.link('a.test', 'b.test').auth).toBe('dialback');
  });

  it('a key the authoritative server did not issue is refused, and the stanza bounces', async () => {
    const b = await side('b.test', await generateCertificate('b.test'));
    // An impostor "a.test" whose secret differs from the real a.test's.
    const real = await side('a.test', await generateCertificate('a.test'), 'real-secret');
    const realPort = routes.get('a.test')!;
    const impostor = await side('a.test', await generateCertificate('a.test'), 'impostor-secret');
    routes.set('a.test', realPort); // b asks the real one
    await expect(impostor.router.deliver(chat('mallory@a.test/x', 'bob@b.test', 'forged'))).resolves.toBe('bounced');
    expect(b.received).toEqual([]);
    expect(impostor.bounced[0]!.error.condition).toBe('remote-server-timeout');
    expect(real.received).toEqual([]);
  });
});

describe('secure authentication (like Prosody s2s_secure_auth)', () => {
  const ca = generateCertificate('Test CA', { ca: true });
  const trusted = async (d: string) => ({ ...(await generateCertificate(d, { issuer: await ca })), ca: [(await ca).cert] });

  it('does not use a link to a peer whose certificate does not verify: the stanza bounces at once, with the reason', async () => {
    const a = await side('a.test', await trusted('a.test'), undefined, { secureAuth: true });
    const b = await side('b.test', await generateCertificate('b.test')); // self-signed: dialback only
    await expect(a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'not to an impostor'))).resolves.toBe('bounced');
    expect(b.received).toEqual([]);
    expect(a.bounced[0]!.error.condition).toBe('remote-server-not-found');
    expect(a.bounced[0]!.error.text).toMatch(/b\.test could not be authenticated: its certificate is not valid/);
  });

  it('refuses inbound dialback from a peer without a certificate valid for its domain', async () => {
    const a = await side('a.test', await trusted('a.test'), undefined, { secureAuth: true });
    const b = await side('b.test', await generateCertificate('b.test'));
    await expect(b.router.deliver(chat('bob@b.test/x', 'alice@a.test', 'forged?'))).resolves.toBe('bounced');
    expect(a.received).toEqual([]);
  });

  it('still accepts dialback from a domain listed as an exception, both ways', async () => {
    const a = await side('a.test', await trusted('a.test'), undefined, { secureAuth: true, insecureDomains: ['b.test'] });
    const b = await side('b.test', await generateCertificate('b.test'));
    await expect(a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'to b'))).resolves.toBe('sent');
    await until(() => b.received[0], 'stanza at b');
    await expect(b.router.deliver(chat('bob@b.test/x', 'alice@a.test', 'to a'))).resolves.toBe('sent');
    await until(() => a.received[0], 'stanza at a');
    expect(a.router.link('a.test', 'b.test').auth).toBe('dialback');
  });

  it('authenticates peers with valid certificates as usual (SASL EXTERNAL both ways)', async () => {
    const a = await side('a.test', await trusted('a.test'), undefined, { secureAuth: true });
    const b = await side('b.test', await trusted('b.test'), undefined, { secureAuth: true });
    await a.router.deliver(chat('alice@a.test/x', 'bob@b.test', 'verified'));
    await until(() => b.received[0], 'stanza at b');
    await b.router.deliver(chat('bob@b.test/x', 'alice@a.test', 'verified back'));
    await until(() => a.received[0], 'stanza at a');
    expect(a.router.link('a.test', 'b.test').auth).toBe('sasl-external');
    expect(b.router.link('b.test', 'a.test').auth).toBe('sasl-external');
  });
});

describe('XML stream parser', () => {
  function parse(chunks: string[], limits = DEFAULT_XML_LIMITS) {
    const events: (StreamHeader | Element | string)[] = [];
    const parser = new XmlStreamParser(
      {
        open: (h) => events.push(h),
        element: (el) => events.push(el),
        close: () => events.push('close'),
        error: (e) => events.push(`error:${e.condition}`),
      },
      limits,
    );
    for (const c of chunks) parser.write(c);
    return events;
  }
  const header = `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' to='b.test' version='1.0'>`;

  it('reports the header, self-contained stanzas (inherited declarations added), and the end, across chunk borders', () => {
    const events = parse([header.slice(0, 50), header.slice(50), `<message to='a@b.test'><bo`, `dy>hé</body></message> <db:result from='a.test'>k</db:result></stream:stream>`]);
    const open = events[0] as StreamHeader;
    expect(open.defaultNamespace).toBe('jabber:server');
    expect(open.attrs.to).toBe('b.test');
    expect((events[1] as Element).toString()).toBe(`<message to="a@b.test" xmlns="jabber:server"><body>hé</body></message>`);
    expect((events[2] as Element).toString()).toBe(`<db:result from="a.test" xmlns:db="jabber:server:dialback">k</db:result>`);
    expect(events[3]).toBe('close');
  });

  it('refuses comments, processing instructions and DTDs (restricted XML)', () => {
    expect(parse([header, '<!-- hi -->'])).toContain('error:restricted-xml');
    expect(parse([header, '<?pi x?>'])).toContain('error:restricted-xml');
    expect(parse(['<!DOCTYPE x>', header])).toContain('error:restricted-xml');
  });

  it('ends the stream for stanzas over the size limit, and for unbound prefixes', () => {
    const big = `<message><body>${'x'.repeat(2000)}</body></message>`;
    expect(parse([header, big], { ...DEFAULT_XML_LIMITS, maxBytes: 1000 })).toContain('error:policy-violation');
    expect(parse([header, '<foo:bar/>'])).toContain('error:not-well-formed');
  });
});
