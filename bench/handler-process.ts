/**
 * The stream Lambda in a process of its own, as in AWS: bench/local-server.ts starts it on the
 * first frame and hands it every SQS event the local gateway makes (IPC); it runs the unchanged
 * lambdas/stream.ts handler and answers with the result and what the invocation did. Its peak RSS
 * is the stream handler's memory under the benchmark, and its CPU is the handler's alone (no
 * gateway, no sockets, no @connections endpoint in this process).
 *
 * Unlike one Lambda instance, which runs one batch at a time, this process runs every invocation
 * the gateway starts at once: its memory is an upper bound for one instance.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { appendFileSync } from 'node:fs';
import type { Context, SQSEvent } from 'aws-lambda';

process.env.XMPP_LOG_LEVEL ??= 'warn';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface DynamoCall {
  what: string;
  /** Epoch ms (performance.timeOrigin + now): comparable with the gateway process's clock. */
  start: number;
  end: number;
  readUnits: number;
  writeUnits: number;
  failed: boolean;
}

export interface InvocationRequest {
  id: number;
  event: SQSEvent;
  context: Pick<Context, 'functionName' | 'awsRequestId'>;
}

export interface InvocationReply {
  id: number;
  result?: unknown;
  error?: string;
  cpuUs: number;
  wallMs: number;
  dynamo: DynamoCall[];
}

const READS = new Set(['GetItem', 'Query', 'Scan', 'BatchGetItem', 'TransactGetItems']);
const epochNow = () => performance.timeOrigin + performance.now();

function capacityOf(consumed: unknown): number {
  if (!consumed) return 0;
  const list = Array.isArray(consumed) ? consumed : [consumed];
  return list.reduce((sum, c) => sum + (Number((c as { CapacityUnits?: number }).CapacityUnits) || 0), 0);
}

const invocation = new AsyncLocalStorage<DynamoCall[]>();
/** BENCH_DYNAMO_TRACE=FILE: every DynamoDB command with its keys, per frame (where a probe's requests go). */
const traceFile = process.env.BENCH_DYNAMO_TRACE;
const frameText = new AsyncLocalStorage<string>();
const keysOf = (input: Record<string, unknown>): string =>
  JSON.stringify(input.Key ?? (input.KeyConditionExpression ? input.ExpressionAttributeValues : undefined) ?? input.Item ?? input.RequestItems ?? input.TransactItems ?? '').slice(0, 160);

const { addDynamoClientHook } = await import('../shared/storage/dynamo-store.ts');

/** Every DynamoDB command of the handler's store, with ReturnConsumedCapacity=TOTAL, recorded per invocation. */
addDynamoClientHook((hooks) => {
  hooks.aroundCall('benchDynamoCounter', async (call, next) => {
    const what = call.name.replace(/Command$/, '');
    call.input.ReturnConsumedCapacity ??= 'TOTAL';
    const calls = invocation.getStore();
    const start = epochNow();
    const read = READS.has(what);
    try {
      const out = await next();
      const units = capacityOf(out.ConsumedCapacity);
      calls?.push({ what, start, end: epochNow(), readUnits: read ? units : 0, writeUnits: read ? 0 : units, failed: false });
      if (traceFile) appendFileSync(traceFile, `${Math.round(start)} ${Math.round(epochNow() - start)}ms ${what} ${keysOf(call.input)} [${frameText.getStore() ?? ''}]\n`);
      return out;
    } catch (err) {
      // A failed conditional write still consumes write capacity (1 unit up to 1 KB); DynamoDB reports none with the error.
      const units = (err as Error).name === 'ConditionalCheckFailedException' ? 1 : 0;
      calls?.push({ what, start, end: epochNow(), readUnits: 0, writeUnits: units, failed: true });
      throw err;
    }
  });
});

type Handler = (event: SQSEvent, context: Context) => Promise<unknown>;
const { handler } = (await import('../lambdas/stream.ts')) as { handler: Handler };

process.on('message', (req: InvocationRequest) => {
  const calls: DynamoCall[] = [];
  const cpu = process.cpuUsage();
  const start = performance.now();
  const context = { ...req.context, getRemainingTimeInMillis: () => 30_000 } as unknown as Context;
  invocation
    .run(calls, () => frameText.run(req.event.Records.map((r) => r.body.slice(0, 200)).join(' | '), () => handler(req.event, context)))
    .then(
      (result) => ({ result }),
      (err: unknown) => ({ error: (err as Error)?.stack ?? String(err) }),
    )
    .then((outcome) => {
      const used = process.cpuUsage(cpu);
      const reply: InvocationReply = { id: req.id, ...outcome, cpuUs: used.user + used.system, wallMs: performance.now() - start, dynamo: calls };
      process.send!(reply);
    });
});
process.on('disconnect', () => process.exit(0));
process.send!({ ready: true });
