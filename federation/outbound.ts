/**
 * One outgoing server-to-server stream from a local domain to a remote domain (RFC 6120): resolve,
 * connect, STARTTLS (or XEP-0368 direct TLS) with certificate verification, then SASL EXTERNAL when
 * the peer's certificate is valid and it offers it, else Server Dialback (XEP-0220). Stanzas wait
 * in a queue while it connects; after `queueTimeoutMs` they bounce (remote-server-timeout, or
 * remote-server-not-found when the domain has no server). The link is reused for every stanza to
 * that domain, also carries our dialback verification requests to it, is pinged (XEP-0199) when
 * quiet, uses XEP-0198 acknowledgements when the peer offers them (unacknowledged stanzas are
 * sent again after a reconnection), and reconnects with exponential backoff.
 *
 * Long because: one connection's state machine (connect, TLS, authenticate, stream, reconnect)
 * reads best in one place; resolution (srv.ts), dialback keys and TLS settings are beside it.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { StanzaError } from '../shared/errors.ts';
import { NS, x, type Element } from '../shared/xml/element.ts';
import {
  NS_DIALBACK,
  NS_DIALBACK_FEATURE,
  NS_SASL,
  NS_SM,
  NS_STREAMS,
  NS_TLS,
  StreamConnection,
  describeStreamError,
  streamHeader,
} from './connection.ts';
import { secureAuthFor, type S2sContext } from './context.ts';
import { dialbackKey } from './dialback.ts';
import { DomainNotFoundError, resolveTargets, type Target } from './resolve.ts';
import { onWire } from './stanzas.ts';
import { certificateValidFor, trustedRoots } from './tls.ts';

export type Delivery = 'sent' | 'bounced';
export type VerifyResult = 'valid' | 'invalid' | 'error';

interface Queued {
  stanza: Element;
  since: number;
  done: (result: Delivery) => void;
}

interface Features {
  starttls: boolean;
  mechanisms: string[];
  dialback: boolean;
  sm: boolean;
}

export type LinkState = 'idle' | 'connecting' | 'ready' | 'waiting';

/** How the link authenticated, for logs and tests. */
export type LinkAuth = 'sasl-external' | 'dialback';

const SM_MODULO = 2 ** 32;
/** A link that stayed up this long counts as healthy: its loss resets the backoff. */
const STABLE_LINK_MS = 10_000;

function parseFeatures(el: Element | undefined): Features {
  const children = el?.getChildElements() ?? [];
  const has = (name: string, xmlns: string) => children.some((c) => c.getName() === name && c.getNS() === xmlns);
  const mechanisms = children.find((c) => c.getName() === 'mechanisms' && c.getNS() === NS_SASL);
  return {
    starttls: has('starttls', NS_TLS),
    mechanisms: mechanisms?.getChildElements().map((m) => m.getText().trim()) ?? [],
    dialback: has('dialback', NS_DIALBACK_FEATURE),
    sm: has('sm', NS_SM),
  };
}

export class OutgoingLink {
  state: LinkState = 'idle';
  /** How the current stream authenticated. */
  auth: LinkAuth | undefined;
  /** Whether the current stream runs over TLS with a certificate valid for the remote domain. */
  certificateValid = false;
  /** XEP-0199 pings of this link the remote server answered (diagnostics). */
  pingsAnswered = 0;
  private queue: Queued[] = [];
  private conn: StreamConnection | undefined;
  private streamId = '';
  private canVerify = false;
  private readonly toVerify: { id: string; key: string; resolve: (r: VerifyResult) => void }[] = [];
  private readonly verifying = new Map<string, ((r: VerifyResult) => void)[]>();
  private sm = false;
  private smSent = 0;
  private smAcked = 0;
  private unacked: Queued[] = [];
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private lastStanzaAt = 0;
  private pingId: string | undefined;
  private pingSentAt = 0;
  private closedByUs = false;
  private upSince = 0;

  constructor(
    readonly local: string,
    readonly remote: string,
    private readonly ctx: S2sContext,
    /** Registers an XEP-0199 ping id so the answer (which arrives on an incoming stream) reaches `pong()`. */
    private readonly expectPong: (id: string, link: OutgoingLink) => void,
  ) {}

