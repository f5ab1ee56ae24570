/**
 * One incoming server-to-server stream (RFC 6120): our stream header and features, STARTTLS with
 * our certificate (or TLS from the first byte on the XEP-0368 port), then authentication of the
 * sending domain by SASL EXTERNAL (its client certificate is valid for it) or by Server Dialback
 * (XEP-0220: we ask the sending domain's authoritative server over our own link to it). Answers
 * dialback verification requests for keys we issued. Stanzas from authenticated domains go to the
 * core in the order they arrived.
 */
import { randomBytes } from 'node:crypto';
import type * as tls from 'node:tls';
import { StanzaError, StreamError } from '../shared/errors.ts';
import { JidError, parseJid, type Jid } from '../shared/jid.ts';
import { x, type Element } from '../shared/xml/element.ts';
import {
  NS_DIALBACK,
  NS_DIALBACK_FEATURE,
  NS_SASL,
  NS_STREAMS,
  NS_TLS,
  StreamConnection,
  parserStreamError,
  streamHeader,
} from './connection.ts';
import { secureAuthFor, type S2sContext } from './context.ts';
import { verifyDialbackKey } from './dialback.ts';
import type { VerifyResult } from './outbound.ts';
import { STANZA_NAMES, toCore } from './stanzas.ts';
import { certificateValidFor } from './tls.ts';

export interface InboundHooks {
  /** Asks `remote`'s authoritative server about a key it sent us for stream `id` (db:verify over our link local→remote). */
  verify(local: string, remote: string, id: string, key: string): Promise<VerifyResult>;
  /** A stanza from an authenticated remote domain, in jabber:client, for the core. */
  deliver(stanza: Element, from: Jid): Promise<void>;
  /** TLS server options (secure context with our certificate). */
  tlsServerOptions(): tls.TLSSocketOptions | undefined;
}

/** Domains must look like domains: no JID syntax, no spaces. */
function plausibleDomain(domain: string | undefined): domain is string {
  return typeof domain === 'string' && domain.length > 0 && domain.length < 1024 && !/[\s@/]/.test(domain);
}

export class InboundStream {
  /** `remote local` pairs the peer may send stanzas for. */
  readonly authenticated = new Set<string>();
  /** How the last domain authenticated on this stream (for logs and tests). */
  authMethod: 'sasl-external' | 'dialback' | undefined;
  private streamId = '';
  private localDomain = '';
  private peerDomain: string | undefined;
  private certificateValid = false;
  private saslDone = false;

  constructor(
    readonly conn: StreamConnection,
    private readonly ctx: S2sContext,
    private readonly hooks: InboundHooks,
  ) {}

  /** Reads the stream to its end. */
  async run(): Promise<void> {
    try {
      for (;;) {
        const event = await this.conn.next();
        if (event.kind === 'end') return;
        if (event.kind === 'close') return this.conn.close();
        if (event.kind === 'error') throw parserStreamError(event.error);
        if (event.kind === 'open') await this.open(event.header.uri, event.header.local, event.header.defaultNamespace, event.header.attrs);
        else await this.element(event.el, event.uri, event.local);
      }
    } catch (err) {
      if (!(err instanceof StreamError)) {
        this.ctx.log.error('s2s inbound: internal error', { peer: this.peerDomain, error: (err as Error).stack ?? String(err) });
        err = new StreamError('internal-server-error');
      }
      const error = err as StreamError;
      this.ctx.log.info('s2s inbound: stream error', { peer: this.peerDomain, condition: error.condition, text: error.text });
      if (!this.streamId) this.sendHeader({});
      this.conn.close(error);
    }
  }

  private sendHeader(attrs: Record<string, string | undefined>): void {
    this.streamId = randomBytes(12).toString('hex');
    this.conn.write(streamHeader({ xmlns: 'jabber:server', 'xmlns:db': NS_DIALBACK, id: this.streamId, ...attrs }));
  }

