/**
 * The local stack under test, in a process of its own (started by bench/targets.ts with an IPC
 * channel), so its CPU time and memory are measured apart from the load generator's, like
 * Prosody's are.
 *
 * startLocalStack (in memory, ports 0) with three measuring points, none of which changes what the
 * handlers do:
 * - DynamoDB: SDK middleware on the store's client (addDynamoClientHook) counts every command,
 *   asks for ReturnConsumedCapacity=TOTAL and adds up the capacity units DynamoDB Local reports;
 * - the stream handler (lambdas/stream.ts, imported unchanged) is wrapped: invocations, records,
 *   wall time, and process.cpuUsage() around each invocation when probing one stanza at a time;
 * - the local gateway's @connections API reports each answered call (posts, 410s, deletes).
 *
 * Probe mode: the harness sends one frame at a time, labelled ('message', 'bind', …); every
 * invocation in that mode is recorded with its DynamoDB calls and posts (start and end times), so
 * the harness can tell calls per operation and how many of them were sequential round trips.
 */
import { performance } from 'node:perf_hooks';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';

process.env.XMPP_LOG_LEVEL ??= 'warn';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const { addDynamoClientHook, DynamoStore } = await import('../shared/storage/dynamo-store.ts');
const { startLocalStack } = await import('../local/stack.ts');
const { handler: connectHandler } = await import('../lambdas/connect.ts');
const { defaultModules } = await import('../shared/modules/index.ts');

export interface DynamoCount {
  calls: number;
  errors: number;
  readUnits: number;
  writeUnits: number;
  ms: number;
}

export interface Counters {
  dynamo: Record<string, DynamoCount>;
  posts: number;
  postBytes: number;
  gone: number;
  deletes: number;
  invocations: number;
  records: number;
  handlerMs: number;
  deadLetters: number;
  gatewayErrors: number;
}

export interface TimedCall {
  what: string;
  start: number;
  end: number;
}

export interface ProbeInvocation {
  label: string;
  records: number;
  cpuUs: number;
  wallMs: number;
  dynamo: (TimedCall & { readUnits: number; writeUnits: number })[];
  posts: TimedCall[];
}

export interface Snapshot {
  counters: Counters;
  cpuUs: number;
  maxRssKb: number;
  rssBytes: number;
  heapUsedBytes: number;
  now: number;
}

export type Request =
  | { id: number; cmd: 'snapshot' }
  | { id: number; cmd: 'reset' }
  | { id: number; cmd: 'rosters'; entries: [string, { jid: string; name?: string; subscription: 'both' }[]][] }
  | { id: number; cmd: 'probe'; label: string | null }
  | { id: number; cmd: 'probeResults' }
  | { id: number; cmd: 'idle'; quietMs: number; maxMs?: number }
  | { id: number; cmd: 'dynamoCeiling'; bares: string[]; ms: number }
  | { id: number; cmd: 'connectionId' }
  | { id: number; cmd: 'stop' };

const READS = new Set(['GetItem', 'Query', 'Scan', 'BatchGetItem', 'TransactGetItems']);

function emptyCounters(): Counters {
  return { dynamo: {}, posts: 0, postBytes: 0, gone: 0, deletes: 0, invocations: 0, records: 0, handlerMs: 0, deadLetters: 0, gatewayErrors: 0 };
}

let counters = emptyCounters();
let probeLabel: string | null = null;
let current: ProbeInvocation | undefined;
let probeResults: ProbeInvocation[] = [];
let inFlight = 0;
let lastActivity = performance.now();

function capacityOf(consumed: unknown): number {
  if (!consumed) return 0;
  const list = Array.isArray(consumed) ? consumed : [consumed];
  return list.reduce((sum, c) => sum + (Number((c as { CapacityUnits?: number }).CapacityUnits) || 0), 0);
}

function countDynamo(command: string, units: number, ms: number, failed: boolean): DynamoCount {
  const c = (counters.dynamo[command] ??= { calls: 0, errors: 0, readUnits: 0, writeUnits: 0, ms: 0 });
  c.calls++;
  if (failed) c.errors++;
  if (READS.has(command)) c.readUnits += units;
  else c.writeUnits += units;
  c.ms += ms;
  return c;
}