  /** Queues a stanza; resolves once it is written to an authenticated stream, or bounced. */
  send(stanza: Element): Promise<Delivery> {
    return new Promise((done) => {
      this.queue.push({ stanza, since: Date.now(), done });
      this.pump();
    });
  }

  /** Asks the remote (authoritative) server whether it issued `key` for stream `id` (XEP-0220 db:verify). */
  verify(id: string, key: string): Promise<VerifyResult> {
    return new Promise((resolve) => {
      this.toVerify.push({ id, key, resolve });
      if (this.canVerify) this.flushVerifies();
      else this.pump();
    });
  }

  /** The answer to our ping arrived. */
  pong(id: string): void {
    if (id !== this.pingId) return;
    this.pingId = undefined;
    this.pingsAnswered++;
  }

  /** Housekeeping, called every second: bounce what waited too long, ping, close when idle. */
  tick(now: number): void {
    const { timing } = this.ctx;
    if (this.state !== 'ready') {
      this.expire(now, timing.queueTimeoutMs, 'remote-server-timeout');
      if (this.state === 'waiting' && this.queue.length === 0 && this.toVerify.length === 0) {
        clearTimeout(this.retryTimer);
        this.state = 'idle';
      }
      return;
    }
    const conn = this.conn!;
    if (this.failures > 0 && now - this.upSince > STABLE_LINK_MS) this.failures = 0;
    if (this.pingId && now - this.pingSentAt > timing.pingTimeoutMs) {
      this.ctx.log.warn('s2s ping unanswered: closing the link', { local: this.local, remote: this.remote });
      conn.destroy('ping timeout');
      return;
    }
    if (this.queue.length === 0 && this.unacked.length === 0 && now - this.lastStanzaAt > timing.idleCloseMs) {
      this.ctx.log.info('s2s link idle: closing', { local: this.local, remote: this.remote });
      this.closedByUs = true;
      conn.close();
      return;
    }
    if (!this.pingId && now - conn.lastActivity > timing.pingAfterMs) {
      this.pingId = `ping-${randomBytes(6).toString('hex')}`;
      this.pingSentAt = now;
      this.expectPong(this.pingId, this);
      conn.write(onWire(x('iq', { type: 'get', id: this.pingId, from: this.local, to: this.remote }, x('ping', { xmlns: NS.PING })), 'jabber:server'));
    }
  }

  /** Whether the link holds nothing and can be forgotten. */
  get unused(): boolean {
    return this.state === 'idle' && this.queue.length === 0 && this.toVerify.length === 0 && this.verifying.size === 0;
  }

  /** Closes the stream; queued stanzas bounce. */
  shutdown(): void {
    clearTimeout(this.retryTimer);
    this.closedByUs = true;
    this.conn?.close(undefined);
    this.fail(new StanzaError('remote-server-timeout', 'the federation service is shutting down'));
  }

  private pump(): void {
    if (this.state === 'ready') this.flush();
    else if (this.state === 'idle') void this.connect();
  }

  private async connect(): Promise<void> {
    this.state = 'connecting';
    let targets: Target[];
    try {
      targets = await resolveTargets(this.remote, this.ctx.routes, this.ctx.dns);
    } catch (err) {
      if (err instanceof DomainNotFoundError) {
        this.ctx.log.info('s2s: remote domain not found', { remote: this.remote, error: err.message });
        this.state = 'idle';
        this.fail(new StanzaError('remote-server-not-found', err.message));
        return;
      }
      return this.retryLater((err as Error).message);
    }
    let lastError = 'no target';
    let refused = 0;
    for (const target of targets) {
      try {
        await this.open(target);
        this.state = 'ready';
        this.upSince = this.lastStanzaAt = Date.now();
        this.ctx.log.info('s2s link up', { local: this.local, remote: this.remote, target: `${target.host}:${target.port}`, auth: this.auth, sm: this.sm });
        this.flush();
        void this.readLoop(this.conn!);
        return;
      } catch (err) {
        lastError = (err as Error).message;
        if (err instanceof SecureAuthError) refused++;
        this.ctx.log.info('s2s connection attempt failed', { local: this.local, remote: this.remote, target: `${target.host}:${target.port}`, error: lastError });
        this.dropConnection();
      }
    }
    if (refused > 0 && refused === targets.length) {
      // Not a passing fault: what waits is bounced now; the next stanza tries again (a certificate may be fixed).
      this.state = 'idle';
      this.fail(new StanzaError('remote-server-not-found', lastError));
      return;
    }
    this.retryLater(lastError);
  }