  private async open(uri: string, local: string, defaultNamespace: string, attrs: Record<string, string>): Promise<void> {
    const to = attrs.to?.toLowerCase();
    const from = attrs.from?.toLowerCase();
    this.sendHeader({ from: to, to: plausibleDomain(from) ? from : undefined, version: attrs.version ? '1.0' : undefined });
    if (uri !== NS_STREAMS || local !== 'stream') throw new StreamError('invalid-namespace');
    if (defaultNamespace !== 'jabber:server') throw new StreamError('invalid-namespace', 'server-to-server streams are jabber:server');
    if (!to || !this.ctx.isOurDomain(to)) throw new StreamError('host-unknown', `${to ?? '(none)'} is not served here`);
    this.localDomain = to;
    if (plausibleDomain(from)) this.peerDomain = from;
    if (this.conn.secure && this.peerDomain) this.certificateValid = certificateValidFor(this.conn.socket as tls.TLSSocket, this.peerDomain, this.ctx.tls?.ca);
    if (!attrs.version) return; // pre-1.0 peer: dialback without features
    const features = x('stream:features');
    const offerTls = !this.conn.secure && this.hooks.tlsServerOptions() !== undefined;
    if (offerTls) features.append(x('starttls', { xmlns: NS_TLS }, this.ctx.requireTls ? x('required') : undefined));
    if (this.conn.secure || !this.ctx.requireTls) {
      if (this.certificateValid && !this.saslDone) features.append(x('mechanisms', { xmlns: NS_SASL }, x('mechanism', {}, 'EXTERNAL')));
      features.append(x('dialback', { xmlns: NS_DIALBACK_FEATURE }, x('errors')));
    }
    this.conn.write(features);
  }

  private async element(el: Element, uri: string, local: string): Promise<void> {
    if (!this.streamId) throw new StreamError('not-well-formed');
    if (uri === NS_TLS && local === 'starttls') return this.startTls();
    if (uri === NS_SASL && local === 'auth') return this.saslExternal(el);
    if (uri === NS_DIALBACK && local === 'result') return this.dialbackResult(el);
    if (uri === NS_DIALBACK && local === 'verify') return this.dialbackVerify(el);
    if (uri === NS_STREAMS && local === 'error') {
      this.ctx.log.info('s2s inbound: peer sent a stream error', { peer: this.peerDomain, error: el.toString() });
      return this.conn.close();
    }
    if (uri === 'jabber:server' && STANZA_NAMES.has(local)) return this.stanza(el);
    throw new StreamError('unsupported-stanza-type', `<${local} xmlns="${uri}"/> is not handled here`);
  }

  private async startTls(): Promise<void> {
    const options = this.hooks.tlsServerOptions();
    if (this.conn.secure || !options) throw new StreamError('policy-violation', 'STARTTLS is not available');
    this.conn.write(x('proceed', { xmlns: NS_TLS }));
    this.streamId = '';
    try {
      await this.conn.upgradeServer(options);
    } catch (err) {
      this.ctx.log.info('s2s inbound: TLS handshake failed', { peer: this.peerDomain, error: (err as Error).message });
      this.conn.destroy('TLS failed');
    }
  }

  private saslExternal(el: Element): Promise<void> {
    const failure = (condition: string) => {
      this.conn.write(x('failure', { xmlns: NS_SASL }, x(condition)));
    };
    if (el.attrs.mechanism !== 'EXTERNAL') return Promise.resolve(failure('invalid-mechanism'));
    if (!this.certificateValid || !this.peerDomain || this.saslDone) return Promise.resolve(failure('not-authorized'));
    const text = el.getText().trim();
    const authzid = text === '' || text === '=' ? '' : Buffer.from(text, 'base64').toString('utf8').toLowerCase();
    if (authzid && authzid !== this.peerDomain) return Promise.resolve(failure('invalid-authzid'));
    this.saslDone = true;
    this.authMethod = 'sasl-external';
    this.authenticated.add(`${this.peerDomain} ${this.localDomain}`);
    this.ctx.log.info('s2s inbound: authenticated by SASL EXTERNAL', { peer: this.peerDomain, local: this.localDomain });
    this.streamId = '';
    this.conn.restart();
    this.conn.write(x('success', { xmlns: NS_SASL }));
    return Promise.resolve();
  }

