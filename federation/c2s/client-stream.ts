/**
 * One native client connection (RFC 6120 over TCP): STARTTLS first (mandatory before anything
 * else on 5222; 5223 is TLS from the first byte, XEP-0368), then the XML stream is cut into the
 * same frames a WebSocket client sends (RFC 7395: `<open/>`, one element per frame, `<close/>`) and
 * each goes through the routing core exactly as a frame from the stream Lambda's queue does. Frames
 * the core posts to this connection come back through `deliver` and are put on the wire as a TCP
 * stream wants them (`<open/>` becomes the stream header, `<close/>` its end, and a SASL success
 * restarts the parser: RFC 6120 §6.4.6).
 *
 * Frames of one connection run one at a time, in arrival order. The committed connection state is
 * kept between frames (this task owns the socket); when a frame fails (another handler changed the
 * connection, a DynamoDB error) it runs again from the stored state under the same frame id, so
 * what it already posted is not posted twice (storage/frame-context.ts).
 */
import type { TLSSocket } from 'node:tls';
import type * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { XmppServer } from '../../shared/core/server.ts';
import type { ConnectionState } from '../../shared/core/types.ts';
import { StreamError } from '../../shared/errors.ts';
import { NS, x } from '../../shared/xml/element.ts';
import { parseFrame } from '../../shared/xml/parse.ts';
import { STORED_XML_LIMITS } from '../../shared/xml/stored.ts';
import { NS_STREAMS, NS_TLS, StreamConnection, parserStreamError, streamHeader } from '../connection.ts';
import type { Logger } from '../context.ts';
import { channelBindings } from './channel-binding.ts';

export interface ClientStreamContext {
  server: XmppServer;
  domain: string;
  /** TLS server options for STARTTLS (our certificate). */
  tlsOptions: tls.TLSSocketOptions;
  log: Logger;
  /** How long a client may take to open its stream or start TLS. */
  openTimeoutMs: number;
  /** The client's address (from the PROXY header behind the load balancer), for the brute-force limits. */
  sourceIp?: string;
}

/**
 * A failed frame runs again (fresh state, same frame id) up to this many times in all before the
 * stream is closed, with a growing pause (50 ms doubling, at most 2 s): about what SQS's redelivery
 * gives a WebSocket frame.
 */
const FRAME_ATTEMPTS = 6;
const retryPause = (attempt: number) => new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** (attempt - 1))));
const SASL_SUCCESS = `<success xmlns="${NS.SASL}"`;

export class ClientStream {
  /** Committed state after the last frame (undefined: read it from the table). */
  private state: ConnectionState | undefined;
  private serial = 0;
  /** Our stream header went out on the current (possibly restarted) stream. */
  private headerSent = false;
  /** The instance vanished (tests of a killed task): nothing more is done for this connection. */
  private vanished = false;

  constructor(
    readonly id: string,
    readonly conn: StreamConnection,
    private readonly ctx: ClientStreamContext,
  ) {}

  get closed(): boolean {
    return this.conn.closed;
  }

  /** Serves the connection until it ends; the session is then ended (or hibernates, XEP-0198). */
  async run(): Promise<void> {
    let opened = false;
    try {
      if (!this.conn.secure && !(await this.startTls())) return;
      opened = true;
      await this.serve();
    } catch (err) {
      this.ctx.log.error('c2s: stream failed', { connection: this.id, error: (err as Error).stack ?? String(err) });
      this.fail(new StreamError('internal-server-error'));
    } finally {
      if (opened && !this.vanished) await this.disconnected();
    }
  }

  /** Tests: the socket dies with its instance; nobody here tells the core (another instance's sweep does). */
  vanish(): void {
    this.vanished = true;
    this.conn.destroy('instance gone');
  }

  /**
   * A frame the core posted to this connection. False when the socket is gone (the sender then
   * treats the connection as gone, as with API Gateway's 410).
   */
  deliver(frame: string): boolean {
    if (this.conn.closed) return false;
    if (frame.startsWith('<open ')) {
      const open = parseFrame(frame, STORED_XML_LIMITS);
      this.writeHeader({ from: open.attrs.from, id: open.attrs.id, version: open.attrs.version, 'xml:lang': open.attrs['xml:lang'] });
      return true;
    }
    if (frame.startsWith('<close ') && frame.includes(NS.FRAMING)) {
      this.conn.close();
      return true;
    }
    this.conn.write(frame);
    // RFC 6120 §6.4.6: both sides restart the stream after SASL success; the client's new header
    // follows only once it has read this, so the new parser sees it from its first byte.
    if (frame.startsWith(SASL_SUCCESS)) {
      this.conn.restart();
      this.headerSent = false;
    }
    return true;
  }

  /** The core closes the connection (after its `<close/>`): the socket ends, `run` then ends the session. */
  close(): void {
    this.conn.close();
  }

