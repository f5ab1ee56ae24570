/**
 * What a benchmark run is asked to do: BenchOptions, the quick / full / smoke presets, and the
 * constants every scenario shares (the accounts' password, the chat body, the timeouts).
 */
import type { TargetKind } from './targets.ts';

export interface BenchOptions {
  mode: string;
  /** Online users (login storm, chat). */
  users: number;
  /** Contacts per user for chat (a ring: each user's nearest neighbours). */
  rosterSize: number;
  /** How long each client may take to see its online contacts' presence when going online. */
  onlineTimeoutMs: number;
  /** Contacts of the user whose presence changes are broadcast (≤ users). */
  presenceRoster: number;
  presenceUpdates: number;
  /** Steady chat: messages per second across all users, for chatSeconds. */
  chatRate: number;
  chatSeconds: number;
  /** A light steady rate first: latency when the server is not near its limit. */
  lowChatRate: number;
  lowChatSeconds: number;
  /** Saturation: every user keeps one message in flight for this long. */
  saturationSeconds: number;
  /** Per-operation probes (our stack): repetitions of each repeated operation. */
  probeRepeats: number;
  targets: TargetKind[];
  /** Use this DynamoDB Local instead of starting one (tests share one). */
  dynamoEndpoint?: string;
  /** Bundle the Lambdas and time their cold start (runs per handler); 0 = skip. */
  coldStartRuns: number;
  /** Measure cold start with Node 22 (installed from npm if needed); false = the machine's node. */
  node22: boolean;
  /** Room fan-out (bench/muc-fanout.ts): room sizes and measured messages per room. */
  roomSizes: number[];
  roomRuns: number;
  /** Cap the stream handler process's V8 heap (MB), as a small function's runtime would; default: V8's own limit. */
  handlerHeapMb?: number;
  log: (line: string) => void;
}

export const PRESETS: Record<'quick' | 'full' | 'smoke', Omit<BenchOptions, 'log' | 'targets' | 'dynamoEndpoint'>> = {
  quick: { mode: 'quick', users: 100, rosterSize: 30, onlineTimeoutMs: 30_000, presenceRoster: 100, presenceUpdates: 20, chatRate: 100, chatSeconds: 15, lowChatRate: 20, lowChatSeconds: 10, saturationSeconds: 10, probeRepeats: 20, coldStartRuns: 7, node22: true, roomSizes: [10, 100], roomRuns: 5 },
  full: { mode: 'full', users: 500, rosterSize: 30, onlineTimeoutMs: 180_000, presenceRoster: 100, presenceUpdates: 100, chatRate: 100, chatSeconds: 60, lowChatRate: 20, lowChatSeconds: 30, saturationSeconds: 30, probeRepeats: 50, coldStartRuns: 15, node22: true, roomSizes: [10, 100, 1000], roomRuns: 5 },
  smoke: { mode: 'smoke', users: 4, rosterSize: 2, onlineTimeoutMs: 30_000, presenceRoster: 3, presenceUpdates: 1, chatRate: 4, chatSeconds: 1, lowChatRate: 2, lowChatSeconds: 1, saturationSeconds: 1, probeRepeats: 1, coldStartRuns: 1, node22: false, roomSizes: [3], roomRuns: 1 },
};

export const PASSWORD = 'bench-password';
export const BODY = 'Hello! This is a benchmark chat message of a typical length, about eighty bytes.';
export const DELIVERY_TIMEOUT_MS = 10_000;
/** A client gives up on an answer (stream negotiation, iq) after this long: failure detection, not a measurement. */
export const CLIENT_TIMEOUT_MS = 120_000;
