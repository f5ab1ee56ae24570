/**
 * Posting to native (TCP) client sessions. A TCP client's socket lives in one task of the stream
 * service; whoever routes to it (a stream Lambda, the federation core, another task) reaches that
 * task through the task's *mailbox*, whose address is part of the connection id:
 *
 *   tcp~<mailbox>~<serial>      mailbox  h.<port>.<token>   loopback HTTP of a local instance
 *                                        q.<task id>         the task's SQS FIFO queue in the cloud
 *                                                            (<XMPP_C2S_QUEUE_URL_PREFIX><task id>.fifo)
 *
 * so a connection id read from a session item is all a sender needs, exactly as with API Gateway's
 * ids, and modules never know which kind of client they talk to (docs/native-clients.md).
 * The task that owns the socket writes to it directly.
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { randomBytes } from 'node:crypto';
import { log } from '../log.ts';
import type { ConnectionSender, SendHint } from './connections.ts';
import { QueueSender } from './queue-sender.ts';

const PREFIX = 'tcp~';

export function isTcpConnection(connectionId: string): boolean {
  return connectionId.startsWith(PREFIX);
}

export function tcpConnectionId(mailbox: string, serial: string): string {
  return `${PREFIX}${mailbox}~${serial}`;
}

/** The mailbox part of a TCP connection id. */
export function mailboxOf(connectionId: string): string | undefined {
  if (!isTcpConnection(connectionId)) return undefined;
  const end = connectionId.lastIndexOf('~');
  return end > PREFIX.length ? connectionId.slice(PREFIX.length, end) : undefined;
}

/** Where frames for one task's TCP sessions go. `post` resolves false when the connection is gone. */
export interface Mailbox {
  post(connectionId: string, frame: string): Promise<boolean>;
  close(connectionId: string): Promise<void>;
}

/** The loopback HTTP mailbox of a local instance: `h.<port>.<token>`. */
export function httpMailboxAddress(port: number, token: string): string {
  return `h.${port}.${token}`;
}

/** Connection refused or reset: the instance is gone, and so are its sockets. */
function instanceGone(err: unknown): boolean {
  const code = (err as { cause?: { code?: string } }).cause?.code;
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE';
}

class HttpMailbox implements Mailbox {
  constructor(private readonly base: string) {}

