/**
 * The gateway's settings: its options resolved against the environment (XMPP_BIND, XMPP_WS_PORT,
 * XMPP_IDLE_SECONDS, XMPP_MAX_LIFETIME_SECONDS) and the API Gateway / SQS / Lambda defaults, checked
 * once at start so the other pieces read plain values.
 */
import { LOCAL_QUEUE_ARN, LOCAL_REGION } from '../sqs-event.ts';
import { defaultConnectHandler } from './connect-event.ts';
import type { ConnectHandler, GatewayLogger, GatewayOptions, StreamHandler } from './types.ts';

export const WS_PATH = '/xmpp-websocket';
export const MAX_PAYLOAD_BYTES = 131072;

function positiveNumber(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${value}"`);
  return n;
}

const defaultLogger: GatewayLogger = {
  info: (m) => {
    if (process.env.XMPP_LOG_LEVEL === 'debug') console.log(`[gateway] ${m}`);
  },
  warn: (m) => console.warn(`[gateway] ${m}`),
  error: (m) => console.error(`[gateway] ${m}`),
};

export interface GatewayConfig {
  /** The options as given (callbacks, httpHandler, faults, connectionsPort). */
  options: GatewayOptions;
  bind: string;
  port: number;
  path: string;
  idleMs: number;
  lifetimeMs: number;
  maxPayload: number;
  batchSize: number;
  maxReceiveCount: number;
  redeliveryDelayMs: number;
  handlerTimeoutMs: number;
  drainTimeoutMs: number;
  stage: string;
  apiId: string;
  queueArn: string;
  region: string;
  log: GatewayLogger;
  connectHandler: ConnectHandler;
  streamHandler: StreamHandler;
}

export function resolveConfig(options: GatewayOptions): GatewayConfig {
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
  return {
    options,
    bind,
    port,
    path,
    idleMs,
    lifetimeMs,
    maxPayload,
    batchSize,
    maxReceiveCount,
    redeliveryDelayMs,
    handlerTimeoutMs,
    drainTimeoutMs,
    stage,
    apiId,
    queueArn,
    region,
    log,
    connectHandler,
    streamHandler,
  };
}
