/**
 * The local gateway: what API Gateway (WebSocket API) + the SQS FIFO stream queue + Lambda's SQS
 * event source mapping do in the cloud, in one process, so the SAME handler code runs locally.
 *
 *   client ──ws──▶ handshake ──▶ connect handler ($connect, decides status and Sec-WebSocket-Protocol)
 *   frames ──▶ per-connection FIFO (MessageGroupId = connectionId) ──▶ stream handler (SQS event)
 *   close  ──▶ DISCONNECT record queued after that connection's frames
 *   handler code ──▶ @connections HTTP API on 127.0.0.1 (POST/GET/DELETE) ──▶ socket
 *
 * Behaviour mirrored from API Gateway (see docs/local-stack.md for the full list):
 * - messages over 128 KiB close the socket with 1009; binary frames close it with 1003;
 * - idle timeout (default 600 s) and maximum lifetime (default 7200 s) close with 1001;
 * - client frames and @connections posts both count as activity for the idle timeout (ping/pong
 *   control frames do not);
 * - @connections answers 410 GoneException for unknown or closed connections, 413
 *   PayloadTooLargeException for posts over 128 KiB.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type {
  APIGatewayProxyResultV2,
  APIGatewayProxyWebsocketEventV2,
  Callback,
  Context,
  SQSBatchResponse,
  SQSEvent,
} from 'aws-lambda';
import type { StreamEventType } from '../shared/transport/events.ts';
import { LocalStackError } from './errors.ts';
import { LOCAL_QUEUE_ARN, LOCAL_REGION, newQueuedMessage, toSqsRecord, type QueuedMessage } from './sqs-event.ts';

// ---------------------------------------------------------------------------------------------------
// Types

/** The `$connect` event as API Gateway sends it to a Lambda proxy integration. */
export type ConnectEvent = APIGatewayProxyWebsocketEventV2 & {
  headers: Record<string, string>;
  multiValueHeaders: Record<string, string[]>;
  requestContext: APIGatewayProxyWebsocketEventV2['requestContext'] & {
    identity: { sourceIp: string; userAgent?: string };
  };
};

export type ConnectResult = APIGatewayProxyResultV2 | void | undefined | null;

/** A `$connect` Lambda handler (async, or callback style). */
export type ConnectHandler = (
  event: ConnectEvent,
  context: Context,
  callback: Callback<ConnectResult>,
) => void | ConnectResult | Promise<ConnectResult>;

/** The stream Lambda handler (SQS event source with ReportBatchItemFailures). */
export type StreamHandler = (
  event: SQSEvent,
  context: Context,
  callback: Callback<SQSBatchResponse | void>,
) => void | Promise<SQSBatchResponse | void | undefined>;

export interface GatewayLogger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface DeadLetter {
  connectionId: string;
  messageId: string;
  eventType: StreamEventType;
  body: string;
  receiveCount: number;
}

/** One answered call of the @connections management API. */
export interface ConnectionsRequest {
  method: string;
  connectionId: string;
  /** HTTP status sent back: 200 posted, 204 deleted, 410 gone, 413 too large, … */
  status: number;
  /** Payload bytes of a POST (0 for other methods or a refused body). */
  bytes: number;
  /** From the request's arrival to the end of the answer. */
  durationMs: number;
}

