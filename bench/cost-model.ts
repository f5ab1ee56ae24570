/**
 * The cost model of the deployed stack: the one place where usage turns into dollars. docs/cost.md
 * shows its arithmetic and numbers; `npm run bench` feeds it measured usage (DynamoDB capacity
 * units, @connections posts, handler CPU and round trips per operation) instead of assumptions.
 *
 *   npx tsx bench/cost-model.ts                          # the tables with the assumed inputs
 *   npx tsx bench/cost-model.ts bench/results/latest.json # the same with a run's measurements
 *
 * Prices: us-east-1, on-demand, no free tier (DESIGN.md §2, docs/cost.md).
 *
 * Long because: every bill docs/cost.md prints (per message, the online month, presence and CSI,
 * idle) is priced here from the same line items, so that no two places price a frame differently.
 */

export const PRICES = {
  /** API Gateway WebSocket, per million messages (32 KB units, both directions). */
  apiGatewayMessage: 1.0,
  /** API Gateway WebSocket, per million connection-minutes. */
  apiGatewayConnectionMinute: 0.25,
  /** Lambda, per million requests. */
  lambdaRequest: 0.2,
  /** Lambda arm64, per GB-second. */
  lambdaGbSecond: 0.0000133334,
  /** DynamoDB on-demand, per million read request units. */
  dynamoRead: 0.125,
  /** DynamoDB on-demand, per million write request units. */
  dynamoWrite: 0.625,
  /** SQS FIFO, per million requests. */
  sqsFifoRequest: 0.5,
  /** SQS standard, per million requests. */
  sqsStandardRequest: 0.4,
  fargateVcpuHour: 0.03238,
  fargateGbHour: 0.00356,
  nlbHour: 0.0225,
  nlbLcuHour: 0.006,
  publicIpv4Hour: 0.005,
  secretMonth: 0.4,
  alarmMetricMonth: 0.1,
  dashboardMonth: 3.0,
  logsIngestedGb: 0.5,
  ecrGbMonth: 0.1,
} as const;

export const MONTH_HOURS = 730;
export const MONTH_MINUTES = MONTH_HOURS * 60;
const M = 1_000_000;

/** Lambda gives a full vCPU at 1,769 MB; below that CPU time stretches in proportion. */
export const LAMBDA_FULL_VCPU_MB = 1769;

/** What one operation (a 1:1 message, a keepalive, a reconnect…) uses of each billed unit. */
export interface OperationUsage {
  /** Client → server WebSocket messages (API Gateway "in", each one SQS message and one Lambda record). */
  framesIn: number;
  /** SQS messages: the frames plus $disconnect events. Default: framesIn. */
  queueEvents?: number;
  /** @connections posts (API Gateway "out"). */
  posts: number;
  /** DynamoDB read and write request units. */
  readUnits: number;
  writeUnits: number;
  /** Billed stream-Lambda time for the whole operation, ms (summed over its invocations). */
  streamLambdaMs: number;
  /** $connect invocations (connect Lambda, 128 MB) and their billed ms each. */
  connects?: number;
  connectLambdaMs?: number;
}

export interface ModelOptions {
  /** Stream Lambda memory (the construct's default: 512 MB). */
  streamMemoryMb: number;
  connectMemoryMb: number;
  /** SQS requests per queued event: Send + Receive + Delete = 3 when every receive gets one message; 1.2 in batches of 10. */
  sqsRequestsPerEvent: number;
  /** Lambda invocations per queued event: 1 unbatched, 0.1 in batches of 10. */
  invocationsPerEvent: number;
}

export const WORST_CASE: ModelOptions = { streamMemoryMb: 512, connectMemoryMb: 128, sqsRequestsPerEvent: 3, invocationsPerEvent: 1 };
export const BATCHED: ModelOptions = { ...WORST_CASE, sqsRequestsPerEvent: 1.2, invocationsPerEvent: 0.1 };

export interface LineItem {
  item: string;
  arithmetic: string;
  usd: number;
}

export interface Bill {
  items: LineItem[];
  total: number;
}

const fmt = (n: number, digits = 2) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
const millions = (n: number) => `${fmt(n / M, 3)} M`;

function bill(items: LineItem[]): Bill {
  return { items, total: items.reduce((s, i) => s + i.usd, 0) };
}