  private retryLater(reason: string): void {
    this.failures++;
    this.state = 'waiting';
    // What waits gets a definite answer for the verification requests: they cannot wait for backoff.
    for (const v of this.toVerify.splice(0)) v.resolve('error');
    if (this.queue.length === 0) {
      this.state = 'idle';
      return;
    }
    const { backoffMinMs, backoffMaxMs } = this.ctx.timing;
    const delay = Math.min(backoffMaxMs, backoffMinMs * 2 ** (this.failures - 1)) * (0.75 + Math.random() * 0.5);
    this.ctx.log.info('s2s: will retry', { remote: this.remote, inMs: Math.round(delay), reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.state === 'waiting') void this.connect();
    }, delay);
    this.retryTimer.unref();
  }

  private async open(target: Target): Promise<void> {
    const { ctx } = this;
    const socket = await dial(target, this.remote, ctx);
    const conn = new StreamConnection(socket, ctx.limits);
    this.conn = conn;
    this.closedByUs = false;
    const deadline = setTimeout(() => conn.destroy('negotiation timed out'), ctx.timing.connectTimeoutMs);
    try {
      this.certificateValid = target.directTls && certificateValidFor(socket as tls.TLSSocket, this.remote, ctx.tls?.ca);
      let features = await this.openStream(conn);
      if (!conn.secure) {
        if (features.starttls) {
          conn.write(x('starttls', { xmlns: NS_TLS }));
          const answer = await this.nextElement(conn);
          if (answer.getName() !== 'proceed') throw new Error(`STARTTLS refused (${answer.getName()})`);
          const secure = await conn.upgradeClient(tlsOptions(this.remote, ctx));
          this.certificateValid = certificateValidFor(secure, this.remote, ctx.tls?.ca);
          features = await this.openStream(conn);
        } else if (ctx.requireTls) {
          throw new Error('the peer offers no STARTTLS and TLS is required');
        }
      }
      if (conn.secure && !this.certificateValid) {
        const error = (conn.socket as tls.TLSSocket).authorizationError;
        if (secureAuthFor(ctx, this.remote)) {
          throw new SecureAuthError(`${this.remote} could not be authenticated: its certificate is not valid for it (${String(error ?? 'name mismatch')}) and secure authentication is required`);
        }
        ctx.log.info('s2s: peer certificate not valid for its domain: dialback only', { remote: this.remote, error: String(error ?? 'name mismatch') });
      } else if (!conn.secure && secureAuthFor(ctx, this.remote)) {
        throw new SecureAuthError(`${this.remote} offers no TLS and secure authentication is required`);
      }
      this.canVerify = true;
      this.flushVerifies();
      this.auth = undefined;
      if (this.certificateValid && ctx.tls && features.mechanisms.includes('EXTERNAL')) {
        conn.write(x('auth', { xmlns: NS_SASL, mechanism: 'EXTERNAL' }, Buffer.from(this.local).toString('base64')));
        const answer = await this.nextElement(conn);
        if (answer.getName() === 'success') {
          conn.restart();
          features = await this.openStream(conn);
          this.auth = 'sasl-external';
        } else {
          ctx.log.info('s2s: SASL EXTERNAL refused, trying dialback', { remote: this.remote });
        }
      }
      if (!this.auth) {
        if (!features.dialback) throw new Error('the peer offers neither SASL EXTERNAL (for us) nor dialback');
        conn.write(x('db:result', { 'xmlns:db': NS_DIALBACK, from: this.local, to: this.remote }, dialbackKey(ctx.secret, this.remote, this.local, this.streamId)));
        for (;;) {
          const answer = await this.nextElement(conn);
          if (answer.getName() !== 'db:result' && !(answer.getNS() === NS_DIALBACK && answer.getName() === 'result')) continue;
          if (answer.attrs.type !== 'valid') throw new Error(`dialback refused (${answer.attrs.type ?? 'no type'})`);
          break;
        }
        this.auth = 'dialback';
      }
      this.sm = false;
      if (features.sm) {
        conn.write(x('enable', { xmlns: NS_SM }));
        const answer = await this.nextElement(conn);
        this.sm = answer.getName() === 'enabled';
        this.smSent = 0;
        this.smAcked = 0;
      }
    } finally {
      clearTimeout(deadline);
    }
  }

  /** Sends our stream header; returns the peer's features (RFC 6120 §4.3). */
  private async openStream(conn: StreamConnection): Promise<Features> {
    conn.write(streamHeader({ xmlns: 'jabber:server', 'xmlns:db': NS_DIALBACK, from: this.local, to: this.remote, version: '1.0' }));
    const event = await conn.next();
    if (event.kind !== 'open') throw new Error(`expected a stream header, got ${describe(event)}`);
    const { header } = event;
    if (header.uri !== NS_STREAMS || header.local !== 'stream') throw new Error('not an XMPP stream');
    if (header.defaultNamespace !== 'jabber:server') throw new Error(`unexpected stream namespace ${header.defaultNamespace}`);
    this.streamId = header.attrs.id ?? '';
    if (!header.attrs.version?.startsWith('1.')) {
      // A pre-RFC 3920 server: no features; dialback if it declared the namespace.
      return { starttls: false, mechanisms: [], dialback: header.attrs['xmlns:db'] === NS_DIALBACK, sm: false };
    }
    const features = await this.nextElement(conn);
    if (features.getName() !== 'stream:features' && !(features.getNS() === NS_STREAMS && features.getName() === 'features')) {
      throw new Error(`expected stream features, got <${features.getName()}>`);
    }
    return parseFeatures(features);
  }

  /** The next element for the negotiation or the link, after handling verification answers, acks and errors. */
  private async nextElement(conn: StreamConnection): Promise<Element> {
    for (;;) {
      const event = await conn.next();
      if (event.kind !== 'element') throw new Error(`stream ended: ${describe(event)}`);
      const { el, uri, local } = event;
      if (uri === NS_STREAMS && local === 'error') throw new Error(`stream error from ${this.remote}: ${describeStreamError(el)}`);
      if (uri === NS_DIALBACK && local === 'verify') {
        this.verified(el);
        continue;
      }
      if (uri === NS_SM && this.sm && (local === 'a' || local === 'r')) {
        if (local === 'a') this.acked(Number(el.attrs.h));
        else conn.write(x('a', { xmlns: NS_SM, h: 0 }));
        continue;
      }
      return el;
    }
  }

  private async readLoop(conn: StreamConnection): Promise<void> {
    let reason = 'closed';
    try {
      for (;;) {
        const el = await this.nextElement(conn);
        // Nothing else is expected on an outgoing stream (no XEP-0288): ignore it.
        this.ctx.log.debug('s2s: ignored element on an outgoing stream', { remote: this.remote, name: el.getName() });
      }
    } catch (err) {
      reason = (err as Error).message;
    }
    if (this.conn !== conn) return;
    if (!this.closedByUs) this.ctx.log.info('s2s link down', { local: this.local, remote: this.remote, reason });
    conn.close();
    this.dropConnection();
    this.state = 'idle';
    // Stanzas the peer never acknowledged are sent again (they keep their age: they still bounce in time).
    if (this.unacked.length > 0) this.queue.unshift(...this.unacked.splice(0));
    if (this.queue.length === 0 && this.toVerify.length === 0) return;
    // A link that lived long reconnects at once; one the peer keeps dropping backs off.
    if (Date.now() - this.upSince > STABLE_LINK_MS) {
      void this.connect();
    } else {
      this.retryLater(`link dropped after ${Date.now() - this.upSince} ms: ${reason}`);
    }
  }

  private dropConnection(): void {
    const conn = this.conn;
    this.conn = undefined;
    this.canVerify = false;
    this.pingId = undefined;
    this.sm = false;
    conn?.destroy('dropped');
    for (const waiters of this.verifying.values()) for (const resolve of waiters) resolve('error');
    this.verifying.clear();
  }

  private flush(): void {
    const conn = this.conn;
    // A socket that just closed keeps the queue: the read loop reconnects.
    if (!conn || conn.closed || this.queue.length === 0) return;
    for (const item of this.queue.splice(0)) {
      conn.write(onWire(item.stanza, 'jabber:server'));
      if (this.sm) {
        this.unacked.push(item);
        this.smSent++;
      }
      item.done('sent');
    }
    this.lastStanzaAt = Date.now();
    if (this.sm) conn.write(x('r', { xmlns: NS_SM }));
  }

  private acked(h: number): void {
    if (!Number.isInteger(h) || h < 0) return;
    const count = (h - this.smAcked + SM_MODULO) % SM_MODULO;
    this.unacked.splice(0, Math.min(count, this.unacked.length));
    this.smAcked = h;
  }

  private flushVerifies(): void {
    const conn = this.conn;
    if (!conn) return;
    for (const { id, key, resolve } of this.toVerify.splice(0)) {
      this.verifying.set(id, [...(this.verifying.get(id) ?? []), resolve]);
      conn.write(x('db:verify', { 'xmlns:db': NS_DIALBACK, from: this.local, to: this.remote, id }, key));
    }
  }

  private verified(el: Element): void {
    const id = el.attrs.id ?? '';
    const waiters = this.verifying.get(id);
    if (!waiters) return;
    this.verifying.delete(id);
    const type = el.attrs.type;
    const result: VerifyResult = type === 'valid' ? 'valid' : type === 'invalid' ? 'invalid' : 'error';
    for (const resolve of waiters) resolve(result);
  }

  /** Bounces queued stanzas older than `maxAgeMs`. */
  private expire(now: number, maxAgeMs: number, condition: string): void {
    const expired = this.queue.filter((q) => now - q.since >= maxAgeMs);
    if (expired.length === 0) return;
    this.queue = this.queue.filter((q) => now - q.since < maxAgeMs);
    for (const item of expired) this.bounceOne(item, new StanzaError(condition, `${this.remote} could not be reached`));
  }

  private fail(error: StanzaError): void {
    for (const v of this.toVerify.splice(0)) v.resolve('error');
    for (const item of [...this.unacked.splice(0), ...this.queue.splice(0)]) this.bounceOne(item, error);
  }

  private bounceOne(item: Queued, error: StanzaError): void {
    this.ctx.bounce(item.stanza, error).then(
      () => item.done('bounced'),
      (err) => {
        this.ctx.log.error('s2s: bounce failed', { remote: this.remote, error: String(err) });
        item.done('bounced');
      },
    );
  }
}

