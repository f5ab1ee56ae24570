/**
 * The local gateway's public types: the events and handlers it passes to Lambda code, its options
 * and the Gateway it returns. Type-only, so every other gateway file can use them without an import
 * cycle; local/gateway.ts re-exports them for the stack and the tests.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type {
  APIGatewayProxyResultV2,
  APIGatewayProxyWebsocketEventV2,
  Callback,
  Context,
  SQSBatchResponse,
  SQSEvent,
} from 'aws-lambda';
import type { StreamEventType } from '../../shared/transport/events.ts';

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
  /**
   * Where the stream handler queues background jobs (XMPP_JOB_ENDPOINT, shared/transport/jobs.ts):
   * loopback, with a random token in the path. In the cloud this is an SQS FIFO queue.
   */
  jobEndpoint: string;
}
