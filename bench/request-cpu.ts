/**
 * What one DynamoDB request costs in CPU on this machine, by client: the SDK's document client, the
 * SDK's base client with marshalled input, and the lean client the stores use where credentials
 * are in the environment (shared/storage/lean-dynamodb.ts: one aws4-signed HTTP request, no
 * middleware stack). Issue 17 asks for ≤ 1.0 ms of handler CPU per 1:1 message, which makes 4
 * requests: this says how far each kind of client can go (docs/performance.md).
 *
 *   npx tsx bench/request-cpu.ts [N=2000]
 */
import { DynamoDBClient, GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { startDynamoDbLocal } from '../local/dynamodb.ts';
import { ensureTable } from '../shared/storage/table.ts';
import { LeanDynamoClient } from '../shared/storage/lean-dynamodb.ts';
import { GetCommand as StoreGetCommand } from '../shared/storage/commands.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const N = Number(process.argv[2] ?? 2000);
const TABLE = 'request-cpu';
const KEY = { pk: 'user#alice@localhost', sk: 'conn#abc' };
const CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

const db = await startDynamoDbLocal({ inMemory: true });
const client = () => new DynamoDBClient({ endpoint: db.endpoint, region: 'local', credentials: CREDENTIALS });
const base = client();
const doc = DynamoDBDocumentClient.from(client());
const lean = new LeanDynamoClient({ endpoint: db.endpoint, region: 'local', credentials: CREDENTIALS, maxAttempts: 5 });
await ensureTable(base, TABLE);
// A connection-state-sized item (about 300 bytes).
await base.send(new PutItemCommand({ TableName: TABLE, Item: marshall({ ...KEY, state: 'x'.repeat(300) }) }));

const ways: Record<string, () => Promise<unknown>> = {
  'document client (lib-dynamodb)': () => doc.send(new GetCommand({ TableName: TABLE, Key: KEY })),
  'base client (client-dynamodb), marshalled input': () => base.send(new GetItemCommand({ TableName: TABLE, Key: marshall(KEY) })),
  'lean client (shared/storage/lean-dynamodb.ts), as the stores use it': () => lean.send(new StoreGetCommand({ TableName: TABLE, Key: KEY })),
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
lean.destroy();
await db.stop();
