/**
 * One SigV4-signed HTTP request to an AWS service, without the AWS SDK: what the stream handler's
 * lean clients (storage/lean-dynamodb.ts, transport/lean-connections.ts) share. Signed by `aws4`
 * (tests compare each client's signature with the SDK's own signer), sent on a keep-alive agent,
 * answered with the SDK's error shapes (`name`, `$fault`, `$metadata.httpStatusCode`) and judged
 * by the SDK's standard retry rules (@smithy/core's service-error-classification), so callers
 * that look at errors cannot tell which client they used.
 *
 * Why not the SDK: its middleware stack costs about 0.5 ms of CPU per request on this VM
 * (bench/request-cpu.ts), and the stream handler makes four or more per message; and leaving
 * it out of the stream bundle is most of the cold start (docs/performance.md).
 */
import http from 'node:http';
import https from 'node:https';
import aws4 from 'aws4';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Region and credentials from the environment (what Lambda gives a function), or undefined when not all there. */
export function awsFromEnv(env: NodeJS.ProcessEnv = process.env): { region: string; credentials: AwsCredentials } | undefined {
  const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!region || !accessKeyId || !secretAccessKey) return undefined;
  return { region, credentials: { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN || undefined } };
}

export type ServiceError = Error & {
  $fault?: 'client' | 'server';
  $metadata?: { httpStatusCode?: number; attempts?: number };
  code?: string;
};

/**
 * An error answer as the SDK shapes it. The name comes from the `x-amzn-errortype` header
 * (REST services such as @connections) or the body's `__type`/`code` (JSON services such as
 * DynamoDB), without the namespace or URL either may carry.
 */
export function serviceError(status: number, body: Record<string, any>, errorType?: string): ServiceError {
  const { __type, code, message, Message, ...rest } = body;
  const raw = String(errorType ?? __type ?? code ?? `HTTP${status}`);
  const name = raw.split(':')[0]!.split('#').pop()!;
  return Object.assign(new Error(String(message ?? Message ?? name)), rest, {
    name,
    $fault: status >= 500 ? ('server' as const) : ('client' as const),
    $metadata: { httpStatusCode: status },
  });
}

