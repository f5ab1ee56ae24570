/**
 * The results as one SVG (bench/results/latest.svg), written by hand: four panels of bars, no
 * dependency. A charting library (Vega, Chart.js + a canvas) would bring a renderer or native
 * module for what is a few dozen rectangles; plain SVG text also diffs readably in git and renders
 * on GitHub and in any browser.
 */
import type { BenchResults } from './results.ts';

const W = 1000;
const COLORS = { ours: '#2f6fdf', prosody: '#e07b24', grid: '#d9d9d9', text: '#222', muted: '#666' };
const STACK = ['#2f6fdf', '#5b8ff0', '#8fb3f5', '#e07b24', '#f0a15e', '#3aa657', '#9d6bd6', '#c44e52'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (n: number | undefined | null) =>
  n === undefined || n === null || !Number.isFinite(n) ? 'n/a' : Number.isInteger(n) || n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);

function text(x: number, y: number, s: string, opts: { size?: number; anchor?: string; weight?: string; color?: string } = {}): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-size="${opts.size ?? 12}" text-anchor="${opts.anchor ?? 'start'}" font-weight="${opts.weight ?? 'normal'}" fill="${opts.color ?? COLORS.text}">${esc(s)}</text>`;
}

function rect(x: number, y: number, w: number, h: number, color: string, title?: string): string {
  return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(0, w).toFixed(1)}" height="${h.toFixed(1)}" fill="${color}">${title ? `<title>${esc(title)}</title>` : ''}</rect>`;
}

interface PairRow {
  label: string;
  ours?: number;
  prosody?: number;
  unit: string;
  /** true when smaller is better (latency) */
  lowerIsBetter?: boolean;
}

/** Rows of two bars, each row scaled to its own larger value. */
function pairPanel(x: number, y: number, w: number, title: string, rows: PairRow[]): { svg: string; height: number } {
  const parts = [text(x, y, title, { size: 14, weight: 'bold' })];
  const labelW = 210;
  const barW = w - labelW - 90;
  let cy = y + 18;
  for (const row of rows) {
    const max = Math.max(row.ours ?? 0, row.prosody ?? 0) || 1;
    parts.push(text(x, cy + 15, row.label, { size: 12 }));
    parts.push(text(x, cy + 29, row.lowerIsBetter ? 'lower is better' : 'higher is better', { size: 10, color: COLORS.muted }));
    for (const [i, key] of (['ours', 'prosody'] as const).entries()) {
      const v = row[key];
      const by = cy + i * 16;
      parts.push(rect(x + labelW, by, ((v ?? 0) / max) * barW, 13, key === 'ours' ? COLORS.ours : COLORS.prosody, `${key === 'ours' ? 'our stack' : 'Prosody'}: ${num(v)} ${row.unit}`));
      parts.push(text(x + labelW + ((v ?? 0) / max) * barW + 4, by + 11, `${num(v)} ${row.unit}`, { size: 11 }));
    }
    cy += 42;
  }
  return { svg: parts.join('\n'), height: cy - y };
}

interface BarRow {
  label: string;
  values: { name: string; value: number; color: string }[];
}

/** Horizontal bars on one shared scale, several values per row side by side. */
function barsPanel(x: number, y: number, w: number, title: string, rows: BarRow[], unit = ''): { svg: string; height: number } {
  const parts = [text(x, y, title, { size: 14, weight: 'bold' })];
  const labelW = 260;
  const barW = w - labelW - 60;
  const max = Math.max(1, ...rows.flatMap((r) => r.values.map((v) => v.value)));
  let cy = y + 14;
  for (const row of rows) {
    parts.push(text(x, cy + 11, row.label, { size: 11 }));
    for (const [i, v] of row.values.entries()) {
      const by = cy + i * 12;
      parts.push(rect(x + labelW, by + 2, (v.value / max) * barW, 10, v.color, `${v.name}: ${num(v.value)}${unit}`));
      parts.push(text(x + labelW + (v.value / max) * barW + 3, by + 11, `${num(v.value)}${unit}`, { size: 10 }));
    }
    cy += Math.max(18, row.values.length * 12 + 6);
  }
  return { svg: parts.join('\n'), height: cy - y };
}

