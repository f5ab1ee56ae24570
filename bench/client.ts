/**
 * The one hand-written XMPP-over-WebSocket client (RFC 7395) of the repository, used by the load
 * generator (bench/harness.ts and its scenarios), the room fan-out bench (bench/muc-fanout.ts),
 * bench/profile-message.ts and the integration tests' RawClient (test/integration/helpers.ts):
 * stream open, XEP-0077 registration, SASL SCRAM-SHA-1 (RFC 5802) or PLAIN (by RFC 6120 or by
 * XEP-0388 SASL2 with inline requests), resource binding, iq
 * request/response, a callback for every other stanza, and frame-level access (the text of each
 * frame, as sent) for tests that look at the bytes. Nothing else: no reconnection, no stream
 * management, no plugins.
 *
 * Why not @xmpp/client or StanzaJS (the libraries the tests use): each of their connections carries
 * a middleware pipeline, plugin set, reconnect timers and (StanzaJS) a JSON translation of every
 * stanza. With hundreds of connections in one load-generator process that overhead lands on the
 * same two cores the servers under test run on, and it would be the generator, not the server,
 * that sets the ceiling. Here a frame costs one `ws` message event and one ltx parse (none when
 * onFrame takes it).
 *
 * Long because: a client is all of that in one class (the socket, the parser, the waits, both SASL
 * profiles); its parts share the socket and the queue of frames not yet taken.
 */
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { parse, type Element } from 'ltx';
import WebSocket from 'ws';

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const NS_SASL2 = 'urn:xmpp:sasl:2';
const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
const NS_REGISTER = 'jabber:iq:register';

export class XmppClientError extends Error {
  constructor(
    message: string,
    readonly condition: string,
  ) {
    super(message);
    this.name = 'XmppClientError';
  }
}

/** XML text escaping for attribute values and character data. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** SaltedPassword per (password, salt, iterations): clients keep it (as Conversations and Gajim do), so the generator's PBKDF2 runs once per account. */
const saltedPasswords = new Map<string, Promise<Buffer>>();

function saltedPassword(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  const key = `${password}\0${salt.toString('base64')}\0${iterations}`;
  let p = saltedPasswords.get(key);
  if (!p) {
    p = new Promise((resolve, reject) => pbkdf2(password, salt, iterations, 20, 'sha1', (err, out) => (err ? reject(err) : resolve(out))));
    saltedPasswords.set(key, p);
  }
  return p;
}

const hmac = (key: Buffer, data: string) => createHmac('sha1', key).update(data).digest();
const sha1 = (data: Buffer) => createHash('sha1').update(data).digest();

