/**
 * The two servers under test, started and stopped by the benchmark:
 * - `local`: our local stack (startLocalStack, in memory, ports 0) in a child process
 *   (bench/local-server.ts) with its measuring points, plus the DynamoDB Local JVM it starts;
 * - `prosody`: Prosody from Debian with mod_websocket on loopback, a temporary config and data
 *   directory, started in the foreground as a child process (bench/prosody-target.ts).
 * Both expose the same face to the scenarios: a WebSocket URL, a domain, a way to put rosters in
 * place, and the process ids whose CPU time and peak memory are read from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProbeInvocation, Request, Snapshot } from './local-server.ts';

export const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));

export type TargetKind = 'local' | 'prosody';

export interface RosterContact {
  jid: string;
  name?: string;
}

export interface Target {
  kind: TargetKind;
  wsUrl: string;
  domain: string;
  /** Puts roster items (subscription both) in place before the users log in. */
  writeRosters(rosters: Map<string, RosterContact[]>): Promise<void>;
  /** The processes that make up the server (CPU time and memory are summed over them). */
  pids(): number[];
  /** What the server is (version, modules). */
  describe(): Record<string, unknown>;
  stop(): Promise<void>;
}

export interface LocalInfo {
  wsUrl: string;
  connectionsEndpoint: string;
  dynamoEndpoint: string;
  tableName: string;
  domain: string;
  pid: number;
  modules: string[];
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** utime + stime of a process in ms (0 when it is gone). */
export function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

/** Peak resident set size (VmHWM) of a process in bytes. */
export function processPeakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The process and every descendant (e.g. the DynamoDB Local JVM under the local stack). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  return out;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1' }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Our local stack

export class LocalTarget implements Target {
  readonly kind = 'local' as const;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private tree: number[] = [];
  private stderrTail: string[] = [];
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly info: LocalInfo,
  ) {
    child.on('message', (msg: { id: number; result?: unknown; error?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`local stack: ${msg.error}`));
      else p.resolve(msg.result);
    });
    child.once('exit', () => {
      this.exited = true;
      for (const [, p] of this.pending) p.reject(new Error(`local stack exited\n${this.stderrTail.join('')}`));
      this.pending.clear();
    });
  }

  get wsUrl(): string {
    return this.info.wsUrl;
  }

  get domain(): string {
    return this.info.domain;
  }

  /** Lines the child wrote to stderr (SDK warnings, gateway errors), most recent last. */
  get stderr(): string {
    return this.stderrTail.join('');
  }

  static async start(options: { dynamoEndpoint?: string; domain?: string; handlerHeapMb?: number } = {}): Promise<LocalTarget> {
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'local-server.ts')], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: {
        ...process.env,
        BENCH_DYNAMO_ENDPOINT: options.dynamoEndpoint ?? '',
        BENCH_DOMAIN: options.domain ?? 'localhost',
        BENCH_HANDLER_HEAP_MB: options.handlerHeapMb ? String(options.handlerHeapMb) : '',
        XMPP_LOG_LEVEL: 'warn',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
    });
    const tail: string[] = [];
    const keep = (chunk: Buffer) => {
      tail.push(chunk.toString());
      if (tail.length > 200) tail.splice(0, tail.length - 200);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const info = await new Promise<LocalInfo>((resolveInfo, reject) => {
      const onMessage = (msg: { id: number; result?: LocalInfo; error?: string }) => {
        if (msg.id !== 0) return;
        child.off('message', onMessage);
        if (msg.error || !msg.result) reject(new Error(`local stack failed to start: ${msg.error}`));
        else resolveInfo(msg.result);
      };
      child.on('message', onMessage);
      child.once('exit', (code) => reject(new Error(`local stack exited (${code}) before it started:\n${tail.join('')}`)));
    });
    const target = new LocalTarget(child, info);
    target.stderrTail = tail;
    target.tree = processTree(info.pid);
    return target;
  }

  private call<T>(req: Request extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never): Promise<T> {
    if (this.exited) return Promise.reject(new Error('local stack has exited'));
    const id = this.nextId++;
    return new Promise<T>((resolveCall, reject) => {
      this.pending.set(id, { resolve: resolveCall as (v: unknown) => void, reject });
      this.child.send({ ...req, id });
    });
  }

  snapshot(): Promise<Snapshot> {
    return this.call({ cmd: 'snapshot' });
  }

  reset(): Promise<Snapshot> {
    return this.call({ cmd: 'reset' });
  }

  probe(label: string | null): Promise<void> {
    return this.call({ cmd: 'probe', label });
  }

  probeResults(): Promise<ProbeInvocation[]> {
    return this.call({ cmd: 'probeResults' });
  }

  /** Some open connection on the gateway. */
  async connectionId(): Promise<string | undefined> {
    return (await this.call<string | null>({ cmd: 'connectionId' })) ?? undefined;
  }

  /** Resolves once no handler invocation has been running for `quietMs` (waiting at most maxMs), with the time waited. */
  idle(quietMs = 25, maxMs = 30_000): Promise<number> {
    return this.call({ cmd: 'idle', quietMs, maxMs });
  }

  /** DynamoDB Local's own speed for the route Query, at concurrency 1 and 16. */
  dynamoCeiling(bares: string[], ms = 2000): Promise<{ concurrency: number; requestsPerSec: number; meanMs: number }[]> {
    return this.call({ cmd: 'dynamoCeiling', bares, ms });
  }

  async writeRosters(rosters: Map<string, RosterContact[]>): Promise<void> {
    const entries = [...rosters].map(([bare, contacts]) => [bare, contacts.map((c) => ({ ...c, subscription: 'both' as const }))] as [string, { jid: string; name?: string; subscription: 'both' }[]]);
    for (let i = 0; i < entries.length; i += 200) await this.call({ cmd: 'rosters', entries: entries.slice(i, i + 200) });
  }

  /** The gateway process, DynamoDB Local's JVM and the stream handler's process (started on the first frame). */
  pids(): number[] {
    if (!this.exited) this.tree = processTree(this.info.pid);
    return this.tree;
  }

  describe(): Record<string, unknown> {
    return { server: 'local stack (local/stack.ts: local gateway + DynamoDB Local in memory + lambdas/*.ts)', modules: this.info.modules };
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    await Promise.race([this.call({ cmd: 'stop' }).catch(() => {}), sleep(30_000)]);
    await Promise.race([exited, sleep(15_000)]);
    if (!this.exited) this.child.kill('SIGKILL');
  }
}