/** One stacked bar per row, segments labelled in a legend. */
function stackPanel(x: number, y: number, w: number, title: string, rows: { label: string; items: { item: string; usd: number }[] }[]): { svg: string; height: number } {
  const parts = [text(x, y, title, { size: 14, weight: 'bold' })];
  const labelW = 200;
  const barW = w - labelW - 70;
  let cy = y + 14;
  const names = [...new Set(rows.flatMap((r) => r.items.filter((i) => i.usd > 0).map((i) => i.item)))];
  for (let row of rows) {
    // One segment per service (a month's keepalive and reconnect lines of one service add up).
    const merged = new Map<string, number>();
    for (const i of row.items) merged.set(i.item, (merged.get(i.item) ?? 0) + i.usd);
    row = { ...row, items: [...merged].map(([item, usd]) => ({ item, usd })) };
    const total = row.items.reduce((s, i) => s + i.usd, 0) || 1;
    parts.push(text(x, cy + 13, row.label, { size: 11 }));
    let bx = x + labelW;
    for (const item of row.items) {
      if (item.usd <= 0) continue;
      const iw = (item.usd / total) * barW;
      parts.push(rect(bx, cy + 2, iw, 16, STACK[names.indexOf(item.item) % STACK.length]!, `${item.item}: $${item.usd.toFixed(2)}`));
      if (iw > 34) parts.push(text(bx + iw / 2, cy + 14, `$${item.usd.toFixed(2)}`, { size: 9, anchor: 'middle', color: '#fff' }));
      bx += iw;
    }
    parts.push(text(bx + 4, cy + 14, `$${total.toFixed(2)}`, { size: 11, weight: 'bold' }));
    cy += 26;
  }
  let lx = x;
  let ly = cy + 4;
  for (const [i, name] of names.entries()) {
    const label = name.replace(/^.*?: /, '');
    const lw = 22 + label.length * 6.2;
    if (lx + lw > x + w) {
      lx = x;
      ly += 16;
    }
    parts.push(rect(lx, ly, 10, 10, STACK[i % STACK.length]!));
    parts.push(text(lx + 14, ly + 9, label, { size: 10 }));
    lx += lw;
  }
  return { svg: parts.join('\n'), height: ly + 16 - y };
}

