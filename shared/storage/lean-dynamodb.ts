/**
 * A DynamoDB document client for the stream handler's hot path, without the AWS SDK's per-request
 * middleware stack: one SigV4-signed HTTPS request per call (signed by `aws4`), attribute values
 * converted by the SDK's own `@aws-sdk/util-dynamodb`, a keep-alive agent, and the SDK's standard
 * retry rules (throttling and 5xx answers, reset sockets; exponential backoff with full jitter).
 *
 * Why not the SDK here: a GetItem costs 0.72 ms of CPU through the document client and 0.19 ms as
 * one signed request (bench/request-cpu.ts), and a 1:1 message makes four (docs/performance.md).
 * It takes the stores' command objects (commands.ts: lib-dynamodb's names and inputs), as the
 * SDK's document client does through sdk-document-client.ts, so the stores do not know which one
 * they use, and answers and errors
 * have the SDK's shapes (`name`, `$metadata.httpStatusCode`, a failed condition's `Item` left
 * marshalled, as the SDK leaves it). Only the commands the stores use are known: any other
 * command is refused, never sent half-understood.
 *
 * It needs credentials in the environment (what Lambda gives a function, and what the local stack
 * sets); elsewhere (the Fargate service, whose credentials come from the container's endpoint) the
 * SDK's client is used (dynamo-store.ts decides).
 */
import type http from 'node:http';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { BatchGetCommand, BatchWriteCommand, DeleteCommand, GetCommand, PutCommand, QueryCommand, ScanCommand, UpdateCommand, type DocClient, type DocCommand } from './commands.ts';
import type { DynamoCall, DynamoCallHook } from './dynamo-hooks.ts';
import { awsFromEnv, serviceError, signRequest, SignedHttp, withRetries, type AwsCredentials, type SignedRequest } from '../aws/signed-http.ts';

type Doc = Record<string, any>;
type Wire = Record<string, any>;

export interface LeanDynamoOptions {
  /** e.g. http://localhost:8000; default https://dynamodb.<region>.amazonaws.com (.com.cn in China) */
  endpoint?: string;
  region: string;
  credentials: AwsCredentials;
  /** Attempts per call, the first included (the SDK's option of the same name). */
  maxAttempts: number;
}

/** Credentials and region from the environment, or undefined when they are not all there. */
export function leanOptionsFromEnv(endpoint: string | undefined, maxAttempts: number, env: NodeJS.ProcessEnv = process.env): LeanDynamoOptions | undefined {
  const aws = awsFromEnv(env);
  return aws && { endpoint, ...aws, maxAttempts };
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

// --- the client ---------------------------------------------------------------------------------

export class LeanDynamoClient implements DocClient {
  private readonly http: SignedHttp;
  /** Around a whole call, retries included (outermost first). */
  readonly callHooks: DynamoCallHook[] = [];
  /** Around each HTTP attempt (outermost first): where a throttle answer would come from. */
  readonly attemptHooks: DynamoCallHook[] = [];

  constructor(private readonly options: LeanDynamoOptions) {
    this.http = new SignedHttp({ url: dynamoUrl(options), service: 'dynamodb', region: options.region, credentials: options.credentials });
  }

  /** The document client's `send`, for the commands in OPERATIONS. */
  send<Input, Output>(command: DocCommand<Input, Output>): Promise<Output> {
    const operation = OPERATIONS.get(command.constructor);
    if (!operation) return Promise.reject(new Error(`LeanDynamoClient: ${command.constructor.name} is not supported`));
    const call: DynamoCall = { name: operation.name, input: command.input as Doc };
    return withHooks(this.callHooks, call, () =>
      withRetries(this.options.maxAttempts, () =>
        withHooks(this.attemptHooks, call, async () => Object.assign(operation.response(await this.post(operation.action, operation.request(call.input))), { $metadata: { httpStatusCode: 200 } })),
      ),
    ) as Promise<Output>;
  }

  destroy(): void {
    this.http.destroy();
  }

  private async post(action: string, payload: Wire): Promise<Wire> {
    const answer = await this.http.request(dynamoRequest(action, JSON.stringify(payload)));
    let parsed: Wire;
    try {
      parsed = answer.body.length ? (JSON.parse(answer.body.toString('utf8')) as Wire) : {};
    } catch {
      throw serviceError(answer.status >= 400 ? answer.status : 502, { __type: 'InvalidResponse', message: `DynamoDB answered HTTP ${answer.status} with a body that is not JSON` });
    }
    if (answer.status >= 300) throw serviceError(answer.status, parsed);
    return parsed;
  }
}

/** China's regions are a partition of their own, with their own domain. */
const dynamoUrl = (options: Pick<LeanDynamoOptions, 'endpoint' | 'region'>) =>
  new URL(options.endpoint ?? `https://dynamodb.${options.region}.amazonaws.com${options.region.startsWith('cn-') ? '.cn' : ''}`);

const dynamoRequest = (action: string, body: string, date?: Date): SignedRequest => ({
  method: 'POST',
  path: '/',
  headers: { 'Content-Type': 'application/x-amz-json-1.0', 'X-Amz-Target': `DynamoDB_20120810.${action}`, 'Content-Length': Buffer.byteLength(body) },
  body,
  date,
});

/**
 * The headers of a DynamoDB request, SigV4-signed (test/unit/lean-dynamodb.test.ts checks the
 * signature against the SDK's own signer). `date`: for that test; the clock otherwise.
 */
export function signedHeaders(url: URL, options: Pick<LeanDynamoOptions, 'region' | 'credentials'>, action: string, body: string, date?: Date): http.OutgoingHttpHeaders {
  return signRequest({ url, service: 'dynamodb', ...options }, dynamoRequest(action, body, date));
}

function withHooks(hooks: readonly DynamoCallHook[], call: DynamoCall, last: () => Promise<Doc>): Promise<Doc> {
  const run = (i: number): Promise<Doc> => (i === hooks.length ? last() : hooks[i]!(call, () => run(i + 1)));
  return run(0);
}
