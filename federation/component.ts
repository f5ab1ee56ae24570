/**
 * XEP-0114 external components: a component connects to us, proves it knows its secret with the
 * handshake (SHA-1 of stream id + secret), and then serves its domain. Stanzas to that domain go
 * down its stream; stanzas it sends (from its domain) go through the core like any others.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { StanzaError, StreamError } from '../shared/errors.ts';
import { JidError, parseJid, type Jid } from '../shared/jid.ts';
import type { Element } from '../shared/xml/element.ts';
import { NS_COMPONENT, NS_STREAMS, StreamConnection, parserStreamError, streamHeader } from './connection.ts';
import type { Logger } from './context.ts';
import { STANZA_NAMES, onWire, toCore } from './stanzas.ts';

/** Parses XMPP_COMPONENTS: `domain=secret[,domain=secret…]`. */
export function parseComponents(spec: string | undefined): Map<string, string> {
  const components = new Map<string, string>();
  for (const entry of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = entry.indexOf('=');
    if (eq <= 0 || eq === entry.length - 1) throw new Error(`XMPP_COMPONENTS: cannot read "${entry}" (expected domain=secret)`);
    components.set(entry.slice(0, eq).trim().toLowerCase(), entry.slice(eq + 1).trim());
  }
  return components;
}

export function handshakeDigest(streamId: string, secret: string): string {
  return createHash('sha1').update(streamId + secret).digest('hex');
}

export class ComponentRegistry {
  private readonly connected = new Map<string, StreamConnection>();

  constructor(
    readonly secrets: Map<string, string>,
    private readonly log: Logger,
    private readonly deliver: (stanza: Element, from: Jid) => Promise<void>,
  ) {}

  has(domain: string): boolean {
    return this.secrets.has(domain);
  }

  /** Sends a stanza to a component; bounces with service-unavailable when it is not connected. */
  send(domain: string, stanza: Element, bounce: (s: Element, e: StanzaError) => Promise<void>): Promise<'sent' | 'bounced'> {
    const conn = this.connected.get(domain);
    if (!conn || conn.closed) return bounce(stanza, new StanzaError('service-unavailable', 'the component is not connected')).then(() => 'bounced');
    conn.write(onWire(stanza, NS_COMPONENT));
    return Promise.resolve('sent');
  }

  /** Serves one component connection until it ends. */
  async serve(conn: StreamConnection): Promise<void> {
    let domain: string | undefined;
    let streamId = '';
    try {
      for (;;) {
        const event = await conn.next();
        if (event.kind === 'end') break;
        if (event.kind === 'close') {
          conn.close();
          break;
        }
        if (event.kind === 'error') throw parserStreamError(event.error);
        if (event.kind === 'open') {
          const to = event.header.attrs.to?.toLowerCase();
          streamId = randomBytes(12).toString('hex');
          conn.write(streamHeader({ xmlns: NS_COMPONENT, id: streamId, from: to }));
          if (event.header.uri !== NS_STREAMS || event.header.defaultNamespace !== NS_COMPONENT) throw new StreamError('invalid-namespace');
          if (!to || !this.secrets.has(to)) throw new StreamError('host-unknown', `no component ${to ?? ''} is configured`);
          domain = to;
          continue;
        }
        const { el, uri, local } = event;
        if (!domain) throw new StreamError('not-well-formed');
        if (uri === NS_COMPONENT && local === 'handshake') {
          if (this.connected.get(domain) === conn) throw new StreamError('not-authorized', 'already authenticated');
          const expected = Buffer.from(handshakeDigest(streamId, this.secrets.get(domain)!));
          const given = Buffer.from(el.getText().trim().toLowerCase());
          if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new StreamError('not-authorized', 'wrong handshake');
          const existing = this.connected.get(domain);
          if (existing && !existing.closed) throw new StreamError('conflict', `${domain} is already connected`);
          this.connected.set(domain, conn);
          this.log.info('component connected', { component: domain });
          conn.write('<handshake/>');
          continue;
        }
        if (this.connected.get(domain) !== conn) throw new StreamError('not-authorized', 'handshake first');
        if (uri !== NS_COMPONENT || !STANZA_NAMES.has(local)) throw new StreamError('unsupported-stanza-type');
        let from: Jid;
        try {
          from = parseJid(el.attrs.from ?? '');
        } catch (err) {
          if (err instanceof JidError) throw new StreamError('invalid-from', err.message);
          throw err;
        }
        if (from.domain !== domain) throw new StreamError('invalid-from', `stanzas from this component come from ${domain}`);
        if (!el.attrs.to) throw new StreamError('improper-addressing', 'stanzas need a to');
        await this.deliver(toCore(el), from);
      }
    } catch (err) {
      const error = err instanceof StreamError ? err : new StreamError('internal-server-error');
      if (!(err instanceof StreamError)) this.log.error('component: internal error', { component: domain, error: (err as Error).stack ?? String(err) });
      if (!streamId) conn.write(streamHeader({ xmlns: NS_COMPONENT, id: randomBytes(12).toString('hex') }));
      conn.close(error);
    }
    if (domain && this.connected.get(domain) === conn) {
      this.connected.delete(domain);
      this.log.info('component disconnected', { component: domain });
    }
  }

  closeAll(): void {
    for (const conn of this.connected.values()) conn.close(new StreamError('system-shutdown'));
    this.connected.clear();
  }
}