export function renderChart(r: BenchResults): string {
  const l = r.targets.local;
  const p = r.targets.prosody;
  const parts: string[] = [];
  const m = r.machine as { cpu?: string; loadAverageAtStart?: number[]; commit?: string };
  parts.push(text(20, 30, 'Serverless XMPP (local stack) vs Prosody: npm run bench', { size: 18, weight: 'bold' }));
  parts.push(
    text(
      20,
      50,
      `${r.mode} run ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC · ${m.cpu ?? ''} · load avg at start ${(m.loadAverageAtStart ?? []).join(' ')} · ${r.options.users} users, roster ${r.options.rosterSize} · commit ${(m.commit ?? '').slice(0, 8)}`,
      { size: 11, color: COLORS.muted },
    ),
  );
  parts.push(rect(20, 60, 12, 12, COLORS.ours), text(36, 70, 'our stack (local gateway + handlers + DynamoDB Local)', { size: 11 }));
  parts.push(rect(380, 60, 12, 12, COLORS.prosody), text(396, 70, `Prosody ${(r.machine as { prosody?: string }).prosody ?? ''} (mod_websocket)`, { size: 11 }));

  const colW = (W - 60) / 2;
  const left = pairPanel(20, 100, colW, 'Throughput, same load, same run', [
    { label: 'login storm (SCRAM + bind)', ours: l?.loginStorm?.loginsPerSec, prosody: p?.loginStorm?.loginsPerSec, unit: 'logins/s' },
    { label: '1:1 messages, saturated', ours: l?.chatSaturation?.messagesPerSec, prosody: p?.chatSaturation?.messagesPerSec, unit: 'msg/s' },
    { label: `presence to ${l?.presenceBroadcast?.rosterSize ?? r.options.presenceRoster} contacts`, ours: l?.presenceBroadcast?.broadcastsPerSec, prosody: p?.presenceBroadcast?.broadcastsPerSec, unit: 'changes/s' },
    { label: 'server CPU/message (saturated)', ours: l?.chatSaturation?.serverCpuMsPerMessage, prosody: p?.chatSaturation?.serverCpuMsPerMessage, unit: 'ms', lowerIsBetter: true },
  ]);
  const right = pairPanel(40 + colW, 100, colW, 'Latency end to end, 1:1 chat (ms)', [
    { label: `p50 at ${r.options.lowChatRate} msg/s`, ours: l?.chatLowRate?.latencyMs.p50, prosody: p?.chatLowRate?.latencyMs.p50, unit: 'ms', lowerIsBetter: true },
    { label: `p99 at ${r.options.lowChatRate} msg/s`, ours: l?.chatLowRate?.latencyMs.p99, prosody: p?.chatLowRate?.latencyMs.p99, unit: 'ms', lowerIsBetter: true },
    { label: `p50 at ${r.options.chatRate} msg/s`, ours: l?.chatSteady?.latencyMs.p50, prosody: p?.chatSteady?.latencyMs.p50, unit: 'ms', lowerIsBetter: true },
    { label: `p99 at ${r.options.chatRate} msg/s`, ours: l?.chatSteady?.latencyMs.p99, prosody: p?.chatSteady?.latencyMs.p99, unit: 'ms', lowerIsBetter: true },
  ]);
  parts.push(left.svg, right.svg);
  let y = 100 + Math.max(left.height, right.height) + 30;

  const ops = Object.values(r.perStanza?.operations ?? {});
  if (ops.length) {
    const panel = barsPanel(
      20,
      y,
      colW,
      'Per operation in our handlers (DynamoDB calls, posts)',
      ops.map((op) => ({
        label: op.label,
        values: [
          { name: 'DynamoDB calls', value: op.dynamoCalls, color: COLORS.ours },
          { name: '@connections posts', value: op.posts, color: '#3aa657' },
        ],
      })),
    );
    const cpu = barsPanel(
      40 + colW,
      y,
      colW,
      'Handler CPU per operation (ms, Node 20, local)',
      ops.map((op) => ({ label: op.label, values: [{ name: 'handler CPU ms', value: op.handlerCpuMs, color: '#9d6bd6' }] })),
      ' ms',
    );
    parts.push(panel.svg, cpu.svg);
    parts.push(rect(20, y + panel.height + 2, 10, 10, COLORS.ours), text(34, y + panel.height + 11, 'DynamoDB calls', { size: 10 }));
    parts.push(rect(130, y + panel.height + 2, 10, 10, '#3aa657'), text(144, y + panel.height + 11, '@connections posts', { size: 10 }));
    y += Math.max(panel.height, cpu.height) + 36;
  }

  if (r.cost) {
    const stack = stackPanel(20, y, W - 40, 'What it costs in AWS (bench/cost-model.ts, list prices us-east-1)', [
      { label: 'per million 1:1 messages', items: r.cost.perMillionMessages.items },
      { label: '… batched (10 per receive)', items: r.cost.perMillionMessagesBatched.items },
      { label: '1,000 users online, month', items: r.cost.perThousandUsersMonth.items.map((i) => ({ ...i, item: i.item })) },
    ]);
    parts.push(stack.svg);
    y += stack.height + 20;
  }
  if (r.lambdas) {
    const b = r.lambdas.bundles;
    const c = r.lambdas.coldInit;
    parts.push(
      text(
        20,
        y,
        `Lambda bundles: stream ${(b.stream.bytes / 1024).toFixed(0)} KiB (${(b.stream.gzipBytes / 1024).toFixed(0)} KiB gzip), connect ${(b.connect.bytes / 1024).toFixed(1)} KiB · cold module init on Node ${r.lambdas.node.version}: stream ${num(c.stream.importMs.p50)} ms, connect ${num(c.connect.importMs.p50)} ms (medians)`,
        { size: 12 },
      ),
    );
    y += 20;
  }
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="Helvetica, Arial, sans-serif">
<rect width="${W}" height="${height}" fill="#fff"/>
${parts.join('\n')}
</svg>
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // Re-draws a run's chart: npx tsx bench/chart.ts [bench/results/latest.json [out.svg]]
  const { readFileSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const file = process.argv[2] ?? join(import.meta.dirname, 'results', 'latest.json');
  const out = process.argv[3] ?? file.replace(/\.json$/, '.svg');
  writeFileSync(out, renderChart(JSON.parse(readFileSync(file, 'utf8')) as BenchResults));
  console.log(`wrote ${out}`);
}