  /** Ends the stream with an error (shutdown, a failure outside the core). */
  fail(error: StreamError): void {
    if (this.conn.closed) return;
    if (!this.headerSent) this.writeHeader({ id: randomBytes(9).toString('base64url') });
    this.conn.close(error);
  }

  private writeHeader(attrs: Record<string, string | undefined>): void {
    this.conn.write(streamHeader({ xmlns: NS.CLIENT, from: this.ctx.domain, version: '1.0', 'xml:lang': 'en', ...attrs }));
    this.headerSent = true;
  }

  /** The plaintext stream of 5222: only STARTTLS is offered and only STARTTLS is accepted. */
  private async startTls(): Promise<boolean> {
    const opening = await this.conn.next(this.ctx.openTimeoutMs).catch(() => undefined);
    if (!opening || opening.kind === 'end') return false;
    if (opening.kind !== 'open') {
      this.fail(opening.kind === 'error' ? parserStreamError(opening.error) : new StreamError('not-well-formed'));
      return false;
    }
    const problem = headerProblem(opening.header, this.ctx.domain);
    this.writeHeader({ id: randomBytes(9).toString('base64url') });
    if (problem) {
      this.fail(problem);
      return false;
    }
    this.conn.write(x('stream:features', {}, x('starttls', { xmlns: NS_TLS }, x('required'))));
    const next = await this.conn.next(this.ctx.openTimeoutMs).catch(() => undefined);
    if (!next || next.kind === 'end') return false;
    if (next.kind === 'error') {
      this.fail(parserStreamError(next.error));
      return false;
    }
    if (next.kind !== 'element' || next.uri !== NS_TLS || next.local !== 'starttls') {
      // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here; nothing (least of all a password) goes in plaintext.
      this.fail(new StreamError('policy-violation', 'STARTTLS is required before anything else'));
      return false;
    }
    this.conn.write(x('proceed', { xmlns: NS_TLS }));
    this.headerSent = false;
    try {
      await this.conn.upgradeServer(this.ctx.tlsOptions);
      return true;
    } catch (err) {
      this.ctx.log.info('c2s: TLS handshake failed', { connection: this.id, error: (err as Error).message });
      this.conn.destroy('TLS failed');
      return false;
    }
  }

  /** The secure stream: each event becomes a frame for the core. */
  private async serve(): Promise<void> {
    for (;;) {
      const event = await this.conn.next();
      if (event.kind === 'end') return;
      if (event.kind === 'error') return this.fail(parserStreamError(event.error));
      let frame: string;
      if (event.kind === 'open') {
        const problem = headerProblem(event.header, this.ctx.domain);
        if (problem) return this.fail(problem);
        const { to, version } = event.header.attrs;
        frame = x('open', { xmlns: NS.FRAMING, to, version, 'xml:lang': event.header.attrs['xml:lang'] }).toString();
      } else if (event.kind === 'close') {
        frame = x('close', { xmlns: NS.FRAMING }).toString();
      } else {
        frame = event.el.toString();
      }
      await this.run1(frame);
      if (this.conn.closed) return;
    }
  }

  private async run1(frame: string): Promise<void> {
    const id = `${this.id}:${++this.serial}`;
    const receivedAt = Date.now();
    const socket = this.conn.socket as TLSSocket;
    for (let attempt = 1; ; attempt++) {
      try {
        this.state = await this.ctx.server.handleFrame(this.id, frame, {
          id,
          receivedAt,
          sourceIp: this.ctx.sourceIp,
          channelBindings: channelBindings(socket),
          state: this.state,
        });
        return;
      } catch (err) {
        this.state = undefined;
        if (attempt >= FRAME_ATTEMPTS) throw err;
        this.ctx.log.warn('c2s: frame failed, running it again', { connection: this.id, attempt, error: String(err) });
        await retryPause(attempt);
      }
    }
  }

  /** The socket is gone: the same as API Gateway's $disconnect. */
  private async disconnected(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.ctx.server.handleDisconnect(this.id, { id: `${this.id}:disconnect`, receivedAt: Date.now() });
        return;
      } catch (err) {
        if (attempt >= FRAME_ATTEMPTS) {
          this.ctx.log.error('c2s: ending the session failed', { connection: this.id, error: String(err) });
          return;
        }
        await retryPause(attempt);
      }
    }
  }
}

/** What is wrong with a client's stream header, if anything (RFC 6120 §4.9.3). */
function headerProblem(header: { uri: string; local: string; defaultNamespace: string; attrs: Record<string, string> }, domain: string): StreamError | undefined {
  if (header.uri !== NS_STREAMS || header.local !== 'stream') return new StreamError('invalid-namespace');
  if (header.defaultNamespace !== NS.CLIENT) return new StreamError('invalid-namespace', 'client streams are jabber:client');
  const to = header.attrs.to?.toLowerCase();
  if (to && to !== domain) return new StreamError('host-unknown', `this server serves ${domain}`);
  if (header.attrs.version && !/^1\.\d+$/.test(header.attrs.version)) return new StreamError('unsupported-version');
  return undefined;
}
