/**
 * Native (TCP) client helpers: @xmpp/client over `xmpp://` (STARTTLS) and `xmpps://` (direct TLS),
 * and a raw TLS/TCP socket for hostile input. The local stack's certificate is self-signed for
 * `localhost`; the clients here trust it as a user would after adding it (Node's TLS connect gets
 * it as an extra CA), and still check the name.
 */
import tls from 'node:tls';
import * as net from 'node:net';
import { client as xmppjsClient, xml } from '@xmpp/client';
import { Inbox, bindsNamedResource } from './helpers.ts';

type XmppJsElement = ReturnType<typeof xml>;

const trusted: string[] = [];
const connect = tls.connect;
// @xmpp/tls and @xmpp/starttls call the default export's connect: trust the stack's certificate there.
tls.connect = ((...args: Parameters<typeof tls.connect>) => {
  const options = args[0];
  if (options && typeof options === 'object' && trusted.length) {
    const o = options as tls.ConnectionOptions;
    o.ca = [...tls.rootCertificates, ...trusted];
    // The service URL names 127.0.0.1, as a client that resolved the domain's SRV record would connect; the name checked is the domain.
    o.servername ??= 'localhost';
  }
  return (connect as (...a: unknown[]) => tls.TLSSocket)(...args);
}) as typeof tls.connect;

/** Makes the TCP clients of this test file trust `cert` (PEM). */
export function trustCertificate(cert: string): void {
  trusted.push(cert);
}

/** @xmpp/client over TCP: `xmpp://127.0.0.1:port` (STARTTLS) or `xmpps://127.0.0.1:port` (TLS). */
export async function connectNative(service: string, username: string, password: string, resource?: string, timeoutMs?: number) {
  const c = xmppjsClient({ service, domain: 'localhost', username, password, resource, ...(timeoutMs ? { timeout: timeoutMs } : {}) } as Parameters<typeof xmppjsClient>[0]);
  const inbox = new Inbox<XmppJsElement>();
  c.on('stanza', (s: XmppJsElement) => inbox.push(s));
  c.on('error', () => {});
  if (resource) bindsNamedResource(c);
  const address = await c.start();
  return { client: c, inbox, jid: address.toString() as string };
}

/** A raw stream over TCP (optionally TLS from the first byte) for negotiation details and hostile input. */
export class RawTcp {
  /** Everything received (since the last STARTTLS). */
  private buffer = '';
  /** Where the next `until` starts looking. */
  private cursor = 0;
  private wake: (() => void) | undefined;
  readonly ended: Promise<void>;

  private constructor(public socket: net.Socket) {
    this.ended = new Promise((resolve) => socket.on('close', () => resolve()));
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('utf8');
      this.wake?.();
    });
    socket.on('error', () => {});
  }

  /** Connects; `prefix` is written first, before TLS on a direct TLS port (a load balancer's PROXY header). */
  static async open(port: number, secure = false, prefix?: Uint8Array): Promise<RawTcp> {
    let socket: net.Socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    if (prefix) socket.write(prefix);
    if (secure) {
      socket = tls.connect({ socket, servername: 'localhost', ca: trusted });
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
    }
    return new RawTcp(socket);
  }

  /** Sends <starttls/> (after the plain stream's features were read), waits for <proceed/>, starts TLS. */
  async startTlsOnly(): Promise<void> {
    this.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
    await this.until('<proceed');
    await this.startTls();
  }

  /** On a plain connection: header, STARTTLS, TLS. Then (always) the header of the secure stream; resolves with its features. */
  async secureStream(): Promise<string> {
    if (!(this.socket instanceof tls.TLSSocket)) {
      this.header();
      await this.until('</stream:features>');
      await this.startTlsOnly();
    }
    this.header();
    return this.until('</stream:features>');
  }

  /** Opens the stream (STARTTLS first when not secure) and tries PLAIN; resolves with the <success/> or <failure/>. */
  async plain(user: string, password: string): Promise<string> {
    await this.secureStream();
    this.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    return this.until(/<success[^>]*\/>|<success[\s\S]*?<\/success>|<failure[\s\S]*?<\/failure>/);
  }

  send(text: string): void {
    this.socket.write(text);
  }

  /** Waits until what arrived since the last match contains `match`; returns that text (up to the match's end). */
  async until(match: string | RegExp, timeoutMs = 10_000): Promise<string> {
    const re = typeof match === 'string' ? new RegExp(match.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : match;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.buffer.slice(this.cursor);
      const m = re.exec(rest);
      if (m) {
        this.cursor += m.index + m[0].length;
        return rest.slice(0, m.index + m[0].length);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${String(match)}; received: ${rest.slice(-500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Everything received so far (since the last STARTTLS). */
  received(): string {
    return this.buffer;
  }

  /** STARTTLS on this socket (after `<proceed/>`). */
  async startTls(): Promise<void> {
    this.socket.removeAllListeners('data');
    const secure = tls.connect({ socket: this.socket, servername: 'localhost', ca: trusted });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.buffer = '';
    this.cursor = 0;
    this.socket = secure;
    this.attach(secure);
  }

  header(to = 'localhost'): void {
    this.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${to}' version='1.0'>`);
  }

  /** STARTTLS (when not already secure), then PLAIN, restart and bind. */
  async login(user: string, password: string, resource = 'raw'): Promise<string> {
    await this.authenticate(user, password);
    this.send(`<iq type="set" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>${resource}</resource></bind></iq>`);
    const bound = await this.until(/<jid>[^<]+<\/jid>/);
    return /<jid>([^<]+)<\/jid>/.exec(bound)![1]!;
  }

  /** STARTTLS (when not already secure), then PLAIN and the restart: ready to bind or resume. */
  async authenticate(user: string, password: string): Promise<void> {
    await this.secureStream();
    this.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    await this.until('<success');
    this.header();
    await this.until('</stream:features>');
  }

  close(): void {
    this.socket.destroy();
  }
}

export { xml };