  private async call(path: 'deliver' | 'close', body: object): Promise<number> {
    try {
      const res = await fetch(`${this.base}/${path}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      return res.status;
    } catch (err) {
      if (instanceGone(err)) return 410;
      throw err;
    }
  }

  async post(connectionId: string, frame: string): Promise<boolean> {
    const status = await this.call('deliver', { connection: connectionId, frame });
    if (status === 410) return false;
    if (status !== 204) throw new Error(`TCP mailbox answered ${status}`);
    return true;
  }

  async close(connectionId: string): Promise<void> {
    const status = await this.call('close', { connection: connectionId });
    if (status !== 204 && status !== 410) throw new Error(`TCP mailbox answered ${status}`);
  }
}

/** A task's queue address: `q.<task id>`. */
export function queueMailboxAddress(taskId: string): string {
  return `q.${taskId}`;
}

/** The URL of a task's mailbox queue. */
export function mailboxQueueUrl(prefixUrl: string, address: string): string | undefined {
  const queue = /^q\.([a-z0-9]{8,40})$/.exec(address);
  return queue ? `${prefixUrl}${queue[1]}.fifo` : undefined;
}

/** What the queue carries: one frame, or a close, for one connection. */
export interface MailboxMessage {
  connection: string;
  frame?: string;
  close?: true;
}

function queueGone(err: unknown): boolean {
  const name = (err as { name?: string }).name ?? '';
  return name === 'QueueDoesNotExist' || name === 'AWS.SimpleQueueService.NonExistentQueue';
}

/**
 * A task's FIFO queue (cloud): one message group per connection keeps each connection's frames in
 * the order posted. The queue cannot say whether the socket is still there; a queue that no
 * longer exists (its task was stopped or swept) means every socket behind it is gone.
 */
export class SqsMailbox implements Mailbox {
  constructor(
    private readonly queueUrl: string,
    private readonly queue: QueueSender,
  ) {}

  private async put(message: MailboxMessage): Promise<boolean> {
    try {
      await this.queue.send({
        QueueUrl: this.queueUrl,
        MessageBody: JSON.stringify(message),
        MessageGroupId: message.connection,
        // Each post is its own message (a repeated <r/> is not a duplicate); the frame journal
        // already keeps a retried frame from posting twice.
        MessageDeduplicationId: randomBytes(16).toString('hex'),
      });
      return true;
    } catch (err) {
      if (queueGone(err)) return false;
      throw err;
    }
  }

  post(connectionId: string, frame: string): Promise<boolean> {
    return this.put({ connection: connectionId, frame });
  }

  async close(connectionId: string): Promise<void> {
    await this.put({ connection: connectionId, close: true });
  }
}

/** How this process reaches other tasks' mailboxes. */
export interface MailboxRoutes {
  /** XMPP_C2S_QUEUE_URL_PREFIX: task queues are `<prefix><task id>.fifo` (cloud). */
  queueUrlPrefix?: string;
  sqs?: SQSClient;
  /** Made from `sqs` on the first mailbox that needs it. */
  queues?: QueueSender;
}

/** The mailbox behind an address read from a connection id. */
export function mailboxAt(address: string, routes: MailboxRoutes = {}): Mailbox | undefined {
  const http = /^h\.(\d{1,5})\.([A-Za-z0-9_-]{16,64})$/.exec(address);
  if (http) return new HttpMailbox(`http://127.0.0.1:${http[1]}/${http[2]}`);
  const queueUrl = routes.queueUrlPrefix ? mailboxQueueUrl(routes.queueUrlPrefix, address) : undefined;
  if (queueUrl) return new SqsMailbox(queueUrl, (routes.queues ??= new QueueSender(routes.sqs)));
  return undefined;
}

/**
 * A ConnectionSender for every kind of client: WebSocket ids go to `websocket` (@connections),
 * TCP ids to the owning task's mailbox, or straight to the socket when this process owns it.
 */
export class ClientConnectionSender implements ConnectionSender {
  private readonly mailboxes = new Map<string, Mailbox | undefined>();

  constructor(
    private readonly websocket: ConnectionSender | undefined,
    /** This process's own TCP sessions, when it has a listener. */
    private readonly own?: { address: string; mailbox: Mailbox },
    private readonly routes: MailboxRoutes = {},
  ) {}

  private mailbox(connectionId: string): Mailbox | undefined {
    const address = mailboxOf(connectionId);
    if (address === undefined) return undefined;
    if (address === this.own?.address) return this.own.mailbox;
    if (!this.mailboxes.has(address)) this.mailboxes.set(address, mailboxAt(address, this.routes));
    return this.mailboxes.get(address);
  }

  send(connectionId: string, frame: string, hint?: SendHint): Promise<boolean> {
    if (!isTcpConnection(connectionId)) {
      if (!this.websocket) throw new Error('no @connections endpoint: cannot post to a WebSocket client');
      return this.websocket.send(connectionId, frame, hint);
    }
    const mailbox = this.mailbox(connectionId);
    if (!mailbox) {
      // Not an address this build knows: the connection cannot be reached, as if it were gone.
      log.warn('unknown TCP mailbox', { connectionId });
      return Promise.resolve(false);
    }
    return mailbox.post(connectionId, frame);
  }

  async close(connectionId: string): Promise<void> {
    if (!isTcpConnection(connectionId)) return this.websocket?.close(connectionId);
    await this.mailbox(connectionId)?.close(connectionId);
  }
}
