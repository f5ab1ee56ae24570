/**
 * A DynamoDB document client for the stream handler's hot path, without the AWS SDK's per-request
 * middleware stack: one SigV4-signed HTTPS request per call (signed by `aws4`), attribute values
 * converted by the SDK's own `@aws-sdk/util-dynamodb`, a keep-alive agent, and the SDK's standard
 * retry rules (throttling and 5xx answers, reset sockets; exponential backoff with full jitter).
 *
 * Why not the SDK here: a GetItem costs 0.72 ms of CPU through the document client and 0.19 ms as
 * one signed request (bench/request-cpu.ts), and a 1:1 message makes four (docs/performance.md).
 * It takes the same command objects as the SDK's document client (`new GetCommand({...})` from
 * @aws-sdk/lib-dynamodb), so the stores do not know which one they use, and answers and errors
 * have the SDK's shapes (`name`, `$metadata.httpStatusCode`, a failed condition's `Item` left
 * marshalled, as the SDK leaves it). Only the commands the stores use are known: any other
 * command is refused, never sent half-understood.
 *
 * It needs credentials in the environment (what Lambda gives a function, and what the local stack
 * sets); elsewhere (the Fargate service, whose credentials come from the container's endpoint) the
 * SDK's client is used (dynamo-store.ts decides).
 */
import http from 'node:http';
import https from 'node:https';
import aws4 from 'aws4';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { BatchGetCommand, BatchWriteCommand, DeleteCommand, GetCommand, PutCommand, QueryCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DynamoCall, DynamoCallHook } from './dynamo-hooks.ts';

type Doc = Record<string, any>;
type Wire = Record<string, any>;

export interface LeanDynamoOptions {
  /** e.g. http://localhost:8000; default https://dynamodb.<region>.amazonaws.com (.com.cn in China) */
  endpoint?: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Attempts per call, the first included (the SDK's option of the same name). */
  maxAttempts: number;
}

/** Credentials and region from the environment, or undefined when they are not all there. */
export function leanOptionsFromEnv(endpoint: string | undefined, maxAttempts: number, env: NodeJS.ProcessEnv = process.env): LeanDynamoOptions | undefined {
  const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!region || !accessKeyId || !secretAccessKey) return undefined;
  return { endpoint, region, credentials: { accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN || undefined }, maxAttempts };
}

// --- the commands and their attribute values ---------------------------------------------------

const toWire = (item: Doc | undefined) => (item === undefined ? undefined : marshall(item, { removeUndefinedValues: true }));
const fromWire = (item: Wire | undefined) => (item === undefined ? undefined : unmarshall(item));

interface Operation {
  /** The SDK's command name (what hooks and the frame gate see). */
  name: string;
  /** The DynamoDB API action. */
  action: string;
  request(input: Doc): Wire;
  response(output: Wire): Doc;
}

/** Key, Item and expression values, the attribute-value fields of the single-item and paged calls. */
const itemRequest = (input: Doc): Wire => ({
  ...input,
  Key: toWire(input.Key),
  Item: toWire(input.Item),
  ExclusiveStartKey: toWire(input.ExclusiveStartKey),
  ExpressionAttributeValues: toWire(input.ExpressionAttributeValues),
});
const itemResponse = (out: Wire): Doc => ({
  ...out,
  Item: fromWire(out.Item),
  Attributes: fromWire(out.Attributes),
  Items: out.Items?.map((i: Wire) => unmarshall(i)),
  LastEvaluatedKey: fromWire(out.LastEvaluatedKey),
});
const perTable = <T>(tables: Record<string, T> | undefined, f: (t: T) => unknown) =>
  tables && Object.fromEntries(Object.entries(tables).map(([table, v]) => [table, f(v)]));
const writeRequests = (requests: Doc[], convert: (i: any) => any) =>
  requests.map((r) => (r.PutRequest ? { PutRequest: { Item: convert(r.PutRequest.Item) } } : { DeleteRequest: { Key: convert(r.DeleteRequest.Key) } }));
const keysAndAttributes = (k: Doc, convert: (i: any) => any) => ({ ...k, Keys: k.Keys.map(convert) });

const single = (name: string, action: string): Operation => ({ name, action, request: itemRequest, response: itemResponse });

/** By the document client's command class: the commands the stores send. */
const OPERATIONS = new Map<Function, Operation>([
  [GetCommand, single('GetItemCommand', 'GetItem')],
  [PutCommand, single('PutItemCommand', 'PutItem')],
  [UpdateCommand, single('UpdateItemCommand', 'UpdateItem')],
  [DeleteCommand, single('DeleteItemCommand', 'DeleteItem')],
  [QueryCommand, single('QueryCommand', 'Query')],
  [ScanCommand, single('ScanCommand', 'Scan')],
  [
    BatchGetCommand,
    {
      name: 'BatchGetItemCommand',
      action: 'BatchGetItem',
      request: (input) => ({ ...input, RequestItems: perTable(input.RequestItems, (k: Doc) => keysAndAttributes(k, toWire)) }),
      response: (out) => ({
        ...out,
        Responses: perTable(out.Responses, (items: Wire[]) => items.map((i) => unmarshall(i))),
        UnprocessedKeys: perTable(out.UnprocessedKeys, (k: Wire) => keysAndAttributes(k, fromWire)),
      }),
    },
  ],
  [
    BatchWriteCommand,
    {
      name: 'BatchWriteItemCommand',
      action: 'BatchWriteItem',
      request: (input) => ({ ...input, RequestItems: perTable(input.RequestItems, (r: Doc[]) => writeRequests(r, toWire)) }),
      response: (out) => ({ ...out, UnprocessedItems: perTable(out.UnprocessedItems, (r: Wire[]) => writeRequests(r, fromWire)) }),
    },
  ],
]);