/** Line items for `count` repetitions of an operation. */
export function operationCost(usage: OperationUsage, count: number, options: ModelOptions = WORST_CASE, label = ''): LineItem[] {
  const events = usage.queueEvents ?? usage.framesIn;
  const gb = options.streamMemoryMb / 1024;
  const invocations = events * options.invocationsPerEvent * count;
  const gbSeconds = count * gb * (usage.streamLambdaMs / 1000);
  const p = label ? `${label}: ` : '';
  const items: LineItem[] = [
    {
      item: `${p}API Gateway in`,
      arithmetic: `${millions(usage.framesIn * count)} client frames × $${PRICES.apiGatewayMessage}/M`,
      usd: (usage.framesIn * count * PRICES.apiGatewayMessage) / M,
    },
    {
      item: `${p}API Gateway out`,
      arithmetic: `${millions(usage.posts * count)} @connections posts × $${PRICES.apiGatewayMessage}/M`,
      usd: (usage.posts * count * PRICES.apiGatewayMessage) / M,
    },
    {
      item: `${p}SQS FIFO`,
      arithmetic: `${millions(events * count)} events × ${options.sqsRequestsPerEvent} requests × $${PRICES.sqsFifoRequest}/M`,
      usd: (events * count * options.sqsRequestsPerEvent * PRICES.sqsFifoRequest) / M,
    },
    {
      item: `${p}Lambda requests`,
      arithmetic: `${millions(invocations)} invocations × $${PRICES.lambdaRequest}/M`,
      usd: (invocations * PRICES.lambdaRequest) / M,
    },
    {
      item: `${p}Lambda duration`,
      arithmetic: `${millions(count)} × ${fmt(gb, 3)} GB × ${fmt(usage.streamLambdaMs / 1000, 4)} s = ${fmt(gbSeconds, 0)} GB-s × $${PRICES.lambdaGbSecond}`,
      usd: gbSeconds * PRICES.lambdaGbSecond,
    },
    {
      item: `${p}DynamoDB`,
      arithmetic: `${millions(usage.readUnits * count)} RRU × $${PRICES.dynamoRead}/M + ${millions(usage.writeUnits * count)} WRU × $${PRICES.dynamoWrite}/M`,
      usd: (usage.readUnits * count * PRICES.dynamoRead + usage.writeUnits * count * PRICES.dynamoWrite) / M,
    },
  ];
  if (usage.connects) {
    const connectGbS = usage.connects * count * (options.connectMemoryMb / 1024) * ((usage.connectLambdaMs ?? 0) / 1000);
    items.push({
      item: `${p}connect Lambda`,
      arithmetic: `${millions(usage.connects * count)} × $${PRICES.lambdaRequest}/M + ${fmt(connectGbS, 0)} GB-s`,
      usd: (usage.connects * count * PRICES.lambdaRequest) / M + connectGbS * PRICES.lambdaGbSecond,
    });
  }
  return items;
}

/** $ per million 1:1 messages. */
export function perMillionMessages(message: OperationUsage, options: ModelOptions = WORST_CASE): Bill {
  return bill(operationCost(message, M, options));
}

export interface OnlineUsersInputs {
  users: number;
  /** Minutes between client keepalive pings (API Gateway drops a socket after 10 idle minutes). */
  keepaliveMinutes: number;
  /** API Gateway ends every connection after 2 hours. */
  reconnectHours: number;
  ping: OperationUsage;
  reconnect: OperationUsage;
}

/** $ per month for `users` connected 24 h a day, before any messages. */
export function onlineUsersMonth(inputs: OnlineUsersInputs, options: ModelOptions = WORST_CASE): Bill & { sections: Record<string, Bill> } {
  const minutes = inputs.users * MONTH_MINUTES;
  const connection = bill([
    { item: 'connection-minutes', arithmetic: `${fmt(inputs.users)} × ${fmt(MONTH_MINUTES)} min = ${millions(minutes)} × $${PRICES.apiGatewayConnectionMinute}/M`, usd: (minutes * PRICES.apiGatewayConnectionMinute) / M },
  ]);
  const pings = (inputs.users * MONTH_MINUTES) / inputs.keepaliveMinutes;
  const keepalive = bill(operationCost(inputs.ping, pings, options));
  const reconnects = (inputs.users * MONTH_HOURS) / inputs.reconnectHours;
  const reconnect = bill(operationCost(inputs.reconnect, reconnects, options));
  const sections = { connection, keepalive, reconnect };
  return { items: [...connection.items, ...keepalive.items, ...reconnect.items], total: connection.total + keepalive.total + reconnect.total, sections };
}

