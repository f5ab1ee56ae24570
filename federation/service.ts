/**
 * The federation service: owns every server-to-server stream and XEP-0114 component stream, and
 * shares the routing core with the stream Lambda. Stanzas for other domains come in from the
 * outbound queue (SQS in the cloud, a loopback HTTP intake locally) and from its own core (answers
 * to remote requests); stanzas from other servers and components go through the core
 * (`XmppServer.route` with no session), which stores, delivers or bounces them.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { ServerConfig } from '../shared/config.ts';
import { createServer } from '../shared/core/create.ts';
import type { RemoteRouter, XmppServer } from '../shared/core/server.ts';
import { StanzaError, StreamError } from '../shared/errors.ts';
import { JidError, parseJid, type Jid } from '../shared/jid.ts';
import { log as defaultLog } from '../shared/log.ts';
import { Element } from '../shared/xml/element.ts';
import { DEFAULT_XML_LIMITS, XmlFrameError, exceedsLimits, parseFrame } from '../shared/xml/parse.ts';
import { STORED_XML_LIMITS } from '../shared/xml/stored.ts';
import type { ConnectionSender } from '../shared/transport/connections.ts';
import { ClientHub } from './c2s/client-hub.ts';
import { ComponentRegistry } from './component.ts';
import { StreamConnection, listen } from './connection.ts';
import { DEFAULT_TIMING, type Logger, type S2sContext, type S2sTiming } from './context.ts';
import { InboundStream } from './inbound.ts';
import { OutgoingLink, type Delivery, type VerifyResult } from './outbound.ts';
import type { Dns, Target } from './resolve.ts';
import { SqsIntake } from './sqs-intake.ts';
import { trustedRoots, type TlsCredentials } from './tls.ts';

export interface FederationOptions {
  /** The core's configuration (domain, table, @connections endpoint…). */
  config: ServerConfig;
  /** Listen address (XMPP_BIND). */
  bind: string;
  /** STARTTLS server-to-server port (XMPP_S2S_PORT; 0 = any free port). */
  s2sPort: number;
  /** XEP-0368 direct TLS port (XMPP_S2S_DIRECT_TLS_PORT); needs a certificate. */
  directTlsPort?: number;
  /** XEP-0114 component port (XMPP_COMPONENT_PORT). */
  componentPort?: number;
  /** Component domains and their secrets (XMPP_COMPONENTS). */
  components?: Map<string, string>;
  /** XEP-0185 dialback secret (XMPP_DIALBACK_SECRET). */
  dialbackSecret: string;
  tls?: TlsCredentials;
  /** Refuse plaintext server-to-server streams; default: on when there is a certificate. */
  requireTls?: boolean;
  /** Peers must authenticate with a valid certificate (XMPP_S2S_SECURE_AUTH; default off, on in the cloud). */
  secureAuth?: boolean;
  /** Domains still accepted with dialback alone when secureAuth is on (XMPP_S2S_INSECURE_DOMAINS). */
  insecureDomains?: string[];
  routes?: Map<string, Target>;
  dns?: Dns;
  timing?: Partial<S2sTiming>;
  /** Drain this SQS queue (XMPP_S2S_QUEUE_URL). */
  queueUrl?: string;
  /** Open a loopback HTTP intake (local stack): its URL is `intakeUrl`. */
  httpIntake?: { port?: number };
  /**
   * Native client listeners (docs/native-clients.md): XMPP_C2S_PORT with STARTTLS and
   * XMPP_C2S_TLS_PORT with direct TLS (0 = any free port; undefined = closed). Needs `tls`.
   */
  c2s?: { port?: number; tlsPort?: number; openTimeoutMs?: number; leaseMs?: number; proxyProtocol?: boolean };
  /** Use this core instead of creating one (tests). */
  server?: XmppServer;
  sender?: ConnectionSender;
  log?: Logger;
}

