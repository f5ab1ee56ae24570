/**
 * Drives the core at the `handleFrame` level, the way the stream Lambda does, without sockets: real
 * DynamoDB Local (a table per harness, the run's shared instance), a recording sender in place of
 * the @connections API (the edge we cannot reach), and any number of server instances sharing the
 * table, as Lambda execution environments do. Every frame gets a queue message id, so a test can
 * redeliver it exactly as SQS would.
 */
import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { inject } from 'vitest';
import { makeCredentials } from '../../shared/accounts.ts';
import { loadConfig } from '../../shared/config.ts';
import { XmppServer, type RemoteRouter } from '../../shared/core/server.ts';
import type { Element } from '../../shared/xml/element.ts';
import type { ConnectionState } from '../../shared/core/types.ts';
import { defaultModules } from '../../shared/modules/index.ts';
import { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { ensureTable } from '../../shared/storage/table.ts';
import type { ConnectionSender, SendHint } from '../../shared/transport/connections.ts';
import type { TimerEvent, TimerScheduler } from '../../shared/transport/timers.ts';
import type { Job, JobQueue, QueuedJob } from '../../shared/transport/jobs.ts';

export interface Post {
  connectionId: string;
  frame: string;
}

/** Records posts; connections in `gone` answer like a 410; `beforePost` may throw to fail a post, or wait (a slow post). */
export class RecordingSender implements ConnectionSender {
  readonly posts: Post[] = [];
  readonly gone = new Set<string>();
  readonly closed: string[] = [];
  beforePost?: (post: Post) => void | Promise<void>;
  /** Runs after a post reached its socket; throwing makes a post that arrived but was never answered. */
  afterPost?: (post: Post, hint?: SendHint) => void;

  async send(connectionId: string, frame: string, hint?: SendHint): Promise<boolean> {
    await this.beforePost?.({ connectionId, frame });
    if (this.gone.has(connectionId)) return false;
    this.posts.push({ connectionId, frame });
    this.afterPost?.({ connectionId, frame }, hint);
    return true;
  }

  async close(connectionId: string): Promise<void> {
    this.closed.push(connectionId);
    this.gone.add(connectionId);
  }

  to(connectionId: string, match?: string | RegExp): string[] {
    return this.posts
      .filter((p) => p.connectionId === connectionId)
      .map((p) => p.frame)
      .filter((f) => match === undefined || (typeof match === 'string' ? f.includes(match) : match.test(f)));
  }
}

/**
 * A DynamoDB client whose next call of a command (low-level names: PutItemCommand…) fails once,
 * after it took effect (a crash after that step) or before it was sent (a crash before it).
 */
export function crashingClient(endpoint: string) {
  const client = new DynamoDBClient({ endpoint, region: 'local', credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const after = new Set<string>();
  const before = new Set<string>();
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (before.delete(context.commandName ?? '')) throw new Error(`crash before ${context.commandName}`);
      const out = await next(args);
      if (after.delete(context.commandName ?? '')) throw new Error(`crash after ${context.commandName}`);
      return out;
    },
    { step: 'initialize', name: 'testCrash' },
  );
  return { client, crashAfter: (command: string) => after.add(command), crashBefore: (command: string) => before.add(command) };
}

/**
 * Delayed events (SQS with a per-message delay in the cloud: the edge we cannot reach): recorded,
 * and fired by the test when it chooses, on the instance it chooses, as often as it chooses.
 */
export class RecordingTimers implements TimerScheduler {
  readonly scheduled: Array<{ event: TimerEvent; delaySeconds: number }> = [];

  async schedule(event: TimerEvent, delaySeconds: number): Promise<void> {
    this.scheduled.push({ event, delaySeconds });
  }
}

/**
 * Background jobs (an SQS FIFO queue in the cloud: the edge we cannot reach): queued with the
 * queue's deduplication (an id seen before is dropped, as SQS FIFO does within 5 minutes), and run
 * by the test when it chooses, on the instance it chooses, in the order it chooses. Each job gets a
 * message id, the same on every run, as SQS gives a redelivered message.
 */
export class RecordingJobs implements JobQueue {
  readonly queued: Array<{ group: string; job: Job; messageId: string }> = [];
  private readonly seen = new Set<string>();

  async enqueue(jobs: QueuedJob[]): Promise<void> {
    for (const j of jobs) {
      if (this.seen.has(j.dedupId)) continue;
      this.seen.add(j.dedupId);
      // Serialized and parsed, as the queue carries it.
      this.queued.push({ group: j.group, job: JSON.parse(JSON.stringify(j.job)) as Job, messageId: `job-${randomBytes(6).toString('hex')}` });
    }
  }

  /** Takes every queued job out, oldest first. */
  take(): Array<{ group: string; job: Job; messageId: string }> {
    return this.queued.splice(0, this.queued.length);
  }
}

/** Stanzas the servers sent out to other domains (the federation service's queue: an edge of its own, tested elsewhere). */
export class RecordingRemote implements RemoteRouter {
  readonly sent: Element[] = [];

  async send(stanza: Element): Promise<void> {
    this.sent.push(stanza);
  }
}

export async function startHarness(instances = 3, env: Record<string, string> = {}, options: { remote?: boolean } = {}) {
  const endpoint = inject('dynamoEndpoint');
  const tableName = `h${randomBytes(6).toString('hex')}`;
  const admin = new DynamoDBClient({ endpoint, region: 'local', credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  await ensureTable(admin, tableName);
  admin.destroy();
  const config = loadConfig({ XMPP_DOMAIN: 'localhost', XMPP_TABLE: tableName, XMPP_DYNAMODB_ENDPOINT: endpoint, ...env });
  const sender = new RecordingSender();
  const crash = crashingClient(endpoint);
  const store = new DynamoStore({ tableName, client: crash.client });
  const timers = new RecordingTimers();
  const remote = options.remote ? new RecordingRemote() : undefined;
  const jobs = new RecordingJobs();
  const servers = Array.from({ length: instances }, () => new XmppServer({ config, store, sender, timers, remote, jobs, modules: defaultModules }));
  return { servers, store, sender, crash, config, timers, remote, jobs };
}

export type Harness = Awaited<ReturnType<typeof startHarness>>;

/**
 * One client connection as the stream Lambda sees it: each frame is a queue record with its own
 * message id, handed to one of the instances (round robin unless a test picks one), with no state
 * carried between invocations.
 */
export class Connection {
  private seq = 0;
  private next = 0;
  /** The last frame's delivery, for `redeliver()`. */
  last?: { id: string; text: string; receivedAt: number };

  constructor(
    readonly h: Harness,
    readonly id = `c${randomBytes(6).toString('base64url')}`,
    /** The client's address, as API Gateway passes it with each frame. */
    readonly sourceIp?: string,
  ) {}

  private server(instance?: number): XmppServer {
    const i = instance ?? this.next++ % this.h.servers.length;
    return this.h.servers[i]!;
  }

  frame(text: string, instance?: number): Promise<ConnectionState | undefined> {
    this.last = { id: `${this.id}-m${this.seq++}`, text, receivedAt: Date.now() };
    return this.server(instance).handleFrame(this.id, text, { id: this.last.id, receivedAt: this.last.receivedAt, sourceIp: this.sourceIp });
  }

  /** SQS hands the same record (same message id) to an instance again. */
  redeliver(instance?: number): Promise<ConnectionState | undefined> {
    const { id, text, receivedAt } = this.last!;
    return this.server(instance).handleFrame(this.id, text, { id, receivedAt, sourceIp: this.sourceIp });
  }

  disconnect(instance?: number): Promise<void> {
    return this.server(instance).handleDisconnect(this.id, { id: `${this.id}-m${this.seq++}`, receivedAt: Date.now() });
  }

  posts(match?: string | RegExp): string[] {
    return this.h.sender.to(this.id, match);
  }

  /** Opens, authenticates with PLAIN, restarts and binds, each frame on another instance. */
  async login(bare: string, password: string, resource: string): Promise<void> {
    const open = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';
    await this.frame(open);
    const local = bare.split('@')[0]!;
    await this.frame(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${local}\0${password}`).toString('base64')}</auth>`);
    await this.frame(open);
    await this.frame(`<iq type="set" id="bind" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>${resource}</resource></bind></iq>`);
  }

  /** Login, roster get and initial presence. */
  async online(bare: string, password: string, resource: string): Promise<void> {
    await this.login(bare, password, resource);
    await this.frame('<iq type="get" id="roster" xmlns="jabber:client"><query xmlns="jabber:iq:roster"/></iq>');
    await this.frame('<presence xmlns="jabber:client"/>');
  }
}

let userBatch = 0;
/** Fresh accounts for one test (name + a number no other test of the run used), password 'secret'. */
export async function freshUsers(h: Harness, ...names: string[]): Promise<string[]> {
  userBatch += 1;
  const bares = names.map((name) => `${name}${userBatch}@localhost`);
  for (const bare of bares) await addAccount(h, bare);
  return bares;
}

export async function addAccount(h: Harness, bare: string, password = 'secret'): Promise<void> {
  await h.store.createAccount(bare, await makeCredentials(password, 4096));
}

/** Makes two local users contacts with subscription both ways, as roster items. */
export async function befriend(h: Harness, a: string, b: string): Promise<void> {
  await h.store.putRosterItem(a, { jid: b, groups: [], subscription: 'both' });
  await h.store.putRosterItem(b, { jid: a, groups: [], subscription: 'both' });
}

const SM = 'urn:xmpp:sm:3';
const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';

/** Login, XEP-0198 enabled with resumption, initial presence; returns the SM id. */
export async function onlineWithSm(c: Connection, bare: string, resource: string): Promise<string> {
  await c.login(bare, 'secret', resource);
  await c.frame(`<enable xmlns="${SM}" resume="true"/>`);
  const enabled = c.posts('<enabled')[0]!;
  await c.frame('<presence xmlns="jabber:client"/>');
  return /id="([^"]+)"/.exec(enabled)![1]!;
}

/** A new connection of the same user, authenticated and restarted: ready to resume. */
export async function authenticated(h: Harness, bare: string): Promise<Connection> {
  const c = new Connection(h);
  await c.frame(OPEN);
  await c.frame(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${bare.split('@')[0]}\0secret`).toString('base64')}</auth>`);
  await c.frame(OPEN);
  return c;
}

/** The socket died: the gateway answers 410 from now on, and $disconnect comes. */
export async function kill(c: Connection): Promise<void> {
  c.h.sender.gone.add(c.id);
  await c.disconnect();
}