/** Presence traffic on top of the online month (assumed: docs/cost.md, "Presence and CSI"). */
export const PRESENCE_DEFAULTS = {
  users: 1000,
  /** Presence changes each user makes a day (away, back, busy…), each to every contact online. */
  changesPerDay: 12,
  /** Share of the day a mobile client has said <inactive/> (XEP-0352: screen off). */
  inactiveShare: 0.75,
  /** Times a day it goes inactive and active again. */
  inactivePeriodsPerDay: 24,
};
export type PresenceInputs = typeof PRESENCE_DEFAULTS;
const MONTH_DAYS = MONTH_HOURS / 24;

/** $ per month for every user's presence changes, each the measured broadcast to its contacts. */
export function presenceMonth(inputs: PresenceInputs, change: OperationUsage, options: ModelOptions = WORST_CASE): Bill {
  return bill(operationCost(change, inputs.users * MONTH_DAYS * inputs.changesPerDay, options, 'presence changes'));
}

export interface CsiOperations {
  inactive: OperationUsage;
  active: OperationUsage;
  /** A contact's presence to a session that is inactive (held) and to one that is active (posted). */
  held: OperationUsage;
  posted: OperationUsage;
}

/**
 * What XEP-0352 changes in the month: every user's client goes inactive and active again
 * `inactivePeriodsPerDay` times (two frames), and the presence stanzas it receives while
 * inactive are held (a conditional write each, no post) and posted at <active/>, the latest
 * per contact only. `contacts`: each user's contacts online, all changing presence as assumed.
 * Returns the month with CSI, without it (the same stanzas posted as they come), and the difference.
 */
export function csiMonth(inputs: PresenceInputs, contacts: number, ops: CsiOperations, options: ModelOptions = WORST_CASE) {
  const periods = inputs.users * MONTH_DAYS * inputs.inactivePeriodsPerDay;
  const heldPerPeriod = (contacts * inputs.changesPerDay * inputs.inactiveShare) / inputs.inactivePeriodsPerDay;
  // Expected distinct senders among the held stanzas (each from one of `contacts`, evenly).
  const postsAtFlush = contacts * (1 - (1 - 1 / contacts) ** heldPerPeriod);
  const stanzas = periods * heldPerPeriod;
  // <active/> was measured flushing one stanza; each further one is posted as a contact's
  // presence to that session is (its posts and writes: numbered and logged with XEP-0198).
  const further = Math.max(0, postsAtFlush - ops.active.posts);
  const flushExtraPosts: OperationUsage = { framesIn: 0, queueEvents: 0, posts: further * ops.posted.posts, readUnits: 0, writeUnits: further * ops.posted.writeUnits, streamLambdaMs: 0 };
  const withCsi = bill([
    ...operationCost(ops.inactive, periods, options, '<inactive/>'),
    ...operationCost(ops.active, periods, options, '<active/>'),
    ...operationCost(flushExtraPosts, periods, options, 'posts of the flush beyond the measured one').filter((i) => i.usd !== 0),
    ...operationCost(ops.held, stanzas, options, 'contacts\' presence held'),
  ]);
  const without = bill(operationCost(ops.posted, stanzas, options, 'contacts\' presence posted'));
  return { heldPerPeriod, postsAtFlush, withCsi, without, difference: withCsi.total - without.total };
}

export interface IdleInputs {
  /** Lambda's SQS pollers on the inbound queue and long polls (20 s) per minute each. */
  pollers: number;
  pollsPerMinute: number;
  alarmMetrics: number;
  dashboards: number;
  federation: boolean;
  federationAzs: number;
}

export const IDLE_DEFAULTS: IdleInputs = { pollers: 5, pollsPerMinute: 3, alarmMetrics: 12, dashboards: 1, federation: false, federationAzs: 2 };

