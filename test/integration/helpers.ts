/**
 * Test helpers: the whole local stack (gateway + DynamoDB Local + the Lambda handler code), real
 * XMPP client libraries from npm (@xmpp/client, StanzaJS) and a raw WebSocket for hostile frames
 * (RawClient, over the benchmark's hand-written client in bench/client.ts).
 */
import { client as xmppjsClient, xml, type Client } from '@xmpp/client';
import type { IQCaller } from '@xmpp/iq/caller.js';
import * as Stanza from 'stanza';
import { inject } from 'vitest';
import WebSocket from 'ws';
import { makeCredentials } from '../../shared/accounts.ts';
import { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { startLocalStack } from '../../local/stack.ts';
import { XmppWsClient } from '../../bench/client.ts';

// @xmpp/client 0.14 needs a global WebSocket; Node 20 has none without a flag.
(globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;

export { xml };
export type LocalStack = Awaited<ReturnType<typeof startLocalStack>>;

let stackCount = 0;

/** A local stack on the run's shared DynamoDB Local (test/global-setup.ts), with a table of its own. */
export async function startTestStack(options: Parameters<typeof startLocalStack>[0] = {}): Promise<LocalStack & { store: DynamoStore }> {
  const tableName = `t${process.pid}_${++stackCount}_${Date.now().toString(36)}`;
  const stack = await startLocalStack({
    inMemory: true,
    wsPort: 0,
    dynamoEndpoint: inject('dynamoEndpoint'),
    tableName,
    logger: { info() {}, warn() {}, error: console.error },
    ...options,
  });
  const store = new DynamoStore({ tableName: stack.tableName, endpoint: stack.dynamoEndpoint });
  return Object.assign(stack, { store });
}

export async function addUser(store: DynamoStore, bare: string, password: string): Promise<void> {
  await store.createAccount(bare, await makeCredentials(password, 4096));
}

let freshUsers = 0;

/**
 * Creates an account no other test has, `<name><n>@localhost` with password `<name><n>-pass`, and
 * returns its local part: a test with accounts of its own never meets another's roster items, rooms,
 * PEP nodes or archive.
 */
export async function addFreshUser(store: DynamoStore, name: string): Promise<string> {
  const user = `${name}${++freshUsers}`;
  await addUser(store, `${user}@localhost`, `${user}-pass`);
  return user;
}

/** Collects stanzas so a test can wait for the one it expects. */
export class Inbox<T> {
  private readonly items: T[] = [];
  private waiters: { match: (t: T) => boolean; resolve: (t: T) => void }[] = [];

  push(item: T): void {
    const waiter = this.waiters.find((w) => w.match(item));
    if (waiter) {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      waiter.resolve(item);
    } else {
      this.items.push(item);
    }
  }

  /** Resolves with the first item (already received or future) that matches. */
  wait(match: (t: T) => boolean, what = 'stanza', timeoutMs = 10_000): Promise<T> {
    const index = this.items.findIndex(match);
    if (index !== -1) return Promise.resolve(this.items.splice(index, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const done = (t: T) => {
        clearTimeout(timer);
        resolve(t);
      };
      this.waiters.push({ match, resolve: done });
    });
  }

  /** Items received so far that match (for asserting something did NOT arrive). */
  seen(match: (t: T) => boolean): T[] {
    return this.items.filter(match);
  }
}

type XmppJsElement = ReturnType<typeof xml>;

/**
 * An @xmpp/client client with its iqCaller typed: @types/xmpp__client imports '@xmpp/iq/caller'
 * without the extension NodeNext resolution needs, so there it is `any`.
 */
export type XmppJsClient = Omit<Client, 'iqCaller'> & { iqCaller: IQCaller<Client> };

export async function connectXmppJs(wsUrl: string, username: string, password: string, resource?: string) {
  // @xmpp/client waits 2 s by default for each negotiation step: too short on two shared cores.
  const c = xmppjsClient({ service: wsUrl, domain: 'localhost', username, password, resource, timeout: 15_000 } as Parameters<typeof xmppjsClient>[0]);
  const inbox = new Inbox<XmppJsElement>();
  c.on('stanza', (s: XmppJsElement) => inbox.push(s));
  /** What is not a stanza (SASL, stream management, features), for tests of how it logged in. */
  const nonzas = new Inbox<XmppJsElement>();
  c.on('nonza', (s: XmppJsElement) => nonzas.push(s));
  c.on('error', () => {}); // surfaced through start() and the tests' expectations
  // @xmpp/client 0.14 throws on a frame that arrives after the server's <close/> (its parser is gone).
  // A server cannot fully prevent that: another connection's handler may post a presence between our
  // <close/> and the socket close. Real clients ignore such frames; so does this one.
  const connection = c as unknown as { parser: unknown; _onData(data: unknown): void };
  const onData = connection._onData.bind(c);
  connection._onData = (data) => {
    if (connection.parser) onData(data);
  };
  if (resource) bindsNamedResource(c);
  const address = await c.start();
  const client: XmppJsClient = c;
  return { client, inbox, nonzas, jid: address.toString() as string };
}

/**
 * For a test that names its resource: @xmpp/client binds by XEP-0386 when it is offered, and there
 * the server makes the resource (`<tag>/<random>`). The offer is taken out of the features it
 * reads, so it binds as RFC 6120 says, after authenticating by SASL2 all the same.
 */
export function bindsNamedResource(client: Client): void {
  const connection = client as unknown as { _onElement(el: XmppJsElement): void };
  const original = connection._onElement.bind(client);
  connection._onElement = (el) => {
    const inline = el.is('features', 'http://etherx.jabber.org/streams') ? el.getChild('authentication', 'urn:xmpp:sasl:2')?.getChild('inline') : undefined;
    const bind2 = inline?.getChild('bind', 'urn:xmpp:bind:0');
    if (inline && bind2) inline.remove(bind2);
    original(el);
  };
}

export async function connectStanza(wsUrl: string, jid: string, password: string, resource?: string) {
  const c = Stanza.createClient({ jid, password, resource, transports: { websocket: wsUrl, bosh: false } });
  const started = new Promise<void>((resolve, reject) => {
    c.once('session:started', () => resolve());
    c.once('auth:failed', () => reject(new Error('auth:failed')));
    c.once('stream:error', (e: unknown) => reject(new Error(`stream error ${JSON.stringify(e)}`)));
  });
  c.connect();
  await started;
  return c;
}

/**
 * A bare WebSocket speaking RFC 7395 frames by hand, for negotiation details and hostile input: the
 * benchmark's client (bench/client.ts), read and written frame by frame as text. Nothing it
 * receives goes anywhere but `frames`, where a test waits for it or checks it did not come.
 */
export class RawClient {
  /** The frames received and not waited for yet (wait() takes one out, seen() only looks). */
  readonly frames: { wait(match: (frame: string) => boolean, what?: string, timeoutMs?: number): Promise<string>; seen(match: (frame: string) => boolean): string[] };
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly ws: WebSocket;

  private constructor(private readonly client: XmppWsClient) {
    this.ws = client.socket!;
    this.closed = client.closedWith;
    this.frames = {
      wait: (match, what = 'stanza', timeoutMs) => client.nextFrame(match, what, timeoutMs),
      seen: (match) => client.queuedFrames(match),
    };
  }

  static async open(wsUrl: string, protocols: string[] = ['xmpp']): Promise<RawClient> {
    const client = new XmppWsClient(wsUrl, 'localhost', 10_000);
    await client.connect(protocols);
    return new RawClient(client);
  }

  /** As on a bare WebSocket, a frame sent once the socket is closing is dropped. */
  send(frame: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.client.send(frame);
  }

  next(match: string | RegExp, timeoutMs?: number): Promise<string> {
    return this.client.nextFrame(match, String(match), timeoutMs);
  }

  open(domain = 'localhost'): void {
    this.client.sendOpen(domain);
  }

  /** Opens, authenticates with PLAIN, restarts and binds; returns the bound JID. */
  async login(user: string, password: string, resource = 'raw', domain = 'localhost'): Promise<string> {
    await this.client.openStream(domain);
    await this.client.authenticatePlain(user, password);
    await this.client.openStream(domain);
    return this.client.bind(resource);
  }

  close(): void {
    this.ws.close();
  }
}