// The SDK's standard retry classification (@smithy/core, retry/service-error-classification).
const THROTTLING = new Set([
  'BandwidthLimitExceeded', 'EC2ThrottledException', 'LimitExceededException', 'PriorRequestNotComplete',
  'ProvisionedThroughputExceededException', 'RequestLimitExceeded', 'RequestThrottled', 'RequestThrottledException',
  'SlowDown', 'ThrottledException', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'TransactionInProgressException',
]);
const TRANSIENT_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException']);
const TRANSIENT_STATUS = new Set([500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const BASE_DELAY_MS = 100;
const THROTTLING_BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 20_000;

/** Throttled as the SDK sees it: refused, so not carried out, and safe to send again. */
export function isThrottlingError(err: ServiceError): boolean {
  return THROTTLING.has(err.name) || err.$metadata?.httpStatusCode === 429;
}

/** The backoff before attempt `attempt + 1` (exponential, full jitter), or undefined when the error is not retried. */
export function retryDelay(err: ServiceError, attempt: number): number | undefined {
  const throttled = isThrottlingError(err);
  const transient = TRANSIENT_NAMES.has(err.name) || TRANSIENT_STATUS.has(err.$metadata?.httpStatusCode ?? 0) || TRANSIENT_CODES.has(err.code ?? '');
  if (!throttled && !transient) return undefined;
  return Math.floor(Math.min(MAX_DELAY_MS, Math.random() * 2 ** attempt * (throttled ? THROTTLING_BASE_DELAY_MS : BASE_DELAY_MS)));
}

/**
 * Calls `attempt` up to `maxAttempts` times while its error is one the SDK retries, waiting the
 * SDK's backoff between; the result or the last error carries `$metadata.attempts`.
 */
export async function withRetries<T extends object>(maxAttempts: number, attempt: (n: number) => Promise<T>): Promise<T & { $metadata: { attempts: number } }> {
  for (let n = 1; ; n++) {
    try {
      const out = await attempt(n);
      return Object.assign(out, { $metadata: { ...(out as { $metadata?: object }).$metadata, attempts: n } });
    } catch (caught) {
      const err = caught as ServiceError;
      const delay = n < maxAttempts ? retryDelay(err, n) : undefined;
      if (delay === undefined) {
        err.$metadata = { ...err.$metadata, attempts: n };
        throw err;
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

export interface SignedRequest {
  method: 'GET' | 'POST' | 'DELETE';
  /** Already percent-encoded, the endpoint's own path included. */
  path: string;
  headers: Record<string, string | number>;
  body?: string | Buffer;
  /** Fixed for a test of the signature; the clock otherwise. */
  date?: Date;
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface SignedHttpOptions {
  /** The service's endpoint (scheme, host, port); its path is not used here. */
  url: URL;
  service: string;
  region: string;
  credentials: AwsCredentials;
  /**
   * Given up after this long setting up the connection, or this long without a byte on it
   * (the SDK's `connectionTimeout` and `socketTimeout`). The clock starts when the request has a
   * socket, never while it waits for one. None when undefined.
   */
  timeoutMs?: number;
}

/** The request's headers with its SigV4 signature added (X-Amz-Date, Authorization, the session token). */
export function signRequest(options: Pick<SignedHttpOptions, 'url' | 'service' | 'region' | 'credentials'>, request: SignedRequest): http.OutgoingHttpHeaders {
  const { url, service, region, credentials } = options;
  const headers = { ...request.headers };
  if (request.date) headers['X-Amz-Date'] = request.date.toISOString().replace(/[:-]|\.\d{3}/g, '');
  const signed = aws4.sign({ host: url.host, path: request.path, method: request.method, service, region, headers, body: request.body ?? '' }, credentials);
  return signed.headers as http.OutgoingHttpHeaders;
}

/** A keep-alive agent for one service endpoint, and its signed requests. */
export class SignedHttp {
  private readonly agent: http.Agent;
  private readonly send: typeof http.request;

  constructor(private readonly options: SignedHttpOptions) {
    const secure = options.url.protocol === 'https:';
    // 256 sockets: room fan-out posts 16 at a time per frame, and a batch runs up to 10 connections at once.
    this.agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 256 }) : new http.Agent({ keepAlive: true, maxSockets: 256 });
    this.send = secure ? https.request : http.request;
  }

  /**
   * Sends one attempt. Resolves with any answer the server gives (error statuses included);
   * rejects on a network error or a timeout (name `TimeoutError`, as the SDK's are). `unsigned`:
   * headers added after signing (the SDK's invocation id, which AWS does not need signed).
   */
  request(request: SignedRequest, unsigned: Record<string, string> = {}): Promise<HttpAnswer> {
    const { url, timeoutMs } = this.options;
    const headers = { ...signRequest(this.options, request), ...unsigned };
    return new Promise((resolve, reject) => {
      const req = this.send(
        { protocol: url.protocol, hostname: url.hostname, port: url.port, method: request.method, path: request.path, headers, agent: this.agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        },
      );
      req.on('error', reject);
      if (timeoutMs !== undefined) {
        const timedOut = (what: string) => {
          const err = Object.assign(new Error(`${what} within ${timeoutMs} ms`), { name: 'TimeoutError' });
          req.destroy(err);
        };
        req.on('socket', (socket) => {
          if (!socket.connecting) return;
          const timer = setTimeout(() => timedOut('Socket timed out without establishing a connection'), timeoutMs);
          socket.once('connect', () => clearTimeout(timer));
          req.once('close', () => clearTimeout(timer));
        });
        // Node starts this clock once the request has its socket: idle time on it, not queueing.
        req.setTimeout(timeoutMs, () => timedOut('Connection timed out after no activity'));
      }
      req.end(request.body);
    });
  }

  destroy(): void {
    this.agent.destroy();
  }
}