export interface FederationService {
  s2sPort: number;
  directTlsPort?: number;
  componentPort?: number;
  /** The loopback intake (XMPP_S2S_ENDPOINT for the stream Lambda), when asked for. */
  intakeUrl?: string;
  /** The native client listeners and mailbox, when open. */
  c2s?: ClientHub;
  c2sPort?: number;
  c2sTlsPort?: number;
  /** The core this service routes through. */
  server: XmppServer;
  router: S2sRouter;
  /** Ends the native client streams only (their sessions end or hibernate); `stop` does it too. */
  stopClients(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Stanzas to other domains: one outgoing link per (local domain, remote domain), components by
 * their domain. Also the core's RemoteRouter inside the federation service.
 */
export class S2sRouter implements RemoteRouter {
  readonly links = new Map<string, OutgoingLink>();
  readonly inbound = new Set<InboundStream>();
  private readonly pings = new Map<string, OutgoingLink>();
  private sweeper: NodeJS.Timeout;

  constructor(
    readonly ctx: S2sContext,
    readonly components: ComponentRegistry,
  ) {
    this.sweeper = setInterval(() => this.tick(), 1000);
    this.sweeper.unref();
  }

  /** RemoteRouter: accepted at once, delivered or bounced later. */
  async send(stanza: Element): Promise<void> {
    void this.deliver(stanza).catch((err) => this.ctx.log.error('s2s: delivery failed', { error: String(err) }));
  }

  /** Delivers to the remote domain or component; resolves when written or bounced. */
  async deliver(stanza: Element): Promise<Delivery> {
    let to: Jid;
    let from: Jid;
    try {
      to = parseJid(stanza.attrs.to ?? '');
      from = stanza.attrs.from ? parseJid(stanza.attrs.from) : parseJid(this.ctx.domain);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      await this.ctx.bounce(stanza, new StanzaError('jid-malformed', err.message));
      return 'bounced';
    }
    // Components take stanzas from anyone the core routed (local users, authenticated servers).
    if (this.components.has(to.domain)) return this.components.send(to.domain, stanza, this.ctx.bounce);
    if (!this.ctx.isOurDomain(from.domain)) {
      this.ctx.log.warn('s2s: dropped a stanza from a domain not served here', { from: from.toString(), to: to.toString() });
      return 'bounced';
    }
    if (this.ctx.isOurDomain(to.domain)) {
      await this.ctx.bounce(stanza, new StanzaError('item-not-found', 'no such service here'));
      return 'bounced';
    }
    return this.link(from.domain, to.domain).send(stanza);
  }

  /** db:verify to `remote`'s authoritative server over our link to it. */
  verify(local: string, remote: string, id: string, key: string): Promise<VerifyResult> {
    return this.link(local, remote).verify(id, key);
  }

  /** An answer to one of our pings (it arrives on an incoming stream): true when it was one. */
  takePong(stanza: Element): boolean {
    const id = stanza.attrs.id;
    const type = stanza.attrs.type;
    if (stanza.name !== 'iq' || !id || (type !== 'result' && type !== 'error')) return false;
    const link = this.pings.get(id);
    if (!link) return false;
    this.pings.delete(id);
    link.pong(id);
    return true;
  }

  link(local: string, remote: string): OutgoingLink {
    const key = `${local} ${remote}`;
    let link = this.links.get(key);
    if (!link) {
      link = new OutgoingLink(local, remote, this.ctx, (id, l) => this.pings.set(id, l));
      this.links.set(key, link);
    }
    return link;
  }

  private tick(): void {
    const now = Date.now();
    for (const [key, link] of this.links) {
      link.tick(now);
      if (link.unused) this.links.delete(key);
    }
    if (this.pings.size > 1000) this.pings.clear();
    for (const { conn } of this.inbound) {
      if (now - conn.lastActivity > 2 * this.ctx.timing.idleCloseMs) conn.close();
    }
  }

  stop(): void {
    clearInterval(this.sweeper);
    for (const link of this.links.values()) link.shutdown();
    for (const { conn } of this.inbound) conn.close(new StreamError('system-shutdown'));
    this.components.closeAll();
  }
}

/** The TLS server context for our certificate; client certificates are checked against the same roots. */
export function serverSecureContext(credentials: TlsCredentials): tls.SecureContext {
  return tls.createSecureContext({ cert: credentials.cert, key: credentials.key, ca: trustedRoots(credentials) });
}

/** Serves incoming server-to-server connections (on the STARTTLS port, or already TLS on the XEP-0368 port). */
export function inboundHandler(
  router: S2sRouter,
  ctx: S2sContext,
  deliver: (stanza: Element, from: Jid) => Promise<void>,
  secureContext: tls.SecureContext | undefined,
): (socket: net.Socket) => void {
  const hooks = {
    verify: (local: string, remote: string, id: string, key: string) => router.verify(local, remote, id, key),
    deliver,
    // Ask for the peer's certificate (SASL EXTERNAL) without refusing unverifiable ones (dialback).
    tlsServerOptions: () => (secureContext ? { secureContext, requestCert: true, rejectUnauthorized: false } : undefined),
  };
  return (socket) => {
    socket.setKeepAlive(true, 60_000);
    const stream = new InboundStream(new StreamConnection(socket, ctx.limits), ctx, hooks);
    router.inbound.add(stream);
    void stream.run().finally(() => router.inbound.delete(stream));
  };
}

function closeServer(server: net.Server | HttpServer | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}

export async function startFederation(options: FederationOptions): Promise<FederationService> {
  const log = options.log ?? defaultLog;
  const { config } = options;
  const timing = { ...DEFAULT_TIMING, ...options.timing };
  let server: XmppServer;
  // Filled in below: the core and the router need each other.
  let router!: S2sRouter;
  const remote: RemoteRouter = { send: (stanza) => router.send(stanza) };
  // No certificate yet (the cloud secret is still empty): the client ports stay open for the load
  // balancer's health checks but refuse streams; nothing goes over TCP in plaintext.
  const clientsWithoutTls = options.c2s && !options.tls ? options.c2s : undefined;
  if (clientsWithoutTls) log.warn('no TLS certificate: the native client ports refuse connections until one is configured');
  const hub = options.c2s && options.tls ? await ClientHub.open(log, { queueUrlPrefix: config.c2sQueueUrlPrefix }) : undefined;
  if (options.server) server = options.server;
  else server = createServer(config, { remote, sender: options.sender, ownTcp: hub && { address: hub.address, mailbox: hub } });
  const components = options.components ?? new Map<string, string>();
  const ctx: S2sContext = {
    domain: config.domain,
    isOurDomain: (d) => d === config.domain || server.hostedDomains.has(d) || components.has(d),
    secret: options.dialbackSecret,
    tls: options.tls,
    requireTls: options.requireTls ?? options.tls !== undefined,
    secureAuth: options.secureAuth ?? false,
    insecureDomains: new Set((options.insecureDomains ?? []).map((d) => d.toLowerCase())),
    routes: options.routes ?? new Map(),
    dns: options.dns,
    limits: { ...DEFAULT_XML_LIMITS, maxBytes: config.maxFrameBytes },
    timing,
    log,
    bounce: (stanza, error) => server.bounce(stanza, error),
  };

  /** A stanza from another server or a component, into the core. */
  const deliver = async (stanza: Element, from: Jid): Promise<void> => {
    if (router.takePong(stanza)) return;
    log.debug('s2s: incoming stanza', { from: from.toString(), stanza: stanza.toString() });
    // Stamped (xmlns, namespace declarations from the stream header), it must still fit the limits:
    // what the core stores must parse again. The error carries no copy of the content.
    const tooLarge = exceedsLimits(stanza, ctx.limits);
    if (tooLarge) {
      log.info('s2s: incoming stanza refused', { from: from.toString(), reason: tooLarge });
      await server.bounce(new Element(stanza.name, { ...stanza.attrs }), new StanzaError('policy-violation', tooLarge)).catch(() => {});
      return;
    }
    try {
      await server.route(stanza, from);
    } catch (err) {
      log.error('s2s: routing an incoming stanza failed', { from: from.toString(), error: (err as Error).stack ?? String(err) });
      await server.bounce(stanza, new StanzaError('internal-server-error')).catch(() => {});
    }
  };
  const registry = new ComponentRegistry(components, log, deliver);
  router = new S2sRouter(ctx, registry);

  const secureContext = options.tls ? serverSecureContext(options.tls) : undefined;
  const serveInbound = inboundHandler(router, ctx, deliver, secureContext);

  const servers: (net.Server | HttpServer)[] = [];
  const sqs = options.queueUrl ? new SqsIntake(options.queueUrl, router, log) : undefined;
  try {
    const s2s = net.createServer(serveInbound);
    servers.push(s2s);
    const s2sPort = await listen(s2s, options.s2sPort, options.bind);

    let directTlsPort: number | undefined;
    if (options.directTlsPort !== undefined) {
      let direct: net.Server;
      if (secureContext) {
        // A tls.Server builds its context from cert/key/ca (it does not take `secureContext`).
        direct = tls.createServer(
          { cert: options.tls!.cert, key: options.tls!.key, ca: trustedRoots(options.tls!), requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['xmpp-server'] },
          serveInbound,
        );
        direct.on('tlsClientError', (err) => log.debug('s2s direct TLS: handshake failed', { error: err.message }));
      } else {
        // No certificate yet (the cloud secret is still empty): keep the port (load balancer health
        // checks) but refuse streams on it.
        log.warn('no TLS certificate: the direct TLS port refuses connections until one is configured');
        direct = net.createServer((socket) => socket.destroy());
      }
      servers.push(direct);
      directTlsPort = await listen(direct, options.directTlsPort, options.bind);
    }

    let componentPort: number | undefined;
    if (options.componentPort !== undefined) {
      const comp = net.createServer((socket) => void registry.serve(new StreamConnection(socket, ctx.limits)));
      servers.push(comp);
      componentPort = await listen(comp, options.componentPort, options.bind);
    }

    let intakeUrl: string | undefined;
    if (options.httpIntake) {
      const token = randomBytes(16).toString('hex');
      const http = createHttpServer((req, res) => {
        if (req.method !== 'POST' || req.url !== `/${token}/stanzas`) {
          res.writeHead(404).end();
          return;
        }
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          let stanza: Element;
          try {
            // Written by the core: read with the trusted limits of stored XML (shared/xml/stored.ts).
            stanza = parseFrame(Buffer.concat(chunks).toString('utf8'), STORED_XML_LIMITS);
          } catch (err) {
            res.writeHead(400).end(err instanceof XmlFrameError ? err.message : 'bad request');
            return;
          }
          // Accepted: delivered or bounced by the router from here on.
          void router.send(stanza);
          res.writeHead(202).end();
        });
      });
      servers.push(http);
      const port = await listen(http as unknown as net.Server, options.httpIntake.port ?? 0, '127.0.0.1');
      intakeUrl = `http://127.0.0.1:${port}/${token}/stanzas`;
    }

    if (hub) await hub.listen(server, { bind: options.bind, ...options.c2s, secureContext: secureContext!, limits: ctx.limits });
    for (const port of [clientsWithoutTls?.port, clientsWithoutTls?.tlsPort]) {
      if (port === undefined) continue;
      const refuse = net.createServer((socket) => socket.destroy());
      servers.push(refuse);
      await listen(refuse, port, options.bind);
    }

    sqs?.start();
    log.info('federation service listening', {
      domain: config.domain,
      s2sPort,
      directTlsPort,
      componentPort,
      c2sPort: hub?.port,
      c2sTlsPort: hub?.tlsPort,
      tls: Boolean(options.tls),
      components: [...components.keys()],
    });

    let stopping: Promise<void> | undefined;
    return {
      s2sPort,
      directTlsPort,
      componentPort,
      intakeUrl,
      c2s: hub,
      c2sPort: hub?.port,
      c2sTlsPort: hub?.tlsPort,
      server,
      router,
      stopClients: async () => hub?.stop(),
      stop: () =>
        (stopping ??= (async () => {
          // Client sessions end (or hibernate) while the core can still tell their contacts.
          await hub?.stop();
          await sqs?.stop();
          router.stop();
          await Promise.all(servers.map((s) => closeServer(s)));
        })()),
    };
  } catch (err) {
    router.stop();
    await hub?.stop();
    await Promise.all(servers.map((s) => closeServer(s)));
    throw err;
  }
}