export interface GatewayOptions {
  /** The stream Lambda handler (lambdas/stream.ts `handler`). */
  streamHandler: StreamHandler;
  /** The `$connect` Lambda handler (lambdas/connect.ts `handler`); default: `defaultConnectHandler`. */
  connectHandler?: ConnectHandler;
  /** Answers plain HTTP requests on the WebSocket port (e.g. the web client at `/`); default 404. */
  httpHandler?: (req: IncomingMessage, res: ServerResponse) => void;
  /** Listen address of the WebSocket server. Default XMPP_BIND or 127.0.0.1. */
  bind?: string;
  /** WebSocket port; 0 = ephemeral. Default XMPP_WS_PORT or 5280. */
  port?: number;
  /** WebSocket path. Default /xmpp-websocket. */
  path?: string;
  /** Port of the @connections API, always on 127.0.0.1; 0 (default) = ephemeral. */
  connectionsPort?: number;
  /** Idle timeout in seconds (fractions allowed). Default XMPP_IDLE_SECONDS or 600. */
  idleSeconds?: number;
  /** Maximum connection lifetime in seconds. Default XMPP_MAX_LIFETIME_SECONDS or 7200. */
  maxLifetimeSeconds?: number;
  /** Largest message, both directions. Default 131072 (API Gateway's 128 KiB). */
  maxPayloadBytes?: number;
  /** Records per stream invocation (SQS FIFO event source maximum: 10). Default 10. */
  batchSize?: number;
  /** Deliveries of one record before it is dead-lettered. Default 5. */
  maxReceiveCount?: number;
  /** Delay before a failed record is delivered again (the visibility timeout). Default 500 ms. */
  redeliveryDelayMs?: number;
  /** Lambda timeout for both handlers; a timed-out invocation counts as failed. Default 60 s. */
  handlerTimeoutMs?: number;
  /** On close(): how long to wait for queued records (DISCONNECT events) to be handled. Default 10 s. */
  drainTimeoutMs?: number;
  /** Called for each record given up after maxReceiveCount deliveries (besides the log line). */
  onDeadLetter?: (record: DeadLetter) => void;
  /**
   * Fault injection (tests; XMPP_FAULTS in the local stack): a fraction of @connections posts is
   * answered 410 with the connection closed (1001, as API Gateway drops one), and a fraction
   * is never answered, so the sender's request times out (nothing is delivered).
   */
  faults?: { gone: number; timeout: number };
  /** Called with each client frame the gateway accepted (queued for the stream handler): tests count what was sent. */
  onFrame?: (connectionId: string, body: string) => void;
  /**
   * Called when a post is delivered that its sender cannot know was delivered: the sender had
   * already given up on it (its socket closed before the answer), or the AWS SDK sends it again
   * after an attempt that was delivered (same `amz-sdk-invocation-id`). Either way the sender
   * posts it again and the client gets it twice; API Gateway cannot tell these apart either.
   * Tests use it to tell such copies from the server's own doubles.
   */
  onLateDelivery?: (connectionId: string, body: string) => void;
  /** Called once each @connections API call has been answered (e.g. the benchmark counts posts). */
  onConnectionsRequest?: (request: ConnectionsRequest) => void;
  logger?: GatewayLogger;
  /** Values that appear in events. */
  stage?: string;
  apiId?: string;
  queueArn?: string;
  region?: string;
}

export interface Gateway {
  /** e.g. ws://127.0.0.1:5280/xmpp-websocket */
  wsUrl: string;
  /** e.g. http://127.0.0.1:41234 — give it to the ApiGatewayManagementApiClient as `endpoint`. */
  connectionsEndpoint: string;
  /** The port the WebSocket server listens on. */
  port: number;
  /** Closes every socket (1001), waits for their DISCONNECT records to be handled, stops listening. */
  close(): Promise<void>;
  /** Ids of the currently open connections. */
  connectionIds(): string[];
  /** Resolves when no queued record is left or being handled (tests: everything accepted was processed). */
  idle(): Promise<void>;
  /**
   * Where the stream handler schedules delayed events (XMPP_TIMER_ENDPOINT, shared/transport/timers.ts):
   * loopback, with a random token in the path. In the cloud this is an SQS queue with per-message delay.
   */
  timerEndpoint: string;
}

// ---------------------------------------------------------------------------------------------------
// Helpers

export const WS_PATH = '/xmpp-websocket';
export const MAX_PAYLOAD_BYTES = 131072;

/** API Gateway style ids, e.g. "JC1dgf9yoAMCK-g=" (16 chars, base64url of 11 bytes, padded). */
export function newConnectionId(): string {
  return `${randomBytes(11).toString('base64url')}=`;
}

function positiveNumber(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${value}"`);
  return n;
}

/** Header names as API Gateway hands them over: `Sec-WebSocket-Protocol`, `User-Agent`, … */
export function canonicalHeaderName(name: string): string {
  return name
    .split('-')
    .map((part) => (part.toLowerCase() === 'websocket' ? 'WebSocket' : part.charAt(0).toUpperCase() + part.slice(1).toLowerCase()))
    .join('-');
}

function headerValue(headers: Record<string, unknown> | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  const value = key === undefined ? undefined : headers[key];
  return value === undefined || value === null ? undefined : String(value);
}