/** Counts commands and consumed capacity on every DynamoDB client a store creates from now on. */
addDynamoClientHook((client: DynamoDBClient) => {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const command = String(context.commandName ?? 'Unknown').replace(/Command$/, '');
      const input = args.input as { ReturnConsumedCapacity?: string };
      input.ReturnConsumedCapacity ??= 'TOTAL';
      const start = performance.now();
      const invocation = current;
      try {
        const out = await next(args);
        const units = capacityOf((out.output as { ConsumedCapacity?: unknown }).ConsumedCapacity);
        const end = performance.now();
        countDynamo(command, units, end - start, false);
        invocation?.dynamo.push({ what: command, start, end, readUnits: READS.has(command) ? units : 0, writeUnits: READS.has(command) ? 0 : units });
        return out;
      } catch (err) {
        // A failed conditional write still consumes write capacity (1 unit for items up to 1 KB);
        // DynamoDB reports none with the error, so count that one unit.
        const conditional = (err as Error).name === 'ConditionalCheckFailedException';
        const end = performance.now();
        countDynamo(command, conditional ? 1 : 0, end - start, true);
        invocation?.dynamo.push({ what: command, start, end, readUnits: 0, writeUnits: conditional ? 1 : 0 });
        throw err;
      }
    },
    { step: 'initialize', name: 'benchDynamoCounter', priority: 'high' },
  );
});

type StreamHandlerFn = (event: SQSEvent, context: Context) => Promise<unknown>;
let streamHandler: StreamHandlerFn | undefined;

async function measuredStreamHandler(event: SQSEvent, context: Context): Promise<unknown> {
  // Imported on first use, after startLocalStack has set the environment it reads.
  streamHandler ??= ((await import('../lambdas/stream.ts')) as { handler: StreamHandlerFn }).handler;
  inFlight++;
  counters.invocations++;
  counters.records += event.Records.length;
  const probing = probeLabel !== null;
  const invocation: ProbeInvocation | undefined = probing
    ? { label: probeLabel!, records: event.Records.length, cpuUs: 0, wallMs: 0, dynamo: [], posts: [] }
    : undefined;
  if (invocation) current = invocation;
  const cpu = process.cpuUsage();
  const start = performance.now();
  try {
    return await streamHandler(event, context);
  } finally {
    const wall = performance.now() - start;
    counters.handlerMs += wall;
    if (invocation) {
      const used = process.cpuUsage(cpu);
      invocation.cpuUs = used.user + used.system;
      invocation.wallMs = wall;
      probeResults.push(invocation);
      if (current === invocation) current = undefined;
    }
    inFlight--;
    lastActivity = performance.now();
  }
}

const stack = await startLocalStack({
  inMemory: true,
  wsPort: 0,
  tableName: process.env.BENCH_TABLE || `bench${Date.now().toString(36)}`,
  dynamoEndpoint: process.env.BENCH_DYNAMO_ENDPOINT || undefined,
  domain: process.env.BENCH_DOMAIN || 'localhost',
  registration: true,
  writeInfoFile: false,
  streamHandler: measuredStreamHandler as never,
  connectHandler: connectHandler as never,
  logger: {
    info() {},
    warn: (m) => process.stderr.write(`[gateway] ${m}\n`),
    error: (m) => {
      counters.gatewayErrors++;
      process.stderr.write(`[gateway] ${m}\n`);
    },
  },
  gateway: {
    onDeadLetter: () => {
      counters.deadLetters++;
    },
    onConnectionsRequest: (r) => {
      if (r.method === 'POST') {
        if (r.status === 200) {
          counters.posts++;
          counters.postBytes += r.bytes;
          if (current) {
            const end = performance.now();
            current.posts.push({ what: 'PostToConnection', start: end - r.durationMs, end });
          }
        } else if (r.status === 410) counters.gone++;
      } else if (r.method === 'DELETE') counters.deletes++;
    },
  },
});