// --- errors and retries (the SDK's standard retry strategy) ------------------------------------

/** Error names the SDK retries as throttling (@smithy/service-error-classification). */
const THROTTLING = new Set([
  'BandwidthLimitExceeded', 'EC2ThrottledException', 'LimitExceededException', 'PriorRequestNotComplete',
  'ProvisionedThroughputExceededException', 'RequestLimitExceeded', 'RequestThrottled', 'RequestThrottledException',
  'SlowDown', 'ThrottledException', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'TransactionInProgressException',
]);
const TRANSIENT_STATUS = new Set([500, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT']);
const BASE_DELAY_MS = 100;
const THROTTLING_BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 20_000;

type ServiceError = Error & { $fault?: 'client' | 'server'; $metadata?: { httpStatusCode?: number; attempts?: number }; code?: string };

function serviceError(status: number, body: Wire): ServiceError {
  const { __type, message, Message, ...rest } = body;
  const name = String(__type ?? `HTTP${status}`).split('#').pop()!;
  return Object.assign(new Error(String(message ?? Message ?? name)), rest, {
    name,
    $fault: status >= 500 ? ('server' as const) : ('client' as const),
    $metadata: { httpStatusCode: status },
  });
}

/** The backoff before the next attempt, or undefined when the error is not retried. */
function retryDelay(err: ServiceError, attempt: number): number | undefined {
  const throttled = THROTTLING.has(err.name);
  const transient = TRANSIENT_STATUS.has(err.$metadata?.httpStatusCode ?? 0) || TRANSIENT_CODES.has(err.code ?? '') || err.name === 'TimeoutError';
  if (!throttled && !transient) return undefined;
  return Math.floor(Math.min(MAX_DELAY_MS, Math.random() * 2 ** attempt * (throttled ? THROTTLING_BASE_DELAY_MS : BASE_DELAY_MS)));
}

// --- the client ---------------------------------------------------------------------------------

export class LeanDynamoClient {
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly request: typeof http.request;
  /** Around a whole call, retries included (outermost first). */
  readonly callHooks: DynamoCallHook[] = [];
  /** Around each HTTP attempt (outermost first): where a throttle answer would come from. */
  readonly attemptHooks: DynamoCallHook[] = [];

  constructor(private readonly options: LeanDynamoOptions) {
    // China's regions are a partition of their own, with their own domain.
    this.url = new URL(options.endpoint ?? `https://dynamodb.${options.region}.amazonaws.com${options.region.startsWith('cn-') ? '.cn' : ''}`);
    const secure = this.url.protocol === 'https:';
    this.agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 256 }) : new http.Agent({ keepAlive: true, maxSockets: 256 });
    this.request = secure ? https.request : http.request;
  }

  /** The document client's `send`, for the commands in OPERATIONS. */
  send<T = any>(command: { input: object }): Promise<T> {
    const operation = OPERATIONS.get(command.constructor);
    if (!operation) return Promise.reject(new Error(`LeanDynamoClient: ${command.constructor.name} is not supported`));
    const call: DynamoCall = { name: operation.name, input: command.input as Doc };
    return withHooks(this.callHooks, call, () => this.withRetries(operation, call)) as Promise<T>;
  }

  destroy(): void {
    this.agent.destroy();
  }

  private async withRetries(operation: Operation, call: DynamoCall): Promise<Doc> {
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await withHooks(this.attemptHooks, call, async () => operation.response(await this.post(operation.action, operation.request(call.input))));
        return Object.assign(out, { $metadata: { httpStatusCode: 200, attempts: attempt } });
      } catch (caught) {
        const err = caught as ServiceError;
        const delay = attempt < this.options.maxAttempts ? retryDelay(err, attempt) : undefined;
        if (delay === undefined) {
          err.$metadata = { ...err.$metadata, attempts: attempt };
          throw err;
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private post(action: string, payload: Wire): Promise<Wire> {
    const body = JSON.stringify(payload);
    const headers = signedHeaders(this.url, this.options, action, body);
    return new Promise((resolve, reject) => {
      const req = this.request(
        { protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method: 'POST', path: '/', headers, agent: this.agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            let parsed: Wire;
            try {
              parsed = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Wire) : {};
            } catch {
              return reject(serviceError(status >= 400 ? status : 502, { __type: 'InvalidResponse', message: `DynamoDB answered HTTP ${status} with a body that is not JSON` }));
            }
            if (status >= 300) reject(serviceError(status, parsed));
            else resolve(parsed);
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}

/**
 * The headers of a DynamoDB request, SigV4-signed by aws4 (test/unit/lean-dynamodb.test.ts checks
 * the signature against the SDK's own signer). `date`: for that test; the clock otherwise.
 */
export function signedHeaders(url: URL, options: Pick<LeanDynamoOptions, 'region' | 'credentials'>, action: string, body: string, date?: Date): http.OutgoingHttpHeaders {
  const headers: Record<string, string | number> = { 'Content-Type': 'application/x-amz-json-1.0', 'X-Amz-Target': `DynamoDB_20120810.${action}`, 'Content-Length': Buffer.byteLength(body) };
  if (date) headers['X-Amz-Date'] = date.toISOString().replace(/[:-]|\.\d{3}/g, '');
  const signed = aws4.sign({ host: url.host, path: '/', method: 'POST', service: 'dynamodb', region: options.region, headers, body }, options.credentials);
  return signed.headers as http.OutgoingHttpHeaders;
}

function withHooks(hooks: readonly DynamoCallHook[], call: DynamoCall, last: () => Promise<Doc>): Promise<Doc> {
  const run = (i: number): Promise<Doc> => (i === hooks.length ? last() : hooks[i]!(call, () => run(i + 1)));
  return run(0);
}
