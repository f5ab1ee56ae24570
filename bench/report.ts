/**
 * The results of a run as Markdown tables (what docs/performance.md shows):
 *
 *   npx tsx bench/report.ts [bench/results/latest.json]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { table } from './cost-model.ts';
import type { BenchResults, Chat, TargetResult } from './results.ts';

const n = (v: number | null | undefined, digits = 1) =>
  v === undefined || v === null || Number.isNaN(v)
    ? 'n/a'
    : Number.isInteger(v) || v >= 100
      ? v.toFixed(0)
      : v.toFixed(v >= 10 ? Math.min(digits, 1) : digits);

function errors(t?: TargetResult): string {
  if (!t) return 'n/a';
  const phases = [t.loginStorm, t.goingOnline, t.presenceBroadcast, t.chatLowRate, t.chatSteady, t.chatSaturation];
  const total = phases.reduce((s, p) => s + (p?.errors.total ?? 0), 0) + t.failures.length;
  if (!total) return '0';
  const kinds = new Map<string, number>();
  for (const p of phases) for (const [k, v] of Object.entries(p?.errors.byKind ?? {})) kinds.set(k, (kinds.get(k) ?? 0) + v);
  return `${total} (${[...kinds].map(([k, v]) => `${v} ${k}`).join('; ')}${t.failures.length ? `; ${t.failures.length} failed phases` : ''})`;
}

export function markdownReport(r: BenchResults): string {
  const l = r.targets.local;
  const p = r.targets.prosody;
  const out: string[] = [];
  const m = r.machine as Record<string, unknown>;
  out.push(
    `Run: ${r.mode}, ${r.startedAt} → ${r.finishedAt}; ${m.cpu}, ${m.memoryGb} GB, Linux ${m.kernel}, Node ${m.node}, Prosody ${m.prosody ?? 'n/a'}; ` +
      `commit ${String(m.commit ?? '').slice(0, 10)}${m.dirty ? ' (with uncommitted changes)' : ''}; load average at start ${(m.loadAverageAtStart as number[]).join(' ')}, ` +
      `before our stack ${l?.loadAverage.before.join(' ') ?? 'n/a'}, before Prosody ${p?.loadAverage.before.join(' ') ?? 'n/a'}, at end ${(m.loadAverageAtEnd as number[] | undefined)?.join(' ') ?? 'n/a'}.`,
  );
  out.push('');
  out.push(`Load: ${r.options.users} users with rosters of ${r.options.rosterSize}, a broadcaster with ${r.options.presenceRoster} contacts; steady chat at ${r.options.lowChatRate} messages/s for ${r.options.lowChatSeconds} s, then ${r.options.chatRate} messages/s for ${r.options.chatSeconds} s; saturation ${r.options.saturationSeconds} s with one message in flight per user.`);
  out.push('');
  out.push('| | our stack | Prosody | ratio |');
  out.push('|---|---|---|---|');
  const row = (name: string, a?: number | null, b?: number | null, ratio?: number | null) => out.push(`| ${name} | ${n(a)} | ${n(b)} | ${ratio === undefined || ratio === null ? '' : `${ratio}×`} |`);
  row('logins/s (storm: SCRAM-SHA-1 + bind, all at once)', l?.loginStorm?.loginsPerSec, p?.loginStorm?.loginsPerSec, r.ratios.loginsPerSec);
  row('login latency p99, ms', l?.loginStorm?.latencyMs.p99, p?.loginStorm?.latencyMs.p99);
  row('going online (roster + initial presence) p99, ms', l?.goingOnline?.latencyMs.p99, p?.goingOnline?.latencyMs.p99);
  row('going online: clients complete', l?.goingOnline?.complete, p?.goingOnline?.complete);
  row(`presence changes/s to ${l?.presenceBroadcast?.rosterSize ?? r.options.presenceRoster} contacts`, l?.presenceBroadcast?.broadcastsPerSec, p?.presenceBroadcast?.broadcastsPerSec, r.ratios.presenceBroadcastsPerSec);
  row('presence fan-out (last contact) p99, ms', l?.presenceBroadcast?.fanOutMs.p99, p?.presenceBroadcast?.fanOutMs.p99);
  const chat = (name: string, a?: Chat, b?: Chat, ratio?: number | null) => {
    row(`${name}: messages/s delivered`, a?.messagesPerSec, b?.messagesPerSec, ratio);
    row(`${name}: latency p50, ms`, a?.latencyMs.p50, b?.latencyMs.p50);
    row(`${name}: latency p95, ms`, a?.latencyMs.p95, b?.latencyMs.p95);
    row(`${name}: latency p99, ms`, a?.latencyMs.p99, b?.latencyMs.p99, name === `steady ${r.options.chatRate}/s` ? r.ratios.p99AtSteadyRate : name.startsWith('steady') ? r.ratios.p99AtLowRate : undefined);
    row(`${name}: sent / delivered`, undefined, undefined);
    out[out.length - 1] = `| ${name}: sent / delivered / lost | ${a ? `${a.sent} / ${a.delivered} / ${a.lost}` : 'n/a'} | ${b ? `${b.sent} / ${b.delivered} / ${b.lost}` : 'n/a'} | |`;
    row(`${name}: server CPU ms per message`, a?.serverCpuMsPerMessage, b?.serverCpuMsPerMessage, name.startsWith('saturat') ? r.ratios.serverCpuPerMessage : undefined);
  };
  chat(`steady ${r.options.lowChatRate}/s`, l?.chatLowRate, p?.chatLowRate);
  chat(`steady ${r.options.chatRate}/s`, l?.chatSteady, p?.chatSteady);
  chat('saturated', l?.chatSaturation, p?.chatSaturation, r.ratios.messagesPerSec);
  out.push(`| handler process CPU ms per message (saturated) | ${n(l?.chatSaturation?.handlerCpuMsPerMessage, 2)} | | |`);
  out.push(`| peak memory (all server processes), MB | ${n(l?.peakRssMb)} (handler ${n(l?.handlerProcessPeakRssMb)}, gateway ${n(l?.gatewayProcessPeakRssMb)}, DynamoDB Local's JVM the rest) | ${n(p?.peakRssMb)} | |`);
  out.push(`| errors | ${errors(l)} | ${errors(p)} | |`);
  out.push('');

  const ops = r.perStanza?.operations;
  if (ops) {
    out.push(`Per operation in our handlers (probes, one frame at a time; modules: ${r.perStanza!.modules.join(', ')}):`);
    out.push('');
    out.push('| operation | DynamoDB calls | by command | RRU | WRU | sequential DynamoDB round trips (before the first post) | posts | handler CPU ms | modelled Lambda ms in AWS |');
    out.push('|---|---|---|---|---|---|---|---|---|---|');
    for (const op of Object.values(ops)) {
      out.push(
        `| ${op.label} | ${n(op.dynamoCalls)} | ${Object.entries(op.dynamoByCommand).map(([k, v]) => `${n(v)} ${k}`).join(', ')} | ${n(op.readUnits)} | ${n(op.writeUnits)} | ${n(op.dynamoRoundTrips)} (${n(op.dynamoRoundTripsBeforeFirstPost ?? op.dynamoRoundTrips)}) | ${n(op.posts)} | ${n(op.handlerCpuMs, 2)} | ${op.cloudLambdaMs} |`,
      );
    }
    out.push('');
    out.push(
      `Handler CPU is measured in the stream handler's own process. ` +
        `DynamoDB Local alone answers ${(r.perStanza!.dynamoLocal ?? []).map((d) => `${d.requestsPerSec} Query/s at concurrency ${d.concurrency} (${d.meanMs} ms each)`).join(', ')}.`,
    );
    out.push('');
  }
  if (r.lambdas) {
    const { bundles, coldInit, node } = r.lambdas;
    out.push(`Lambda bundles (cdk/lib/bundle.ts) and cold start on Node ${node.version} (${node.source}${node.note ? `; ${node.note}` : ''}), ${coldInit.stream.runs} fresh processes each:`);
    out.push('');
    out.push('| handler | bytes loaded at init | deployed (with on-demand chunks) | gzip | source map | module init p50 / max, ms | first invocation p50, ms | warm invocation p50, ms | RSS after, MB |');
    out.push('|---|---|---|---|---|---|---|---|---|');
    for (const name of ['stream', 'connect'] as const) {
      const b = bundles[name];
      const c = coldInit[name];
      out.push(`| ${name} | ${b.bytes} | ${b.deployedBytes ?? b.bytes} | ${b.gzipBytes} | ${b.mapBytes} | ${n(c.importMs.p50)} / ${n(c.importMs.max)} | ${n(c.firstInvokeMs?.p50)} | ${n(c.warmInvokeMs?.p50)} | ${n(c.maxRssMb.p50)} |`);
    }
    out.push('');
    const top = bundles.stream.composition ?? [];
    if (top.length) {
      out.push(`What a cold start of the stream handler loads (bytes, from the source maps): ${top.slice(0, 10).map((c) => `${c.from} ${Math.round(c.bytes / 1024)} KiB`).join(', ')}.`);
      out.push('');
    }
  }
  if (r.cost) {
    out.push('Per million 1:1 messages (measured usage, unbatched):');
    out.push('');
    out.push(table(r.cost.perMillionMessages));
    out.push('');
    out.push(`Batched (10 per receive and invocation): **$${r.cost.perMillionMessagesBatched.total.toFixed(2)}**. Per 1,000 users online for a month: **$${r.cost.perThousandUsersMonth.total.toFixed(2)}** (with the assumed usage of docs/cost.md: $${r.cost.perThousandUsersMonthAssumed.total.toFixed(2)}). Idle: **$${r.cost.idle.total.toFixed(2)}** a month, $${r.cost.idleWithFederation.total.toFixed(2)} with federation.`);
    out.push('');
    const presence = r.cost.presence;
    if (presence) {
      const a = presence.assumed;
      out.push(`Presence on top of that month (${a.changesPerDay} changes per user a day, each the measured broadcast to ${presence.contacts} contacts):`);
      out.push('');
      out.push(table(presence.perThousandUsersMonth));
      out.push('');
      out.push(
        `XEP-0352 client state indication, each client inactive ${a.inactiveShare * 100} % of the day in ${a.inactivePeriodsPerDay} periods (${presence.csi.heldPerPeriod} contacts' presence stanzas held per period, ${presence.csi.postsAtFlush} posted at <active/>), with it:`,
      );
      out.push('');
      out.push(table(presence.csi.withCsi));
      out.push('');
      out.push('The same stanzas posted as they come (without it):');
      out.push('');
      out.push(table(presence.csi.without));
      out.push('');
      out.push(`Difference: **${presence.csi.difference >= 0 ? '+' : '−'}$${Math.abs(presence.csi.difference).toFixed(2)}** per 1,000 users a month.`);
      out.push('');
    }
  }
  out.push('Targets:');
  out.push('');
  out.push('| target | goal | measured | |');
  out.push('|---|---|---|---|');
  for (const g of r.goals) out.push(`| ${g.goal} | ${g.target} | ${g.measured}${g.note ? ` (${g.note})` : ''} | ${g.met === null ? '?' : g.met ? 'met' : '**missed**'} |`);
  out.push('');
  const room = (l?.roomFanOut ?? undefined) as { status?: string; result?: { rooms?: { occupants: number; runs: number; lastDeliveryMs: { p50: number; p95: number; max: number }; firstDeliveryMs: { p50: number } }[]; setup?: { joinMs: Record<string, number> } } } | undefined;
  if (room?.result?.rooms?.length) {
    out.push('Room fan-out (bench/muc-fanout.ts, our stack):');
    out.push('');
    out.push('| occupants | join all, ms | first occupant p50, ms | last occupant p50 / p95 / max, ms |');
    out.push('|---|---|---|---|');
    for (const x of room.result.rooms) out.push(`| ${x.occupants} | ${n(room.result.setup?.joinMs[String(x.occupants)])} | ${n(x.firstDeliveryMs.p50)} | ${n(x.lastDeliveryMs.p50)} / ${n(x.lastDeliveryMs.p95)} / ${n(x.lastDeliveryMs.max)} |`);
    out.push('');
  }
  out.push(`Room fan-out: ${r.roomFanOut}; Prosody: ${(p?.roomFanOut as { status?: string } | undefined)?.status ?? 'n/a'}.`);
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2] ?? join(import.meta.dirname, 'results', 'latest.json');
  console.log(markdownReport(JSON.parse(readFileSync(file, 'utf8')) as BenchResults));
}