/**
 * What the project's connect Lambda decides, for when no connect handler is given: echo `xmpp` when
 * requested, refuse (400) when protocols are requested but not `xmpp`, accept without a protocol when
 * none is requested.
 */
export const defaultConnectHandler: ConnectHandler = async (event) => {
  const requested = headerValue(event.headers, 'Sec-WebSocket-Protocol');
  if (!requested) return { statusCode: 200 };
  const protocols = requested.split(',').map((p) => p.trim());
  if (protocols.includes('xmpp')) return { statusCode: 200, headers: { 'Sec-WebSocket-Protocol': 'xmpp' } };
  return { statusCode: 400, body: 'The WebSocket subprotocol "xmpp" is required (RFC 7395)' };
};

function lambdaContext(functionName: string, timeoutMs: number): Context {
  const start = Date.now();
  const awsRequestId = randomUUID();
  const noop = () => {};
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${LOCAL_REGION}:000000000000:function:${functionName}`,
    memoryLimitInMB: '1024',
    awsRequestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `local/[$LATEST]${awsRequestId.replace(/-/g, '')}`,
    getRemainingTimeInMillis: () => Math.max(0, start + timeoutMs - Date.now()),
    done: noop,
    fail: noop,
    succeed: noop,
  };
}

/**
 * Calls a Lambda handler the way the Node.js runtime does: an async handler's promise, or a
 * callback-style handler's callback, whichever settles first.
 */
export function callHandler<E, R>(
  handler: (event: E, context: Context, callback: Callback<R>) => unknown,
  event: E,
  context: Context,
): Promise<R | undefined> {
  return new Promise<R | undefined>((resolve, reject) => {
    let settled = false;
    const finish = (err: unknown, result?: R) => {
      if (settled) return;
      settled = true;
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(result);
    };
    try {
      const returned = handler(event, context, (err, result) => finish(err, result));
      if (returned && typeof (returned as Promise<R>).then === 'function') {
        (returned as Promise<R>).then(
          (result) => finish(undefined, result),
          (err) => finish(err ?? new Error('handler rejected')),
        );
      } else if (handler.length < 3) {
        finish(undefined, returned as R);
      }
    } catch (err) {
      finish(err);
    }
  });
}

/** callHandler with a fresh Lambda context and the function's timeout (a timeout is a failure). */
function invokeLambda<E, R>(
  handler: (event: E, context: Context, callback: Callback<R>) => unknown,
  event: E,
  functionName: string,
  timeoutMs: number,
): Promise<R | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${functionName}: Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds`)),
      timeoutMs,
    );
  });
  return Promise.race([callHandler(handler, event, lambdaContext(functionName, timeoutMs)), timeout]).finally(() =>
    clearTimeout(timer),
  );
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/** API Gateway's $context.requestTime format: "11/Mar/2020:00:14:16 +0000". */
function requestTimeString(epochMs: number): string {
  const d = new Date(epochMs);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '' ) return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