/** $ per month with nobody connected. */
export function idleMonth(inputs: IdleInputs = IDLE_DEFAULTS): Bill {
  const polls = inputs.pollers * inputs.pollsPerMinute * MONTH_MINUTES;
  const items: LineItem[] = [
    { item: 'API Gateway, Lambda, DynamoDB requests', arithmetic: 'nothing happens', usd: 0 },
    { item: 'SQS polling by the event source mapping', arithmetic: `${inputs.pollers} pollers × ${inputs.pollsPerMinute}/min × ${fmt(MONTH_MINUTES)} min = ${millions(polls)} × $${PRICES.sqsFifoRequest}/M`, usd: (polls * PRICES.sqsFifoRequest) / M },
    { item: 'alarms', arithmetic: `${inputs.alarmMetrics} alarm metrics × $${PRICES.alarmMetricMonth}`, usd: inputs.alarmMetrics * PRICES.alarmMetricMonth },
    { item: 'dashboard', arithmetic: `${inputs.dashboards} × $${PRICES.dashboardMonth}`, usd: inputs.dashboards * PRICES.dashboardMonth },
  ];
  if (inputs.federation) {
    const ips = 1 + inputs.federationAzs;
    items.push(
      { item: 'Fargate task, vCPU', arithmetic: `0.25 vCPU × $${PRICES.fargateVcpuHour} × ${MONTH_HOURS} h`, usd: 0.25 * PRICES.fargateVcpuHour * MONTH_HOURS },
      { item: 'Fargate task, memory', arithmetic: `0.5 GB × $${PRICES.fargateGbHour} × ${MONTH_HOURS} h`, usd: 0.5 * PRICES.fargateGbHour * MONTH_HOURS },
      { item: 'NLB hours', arithmetic: `$${PRICES.nlbHour} × ${MONTH_HOURS} h`, usd: PRICES.nlbHour * MONTH_HOURS },
      { item: 'NLB LCUs (idle, assumed 0.01 LCU)', arithmetic: `0.01 × ${MONTH_HOURS} h × $${PRICES.nlbLcuHour}`, usd: 0.01 * MONTH_HOURS * PRICES.nlbLcuHour },
      { item: 'public IPv4', arithmetic: `${ips} addresses × $${PRICES.publicIpv4Hour} × ${MONTH_HOURS} h`, usd: ips * PRICES.publicIpv4Hour * MONTH_HOURS },
      { item: 'Secrets Manager', arithmetic: `2 secrets × $${PRICES.secretMonth}`, usd: 2 * PRICES.secretMonth },
      { item: 's2s queue polling by the task', arithmetic: `3/min × ${fmt(MONTH_MINUTES)} × $${PRICES.sqsStandardRequest}/M`, usd: (3 * MONTH_MINUTES * PRICES.sqsStandardRequest) / M },
      { item: 'federation alarms', arithmetic: `3 × $${PRICES.alarmMetricMonth}`, usd: 3 * PRICES.alarmMetricMonth },
      { item: 'container image in ECR', arithmetic: `≈ 0.1 GB × $${PRICES.ecrGbMonth}`, usd: 0.1 * PRICES.ecrGbMonth },
    );
  }
  return bill(items);
}

// ---------------------------------------------------------------------------------------------
// From measurements to usage

/** Round-trip times in AWS that a local run cannot observe (assumptions, stated in docs/cost.md). */
export const CLOUD_LATENCY = {
  /** DynamoDB GetItem/Query/PutItem from Lambda in the same region. */
  dynamoRoundTripMs: 5,
  /** PostToConnection from Lambda to API Gateway's @connections API. */
  postRoundTripMs: 15,
};

export interface MeasuredOperation {
  invocations: number;
  framesIn: number;
  posts: number;
  readUnits: number;
  writeUnits: number;
  /** Handler CPU, net of the local @connections endpoint's share. */
  cpuMs: number;
  /** Waiting on the critical path at cloud latencies (cloudCriticalPath), summed over the invocations. */
  cloudWaitMs: number;
}

export interface TimedCall {
  kind: 'dynamo' | 'post';
  start: number;
  end: number;
}

/**
 * What an invocation waits for in AWS, from the calls it made locally (start and end of each).
 *
 * - Sequential code (at most 2 calls in flight at once, e.g. a message: two Queries side by side,
 *   then a write, then a post): the longest chain of calls that each started after the previous one
 *   ended, weighted by cloud latency.
 * - Fan-out (3 or more calls in flight at once, e.g. presence to 100 contacts, 16 at a time): locally
 *   the lanes interleave on one event loop and look sequential, so the chain would count every call;
 *   instead the calls' cloud latencies are spread over the concurrency seen (Σ latency / peak).
 */
export function cloudCriticalPath(calls: TimedCall[]): { ms: number; dynamo: number; posts: number; peakConcurrency: number } {
  const sorted = [...calls].sort((a, b) => a.start - b.start);
  const weight = (c: TimedCall) => (c.kind === 'dynamo' ? CLOUD_LATENCY.dynamoRoundTripMs : CLOUD_LATENCY.postRoundTripMs);
  let peak = 0;
  for (const c of sorted) peak = Math.max(peak, sorted.filter((d) => d.start <= c.start && d.end > c.start).length);
  const best: number[] = [];
  const prev: number[] = [];
  let last = -1;
  for (let i = 0; i < sorted.length; i++) {
    let b = 0;
    let p = -1;
    for (let j = 0; j < i; j++) {
      if (sorted[j]!.end <= sorted[i]!.start && best[j]! > b) {
        b = best[j]!;
        p = j;
      }
    }
    best.push(b + weight(sorted[i]!));
    prev.push(p);
    if (last < 0 || best[i]! > best[last]!) last = i;
  }
  const chain = { ms: last < 0 ? 0 : best[last]!, dynamo: 0, posts: 0, peakConcurrency: peak };
  for (let i = last; i >= 0; i = prev[i]!) {
    if (sorted[i]!.kind === 'dynamo') chain.dynamo++;
    else chain.posts++;
  }
  if (peak < 3) return chain;
  const total = sorted.reduce((s, c) => s + weight(c), 0);
  const dynamo = sorted.filter((c) => c.kind === 'dynamo').length;
  return { ms: total / peak, dynamo: dynamo / peak, posts: (sorted.length - dynamo) / peak, peakConcurrency: peak };
}