// Roster items are written in batches of 25 in exactly the shape DynamoStore.putRosterItem gives
// them (docs/data-model.md: pk user#<bare>, sk roster#<jid>), what a subscription handshake leaves
// behind, much faster than thousands of subscribe/subscribed exchanges. The harness checks that
// every user's roster get returns them all.
const setupStore = new DynamoStore({ tableName: stack.tableName, endpoint: stack.dynamoEndpoint });

async function writeRosters(entries: [string, { jid: string; name?: string; subscription: 'both' }[]][]): Promise<void> {
  const items = entries.flatMap(([bare, contacts]) =>
    contacts.map((c) => ({ pk: `user#${bare}`, sk: `roster#${c.jid}`, jid: c.jid, name: c.name, groups: ['bench'], subscription: c.subscription })),
  );
  const batches: (typeof items)[] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let requests: unknown[] = batches[next++]!.map((Item) => ({ PutRequest: { Item } }));
        for (let attempt = 0; requests.length > 0; attempt++) {
          const out = await setupStore.doc.send(new BatchWriteCommand({ RequestItems: { [stack.tableName]: requests as never } }));
          requests = out.UnprocessedItems?.[stack.tableName] ?? [];
          if (requests.length) await new Promise((r) => setTimeout(r, 50 * 2 ** Math.min(attempt, 5)));
        }
      }
    }),
  );
}

/** Raw DynamoDB Local speed: the same Query the message path makes, back to back at each concurrency. */
async function dynamoCeiling(bares: string[], ms: number): Promise<{ concurrency: number; requestsPerSec: number; meanMs: number }[]> {
  const out: { concurrency: number; requestsPerSec: number; meanMs: number }[] = [];
  for (const concurrency of [1, 16]) {
    let n = 0;
    const start = performance.now();
    const end = start + ms;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          await setupStore.getUserRoute(bares[n % bares.length]!);
          n++;
        }
      }),
    );
    const took = performance.now() - start;
    out.push({ concurrency, requestsPerSec: Math.round((n / took) * 1000), meanMs: Math.round((took * concurrency * 1000) / n) / 1000 });
  }
  return out;
}

function snapshot(): Snapshot {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  return {
    counters: structuredClone(counters),
    cpuUs: cpu.user + cpu.system,
    maxRssKb: process.resourceUsage().maxRSS,
    rssBytes: mem.rss,
    heapUsedBytes: mem.heapUsed,
    now: performance.now(),
  };
}

/** Waits until no invocation has run for quietMs (at most maxMs); resolves with the time waited. */
async function waitIdle(quietMs: number, maxMs = 30_000): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < maxMs) {
    if (inFlight === 0 && performance.now() - lastActivity >= quietMs) break;
    await new Promise((r) => setTimeout(r, Math.max(2, quietMs / 4)));
  }
  return performance.now() - start;
}

async function handle(req: Request): Promise<unknown> {
  switch (req.cmd) {
    case 'snapshot':
      return snapshot();
    case 'reset':
      counters = emptyCounters();
      return snapshot();
    case 'rosters':
      await writeRosters(req.entries);
      return null;
    case 'probe':
      probeLabel = req.label;
      return null;
    case 'probeResults': {
      const out = probeResults;
      probeResults = [];
      return out;
    }
    case 'idle':
      return waitIdle(req.quietMs, req.maxMs);
    case 'dynamoCeiling':
      return dynamoCeiling(req.bares, req.ms);
    case 'connectionId':
      return stack.gateway.connectionIds()[0] ?? null;
    case 'stop':
      await stack.stop();
      setupStore.doc.destroy();
      setImmediate(() => process.exit(0));
      return null;
  }
}

process.on('message', (req: Request) => {
  handle(req).then(
    (result) => process.send!({ id: req.id, result }),
    (err) => process.send!({ id: req.id, error: (err as Error)?.stack ?? String(err) }),
  );
});
process.on('disconnect', () => {
  // The harness went away: do not linger.
  void stack.stop().finally(() => process.exit(0));
});

process.send!({
  id: 0,
  result: {
    wsUrl: stack.wsUrl,
    connectionsEndpoint: stack.connectionsEndpoint,
    dynamoEndpoint: stack.dynamoEndpoint,
    tableName: stack.tableName,
    domain: stack.domain,
    pid: process.pid,
    modules: defaultModules.map((m) => m.name),
  },
});
