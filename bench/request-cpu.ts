/**
 * What one DynamoDB request costs in CPU on this machine, by client: the document client the
 * repositories use, the SDK's base client with marshalled input, and a single SigV4-signed HTTP
 * request without the SDK's middleware (@smithy/signature-v4, node:http keep-alive,
 * @aws-sdk/util-dynamodb). Issue 17 asks for ≤ 1.0 ms of handler CPU per 1:1 message, which makes
 * 4 requests: this says how far each kind of client can go (docs/performance.md).
 *
 *   npx tsx bench/request-cpu.ts [N=2000]
 *
 * The third is a measuring probe, not a client for the code: no retries, no error mapping.
 */
import http from 'node:http';
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import { DynamoDBClient, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { startDynamoDbLocal } from '../local/dynamodb.ts';
import { ensureTable } from '../shared/storage/table.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const N = Number(process.argv[2] ?? 2000);
const TABLE = 'request-cpu';
const KEY = { pk: 'user#alice@localhost', sk: 'conn#abc' };
const CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

type SourceData = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: SourceData): string | Uint8Array => (typeof d === 'string' ? d : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d));

/** The hash interface SignatureV4 takes, over node:crypto. */
class NodeSha256 {
  private readonly hash: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
}

const db = await startDynamoDbLocal({ inMemory: true });
const endpoint = new URL(db.endpoint);
const client = () => new DynamoDBClient({ endpoint: db.endpoint, region: 'local', credentials: CREDENTIALS });
const base = client();
const doc = DynamoDBDocumentClient.from(client());
await ensureTable(base, TABLE);
// A connection-state-sized item (about 300 bytes).
await base.send(new PutItemCommand({ TableName: TABLE, Item: marshall({ ...KEY, state: 'x'.repeat(300) }) }));

const signer = new SignatureV4({ credentials: CREDENTIALS, region: 'local', service: 'dynamodb', sha256: NodeSha256 });
const agent = new http.Agent({ keepAlive: true });
async function signedRequest(target: string, input: object): Promise<Record<string, unknown>> {
  const body = JSON.stringify(input);
  const headers = { host: endpoint.host, 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': `DynamoDB_20120810.${target}` };
  const signed = await signer.sign({ method: 'POST', protocol: 'http:', hostname: endpoint.hostname, port: Number(endpoint.port), path: '/', headers, body });
  return new Promise((resolve, reject) => {
    const req = http.request({ host: endpoint.hostname, port: endpoint.port, method: 'POST', path: '/', headers: signed.headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const ways: Record<string, () => Promise<unknown>> = {
  'document client (lib-dynamodb), as the repositories use': () => doc.send(new GetCommand({ TableName: TABLE, Key: KEY })),
  'base client (client-dynamodb), marshalled input': () => base.send(new GetItemCommand({ TableName: TABLE, Key: marshall(KEY) })),
  'one signed HTTP request, no SDK middleware': async () => unmarshall((await signedRequest('GetItem', { TableName: TABLE, Key: marshall(KEY) })).Item as never),
};

async function cpuPerRequest(run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 300; i++) await run(); // warm: JIT, keep-alive sockets
  const before = process.cpuUsage();
  for (let i = 0; i < N; i++) await run();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / N / 1000;
}

// Three rounds, interleaved, the median kept: a shared machine's noise moves all three alike.
const results = new Map<string, number[]>();
for (let round = 0; round < 3; round++) {
  for (const [name, run] of Object.entries(ways)) results.set(name, [...(results.get(name) ?? []), await cpuPerRequest(run)]);
}
console.log(`GetItem against DynamoDB Local, ${N} requests per round, CPU of this process (client and its HTTP; DynamoDB Local is another process):`);
for (const [name, ms] of results) {
  const sorted = [...ms].sort((a, b) => a - b);
  console.log(`  ${sorted[1]!.toFixed(3)} ms  ${name}  (rounds: ${ms.map((m) => m.toFixed(3)).join(', ')})`);
}
agent.destroy();
await db.stop();