  /** The peer proves it speaks for `from` (XEP-0220 §2.1): ask its authoritative server. */
  private async dialbackResult(el: Element): Promise<void> {
    const from = el.attrs.from?.toLowerCase();
    const to = el.attrs.to?.toLowerCase();
    const reply = (type: string, error?: StanzaError) =>
      this.conn.write(x('db:result', { 'xmlns:db': NS_DIALBACK, from: to, to: from, type }, error?.toElement()));
    if (!plausibleDomain(from) || !to) throw new StreamError('improper-addressing', 'db:result needs from and to');
    if (!this.ctx.isOurDomain(to)) return reply('error', new StanzaError('item-not-found'));
    if (this.ctx.requireTls && !this.conn.secure) return reply('error', new StanzaError('policy-violation', 'TLS is required'));
    // Secure authentication: dialback only adds the DNS check to a certificate already valid for the domain.
    if (secureAuthFor(this.ctx, from) && !(this.conn.secure && certificateValidFor(this.conn.socket as tls.TLSSocket, from, this.ctx.tls?.ca))) {
      this.ctx.log.info('s2s inbound: dialback refused, no valid certificate (secure authentication)', { peer: from });
      return reply('error', new StanzaError('not-authorized', `a certificate valid for ${from} is required here`));
    }
    const pair = `${from} ${to}`;
    if (this.authenticated.has(pair)) return reply('valid');
    const result = await this.hooks.verify(to, from, this.streamId, el.getText());
    if (this.conn.closed) return;
    if (result === 'valid') {
      this.authenticated.add(pair);
      this.authMethod = 'dialback';
      this.peerDomain ??= from;
      this.ctx.log.info('s2s inbound: authenticated by dialback', { peer: from, local: to });
      return reply('valid');
    }
    if (result === 'invalid') {
      reply('invalid');
      if (this.authenticated.size === 0) throw new StreamError('not-authorized', 'dialback key refused by the authoritative server');
      return;
    }
    reply('error', new StanzaError('remote-server-not-found', 'could not reach your authoritative server'));
  }

  /** A receiving server asks whether we issued this key (we are the authoritative server). */
  private async dialbackVerify(el: Element): Promise<void> {
    const from = el.attrs.from?.toLowerCase();
    const to = el.attrs.to?.toLowerCase();
    const id = el.attrs.id;
    if (!plausibleDomain(from) || !to || !id) throw new StreamError('improper-addressing', 'db:verify needs from, to and id');
    const valid = this.ctx.isOurDomain(to) && verifyDialbackKey(this.ctx.secret, from, to, id, el.getText());
    this.conn.write(x('db:verify', { 'xmlns:db': NS_DIALBACK, from: to, to: from, id, type: valid ? 'valid' : 'invalid' }));
  }

  private async stanza(el: Element): Promise<void> {
    let from: Jid;
    let to: Jid;
    try {
      if (!el.attrs.from || !el.attrs.to) throw new StreamError('improper-addressing', 'stanzas between servers carry from and to');
      from = parseJid(el.attrs.from);
      to = parseJid(el.attrs.to);
    } catch (err) {
      if (err instanceof JidError) throw new StreamError(el.attrs.from && !tryJid(el.attrs.from) ? 'invalid-from' : 'improper-addressing', err.message);
      throw err;
    }
    if (!this.authenticated.has(`${from.domain} ${to.domain}`)) {
      if (this.authenticated.size === 0) throw new StreamError('not-authorized', 'authenticate first');
      throw new StreamError(this.ctx.isOurDomain(to.domain) ? 'invalid-from' : 'host-unknown', `${from.domain} → ${to.domain} is not authenticated on this stream`);
    }
    await this.hooks.deliver(toCore(el), from);
  }
}

function tryJid(text: string): boolean {
  try {
    parseJid(text);
    return true;
  } catch {
    return false;
  }
}