function rejectHandshake(socket: Duplex, status: number, body = '', headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const payload = Buffer.from(body, 'utf8');
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`, 'Connection: close'];
  for (const [name, value] of Object.entries(headers)) {
    if (/^(connection|content-length|upgrade|sec-websocket-accept)$/i.test(name)) continue;
    lines.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
  }
  if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    lines.push('Content-Type: text/plain; charset=utf-8');
  }
  lines.push(`Content-Length: ${payload.length}`);
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]));
  socket.once('finish', () => socket.destroy());
}

const defaultLogger: GatewayLogger = {
  info: (m) => {
    if (process.env.XMPP_LOG_LEVEL === 'debug') console.log(`[gateway] ${m}`);
  },
  warn: (m) => console.warn(`[gateway] ${m}`),
  error: (m) => console.error(`[gateway] ${m}`),
};

function listen(server: Server, port: number, host: string, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.removeListener('listening', onListening);
      if (err.code === 'EADDRINUSE') {
        reject(new LocalStackError('PORT_IN_USE', `${what}: port ${port} on ${host} is already in use. Stop the other process or choose another port.`));
      } else if (err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') {
        reject(new LocalStackError('BIND_FAILED', `${what}: cannot listen on ${host}:${port} (${err.code}).`));
      } else {
        reject(err);
      }
    };
    const onListening = () => {
      server.removeListener('error', onError);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ port, host });
  });
}

// ---------------------------------------------------------------------------------------------------
// The gateway

interface LiveConnection {
  id: string;
  socket: WebSocket;
  connectedAt: number;
  lastActiveAt: number;
  sourceIp: string;
  userAgent: string;
  idleTimer?: NodeJS.Timeout;
  lifetimeTimer?: NodeJS.Timeout;
  /** Set once the gateway decided to drop the socket (binary frame): ignore what follows. */
  rejecting: boolean;
}

/** One FIFO message group: every record of one connection, delivered strictly in order. */
interface MessageGroup {
  connectionId: string;
  messages: QueuedMessage[];
  running: boolean;
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const env = process.env;
  const bind = options.bind ?? (env.XMPP_BIND || '127.0.0.1');
  const port = options.port ?? positiveNumber(env.XMPP_WS_PORT, 'XMPP_WS_PORT') ?? 5280;
  const path = options.path ?? WS_PATH;
  const idleMs = 1000 * (options.idleSeconds ?? positiveNumber(env.XMPP_IDLE_SECONDS, 'XMPP_IDLE_SECONDS') ?? 600);
  const lifetimeMs =
    1000 * (options.maxLifetimeSeconds ?? positiveNumber(env.XMPP_MAX_LIFETIME_SECONDS, 'XMPP_MAX_LIFETIME_SECONDS') ?? 7200);
  const maxPayload = options.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
  const batchSize = Math.min(10, Math.max(1, options.batchSize ?? 10));
  const maxReceiveCount = Math.max(1, options.maxReceiveCount ?? 5);
  const redeliveryDelayMs = options.redeliveryDelayMs ?? 500;
  const handlerTimeoutMs = options.handlerTimeoutMs ?? 60_000;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const stage = options.stage ?? 'local';
  const apiId = options.apiId ?? 'local';
  const queueArn = options.queueArn ?? LOCAL_QUEUE_ARN;
  const region = options.region ?? LOCAL_REGION;
  const log = options.logger ?? defaultLogger;
  const connectHandler = options.connectHandler ?? defaultConnectHandler;
  const streamHandler = options.streamHandler;
  for (const [name, ms] of [['idleSeconds', idleMs], ['maxLifetimeSeconds', lifetimeMs]] as const) {
    if (!(ms > 0) || ms > 2 ** 31 - 1) throw new Error(`${name} out of range`);
  }

  const live = new Map<string, LiveConnection>();
  /** Posts held unanswered by the timeout fault, ended when the gateway closes. */
  const heldPosts = new Set<ServerResponse>();
  /** SDK invocation ids of recently delivered posts (onLateDelivery), oldest first, bounded. */
  const deliveredInvocations = new Set<string>();
  const groups = new Map<string, MessageGroup>();
  const responseHeaders = new WeakMap<IncomingMessage, Record<string, string>>();
  const idleWaiters = new Set<() => void>();
  let closing = false;
  /** Set once close() has given up waiting: nothing is delivered any more. */
  let shutDown = false;

  // --- the FIFO queue and the event source mapping -------------------------------------------------

  function enqueue(connectionId: string, eventType: StreamEventType, body: string | undefined, sourceIp: string): void {
    const message = newQueuedMessage({
      connectionId,
      eventType,
      body,
      requestId: newConnectionId(),
      requestTimeEpoch: Date.now(),
      sourceIp,
    });
    let group = groups.get(connectionId);
    if (!group) {
      group = { connectionId, messages: [], running: false };
      groups.set(connectionId, group);
    }
    group.messages.push(message);
    if (!group.running) void runGroup(group);
  }

  /** Index of the first failed record, or -1 when the whole batch succeeded. */
  function firstFailure(response: unknown, batch: QueuedMessage[]): number {
    if (response === undefined || response === null) return -1;
    const failures = (response as Partial<SQSBatchResponse>).batchItemFailures;
    if (failures === undefined || failures === null) return -1;
    if (!Array.isArray(failures)) return 0; // malformed response: Lambda treats it as a complete failure
    let first = -1;
    for (const failure of failures) {
      const index = batch.findIndex((m) => m.messageId === failure?.itemIdentifier);
      if (index < 0) return 0; // unknown or empty identifier: complete failure
      if (first < 0 || index < first) first = index;
    }
    return first;
  }

  async function runGroup(group: MessageGroup): Promise<void> {
    group.running = true;
    try {
      while (group.messages.length > 0 && !shutDown) {
        const batch = group.messages.slice(0, batchSize);
        const now = Date.now();
        for (const message of batch) {
          message.receiveCount += 1;
          message.firstReceiveTimestamp ??= now;
        }
        const event: SQSEvent = { Records: batch.map((m) => toSqsRecord(m, queueArn, region)) };
        let failedFrom: number;
        try {
          const response = await invokeLambda(streamHandler, event, 'xmpp-stream', handlerTimeoutMs);
          failedFrom = firstFailure(response, batch);
        } catch (err) {
          log.error(`stream handler failed for connection ${group.connectionId}: ${(err as Error)?.stack ?? err}`);
          failedFrom = 0;
        }
        if (failedFrom < 0) {
          group.messages.splice(0, batch.length);
          continue;
        }
        // FIFO: the failed record and every later one of this group stay at the head of the queue.
        group.messages.splice(0, failedFrom);
        let dropped = 0;
        while (dropped < group.messages.length && group.messages[dropped]!.receiveCount >= maxReceiveCount) dropped++;
        for (const message of group.messages.splice(0, dropped)) {
          log.error(
            `dead-letter: connection=${message.connectionId} messageId=${message.messageId} eventType=${message.eventType} ` +
              `receiveCount=${message.receiveCount} body=${JSON.stringify(message.body.slice(0, 200))}`,
          );
          options.onDeadLetter?.({
            connectionId: message.connectionId,
            messageId: message.messageId,
            eventType: message.eventType,
            body: message.body,
            receiveCount: message.receiveCount,
          });
        }
        const retrying = batch.length - failedFrom - dropped;
        if (retrying > 0) {
          log.warn(`redelivering ${retrying} record(s) of connection ${group.connectionId} in ${redeliveryDelayMs} ms`);
          await sleep(redeliveryDelayMs);
        }
      }
    } finally {
      group.running = false;
      if (group.messages.length === 0) {
        // A group whose connection is gone is finished once its DISCONNECT has been handled.
        if (!live.has(group.connectionId)) groups.delete(group.connectionId);
        notifyIdle();
      } else if (!shutDown) {
        void runGroup(group);
      }
    }
  }

  function busy(): boolean {
    for (const group of groups.values()) if (group.running || group.messages.length > 0) return true;
    return false;
  }

  function notifyIdle(): void {
    if (busy()) return;
    for (const waiter of idleWaiters) waiter();
    idleWaiters.clear();
  }

  // --- WebSocket side ------------------------------------------------------------------------------

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload,
    perMessageDeflate: false,
    clientTracking: false,
    // The subprotocol is whatever the connect handler returned (added in 'headers' below), never
    // ws's default of "the first one requested".
    handleProtocols: () => false,
  });
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    const extra = responseHeaders.get(req);
    if (!extra) return;
    for (const [name, value] of Object.entries(extra)) {
      if (/^(connection|upgrade|sec-websocket-accept|content-length|content-type)$/i.test(name)) continue;
      headers.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
    }
  });

  const wsServer = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://local').pathname;
    if (pathname === path) {
      res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Upgrade: 'websocket' });
      res.end('Upgrade Required: this is the XMPP over WebSocket endpoint (RFC 7395)\n');
      return;
    }
    if (options.httpHandler) {
      try {
        options.httpHandler(req, res);
      } catch (err) {
        log.error(`httpHandler failed: ${(err as Error)?.stack ?? err}`);
        if (!res.headersSent) res.writeHead(500);
        res.end();
      }
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('Not Found\n');
  });

  function buildConnectEvent(req: IncomingMessage, connectionId: string, url: URL, now: number): ConnectEvent {
    const headers: Record<string, string> = {};
    const multiValueHeaders: Record<string, string[]> = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = canonicalHeaderName(req.rawHeaders[i]!);
      const value = req.rawHeaders[i + 1]!;
      (multiValueHeaders[name] ??= []).push(value);
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    const sourceIp = (req.socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
    headers['X-Forwarded-For'] ??= sourceIp;
    multiValueHeaders['X-Forwarded-For'] ??= [sourceIp];
    const query: Record<string, string> = {};
    const multiQuery: Record<string, string[]> = {};
    for (const [k, v] of url.searchParams) {
      query[k] = query[k] === undefined ? v : `${query[k]},${v}`;
      (multiQuery[k] ??= []).push(v);
    }
    const requestId = newConnectionId();
    // API Gateway sends no messageId for $connect (the type says string): leave it out.
    const requestContext = {
      routeKey: '$connect',
      eventType: 'CONNECT',
      extendedRequestId: requestId,
      requestTime: requestTimeString(now),
      messageDirection: 'IN',
      stage,
      connectedAt: now,
      requestTimeEpoch: now,
      requestId,
      domainName: headerValue(headers, 'Host') ?? '127.0.0.1',
      connectionId,
      apiId,
      identity: { sourceIp, userAgent: headerValue(headers, 'User-Agent') },
    } as ConnectEvent['requestContext'];
    const event: ConnectEvent = { headers, multiValueHeaders, requestContext, isBase64Encoded: false };
    if (Object.keys(query).length > 0) {
      event.queryStringParameters = query;
      event.multiValueQueryStringParameters = multiQuery;
    }
    return event;
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://local');
    if (closing) return rejectHandshake(socket, 503, 'Service Unavailable\n');
    if (url.pathname !== path) return rejectHandshake(socket, 404, 'Not Found\n');

    const connectionId = newConnectionId();
    const connectedAt = Date.now();
    const event = buildConnectEvent(req, connectionId, url, connectedAt);
    let result: ConnectResult;
    try {
      result = await invokeLambda(connectHandler, event, 'xmpp-connect', handlerTimeoutMs);
    } catch (err) {
      log.error(`connect handler failed: ${(err as Error)?.stack ?? err}`);
      return rejectHandshake(socket, 500, '{"message": "Internal server error"}', { 'Content-Type': 'application/json' });
    }
    let statusCode = 200;
    let headers: Record<string, string> = {};
    let body = '';
    if (result !== null && typeof result === 'object') {
      statusCode = result.statusCode ?? 200;
      for (const [k, v] of Object.entries(result.headers ?? {})) headers[k] = String(v);
      body = result.body ?? '';
    }
    if (statusCode < 200 || statusCode > 299) {
      log.info(`connection refused by the connect handler: ${statusCode}`);
      return rejectHandshake(socket, statusCode, body, headers);
    }
    if (closing || socket.destroyed) return rejectHandshake(socket, 503, 'Service Unavailable\n');
    responseHeaders.set(req, headers);
    wss.handleUpgrade(req, socket, head, (ws) => onOpen(ws, connectionId, connectedAt, event));
  }

  function onOpen(ws: WebSocket, connectionId: string, connectedAt: number, event: ConnectEvent): void {
    const connection: LiveConnection = {
      id: connectionId,
      socket: ws,
      connectedAt,
      lastActiveAt: connectedAt,
      sourceIp: event.requestContext.identity.sourceIp,
      userAgent: event.requestContext.identity.userAgent ?? '',
      rejecting: false,
    };
    live.set(connectionId, connection);
    log.info(`connect ${connectionId}`);

    const goAway = (code: number, reason: string) => {
      if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    };
    const armIdle = () => {
      connection.idleTimer = setTimeout(checkIdle, Math.max(0, connection.lastActiveAt + idleMs - Date.now()));
    };
    const checkIdle = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - connection.lastActiveAt >= idleMs) {
        log.info(`idle timeout ${connectionId}`);
        goAway(1001, 'Going away');
      } else {
        armIdle();
      }
    };
    armIdle();
    connection.lifetimeTimer = setTimeout(() => {
      log.info(`maximum lifetime reached ${connectionId}`);
      goAway(1001, 'Going away');
    }, lifetimeMs);

    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (connection.rejecting) return;
      if (isBinary) {
        // API Gateway does not accept binary frames: it disconnects with 1003.
        connection.rejecting = true;
        goAway(1003, 'Binary frames are not supported');
        return;
      }
      connection.lastActiveAt = Date.now();
      const body = rawToBuffer(data).toString('utf8');
      enqueue(connectionId, 'MESSAGE', body, connection.sourceIp);
      options.onFrame?.(connectionId, body);
    });
    ws.on('error', (err) => {
      // e.g. "Max payload size exceeded": ws closes with 1009 itself.
      log.info(`socket error ${connectionId}: ${err.message}`);
    });
    ws.once('close', (code) => {
      clearTimeout(connection.idleTimer);
      clearTimeout(connection.lifetimeTimer);
      live.delete(connectionId);
      log.info(`disconnect ${connectionId} (${code})`);
      enqueue(connectionId, 'DISCONNECT', undefined, connection.sourceIp);
    });
  }

  wsServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((err) => {
      log.error(`upgrade failed: ${(err as Error)?.stack ?? err}`);
      rejectHandshake(socket, 500, 'Internal Server Error\n');
    });
  });

  // --- @connections management API -----------------------------------------------------------------

  function sendJson(res: ServerResponse, status: number, body: unknown, errorType?: string): void {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(payload),
      'x-amzn-RequestId': randomUUID(),
    };
    if (errorType) headers['x-amzn-ErrorType'] = errorType;
    res.writeHead(status, headers);
    res.end(payload);
  }

  const gone = (res: ServerResponse) => sendJson(res, 410, { message: 'Gone' }, 'GoneException');

  async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) return 'too-large';
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) tooLarge = true;
      if (!tooLarge) chunks.push(chunk);
    }
    return tooLarge ? 'too-large' : Buffer.concat(chunks);
  }

  // --- delayed events (the cloud's timer queue: a message per event, visible after its delay) --------

  const timerToken = randomBytes(16).toString('hex');
  const timerPath = `/@timers/${timerToken}`;
  const pendingTimers = new Set<NodeJS.Timeout>();

  async function handleTimerIntake(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      req.resume();
      return sendJson(res, 405, { message: 'Method Not Allowed' });
    }
    const body = await readBody(req, 64 * 1024);
    let request: { delaySeconds?: unknown; event?: unknown };
    try {
      request = body === 'too-large' ? {} : JSON.parse(body.toString('utf8'));
    } catch {
      request = {};
    }
    const delay = Number(request.delaySeconds);
    if (!(delay >= 0 && delay <= 900) || typeof request.event !== 'object' || request.event === null) {
      return sendJson(res, 400, { message: 'expected {"delaySeconds": 0..900, "event": {...}}' });
    }
    const eventBody = JSON.stringify(request.event);
    const timer = setTimeout(() => {
      pendingTimers.delete(timer);
      if (!closing) enqueue(`timer:${randomUUID()}`, 'TIMER', eventBody, '127.0.0.1');
    }, delay * 1000);
    pendingTimers.add(timer);
    sendJson(res, 200, {});
  }

  async function handleConnectionsApi(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const pathname = new URL(req.url ?? '/', 'http://local').pathname;
    if (pathname === timerPath) return handleTimerIntake(req, res);
    // The SDK appends /@connections/{id} to the endpoint's path (in the cloud: /{stage}).
    const marker = pathname.indexOf('/@connections/');
    let connectionId: string | undefined;
    if (marker >= 0) {
      const raw = pathname.slice(marker + '/@connections/'.length).replace(/\/$/, '');
      if (raw && !raw.includes('/')) {
        try {
          connectionId = decodeURIComponent(raw);
        } catch {
          connectionId = undefined;
        }
      }
    }
    if (!connectionId) {
      req.resume();
      return sendJson(res, 404, { message: 'Not Found' }, 'NotFoundException');
    }
    const connection = live.get(connectionId);
    const open = connection !== undefined && connection.socket.readyState === WebSocket.OPEN;
    let postedBytes = 0;
    const observe = options.onConnectionsRequest;
    if (observe) {
      const method = req.method ?? '';
      const id = connectionId;
      const started = performance.now();
      res.once('finish', () =>
        observe({ method, connectionId: id, status: res.statusCode, bytes: postedBytes, durationMs: performance.now() - started }),
      );
    }

    switch (req.method) {
      case 'POST': {
        const body = await readBody(req, maxPayload);
        if (body === 'too-large') {
          res.setHeader('Connection', 'close');
          return sendJson(res, 413, { message: 'Request entity too large' }, 'PayloadTooLargeException');
        }
        postedBytes = body.length;
        const target = live.get(connectionId);
        if (!target || target.socket.readyState !== WebSocket.OPEN) return gone(res);
        if (options.faults && Math.random() < options.faults.gone) {
          // The connection goes away as API Gateway drops one (idle, 2 h cut): a close frame after
          // what was already sent, so only this post is lost to the client, and it is answered 410.
          log.info(`fault: post to ${connectionId} answered 410, connection closed`);
          target.socket.close(1001, 'Going away');
          return gone(res);
        }
        if (options.faults && Math.random() < options.faults.timeout) {
          log.info(`fault: post to ${connectionId} left unanswered`);
          heldPosts.add(res);
          res.once('close', () => heldPosts.delete(res));
          return;
        }
        target.lastActiveAt = Date.now();
        const invocation = req.headers['amz-sdk-invocation-id'];
        let late = false;
        if (typeof invocation === 'string') {
          late = deliveredInvocations.has(invocation);
          deliveredInvocations.add(invocation);
          if (deliveredInvocations.size > 10_000) deliveredInvocations.delete(deliveredInvocations.values().next().value!);
        }
        await new Promise<void>((resolve) => {
          target.socket.send(body, { binary: false }, (err) => {
            if (!err && (late || req.socket.destroyed)) {
              log.warn(`post to ${connectionId} delivered after its sender gave up on it (it will come again)`);
              options.onLateDelivery?.(connectionId, body.toString('utf8'));
            }
            if (err) gone(res);
            else sendJson(res, 200, undefined);
            resolve();
          });
        });
        return;
      }
      case 'GET': {
        req.resume();
        if (!open) return gone(res);
        return sendJson(res, 200, {
          connectedAt: new Date(connection.connectedAt).toISOString(),
          identity: { sourceIp: connection.sourceIp, userAgent: connection.userAgent },
          lastActiveAt: new Date(connection.lastActiveAt).toISOString(),
        });
      }
      case 'DELETE': {
        req.resume();
        if (!open) return gone(res);
        connection.socket.close(1000, '');
        res.writeHead(204, { 'x-amzn-RequestId': randomUUID() });
        res.end();
        return;
      }
      default:
        req.resume();
        return sendJson(res, 405, { message: 'Method Not Allowed' });
    }
  }

  const connectionsServer = createServer((req, res) => {
    handleConnectionsApi(req, res).catch((err) => {
      log.error(`@connections request failed: ${(err as Error)?.stack ?? err}`);
      if (!res.headersSent) sendJson(res, 500, { message: 'Internal server error' });
      else res.end();
    });
  });

  // --- start ----------------------------------------------------------------------------------------

  const connectionsPort = await listen(connectionsServer, options.connectionsPort ?? 0, '127.0.0.1', '@connections API');
  let wsPort: number;
  try {
    wsPort = await listen(wsServer, port, bind, 'WebSocket (XMPP_WS_PORT)');
  } catch (err) {
    await new Promise((r) => connectionsServer.close(r));
    throw err;
  }

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing = true;
    const stopListening = new Promise<void>((r) => wsServer.close(() => r()));
    // Close every socket like API Gateway does when it goes away; DISCONNECT records follow.
    const sockets = [...live.values()].map((c) => c.socket);
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) return resolve();
            ws.once('close', () => resolve());
            ws.close(1001, 'Going away');
            setTimeout(() => ws.terminate(), 2000).unref();
          }),
      ),
    );
    wsServer.closeAllConnections();
    await stopListening;
    // Let the stream handler see every queued record (it may still post to @connections).
    if (busy()) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => idleWaiters.add(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, drainTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      const left = [...groups.values()].reduce((n, g) => n + g.messages.length, 0);
      if (left > 0) log.warn(`shutting down with ${left} undelivered record(s)`);
    }
    shutDown = true;
    for (const timer of pendingTimers) clearTimeout(timer);
    pendingTimers.clear();
    for (const res of heldPosts) res.destroy();
    await new Promise<void>((r) => {
      connectionsServer.close(() => r());
      connectionsServer.closeAllConnections();
    });
  }

  return {
    wsUrl: `ws://${hostForUrl(bind)}:${wsPort}${path}`,
    connectionsEndpoint: `http://127.0.0.1:${connectionsPort}`,
    port: wsPort,
    close: () => (closed ??= close()),
    connectionIds: () => [...live.keys()],
    timerEndpoint: `http://127.0.0.1:${connectionsPort}${timerPath}`,
    idle: () => (busy() ? new Promise<void>((resolve) => idleWaiters.add(resolve)) : Promise.resolve()),
  };
}
