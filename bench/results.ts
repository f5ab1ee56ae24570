/**
 * The shape of a run's results (bench/results/latest.json): per phase (LoginStorm, GoingOnline,
 * PresenceBroadcast, Chat), per server (TargetResult), per probed operation (OperationCost,
 * PerStanza), and the whole run (BenchResults, Goal). Types only; bench/report.ts and
 * bench/chart.ts read them.
 */
import type { Bill, OperationUsage, PresenceInputs } from './cost-model.ts';
import type { BundleInfo, ColdInit, NodeBinary } from './lambdas.ts';
import type { BenchOptions } from './options.ts';
import type { Distribution } from './stats.ts';
import type { TargetKind } from './targets.ts';

export interface ErrorCounts {
  total: number;
  byKind: Record<string, number>;
}

export interface LoadStats {
  /** Server CPU time over the phase (all its processes), ms. */
  serverCpuMs: number;
  /** Our stack: how long its handlers kept working after the phase's clients were done (backlog). */
  drainMs?: number;
  /** Our stack: CPU time of the stream handler's process alone over the phase, ms. */
  handlerCpuMs?: number;
  /** Our stack only: what its handlers did during the phase. */
  dynamoCalls?: number;
  readUnits?: number;
  writeUnits?: number;
  posts?: number;
  invocations?: number;
}

export interface LoginStorm extends LoadStats {
  clients: number;
  ok: number;
  durationMs: number;
  loginsPerSec: number;
  latencyMs: Distribution;
  errors: ErrorCounts;
}

export interface GoingOnline extends LoadStats {
  clients: number;
  complete: number;
  durationMs: number;
  rosterItems: number;
  presencesReceived: number;
  latencyMs: Distribution;
  errors: ErrorCounts;
}

export interface PresenceBroadcast extends LoadStats {
  rosterSize: number;
  updates: number;
  deliveries: number;
  expectedDeliveries: number;
  durationMs: number;
  broadcastsPerSec: number;
  deliveriesPerSec: number;
  /** Change sent → one contact has it. */
  latencyMs: Distribution;
  /** Change sent → the last contact has it. */
  fanOutMs: Distribution;
  errors: ErrorCounts;
}

export interface Chat extends LoadStats {
  senders: number;
  /** Offered rate (steady) or null (closed loop). */
  offeredRate: number | null;
  durationMs: number;
  sent: number;
  delivered: number;
  lost: number;
  messagesPerSec: number;
  latencyMs: Distribution;
  errors: ErrorCounts;
  serverCpuMsPerMessage: number;
  /** Our stack: the stream handler's process alone, per message. */
  handlerCpuMsPerMessage?: number;
  dynamoCallsPerMessage?: number;
  postsPerMessage?: number;
}

export interface TargetResult {
  kind: TargetKind;
  server: Record<string, unknown>;
  loadAverage: { before: number[]; after: number[] };
  setupMs: number;
  loginStorm?: LoginStorm;
  goingOnline?: GoingOnline;
  presenceBroadcast?: PresenceBroadcast;
  chatLowRate?: Chat;
  chatSteady?: Chat;
  chatSaturation?: Chat;
  roomFanOut?: unknown;
  peakRssMb: number;
  /** Our stack: peak RSS of the stream handler's process (every invocation of the run), MB. */
  handlerProcessPeakRssMb?: number;
  /** Our stack: peak RSS of the local gateway's process (sockets, queues, @connections API), MB. */
  gatewayProcessPeakRssMb?: number;
  failures: string[];
}

export interface OperationCost {
  label: string;
  samples: number;
  /** Per one operation: */
  framesIn: number;
  invocations: number;
  dynamoCalls: number;
  dynamoByCommand: Record<string, number>;
  readUnits: number;
  writeUnits: number;
  /** Sequential DynamoDB round trips (the longest chain of DynamoDB calls that could not overlap). */
  dynamoRoundTrips: number;
  /** The same, counting only calls that ended before the first post began: what delivery waits for. */
  dynamoRoundTripsBeforeFirstPost: number;
  posts: number;
  /** The critical path of DynamoDB calls and posts together, what it waits at cloud latencies, and the most calls in flight at once. */
  criticalPath: { dynamo: number; posts: number; cloudMs: number; peakConcurrency: number };
  /** process.cpuUsage() around the stream handler in its own process. */
  handlerCpuMs: number;
  /** Local wall time in the handler (DynamoDB Local and the local @connections API, not AWS). */
  handlerWallMs: number;
  /** Modelled billed Lambda ms in AWS (bench/cost-model.ts cloudLambdaMs). */
  cloudLambdaMs: number;
}

export interface PerStanza {
  modules: string[];
  /** DynamoDB Local's own speed for the route Query (the ceiling of everything above). */
  dynamoLocal: { concurrency: number; requestsPerSec: number; meanMs: number }[];
  operations: Record<string, OperationCost>;
}

export interface BenchResults {
  schema: 1;
  mode: string;
  startedAt: string;
  finishedAt: string;
  options: Omit<BenchOptions, 'log'>;
  machine: Record<string, unknown>;
  targets: Partial<Record<TargetKind, TargetResult>>;
  ratios: Record<string, number | null>;
  perStanza?: PerStanza;
  lambdas?: { node: NodeBinary; bundles: Record<'connect' | 'stream', Omit<BundleInfo, 'path'>>; coldInit: Record<'connect' | 'stream', ColdInit> };
  cost?: {
    usage: { message: OperationUsage; ping: OperationUsage; reconnect: OperationUsage };
    assumed: { message: OperationUsage; ping: OperationUsage; reconnect: OperationUsage };
    perMillionMessages: Bill;
    perMillionMessagesBatched: Bill;
    perThousandUsersMonth: Bill;
    perThousandUsersMonthAssumed: Bill;
    idle: Bill;
    idleWithFederation: Bill;
    /**
     * The same month with XEP-0198 (docs/mobile.md): the keepalive is an <r/> answered with <a/>,
     * and each 2 h cut a hibernation and a resumption instead of a logout and a full login.
     * Absent when the probes did not run.
     */
    withStreamManagement?: { ping: OperationUsage; reconnect: OperationUsage; perThousandUsersMonth: Bill; savedPerUserMonth: number };
    /**
     * The same two months with logins by XEP-0388 SASL2 and XEP-0386 Bind 2 (what @xmpp/client,
     * Conversations and Monal do where offered): no stream restart, the bind or the resumption
     * inside the authentication. Absent when the probes did not run.
     */
    withSasl2?: {
      reconnect: OperationUsage;
      perThousandUsersMonth: Bill;
      withStreamManagement: { reconnect: OperationUsage; perThousandUsersMonth: Bill };
      /** The resumption with a XEP-0484 token: stream open and one frame. */
      withFastToken?: { reconnect: OperationUsage; perThousandUsersMonth: Bill };
    };
    /**
     * On top of the online month (docs/cost.md, "Presence and CSI"): every user's presence changes,
     * and what client state indication (XEP-0352) adds or saves of the presence they receive,
     * under the assumptions in `assumed`. Absent when the probes did not run.
     */
    presence?: {
      assumed: PresenceInputs;
      contacts: number;
      perThousandUsersMonth: Bill;
      csi: { heldPerPeriod: number; postsAtFlush: number; withCsi: Bill; without: Bill; difference: number };
    };
  };
  goals: Goal[];
  roomFanOut: string;
}

export interface Goal {
  goal: string;
  target: string;
  measured: string;
  met: boolean | null;
  note?: string;
}
