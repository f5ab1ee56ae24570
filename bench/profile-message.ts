/**
 * Where the CPU of a 1:1 message goes: the local stack in this process, two users, N messages one
 * after the other under the V8 profiler (node:inspector), self time grouped by what spends it.
 *
 *   npx tsx bench/profile-message.ts [N=300]     (PROFILE_TOP=40: also the 40 functions that spend most)
 *   npx tsx bench/profile-message.ts --file <handler's .cpuprofile> [messages]
 *
 * The second reads what the stream handler's own process wrote under `npm run bench` with
 * BENCH_HANDLER_CPU_PROF=<dir> (the whole run: logins, presence, chat; the handler alone).
 *
 * Everything in this process is counted (the gateway, both clients and the handlers), so read the
 * groups rather than the total; `npm run bench` measures the handler's own CPU per operation.
 */
import { Session } from 'node:inspector/promises';
import { startLocalStack } from '../local/stack.ts';
import { XmppWsClient } from './client.ts';

process.env.XMPP_LOG_LEVEL ??= 'warn';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The bucket a profile node's self time goes to. */
export function bucket(url: string, fn: string): string {
  if (/@smithy|@aws-sdk|@aws-crypto/.test(url)) return 'AWS SDK for JavaScript';
  if (/^write(v|Utf8String|Buffer|Latin1String)$/.test(fn)) return 'socket write syscalls (loopback TCP)';
  if (url.includes('node:internal/crypto')) return 'Node crypto (SigV4 hashing, ids)';
  if (url.startsWith('node:')) return 'Node core (http, net, streams, events)';
  if (/\/(shared|lambdas)\//.test(url)) return 'our handler code (shared/, lambdas/)';
  if (/node_modules\/(ltx|saxes|xmlchars)\//.test(url)) return 'XML (ltx, saxes)';
  if (url.includes('/local/') || /node_modules\/ws\//.test(url) || url.includes('/bench/')) return 'local gateway, ws and the two clients';
  if (fn === '(garbage collector)') return 'garbage collector';
  if (url === '') return 'V8 builtins (JSON, promises, microtasks)';
  return 'other';
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 300);
  const stack = await startLocalStack({ inMemory: true, wsPort: 0, writeInfoFile: false, logger: { info() {}, warn() {}, error: console.error } });
  const clients: XmppWsClient[] = [];
  try {
    for (const user of ['alice', 'bob']) {
      const c = new XmppWsClient(stack.wsUrl, stack.domain);
      await c.connect();
      await c.openStream();
      await c.register(user, 'profile-pw');
      c.terminate();
    }
    const [a, b] = [new XmppWsClient(stack.wsUrl, stack.domain), new XmppWsClient(stack.wsUrl, stack.domain)];
    clients.push(a, b);
    await a.login('alice', 'profile-pw', 'p');
    await b.login('bob', 'profile-pw', 'p');
    for (const c of clients) c.send('<presence xmlns="jabber:client"/>');
    let delivered: () => void = () => {};
    b.onStanza = (el) => {
      if (el.name === 'message') delivered();
    };
    const one = async () => {
      const got = new Promise<void>((r) => (delivered = r));
      a.send(`<message xmlns="jabber:client" type="chat" to="bob@${stack.domain}" id="m"><body>Hello! This is a benchmark chat message of a typical length, about eighty bytes.</body></message>`);
      await got;
    };
    for (let i = 0; i < 50; i++) await one(); // warm-up

    const session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
    await session.post('Profiler.start');
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (let i = 0; i < n; i++) await one();
    const used = process.cpuUsage(cpu);
    const wall = performance.now() - start;
    const { profile } = (await session.post('Profiler.stop')) as { profile: CpuProfile };
    session.disconnect();

    console.log(`${n} messages: ${((used.user + used.system) / 1000 / n).toFixed(2)} ms CPU and ${(wall / n).toFixed(2)} ms wall per message (whole process)`);
    printProfile(profile, n, 'message');
  } finally {
    for (const c of clients) c.terminate();
    await stack.stop();
  }
}

/** Self time by bucket (and by function with PROFILE_TOP=<how many>), per `unit` when `n` is given. */
export function printProfile(profile: CpuProfile, n: number | undefined, unit: string): void {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const perSample = profile.timeDeltas.reduce((s, d) => s + d, 0) / profile.samples.length / 1000;
  const groups = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const id of profile.samples) {
    const { url, functionName } = byId.get(id)!.callFrame;
    if (functionName === '(idle)' || functionName === '(program)') continue;
    const g = bucket(url, functionName);
    groups.set(g, (groups.get(g) ?? 0) + perSample);
    const key = `${functionName || '(anonymous)'} ${url.replace(/^.*node_modules\//, '')}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + perSample);
  }
  const busy = [...groups.values()].reduce((s, v) => s + v, 0);
  console.log(`busy ${busy.toFixed(0)} ms in all`);
  for (const [g, ms] of [...groups].sort((x, y) => y[1] - x[1])) {
    console.log(`${((100 * ms) / busy).toFixed(1).padStart(5)} %  ${n ? `${(ms / n).toFixed(3).padStart(7)} ms/${unit}  ` : ''}${g}`);
  }
  // The functions that spend the most, by self time (PROFILE_TOP=<how many>).
  for (const [f, ms] of [...byFunction].sort((x, y) => y[1] - x[1]).slice(0, Number(process.env.PROFILE_TOP ?? 0))) {
    console.log(`${((100 * ms) / busy).toFixed(1).padStart(5)} %  ${f}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2] === '--file' ? process.argv[3] : undefined;
  if (file) {
    // A profile written by the handler's own process (BENCH_HANDLER_CPU_PROF=<dir> npm run bench).
    const { readFileSync } = await import('node:fs');
    printProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, process.argv[4] ? Number(process.argv[4]) : undefined, 'message');
  } else {
    await main();
  }
  process.exit(0);
}
