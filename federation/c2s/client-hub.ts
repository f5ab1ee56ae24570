/**
 * The native client listeners of one stream-service instance (XMPP_C2S_PORT with STARTTLS,
 * XMPP_C2S_TLS_PORT with direct TLS) and its mailbox: the one place frames for its TCP sessions
 * arrive, from its own core (directly) and from everyone else (the stream Lambdas, other instances)
 * through an intake whose address is part of each connection id (shared/transport/tcp-sessions.ts):
 * a loopback HTTP intake locally (http-intake.ts), the task's own SQS FIFO queue in the cloud
 * (queue-intake.ts). Instances hold leases; one whose lease runs out is swept by another.
 *
 * When the instance stops, every stream gets `system-shutdown` and its session ends or, with
 * XEP-0198, hibernates, so its client resumes on another instance and loses nothing.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { XmppServer } from '../../shared/core/server.ts';
import { StreamError } from '../../shared/errors.ts';
import { InstanceStore } from '../../shared/storage/instance-store.ts';
import { mailboxQueueUrl, queueMailboxAddress, tcpConnectionId, type Mailbox } from '../../shared/transport/tcp-sessions.ts';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { XmlLimits } from '../../shared/xml/parse.ts';
import { StreamConnection, listen } from '../connection.ts';
import type { Logger } from '../context.ts';
import { ClientStream } from './client-stream.ts';
import { openHttpIntake } from './http-intake.ts';
import { readProxyHeader } from './proxy-header.ts';
import { QueueIntake, deleteQueue } from './queue-intake.ts';

export interface ClientListenOptions {
  bind: string;
  /** STARTTLS port (0 = any free port); undefined = not opened. */
  port?: number;
  /** XEP-0368 direct TLS port (0 = any free port); undefined = not opened. */
  tlsPort?: number;
  secureContext: tls.SecureContext;
  /** Each connection starts with a PROXY protocol v2 header from the load balancer (proxy-header.ts). */
  proxyProtocol?: boolean;
  limits: XmlLimits;
  /** How long a new connection may take to open its stream and start TLS (default 30 s). */
  openTimeoutMs?: number;
  /**
   * The instance's lease (default 60 s), renewed every quarter of it; an instance whose lease ran
   * out is swept by the others: its connections get the $disconnect it could not give them.
   */
  leaseMs?: number;
}

const DEFAULT_LEASE_MS = 60_000;

/** Where an instance's mailbox receives frames from other processes. */
interface Intake {
  readonly address: string;
  stop(): Promise<void>;
}

