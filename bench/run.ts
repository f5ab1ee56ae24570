/**
 * npm run bench                 quick run (under 3 minutes): our local stack and Prosody, side by side
 * npm run bench -- --full       the long run (more users, longer phases)
 * npm run bench -- --only local (or prosody)   one server only
 * npm run bench -- --out DIR    where the results go (default bench/results)
 * npm run bench -- --handler-heap-mb 160   cap the stream handler process's V8 heap (memory check)
 *
 * Writes DIR/latest.json (committed), DIR/run-<time>.json (not committed) and DIR/latest.svg, and
 * prints a summary. See docs/performance.md for what the numbers mean.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { renderChart } from './chart.ts';
import { runBench } from './harness.ts';
import { PRESETS } from './options.ts';
import type { BenchResults } from './results.ts';
import type { TargetKind } from './targets.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const value = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

if (flag('--help') || flag('-h')) {
  console.log('usage: npm run bench [-- --full] [--only local|prosody] [--out DIR] [--handler-heap-mb MB]');
  process.exit(0);
}

const preset = flag('--full') ? PRESETS.full : flag('--smoke') ? PRESETS.smoke : PRESETS.quick;
const only = value('--only') as TargetKind | undefined;
const targets: TargetKind[] = only ? [only] : ['local', 'prosody'];
const outDir = resolve(value('--out') ?? join(import.meta.dirname, 'results'));
const handlerHeapMb = value('--handler-heap-mb') ? Number(value('--handler-heap-mb')) : undefined;

export function summary(r: BenchResults): string {
  const l = r.targets.local;
  const p = r.targets.prosody;
  const lines = [
    `\n=== ${r.mode} run, ${r.options.users} users, roster ${r.options.rosterSize}; load average at start ${(r.machine.loadAverageAtStart as number[]).join(' ')} ===`,
    '                                our stack      Prosody     ratio',
  ];
  const row = (name: string, a: number | undefined, b: number | undefined, ratio?: number | null) =>
    lines.push(`${name.padEnd(30)} ${String(a ?? 'n/a').padStart(10)} ${String(b ?? 'n/a').padStart(12)} ${ratio === undefined || ratio === null ? '' : `${ratio}×`.padStart(9)}`);
  row('logins/s (storm)', l?.loginStorm?.loginsPerSec, p?.loginStorm?.loginsPerSec, r.ratios.loginsPerSec);
  row('messages/s (saturated)', l?.chatSaturation?.messagesPerSec, p?.chatSaturation?.messagesPerSec, r.ratios.messagesPerSec);
  row(`p50 ms at ${r.options.lowChatRate} msg/s`, l?.chatLowRate?.latencyMs.p50, p?.chatLowRate?.latencyMs.p50);
  row(`p99 ms at ${r.options.lowChatRate} msg/s`, l?.chatLowRate?.latencyMs.p99, p?.chatLowRate?.latencyMs.p99, r.ratios.p99AtLowRate);
  row(`p50 ms at ${r.options.chatRate} msg/s`, l?.chatSteady?.latencyMs.p50, p?.chatSteady?.latencyMs.p50);
  row(`p99 ms at ${r.options.chatRate} msg/s`, l?.chatSteady?.latencyMs.p99, p?.chatSteady?.latencyMs.p99, r.ratios.p99AtSteadyRate);
  row('presence changes/s (100)', l?.presenceBroadcast?.broadcastsPerSec, p?.presenceBroadcast?.broadcastsPerSec, r.ratios.presenceBroadcastsPerSec);
  row('server CPU ms/message', l?.chatSaturation?.serverCpuMsPerMessage, p?.chatSaturation?.serverCpuMsPerMessage, r.ratios.serverCpuPerMessage);
  const errs = (t?: typeof l) =>
    t ? [t.loginStorm, t.goingOnline, t.presenceBroadcast, t.chatLowRate, t.chatSteady, t.chatSaturation].reduce((s, x) => s + (x?.errors.total ?? 0), 0) + t.failures.length : undefined;
  row('errors', errs(l), errs(p));
  const msg = r.perStanza?.operations['1:1 message (recipient online)'];
  if (msg) lines.push(`\n1:1 message in our handlers: ${msg.dynamoCalls} DynamoDB calls (${msg.readUnits} RRU, ${msg.writeUnits} WRU), ${msg.posts} posts, ${msg.handlerCpuMs} ms CPU`);
  if (r.cost) lines.push(`cost: $${r.cost.perMillionMessages.total.toFixed(2)} per million messages ($${r.cost.perMillionMessagesBatched.total.toFixed(2)} batched), $${r.cost.perThousandUsersMonth.total.toFixed(2)} per 1,000 users online a month, $${r.cost.idle.total.toFixed(2)} idle`);
  const sm = r.cost?.withStreamManagement;
  if (sm) lines.push(`with XEP-0198 resumption: $${sm.perThousandUsersMonth.total.toFixed(2)} per 1,000 users online a month ($${sm.savedPerUserMonth.toFixed(4)} saved per user-month)`);
  const sasl2 = r.cost?.withSasl2;
  if (sasl2) lines.push(`with SASL2 and Bind 2 logins: $${sasl2.perThousandUsersMonth.total.toFixed(2)} per 1,000 users online a month, $${sasl2.withStreamManagement.perThousandUsersMonth.total.toFixed(2)} with XEP-0198 resumption${sasl2.withFastToken ? `, $${sasl2.withFastToken.perThousandUsersMonth.total.toFixed(2)} resuming with a FAST token` : ''}`);
  const presence = r.cost?.presence;
  if (presence) {
    const csi = presence.csi;
    lines.push(
      `presence (${presence.assumed.changesPerDay} changes a day to ${presence.contacts} contacts): $${presence.perThousandUsersMonth.total.toFixed(2)} per 1,000 users a month; ` +
        `XEP-0352 (inactive ${presence.assumed.inactiveShare * 100} % of the day, ${presence.assumed.inactivePeriodsPerDay} times): ${csi.difference >= 0 ? '+' : '−'}$${Math.abs(csi.difference).toFixed(2)} ($${csi.withCsi.total.toFixed(2)} with it, $${csi.without.total.toFixed(2)} without)`,
    );
  }
  if (r.lambdas) lines.push(`stream bundle ${r.lambdas.bundles.stream.bytes} B, cold init ${r.lambdas.coldInit.stream.importMs.p50} ms on Node ${r.lambdas.node.version}`);
  lines.push(`room fan-out: ${r.roomFanOut}`);
  lines.push('\ngoals:');
  for (const g of r.goals) lines.push(`  [${g.met === null ? ' ? ' : g.met ? 'met' : 'MISSED'}] ${g.goal}: ${g.target}, measured ${g.measured}`);
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const started = Date.now();
  const results = await runBench({ ...preset, targets, handlerHeapMb, log: (line) => console.log(line) });
  mkdirSync(outDir, { recursive: true });
  const json = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(join(outDir, `run-${results.startedAt.replace(/[:.]/g, '-')}.json`), json);
  writeFileSync(join(outDir, 'latest.json'), json);
  writeFileSync(join(outDir, 'latest.svg'), renderChart(results));
  console.log(summary(results));
  console.log(`\nwrote ${join(outDir, 'latest.json')} and latest.svg in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  // Sockets of the load generator may linger for a moment; the run is over.
  process.exit(0);
}