/**
 * Billed Lambda ms for an operation measured locally: CPU stretched to the memory size's share of a
 * vCPU, plus the critical path's waiting at cloud latency, each invocation rounded up to 1 ms.
 */
export function cloudLambdaMs(op: MeasuredOperation, memoryMb = WORST_CASE.streamMemoryMb): number {
  const stretch = Math.max(1, LAMBDA_FULL_VCPU_MB / memoryMb);
  const invocations = Math.max(1, op.invocations);
  const perInvocation = (op.cpuMs * stretch + op.cloudWaitMs) / invocations;
  return Math.ceil(perInvocation) * invocations;
}

export function usageFromMeasurement(op: MeasuredOperation, extra: Partial<OperationUsage> = {}): OperationUsage {
  return {
    framesIn: op.framesIn,
    posts: op.posts,
    readUnits: op.readUnits,
    writeUnits: op.writeUnits,
    streamLambdaMs: cloudLambdaMs(op),
    ...extra,
  };
}

// ---------------------------------------------------------------------------------------------
// The assumptions docs/cost.md started from (replaced by measurements where `npm run bench` has them)

export const ASSUMED = {
  /** Sender and recipient online, sender's state cached, one Query (≤ 4 KB, strongly consistent: 1 RRU), 30 ms at 512 MB. */
  message: { framesIn: 1, posts: 1, readUnits: 1, writeUnits: 0, streamLambdaMs: 30 } satisfies OperationUsage,
  /** XEP-0199 ping answered by the server: no DynamoDB with the state cached, 10 ms. */
  ping: { framesIn: 1, posts: 1, readUnits: 0, writeUnits: 0, streamLambdaMs: 10 } satisfies OperationUsage,
  /** Reconnect with XEP-0198 resumption: 6 frames each way, $disconnect of the old socket, 4 reads, 6 writes, 20 ms per invocation. */
  reconnect: { framesIn: 6, queueEvents: 7, posts: 6, readUnits: 4, writeUnits: 6, streamLambdaMs: 7 * 20, connects: 1, connectLambdaMs: 5 } satisfies OperationUsage,
};

export const ONLINE_DEFAULTS = { users: 1000, keepaliveMinutes: 5, reconnectHours: 2 };

// ---------------------------------------------------------------------------------------------
// Printing (docs/cost.md tables)

export function table(b: Bill, unit = '$'): string {
  const rows = b.items.map((i) => `| ${i.item} | ${i.arithmetic} | ${i.usd.toFixed(2)} |`);
  return [`| item | arithmetic | ${unit} |`, '|---|---|---|', ...rows, `| **total** | | **${b.total.toFixed(2)}** |`].join('\n');
}

export function report(usage: { message: OperationUsage; ping: OperationUsage; reconnect: OperationUsage }): string {
  const online = onlineUsersMonth({ ...ONLINE_DEFAULTS, ping: usage.ping, reconnect: usage.reconnect });
  return [
    '## Per million 1:1 messages (unbatched: worst case)',
    table(perMillionMessages(usage.message)),
    '',
    `Batched (10 per receive and invocation): **$${perMillionMessages(usage.message, BATCHED).total.toFixed(2)}**`,
    '',
    '## Per 1,000 users online for a month',
    table(online),
    '',
    '## Idle, federation off',
    table(idleMonth()),
    '',
    '## Idle, federation on',
    table(idleMonth({ ...IDLE_DEFAULTS, federation: true })),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (file) {
    const { readFileSync } = await import('node:fs');
    const results = JSON.parse(readFileSync(file, 'utf8')) as { cost?: { usage?: { message: OperationUsage; ping: OperationUsage; reconnect: OperationUsage } } };
    if (!results.cost?.usage) throw new Error(`${file} has no cost.usage (run npm run bench first)`);
    console.log(report(results.cost.usage));
  } else {
    console.log(report(ASSUMED));
  }
}