export class ClientHub implements Mailbox {
  readonly streams = new Map<string, ClientStream>();
  private readonly running = new Set<Promise<void>>();
  private readonly servers: net.Server[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private instances?: InstanceStore;
  private server?: XmppServer;
  private leaseMs = DEFAULT_LEASE_MS;
  private vanished = false;
  port?: number;
  tlsPort?: number;

  /** This instance's mailbox address (the middle of its connection ids). */
  address = '';
  private intake!: Intake;
  private sqs?: SQSClient;
  private queueUrlPrefix?: string;

  private constructor(private readonly log: Logger) {}

  /**
   * Opens the mailbox (before the core exists: the core's sender needs its address): the task's
   * own SQS queue when `queueUrlPrefix` is given (cloud), else a loopback HTTP intake (local).
   */
  static async open(log: Logger, options: { queueUrlPrefix?: string; sqs?: SQSClient } = {}): Promise<ClientHub> {
    const hub = new ClientHub(log);
    if (options.queueUrlPrefix) {
      const taskId = randomBytes(8).toString('hex');
      hub.sqs = options.sqs ?? new SQSClient({ maxAttempts: 4 });
      hub.queueUrlPrefix = options.queueUrlPrefix;
      hub.intake = await QueueIntake.create(options.queueUrlPrefix, taskId, hub, log, hub.sqs).then((q) => ({ address: queueMailboxAddress(taskId), stop: () => q.stop() }));
    } else {
      hub.intake = await openHttpIntake(hub);
    }
    hub.address = hub.intake.address;
    return hub;
  }

  // Mailbox

  async post(connectionId: string, frame: string): Promise<boolean> {
    const stream = this.streams.get(connectionId);
    return stream ? stream.deliver(frame) : false;
  }

  async close(connectionId: string): Promise<void> {
    this.streams.get(connectionId)?.close();
  }

  /** Opens the client ports; frames go to `server`. */
  async listen(server: XmppServer, options: ClientListenOptions): Promise<void> {
    this.server = server;
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.instances = server.store.open(InstanceStore);
    await this.instances.register(this.address, this.leaseMs);
    this.timers.push(setInterval(() => void this.renew(), this.leaseMs / 4), setInterval(() => void this.sweep(), this.leaseMs / 2));
    for (const t of this.timers) t.unref();
    void this.sweep();
    const ctx = {
      server,
      domain: server.config.domain,
      tlsOptions: { secureContext: options.secureContext },
      log: this.log,
      openTimeoutMs: options.openTimeoutMs ?? 30_000,
    };
    const serve = (socket: net.Socket, sourceIp: string | undefined) => {
      const id = tcpConnectionId(this.address, randomBytes(12).toString('base64url'));
      const stream = new ClientStream(id, new StreamConnection(socket, options.limits), { ...ctx, sourceIp });
      this.streams.set(id, stream);
      const done = (async () => {
        // Listed before anything of it is stored, so a sweep after our death finds it.
        await this.instances!.addConnection(this.address, id);
        await stream.run();
        if (!this.vanished) await this.instances!.removeConnection(this.address, id);
      })()
        .catch((err) => {
          this.log.error('c2s: connection bookkeeping failed', { connection: id, error: String(err) });
          stream.fail(new StreamError('internal-server-error'));
        })
        .finally(() => {
          this.streams.delete(id);
          this.running.delete(done);
        });
      this.running.add(done);
    };
    /** A new TCP connection: the PROXY header if the load balancer sends one, TLS on the direct port, then the stream. */
    const accept = async (raw: net.Socket, directTls: boolean) => {
      raw.setKeepAlive(true, 60_000);
      raw.on('error', () => {});
      let sourceIp = raw.remoteAddress;
      if (options.proxyProtocol) {
        const header = await readProxyHeader(raw, ctx.openTimeoutMs);
        if ('error' in header) {
          this.log.info('c2s: connection refused', { reason: header.error });
          raw.destroy();
          return;
        }
        sourceIp = header.source ?? sourceIp;
      }
      // The header reader paused the socket (what followed the header was put back): its next
      // reader is attached first, then the socket flows again.
      if (!directTls) {
        serve(raw, sourceIp);
        raw.resume();
        return;
      }
      const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: options.secureContext, ALPNProtocols: ['xmpp-client'] });
      raw.resume();
      const ok = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ctx.openTimeoutMs);
        secure.once('secure', () => (clearTimeout(timer), resolve(true)));
        secure.once('error', (err) => {
          this.log.debug('c2s direct TLS: handshake failed', { error: err.message });
          clearTimeout(timer);
          resolve(false);
        });
        secure.once('close', () => (clearTimeout(timer), resolve(false)));
      });
      if (!ok) {
        secure.destroy();
        return;
      }
      serve(secure, sourceIp);
    };
    if (options.port !== undefined) {
      const plain = net.createServer((socket) => void accept(socket, false));
      this.servers.push(plain);
      this.port = await listen(plain, options.port, options.bind);
    }
    if (options.tlsPort !== undefined) {
      // TLS is started on the accepted socket (after a PROXY header, when there is one).
      const direct = net.createServer((socket) => void accept(socket, true));
      this.servers.push(direct);
      this.tlsPort = await listen(direct, options.tlsPort, options.bind);
    }
  }

  /** Ends every stream (`system-shutdown`), waits for their sessions to end or hibernate, closes the ports. Idempotent. */
  private stopping: Promise<void> | undefined;

  stop(): Promise<void> {
    return (this.stopping ??= this.shutDown());
  }

  private async shutDown(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    // No new connections; a server's close callback waits for the open ones, which end below.
    const closed = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const stream of this.streams.values()) stream.fail(new StreamError('system-shutdown'));
    await Promise.all([...this.running]);
    await Promise.all(closed);
    await this.instances?.remove(this.address).catch((err) => this.log.warn('c2s: could not remove the instance item', { error: String(err) }));
    await this.intake.stop();
  }

  /**
   * Tests: the instance dies as a killed task does: sockets cut, no stream error, no $disconnect,
   * no more lease renewals. The other instances' sweep ends its sessions.
   */
  async vanish(): Promise<void> {
    this.vanished = true;
    this.stopping ??= Promise.resolve();
    for (const t of this.timers) clearInterval(t);
    for (const s of this.servers) s.close();
    for (const stream of this.streams.values()) stream.vanish();
    await Promise.all([...this.running]);
    await this.intake.stop();
  }

  private async renew(): Promise<void> {
    try {
      if (await this.instances!.renew(this.address, this.leaseMs)) return;
      // Swept: another instance ended our sessions (we looked dead for a whole lease). Our sockets
      // carry sessions that no longer exist: close them; their clients log in or resume anew.
      this.log.error('c2s: this instance lost its lease; closing its client streams', { address: this.address });
      for (const stream of this.streams.values()) stream.fail(new StreamError('reset', 'the server lost track of this stream'));
      await this.instances!.register(this.address, this.leaseMs);
    } catch (err) {
      this.log.warn('c2s: lease renewal failed', { error: String(err) });
    }
  }

  /** Ends the sessions of instances whose lease ran out (their tasks died without a goodbye). */
  private async sweep(): Promise<void> {
    try {
      const now = Date.now();
      for (const dead of await this.instances!.list()) {
        if (dead.address === this.address || dead.expiresAt >= now) continue;
        const connections = await this.instances!.claimExpired(dead.address, this.address, 2 * this.leaseMs);
        if (!connections) continue;
        this.log.warn('c2s: ending the sessions of an instance that died', { instance: dead.address, connections: connections.length });
        let failed = 0;
        for (const id of connections) {
          try {
            await this.server!.handleDisconnect(id, { id: `${id}:disconnect`, receivedAt: now });
            await this.instances!.removeConnection(dead.address, id);
          } catch (err) {
            failed++;
            this.log.error('c2s: ending a session of a dead instance failed', { connection: id, error: String(err) });
          }
        }
        // What failed stays listed: the claim goes stale after two leases and a sweep tries again.
        if (failed) continue;
        await this.instances!.remove(dead.address);
        // The dead task's queue (cloud): whatever is in it was for sockets that died with it.
        const queueUrl = this.queueUrlPrefix ? mailboxQueueUrl(this.queueUrlPrefix, dead.address) : undefined;
        if (queueUrl) await deleteQueue(this.sqs!, queueUrl, this.log);
      }
    } catch (err) {
      this.log.warn('c2s: sweep failed', { error: String(err) });
    }
  }
}