/** The peer could not be authenticated as secure authentication requires (not retried). */
class SecureAuthError extends Error {}

function describe(event: { kind: string; reason?: string; error?: Error }): string {
  return event.kind === 'end' ? `connection closed (${event.reason ?? ''})` : event.kind === 'error' ? `XML error (${event.error?.message})` : event.kind;
}

function tlsOptions(remote: string, ctx: S2sContext): tls.ConnectionOptions {
  return {
    servername: remote,
    // Verified by hand (certificateValidFor): an unverifiable certificate still allows dialback.
    rejectUnauthorized: false,
    ca: trustedRoots(ctx.tls),
    // Our own certificate, for SASL EXTERNAL at the peer.
    ...(ctx.tls ? { cert: ctx.tls.cert, key: ctx.tls.key } : {}),
  };
}

/** TCP (or XEP-0368 direct TLS) connection to one target. */
function dial(target: Target, remote: string, ctx: S2sContext): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = target.directTls
      ? tls.connect({ host: target.host, port: target.port, ALPNProtocols: ['xmpp-server'], ...tlsOptions(remote, ctx) })
      : net.connect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect timeout to ${target.host}:${target.port}`));
    }, ctx.timing.connectTimeoutMs);
    socket.once(target.directTls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.setKeepAlive(true, 60_000);
      resolve(socket);
    });
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    socket.once('error', onError);
  });
}