function saslName(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

function parseScramAttributes(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** The first child element's name: the condition of a stream error, SASL failure or stanza error. */
const firstChildName = (el: Element | undefined): string | undefined => el?.children.find((c): c is Element => typeof c !== 'string')?.name;

const isStanza = (el: Element | undefined): el is Element => el !== undefined && (el.name === 'message' || el.name === 'presence' || el.name === 'iq');

/** One frame received: its text as it came, and its parse when it is XML. */
interface Frame {
  text: string;
  el?: Element;
}

/** What a frame-level wait matches: a substring of the frame, a pattern, or a test of its text. */
export type FrameMatch = string | RegExp | ((text: string) => boolean);

interface Waiter {
  match: (frame: Frame) => boolean;
  resolve: (frame: Frame) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

let idCounter = 0;
export const nextId = (prefix = 'b') => `${prefix}${(++idCounter).toString(36)}`;

export class XmppWsClient {
  private ws?: WebSocket;
  private readonly queue: Frame[] = [];
  private waiters: Waiter[] = [];
  private readonly iqs = new Map<string, { resolve: (el: Element) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>();
  /** Set once bound (or resumed): stanzas nobody waits for go to onStanza, when there is one. */
  private live = false;
  private socketClosed!: (event: { code: number; reason: string }) => void;
  /**
   * Every stanza (message, presence, iq request) after binding that nothing waits for. Unset, they
   * stay queued for next() and nextFrame() (what tests that read frames want).
   */
  onStanza?: (el: Element) => void;
  /**
   * Sees every frame's text first. Returning true takes the frame: it is not parsed, counted,
   * matched or queued (a hot path that only looks for a marker skips the XML parse).
   */
  onFrame?: (text: string) => boolean | void;
  jid = '';
  closed = false;
  /** Resolves when the WebSocket closes, with its close code and reason. */
  readonly closedWith = new Promise<{ code: number; reason: string }>((resolve) => (this.socketClosed = resolve));
  /** Stream error condition received, if any. */
  streamError?: string;
  framesIn = 0;
  framesOut = 0;
  /** Stanzas received (message, presence, iq): the count XEP-0198 acknowledges. */
  stanzasIn = 0;

  constructor(
    readonly url: string,
    readonly domain: string,
    readonly timeoutMs = 30_000,
  ) {}

  /** The WebSocket, once connect() was called (for a test that needs the socket itself). */
  get socket(): WebSocket | undefined {
    return this.ws;
  }

  /** Opens the WebSocket; when 'xmpp' is among the subprotocols offered, the server must pick it. */
  connect(protocols: string[] = ['xmpp']): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, protocols, { perMessageDeflate: false, handshakeTimeout: this.timeoutMs });
      this.ws = ws;
      ws.once('open', () => {
        if (protocols.includes('xmpp') && ws.protocol !== 'xmpp') {
          ws.terminate();
          reject(new XmppClientError('server did not accept the xmpp subprotocol', 'protocol'));
        } else resolve();
      });
      ws.once('error', (err) => reject(new XmppClientError(`websocket: ${err.message}`, 'connect')));
      ws.on('message', (data) => this.receive(data.toString()));
      ws.once('close', (code, reason) => {
        this.closed = true;
        const err = new XmppClientError(`connection closed${this.streamError ? ` (${this.streamError})` : ''}`, this.streamError ?? 'closed');
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(err);
        }
        this.waiters = [];
        for (const [, p] of this.iqs) {
          clearTimeout(p.timer);
          p.reject(err);
        }
        this.iqs.clear();
        this.socketClosed({ code, reason: reason.toString() });
      });
    });
  }

  private receive(text: string): void {
    this.framesIn++;
    if (this.onFrame?.(text)) return;
    let el: Element | undefined;
    try {
      el = parse(text) as Element;
    } catch {
      // Not XML: whitespace (a keepalive) is dropped; anything else stays readable as text.
      if (!text.trim()) return;
    }
    if (el && (el.name === 'stream:error' || (el.name === 'error' && el.attrs.xmlns === 'http://etherx.jabber.org/streams'))) {
      this.streamError = firstChildName(el) ?? 'undefined-condition';
    }
    if (isStanza(el)) this.stanzasIn++;
    if (el?.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error')) {
      const pending = this.iqs.get(el.attrs.id);
      if (pending) {
        this.iqs.delete(el.attrs.id);
        clearTimeout(pending.timer);
        pending.resolve(el);
        return;
      }
    }
    const frame: Frame = { text, el };
    const waiter = this.waiters.find((w) => w.match(frame));
    if (waiter) {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      clearTimeout(waiter.timer);
      waiter.resolve(frame);
      return;
    }
    if (this.live && this.onStanza && isStanza(el)) {
      this.onStanza(el);
      return;
    }
    this.queue.push(frame);
  }

  /** The first frame (already received or future) that matches, taken out of the queue. */
  private take(match: (frame: Frame) => boolean, what: string, timeoutMs: number): Promise<Frame> {
    const index = this.queue.findIndex(match);
    if (index >= 0) return Promise.resolve(this.queue.splice(index, 1)[0]!);
    if (this.closed) return Promise.reject(new XmppClientError(`connection closed waiting for ${what}`, this.streamError ?? 'closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new XmppClientError(`timed out waiting for ${what}`, 'timeout'));
      }, timeoutMs);
      this.waiters.push({ match, resolve, reject, timer });
    });
  }

  /** The next element (already received or future) that matches. */
  async next(match: (el: Element) => boolean = () => true, what = 'frame', timeoutMs = this.timeoutMs): Promise<Element> {
    return (await this.take((f) => f.el !== undefined && match(f.el), what, timeoutMs)).el!;
  }

  /** The text of the next frame (already received or future) that matches. */
  async nextFrame(match: FrameMatch, what = String(match), timeoutMs = this.timeoutMs): Promise<string> {
    const test = typeof match === 'string' ? (t: string) => t.includes(match) : match instanceof RegExp ? (t: string) => match.test(t) : match;
    return (await this.take((f) => test(f.text), what, timeoutMs)).text;
  }

  /** The text of the frames received and not taken yet that match (to assert something did NOT arrive). */
  queuedFrames(match: (text: string) => boolean = () => true): string[] {
    return this.queue.filter((f) => match(f.text)).map((f) => f.text);
  }

  send(frame: string): void {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new XmppClientError('not connected', 'closed');
    this.framesOut++;
    this.ws.send(frame);
  }

  /** Sends an iq (its id attribute must be `id`) and resolves with the result; an error reply rejects. */
  iq(frame: string, id: string, timeoutMs = this.timeoutMs): Promise<Element> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.iqs.delete(id);
        reject(new XmppClientError(`iq ${id} timed out`, 'timeout'));
      }, timeoutMs);
      this.iqs.set(id, {
        timer,
        resolve: (el) => {
          if (el.attrs.type === 'error') {
            const condition = firstChildName(el.getChild('error')) ?? 'undefined-condition';
            reject(new XmppClientError(`iq ${id}: ${condition}`, condition));
          } else resolve(el);
        },
        reject,
      });
      try {
        this.send(frame);
      } catch (err) {
        clearTimeout(timer);
        this.iqs.delete(id);
        reject(err);
      }
    });
  }

  /** Sends the RFC 7395 <open/> (nothing more: openStream() also waits for the answer). */
  sendOpen(to = this.domain): void {
    this.send(`<open xmlns="${NS_FRAMING}" to="${esc(to)}" version="1.0"/>`);
  }

  /** Opens (or restarts) the stream; resolves with <stream:features/>. */
  async openStream(to = this.domain): Promise<Element> {
    this.sendOpen(to);
    const open = await this.next((el) => el.name === 'open' || el.name === 'stream:error' || el.name === 'close', 'stream open');
    if (open.name !== 'open') throw new XmppClientError(`stream refused: ${this.streamError ?? open.name}`, this.streamError ?? 'closed');
    return this.next((el) => el.name === 'stream:features' || el.name === 'features', 'stream features');
  }

  /** XEP-0077 account creation on an open stream, before authentication. */
  async register(username: string, password: string): Promise<void> {
    const id = nextId('reg');
    await this.iq(
      `<iq xmlns="jabber:client" type="set" id="${id}"><query xmlns="${NS_REGISTER}"><username>${esc(username)}</username><password>${esc(password)}</password></query></iq>`,
      id,
    );
  }

  /**
   * SASL SCRAM-SHA-1 on an open stream (the mechanism both servers under test offer by default).
   * With `sasl2`, by XEP-0388 with its inline requests (XEP-0386 `<bind/>`, XEP-0198 `<resume/>`):
   * resolves with the `<success/>`, the authenticated stream's features read too (no restart).
   */
  async authenticate(username: string, password: string, features: Element, sasl2?: { inline: string }): Promise<Element> {
    const ns = sasl2 ? NS_SASL2 : NS_SASL;
    const offered = sasl2 ? features.getChild('authentication', NS_SASL2) : features.getChild('mechanisms', NS_SASL);
    const mechanisms = offered?.getChildren('mechanism').map((m) => m.getText()) ?? [];
    if (!mechanisms.includes('SCRAM-SHA-1')) throw new XmppClientError(`SCRAM-SHA-1 not offered (${mechanisms.join(' ')})`, 'invalid-mechanism');
    const nonce = randomBytes(18).toString('base64');
    const clientFirstBare = `n=${saslName(username)},r=${nonce}`;
    const first = Buffer.from(`n,,${clientFirstBare}`).toString('base64');
    this.send(
      sasl2
        ? `<authenticate xmlns="${NS_SASL2}" mechanism="SCRAM-SHA-1"><initial-response>${first}</initial-response>${sasl2.inline}</authenticate>`
        : `<auth xmlns="${NS_SASL}" mechanism="SCRAM-SHA-1">${first}</auth>`,
    );
    const challenge = await this.next((el) => el.attrs.xmlns === ns, 'SASL challenge');
    if (challenge.name !== 'challenge') {
      const condition = firstChildName(challenge) ?? challenge.name;
      throw new XmppClientError(`SASL failure: ${condition}`, condition);
    }
    const serverFirst = Buffer.from(challenge.getText(), 'base64').toString();
    const attrs = parseScramAttributes(serverFirst);
    if (!attrs.r?.startsWith(nonce) || !attrs.s || !attrs.i) throw new XmppClientError('SASL: bad server-first-message', 'malformed-request');
    const salted = await saltedPassword(password, Buffer.from(attrs.s, 'base64'), Number(attrs.i));
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = sha1(clientKey);
    const withoutProof = `c=biws,r=${attrs.r}`;
    const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ signature[i]!;
    this.send(`<response xmlns="${ns}">${Buffer.from(`${withoutProof},p=${proof.toString('base64')}`).toString('base64')}</response>`);
    const outcome = await this.saslOutcome(ns);
    const final = parseScramAttributes(Buffer.from(sasl2 ? (outcome.getChildText('additional-data') ?? '') : outcome.getText(), 'base64').toString());
    const expected = hmac(hmac(salted, 'Server Key'), authMessage);
    const got = Buffer.from(final.v ?? '', 'base64');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw new XmppClientError('SASL: wrong server signature', 'server-signature');
    if (sasl2) {
      await this.next((el) => el.name === 'stream:features' || el.name === 'features', 'stream features');
      // Bound (XEP-0386) or resumed inline: the identity is the full JID, and stanzas flow.
      this.jid = outcome.getChildText('authorization-identifier') ?? '';
      if (this.jid.includes('/')) this.goLive();
    }
    return outcome;
  }

  /**
   * XEP-0484: SASL2 with a FAST token (HT-SHA-256-NONE), one frame; resolves with the `<success/>`
   * (the authenticated stream's features read too).
   */
  async authenticateWithToken(username: string, token: string, inline: string): Promise<Element> {
    const proof = createHmac('sha256', token).update('Initiator').digest();
    const response = Buffer.concat([Buffer.from(`${saslName(username)}\0`), proof]).toString('base64');
    this.send(`<authenticate xmlns="${NS_SASL2}" mechanism="HT-SHA-256-NONE"><initial-response>${response}</initial-response><fast xmlns="urn:xmpp:fast:0"/>${inline}</authenticate>`);
    const outcome = await this.saslOutcome(NS_SASL2);
    const expected = createHmac('sha256', token).update('Responder').digest();
    const got = Buffer.from(outcome.getChildText('additional-data') ?? '', 'base64');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) throw new XmppClientError('FAST: wrong server proof', 'server-signature');
    await this.next((el) => el.name === 'stream:features' || el.name === 'features', 'stream features');
    this.jid = outcome.getChildText('authorization-identifier') ?? '';
    if (this.jid.includes('/')) this.goLive();
    return outcome;
  }

  /**
   * SASL PLAIN on an open stream: one round trip and no PBKDF2 on either side, for the room
   * fan-out's thousand occupants and for tests (the servers offer it over WebSocket).
   */
  async authenticatePlain(username: string, password: string): Promise<void> {
    this.send(`<auth xmlns="${NS_SASL}" mechanism="PLAIN">${Buffer.from(`\0${username}\0${password}`).toString('base64')}</auth>`);
    await this.saslOutcome();
  }

  /** <success/>, or an XmppClientError with the <failure/>'s condition. */
  private async saslOutcome(ns = NS_SASL): Promise<Element> {
    const outcome = await this.next((el) => el.attrs.xmlns === ns, 'SASL outcome');
    if (outcome.name !== 'success') {
      const condition = firstChildName(outcome) ?? outcome.name;
      throw new XmppClientError(`SASL failure: ${condition}`, condition);
    }
    return outcome;
  }

  async bind(resource: string): Promise<string> {
    const id = nextId('bind');
    const result = await this.iq(`<iq xmlns="jabber:client" type="set" id="${id}"><bind xmlns="${NS_BIND}"><resource>${esc(resource)}</resource></bind></iq>`, id);
    this.jid = result.getChild('bind', NS_BIND)?.getChildText('jid') ?? '';
    if (!this.jid) throw new XmppClientError('bind result without a JID', 'bind');
    this.goLive();
    return this.jid;
  }

  /** A stream that resumed a session (XEP-0198) instead of binding: it is live as `jid`. */
  resumed(jid: string): void {
    this.jid = jid;
    this.goLive();
  }

  private goLive(): void {
    this.live = true;
    // Anything that arrived between binding and now is a stanza for the application.
    if (this.onStanza) for (const f of this.queue.splice(0)) if (isStanza(f.el)) this.onStanza(f.el);
  }

  /** connect → open → SCRAM-SHA-1 → restart → bind. */
  async login(username: string, password: string, resource: string): Promise<string> {
    await this.connect();
    const features = await this.openStream();
    await this.authenticate(username, password, features);
    await this.openStream();
    return this.bind(resource);
  }

  /** Sends <close/> and waits for the socket to close (or terminates it after a while). */
  async close(timeoutMs = 5000): Promise<void> {
    const ws = this.ws;
    if (!ws || this.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, timeoutMs);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      try {
        if (ws.readyState === WebSocket.OPEN) ws.send(`<close xmlns="${NS_FRAMING}"/>`);
      } catch {
        ws.terminate();
      }
      // RFC 7395 §3.6: the server answers <close/> and the client then closes the socket.
      this.next((el) => el.name === 'close', 'close', timeoutMs)
        .then(() => ws.close(1000))
        .catch(() => ws.terminate());
    });
  }

  terminate(): void {
    this.ws?.terminate();
  }
}
