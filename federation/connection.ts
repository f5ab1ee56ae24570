/**
 * One TCP (or TLS) XML stream: reads with the restricted-XML stream parser, hands the events out in
 * order through `next()`, writes serialized elements, and upgrades the socket with STARTTLS. Both
 * directions of server-to-server and XEP-0114 components use it.
 */
import type { AddressInfo, Server, Socket } from 'node:net';
import * as tls from 'node:tls';
import { StringDecoder } from 'node:string_decoder';
import { StreamError } from '../shared/errors.ts';
import { XmlStreamParser, type StreamHeader, type XmlFrameError, type XmlLimits } from '../shared/xml/parse.ts';
import type { Element } from '../shared/xml/element.ts';

export type StreamEvent =
  | { kind: 'open'; header: StreamHeader }
  | { kind: 'element'; el: Element; uri: string; local: string }
  | { kind: 'close' }
  | { kind: 'error'; error: XmlFrameError }
  /** The socket closed (or failed); nothing follows. */
  | { kind: 'end'; reason?: string };

export class StreamTimeoutError extends Error {}

export const NS_STREAMS = 'http://etherx.jabber.org/streams';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_DIALBACK = 'jabber:server:dialback';
export const NS_DIALBACK_FEATURE = 'urn:xmpp:features:dialback';
export const NS_SM = 'urn:xmpp:sm:3';
export const NS_COMPONENT = 'jabber:component:accept';

/** Events buffered before the reader pauses the socket (an inbound flood waits for routing). */
const HIGH_WATER = 200;

function escapeAttr(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** `<stream:stream …>` opening tag (never self-closed). */
export function streamHeader(attrs: Record<string, string | undefined>): string {
  const parts = Object.entries(attrs)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}='${escapeAttr(v!)}'`)
    .join('');
  return `<?xml version='1.0'?><stream:stream xmlns:stream='${NS_STREAMS}'${parts}>`;
}

export class StreamConnection {
  private parser!: XmlStreamParser;
  private decoder = new StringDecoder('utf8');
  private readonly events: StreamEvent[] = [];
  private waiter: ((e: StreamEvent) => void) | undefined;
  private ended = false;
  private readonly onData = (chunk: Buffer) => this.read(chunk);
  private readonly onEnd = () => this.finish('connection closed');
  private readonly onError = (err: Error) => this.finish(err.message);
  /** Last time anything was read or written (idle detection). */
  lastActivity = Date.now();

  constructor(
    public socket: Socket,
    private readonly limits: XmlLimits,
  ) {
    this.restart();
    this.attach(socket);
  }

  get secure(): boolean {
    return this.socket instanceof tls.TLSSocket;
  }

  get closed(): boolean {
    return this.ended;
  }

  /** A new parser for a stream restart (RFC 6120 §4.3.3); call before the peer sends its new header. */
  restart(): void {
    this.parser = new XmlStreamParser(
      {
        open: (header) => this.push({ kind: 'open', header }),
        element: (el, name) => this.push({ kind: 'element', el, ...name }),
        close: () => this.push({ kind: 'close' }),
        error: (error) => this.push({ kind: 'error', error }),
      },
      this.limits,
    );
  }

  /** The next event; rejects with StreamTimeoutError after `timeoutMs`. */
  next(timeoutMs?: number): Promise<StreamEvent> {
    const queued = this.events.shift();
    if (queued) {
      if (this.events.length < HIGH_WATER / 2 && this.socket.isPaused()) this.socket.resume();
      return Promise.resolve(queued);
    }
    if (this.ended) return Promise.resolve({ kind: 'end', reason: 'closed' });
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => {
        this.waiter = undefined;
        reject(new StreamTimeoutError(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (e) => {
        if (timer) clearTimeout(timer);
        resolve(e);
      };
    });
  }

  write(data: string | Element): void {
    if (this.ended || this.socket.destroyed) return;
    this.lastActivity = Date.now();
    this.socket.write(typeof data === 'string' ? data : data.toString());
  }

  /** Client side of STARTTLS, after `<proceed/>`. */
  async upgradeClient(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    const raw = this.detach();
    this.restart();
    const secure = tls.connect({ ...options, socket: raw });
    this.attach(secure);
    await this.secured(secure, 'secureConnect');
    return secure;
  }

  /** Server side of STARTTLS, after sending `<proceed/>`. */
  async upgradeServer(options: tls.TLSSocketOptions): Promise<tls.TLSSocket> {
    const raw = this.detach();
    this.restart();
    const secure = new tls.TLSSocket(raw, { ...options, isServer: true });
    this.attach(secure);
    await this.secured(secure, 'secure');
    return secure;
  }

  /** Ends the stream: an optional stream error, the closing tag, then the socket. */
  close(error?: StreamError): void {
    if (!this.ended && !this.socket.destroyed) {
      if (error) this.socket.write(error.toElement().toString());
      this.socket.end('</stream:stream>');
      // A peer that never closes its side does not keep the socket.
      setTimeout(() => this.socket.destroy(), 5000).unref();
    }
    this.finish(error ? `stream error ${error.condition}` : 'closed by us');
  }

  destroy(reason: string): void {
    this.socket.destroy();
    this.finish(reason);
  }

  private secured(socket: tls.TLSSocket, event: 'secure' | 'secureConnect'): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.ended) return reject(new Error('connection closed during the TLS handshake'));
      const onFail = (err: Error) => reject(new Error(`TLS handshake failed: ${err.message}`));
      socket.once('error', onFail);
      socket.once('close', () => onFail(new Error('connection closed')));
      socket.once(event, () => {
        socket.off('error', onFail);
        resolve();
      });
    });
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    this.decoder = new StringDecoder('utf8');
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  private detach(): Socket {
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('close', this.onEnd);
    socket.off('error', this.onError);
    return socket;
  }

  private read(chunk: Buffer): void {
    this.lastActivity = Date.now();
    this.parser.write(this.decoder.write(chunk));
  }

  private push(event: StreamEvent): void {
    if (this.ended) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(event);
      return;
    }
    this.events.push(event);
    if (this.events.length > HIGH_WATER) this.socket.pause();
  }

  private finish(reason: string): void {
    if (this.ended) return;
    this.push({ kind: 'end', reason });
    this.ended = true;
  }
}

/** Listens on host:port (0 = any free port); resolves with the port. */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The stream error a parser failure calls for. */
export function parserStreamError(error: XmlFrameError): StreamError {
  return new StreamError(error.condition, error.message);
}

/** A stream error element received from the peer, as text for logs. */
export function describeStreamError(el: Element): string {
  const condition = el.getChildElements().find((c) => c.name !== 'text');
  const text = el.getChildText('text');
  return `${condition?.name ?? 'undefined-condition'}${text ? ` (${text})` : ''}`;
}
