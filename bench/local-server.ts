/**
 * The local stack under test, in a process of its own (started by bench/targets.ts with an IPC
 * channel), so its CPU time and memory are measured apart from the load generator's, like
 * Prosody's are.
 *
 * startLocalStack (in memory, ports 0) with the stream handler in yet another process
 * (bench/handler-process.ts), as a Lambda runs apart from API Gateway: this process is the local
 * gateway (API Gateway + SQS FIFO + event source stand-in) and DynamoDB Local's parent; the handler
 * process runs the unchanged lambdas/stream.ts. Measuring points, none of which changes what the
 * handlers do:
 * - DynamoDB: SDK middleware on the handler's store client (addDynamoClientHook) counts every
 *   command with the capacity units DynamoDB Local reports (ReturnConsumedCapacity=TOTAL); the
 *   handler process returns them with each invocation;
 * - handler CPU: process.cpuUsage() around each invocation in the handler process (meaningful when
 *   probing one frame at a time) and the handler process's CPU time from /proc under load;
 * - the local gateway's @connections API reports each answered call (posts, 410s, deletes).
 *
 * Probe mode: the harness sends one frame at a time, labelled ('message', 'bind', …); every
 * invocation in that mode is recorded with its DynamoDB calls and posts (start and end times), so
 * the harness can tell calls per operation and how many of them were sequential round trips.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { BatchWriteCommand } from '../shared/storage/commands.ts';
import type { InvocationReply } from './handler-process.ts';
import type { Context, SQSEvent } from 'aws-lambda';
import { rosterSk, userPk } from '../shared/storage/keys.ts';

process.env.XMPP_LOG_LEVEL ??= 'warn';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const { DynamoStore } = await import('../shared/storage/dynamo-store.ts');
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
  /** The stream handler's process (absent before the first frame). */
  handlerPid?: number;
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


function emptyCounters(): Counters {
  return { dynamo: {}, posts: 0, postBytes: 0, gone: 0, deletes: 0, invocations: 0, records: 0, handlerMs: 0, deadLetters: 0, gatewayErrors: 0 };
}

let counters = emptyCounters();
let probeLabel: string | null = null;
let current: ProbeInvocation | undefined;
let probeResults: ProbeInvocation[] = [];
let inFlight = 0;
let lastActivity = performance.now();

function countDynamo(command: string, readUnits: number, writeUnits: number, ms: number, failed: boolean): void {
  const c = (counters.dynamo[command] ??= { calls: 0, errors: 0, readUnits: 0, writeUnits: 0, ms: 0 });
  c.calls++;
  if (failed) c.errors++;
  c.readUnits += readUnits;
  c.writeUnits += writeUnits;
  c.ms += ms;
}

// --- the stream handler's own process ------------------------------------------------------------

let handlerProcess: ChildProcess | undefined;
let handlerReady: Promise<void> | undefined;
let nextInvocation = 1;
const replies = new Map<number, (reply: InvocationReply) => void>();

/** Started on the first frame, when startLocalStack has set the environment the handler reads. */
function startHandlerProcess(): Promise<void> {
  // BENCH_HANDLER_HEAP_MB caps V8's heap, as in a function with little memory (npm run bench -- --handler-heap-mb N).
  const heap = process.env.BENCH_HANDLER_HEAP_MB ? [`--max-old-space-size=${process.env.BENCH_HANDLER_HEAP_MB}`] : [];
  // BENCH_HANDLER_CPU_PROF=<dir>: a V8 profile of the handler's process alone, written when it exits (bench/profile-message.ts --file).
  const prof = process.env.BENCH_HANDLER_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_HANDLER_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...heap, ...prof, '--import', 'tsx', fileURLToPath(new URL('./handler-process.ts', import.meta.url))], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env },
  });
  handlerProcess = child;
  child.on('message', (msg: InvocationReply | { ready: true }) => {
    if ('ready' in msg) return;
    replies.get(msg.id)?.(msg);
    replies.delete(msg.id);
  });
  child.once('exit', (code) => {
    for (const [id, done] of replies) done({ id, error: `handler process exited (${code})`, cpuUs: 0, wallMs: 0, dynamo: [] });
    replies.clear();
  });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`handler process exited (${code}) before it was ready`)));
  });
}

function invokeHandler(event: SQSEvent, context: Context): Promise<InvocationReply> {
  const id = nextInvocation++;
  return new Promise((resolve) => {
    replies.set(id, resolve);
    handlerProcess!.send({ id, event, context: { functionName: context.functionName, awsRequestId: context.awsRequestId } });
  });
}

async function measuredStreamHandler(event: SQSEvent, context: Context): Promise<unknown> {
  await (handlerReady ??= startHandlerProcess());
  inFlight++;
  counters.invocations++;
  counters.records += event.Records.length;
  const invocation: ProbeInvocation | undefined =
    probeLabel !== null ? { label: probeLabel, records: event.Records.length, cpuUs: 0, wallMs: 0, dynamo: [], posts: [] } : undefined;
  if (invocation) current = invocation;
  const start = performance.now();
  try {
    const reply = await invokeHandler(event, context);
    for (const c of reply.dynamo) countDynamo(c.what, c.readUnits, c.writeUnits, c.end - c.start, c.failed);
    if (invocation) {
      invocation.cpuUs = reply.cpuUs;
      invocation.wallMs = reply.wallMs;
      invocation.dynamo = reply.dynamo.map(({ what, start: s0, end, readUnits, writeUnits }) => ({ what, start: s0, end, readUnits, writeUnits }));
    }
    if (reply.error !== undefined) throw new Error(reply.error);
    return reply.result;
  } finally {
    counters.handlerMs += performance.now() - start;
    if (invocation) {
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
            // Epoch ms, the clock the handler process's DynamoDB timestamps use.
            const end = performance.timeOrigin + performance.now();
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
    contacts.map((c) => ({ pk: userPk(bare), sk: rosterSk(c.jid), jid: c.jid, name: c.name, groups: ['bench'], subscription: c.subscription })),
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
    handlerPid: handlerProcess?.pid,
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
      handlerProcess?.disconnect();
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
