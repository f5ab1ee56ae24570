/**
 * What a run's numbers come to: the cost section (the probes' operations through the cost model:
 * per million messages, per 1,000 users online a month, with XEP-0198 resumption) and the goals
 * checked against the measurements (DynamoDB requests, round trips, CPU, memory, latency, cost).
 */
import {
  ASSUMED,
  BATCHED,
  csiMonth,
  PRESENCE_DEFAULTS,
  presenceMonth,
  ONLINE_DEFAULTS,
  idleMonth,
  IDLE_DEFAULTS,
  onlineUsersMonth,
  perMillionMessages,
  WORST_CASE,
  type Bill,
  type OperationUsage,
} from './cost-model.ts';
import type { BenchOptions } from './options.ts';
import type { BenchResults, Goal, OperationCost, PerStanza } from './results.ts';
import { round } from './stats.ts';

export function costFrom(perStanza: PerStanza | undefined, o: BenchOptions): BenchResults['cost'] | undefined {
  const ops = perStanza?.operations;
  if (!ops) return undefined;
  const asUsage = (op: OperationCost | undefined): OperationUsage | undefined =>
    op && { framesIn: op.framesIn, posts: op.posts, readUnits: op.readUnits, writeUnits: op.writeUnits, streamLambdaMs: op.cloudLambdaMs };
  const message = asUsage(ops['1:1 message (recipient online)']);
  const ping = asUsage(ops['ping (XEP-0199)']);
  // A reconnect as the code does it today (no XEP-0198 resumption yet): a full login, roster
  // get and initial presence on the new socket, and the old socket's <close/>/$disconnect.
  const parts = ['stream open', 'SASL (both SCRAM steps)', 'stream restart', 'bind', 'roster get'].map((l) => ops[l]);
  const initial = Object.values(ops).find((op) => op.label.startsWith('initial presence'));
  const logout = ops['logout (<close/> and $disconnect)'];
  if (!message || !ping || parts.some((p) => !p) || !initial || !logout) return undefined;
  const all = [...(parts as OperationCost[]), initial, logout];
  const reconnect: OperationUsage = {
    framesIn: all.reduce((s, p) => s + p.framesIn, 0),
    // the old socket's $disconnect is an SQS event but not an API Gateway message
    queueEvents: all.reduce((s, p) => s + p.invocations, 0),
    posts: all.reduce((s, p) => s + p.posts, 0),
    readUnits: all.reduce((s, p) => s + p.readUnits, 0),
    writeUnits: all.reduce((s, p) => s + p.writeUnits, 0),
    streamLambdaMs: all.reduce((s, p) => s + p.cloudLambdaMs, 0),
    connects: 1,
    connectLambdaMs: ASSUMED.reconnect.connectLambdaMs,
  };
  void o;
  const usage = { message, ping, reconnect };
  const perThousandUsersMonth = onlineUsersMonth({ ...ONLINE_DEFAULTS, ping, reconnect });
  return {
    usage,
    assumed: ASSUMED,
    perMillionMessages: perMillionMessages(message, WORST_CASE),
    perMillionMessagesBatched: perMillionMessages(message, BATCHED),
    perThousandUsersMonth,
    perThousandUsersMonthAssumed: onlineUsersMonth({ ...ONLINE_DEFAULTS, ping: ASSUMED.ping, reconnect: ASSUMED.reconnect }),
    idle: idleMonth(IDLE_DEFAULTS),
    idleWithFederation: idleMonth({ ...IDLE_DEFAULTS, federation: true }),
    withStreamManagement: withStreamManagement(ops, perThousandUsersMonth),
    withSasl2: withSasl2(ops, initial, logout),
    presence: presenceAndCsi(ops),
  };
}

/** Adds operations up (each scaled by its weight); SQS events count every invocation ($disconnect included). */
function combined(parts: [OperationCost, number][], extra: Partial<OperationUsage> = {}): OperationUsage {
  const sum = (f: (op: OperationCost) => number) => round(parts.reduce((s, [op, w]) => s + f(op) * w, 0));
  return {
    framesIn: sum((op) => op.framesIn),
    queueEvents: sum((op) => op.invocations),
    posts: sum((op) => op.posts),
    readUnits: sum((op) => op.readUnits),
    writeUnits: sum((op) => op.writeUnits),
    streamLambdaMs: sum((op) => op.cloudLambdaMs),
    ...extra,
  };
}

function withStreamManagement(ops: Record<string, OperationCost>, without: Bill): NonNullable<BenchResults['cost']>['withStreamManagement'] {
  const keepalive = ops['SM: <r/> keepalive (answered with <a h/>)'];
  const dies = ops['SM: socket dies ($disconnect: hibernation)'];
  const resumption = ['stream open', 'SASL (both SCRAM steps)', 'stream restart', '<resume/> (missed stanzas resent)'].map((l) => ops[`SM resumption: ${l}`]);
  if (!keepalive || !dies || resumption.some((op) => !op)) return undefined;
  // The keepalive of a client with stream management is <r/> (its answer is not a stanza, so it is
  // not numbered and asks for no acknowledgement); an XEP-0199 ping would be numbered and logged.
  const ping = combined([[keepalive, 1]]);
  const reconnect = combined([[dies, 1], ...resumption.map((op): [OperationCost, number] => [op!, 1])], { connects: 1, connectLambdaMs: ASSUMED.reconnect.connectLambdaMs });
  const perThousandUsersMonth = onlineUsersMonth({ ...ONLINE_DEFAULTS, ping, reconnect });
  return { ping, reconnect, perThousandUsersMonth, savedPerUserMonth: round((without.total - perThousandUsersMonth.total) / ONLINE_DEFAULTS.users, 4) };
}

/** The online months with SASL2 logins (BenchResults cost.withSasl2): a relogin without XEP-0198, a resumption with it. */
function withSasl2(ops: Record<string, OperationCost>, initial: OperationCost, logout: OperationCost): NonNullable<BenchResults['cost']>['withSasl2'] {
  const login = ['SASL2 login: stream open', 'SASL2 login: SCRAM with Bind 2 (both steps)', 'roster get'].map((l) => ops[l]);
  const resumption = ['SM: socket dies ($disconnect: hibernation)', 'SASL2 resumption: stream open', 'SASL2 resumption: SCRAM with <resume/> inside (missed stanzas resent)'].map((l) => ops[l]);
  const fast = ['SM: socket dies ($disconnect: hibernation)', 'FAST resumption: stream open', 'FAST resumption: token with <resume/> inside (missed stanzas resent)'].map((l) => ops[l]);
  const keepalive = ops['SM: <r/> keepalive (answered with <a h/>)'];
  const ping = ops['ping (XEP-0199)'];
  if (login.some((op) => !op) || resumption.some((op) => !op) || !keepalive || !ping) return undefined;
  const fastReconnect = fast.every((op) => op) ? combined((fast as OperationCost[]).map((op): [OperationCost, number] => [op, 1]), { connects: 1, connectLambdaMs: ASSUMED.reconnect.connectLambdaMs }) : undefined;
  const connects = { connects: 1, connectLambdaMs: ASSUMED.reconnect.connectLambdaMs };
  const reconnect = combined([...[...(login as OperationCost[]), initial, logout].map((op): [OperationCost, number] => [op, 1])], connects);
  // The old socket's $disconnect is an SQS event but no API Gateway message (as in costFrom).
  const smReconnect = combined((resumption as OperationCost[]).map((op): [OperationCost, number] => [op, 1]), connects);
  return {
    reconnect,
    perThousandUsersMonth: onlineUsersMonth({ ...ONLINE_DEFAULTS, ping: combined([[ping, 1]]), reconnect }),
    withStreamManagement: { reconnect: smReconnect, perThousandUsersMonth: onlineUsersMonth({ ...ONLINE_DEFAULTS, ping: combined([[keepalive, 1]]), reconnect: smReconnect }) },
    ...(fastReconnect && { withFastToken: { reconnect: fastReconnect, perThousandUsersMonth: onlineUsersMonth({ ...ONLINE_DEFAULTS, ping: combined([[keepalive, 1]]), reconnect: fastReconnect }) } }),
  };
}

/**
 * Presence on top of the online month: each user's changes as the measured broadcast to its
 * contacts, and what XEP-0352 changes of it (cost-model.ts, csiMonth), with the assumptions.
 */
function presenceAndCsi(ops: Record<string, OperationCost>): NonNullable<BenchResults['cost']>['presence'] {
  const change = ops['presence change (30 contacts)'] ?? Object.values(ops).find((op) => /^presence change \(\d+ contacts\)$/.test(op.label));
  const csi = { inactive: ops['CSI: <inactive/>'], active: ops['CSI: <active/> (held presence posted)'], held: ops['CSI: presence to an inactive session (held)'], posted: ops['CSI: presence to an active session (posted)'] };
  if (!change || Object.values(csi).some((op) => !op)) return undefined;
  const contacts = contactsIn(change.label);
  const usage = (op: OperationCost) => combined([[op, 1]]);
  const month = csiMonth(PRESENCE_DEFAULTS, contacts, { inactive: usage(csi.inactive!), active: usage(csi.active!), held: usage(csi.held!), posted: usage(csi.posted!) });
  return {
    assumed: PRESENCE_DEFAULTS,
    contacts,
    perThousandUsersMonth: presenceMonth(PRESENCE_DEFAULTS, usage(change)),
    csi: { heldPerPeriod: round(month.heldPerPeriod), postsAtFlush: round(month.postsAtFlush), withCsi: month.withCsi, without: month.without, difference: round(month.difference) },
  };
}

const contactsIn = (label: string) => Number(/\((\d+) contacts\)/.exec(label)?.[1] ?? 0);

export function goals(r: BenchResults): Goal[] {
  const out: Goal[] = [];
  const ops = r.perStanza?.operations ?? {};
  const msg = ops['1:1 message (recipient online)'];
  const mam = r.perStanza?.modules.includes('mam');
  if (msg) {
    const limit = mam ? 3 : 2;
    out.push({
      goal: `DynamoDB requests per 1:1 chat message (archiving ${mam ? 'on' : 'off'})`,
      target: `≤ ${limit}`,
      measured: `${msg.dynamoCalls} (${Object.entries(msg.dynamoByCommand).map(([k, v]) => `${v} ${k}`).join(', ')})`,
      met: msg.dynamoCalls <= limit,
    });
    out.push({
      goal: 'sequential DynamoDB round trips on the critical path of a warm 1:1 message (before delivery)',
      target: '1',
      measured: `${msg.dynamoRoundTripsBeforeFirstPost} before the post (${msg.dynamoRoundTrips} in the whole invocation)`,
      met: msg.dynamoRoundTripsBeforeFirstPost <= 1,
    });
    out.push({ goal: 'handler CPU per 1:1 chat message', target: '≤ 0.5 ms', measured: `${msg.handlerCpuMs} ms`, met: msg.handlerCpuMs <= 0.5 });
    out.push({ goal: "handler CPU per 1:1 chat message (issue 17's target)", target: '≤ 1.0 ms', measured: `${msg.handlerCpuMs} ms`, met: msg.handlerCpuMs <= 1.0 });
  }
  const cold = r.lambdas?.coldInit.stream;
  if (cold) {
    out.push({
      goal: `cold module initialization of the stream handler (Node ${r.lambdas!.node.version})`,
      target: '≤ 100 ms',
      measured: `${cold.importMs.p50} ms median of ${cold.runs} (max ${cold.importMs.max}); first invocation +${cold.firstInvokeMs?.p50} ms`,
      met: cold.importMs.p50 <= 100,
      note: r.lambdas!.node.note,
    });
  }
  const local = r.targets.local;
  if (local) {
    const lambdaRss = r.lambdas?.coldInit.stream.maxRssMb.p50;
    const peak = local.handlerProcessPeakRssMb;
    const capped = r.options.handlerHeapMb;
    const healthy = local.failures.length === 0;
    out.push({
      goal: 'stream Lambda peak memory under the benchmark',
      target: '≤ 256 MB',
      measured:
        peak === undefined
          ? 'not measured'
          : `${peak} MB peak RSS of the stream handler's process, which ran every invocation of the run at once (one Lambda instance runs one batch at a time), ` +
            (capped ? `its V8 heap capped at ${capped} MB` : "with V8's default heap limit (garbage stays until the heap needs room; --handler-heap-mb 160 checks the live memory)") +
            (lambdaRss ? `; ${lambdaRss} MB for a fresh Node 22 instance after two invocations` : ''),
      met: peak === undefined ? null : peak <= 256 ? healthy : capped ? false : null,
    });
  }
  const prosody = r.targets.prosody;
  if (local?.chatSaturation && prosody?.chatSaturation) {
    const x = r.ratios.messagesPerSec;
    out.push({ goal: "local stack messages/s vs Prosody's under the same load", target: '≥ 0.5×', measured: `${x}× (${local.chatSaturation.messagesPerSec} vs ${prosody.chatSaturation.messagesPerSec} msg/s)`, met: x !== null && x >= 0.5 });
  }
  if (local?.chatSteady) {
    const low = local.chatLowRate;
    out.push({
      goal: `p99 latency at ${local.chatSteady.offeredRate} messages/s`,
      target: '≤ 100 ms',
      measured: `${local.chatSteady.latencyMs.p99} ms${low ? ` (at ${low.offeredRate}/s: ${low.latencyMs.p99} ms)` : ''}`,
      met: local.chatSteady.latencyMs.p99 <= 100,
    });
  }
  // Issue 17's targets: presence and login round trips, logins/s, the online month.
  const change = Object.values(ops).filter((op) => /^presence change \(\d+ contacts\)$/.test(op.label)).sort((a, b) => contactsIn(b.label) - contactsIn(a.label))[0];
  if (change) {
    const n = contactsIn(change.label);
    const limit = Math.floor(n / 50) + 3;
    out.push({
      goal: `DynamoDB requests and sequential round trips of a presence change to ${n} contacts`,
      target: `≤ ${limit} requests (N/50 + 3), ≤ 3 round trips`,
      measured: `${change.dynamoCalls} requests (${Object.entries(change.dynamoByCommand).map(([k, v]) => `${v} ${k}`).join(', ')}), ${change.dynamoRoundTrips} round trips`,
      met: change.dynamoCalls <= limit && change.dynamoRoundTrips <= 3,
    });
  }
  const initial = Object.values(ops).find((op) => op.label.startsWith('initial presence'));
  // The login's round trips, RFC 6120's way and by SASL2 with Bind 2, each up to initial presence.
  for (const [how, labels] of [
    ['(open, SASL, restart, bind, roster, initial presence)', ['stream open', 'SASL (both SCRAM steps)', 'stream restart', 'bind', 'roster get']],
    ['by SASL2 and Bind 2 (open, SASL2 with the bind, roster, initial presence)', ['SASL2 login: stream open', 'SASL2 login: SCRAM with Bind 2 (both steps)', 'roster get']],
  ] as const) {
    const login = labels.map((l) => ops[l]);
    if (!login.every((op) => op) || !initial) continue;
    const steps = [...(login as OperationCost[]), initial];
    const trips = round(steps.reduce((sum, op) => sum + op.dynamoRoundTrips, 0));
    out.push({
      goal: `sequential DynamoDB round trips of a login ${how}`,
      target: '≤ 6',
      measured: `${trips} (${steps.map((op) => `${op.label} ${op.dynamoRoundTrips}`).join(', ')})`,
      met: trips <= 6,
    });
  }
  // "Initial presence and logout likewise" (issue 17): the same limits, for the probe's contacts.
  const logoutOp = ops['logout (<close/> and $disconnect)'];
  for (const [what, op, n] of [
    ['initial presence', initial, initial && contactsIn(initial.label)],
    ['logout (<close/> and $disconnect, two invocations)', logoutOp, initial && contactsIn(initial.label)],
  ] as const) {
    if (!op || !n) continue;
    const limit = Math.floor(n / 50) + 3;
    out.push({
      goal: `DynamoDB requests and sequential round trips of ${what} to ${n} contacts`,
      target: `≤ ${limit} requests (N/50 + 3), ≤ 3 round trips`,
      measured: `${op.dynamoCalls} requests (${Object.entries(op.dynamoByCommand).map(([k, v]) => `${v} ${k}`).join(', ')}), ${op.dynamoRoundTrips} round trips`,
      met: op.dynamoCalls <= limit && op.dynamoRoundTrips <= 3,
    });
  }
  if (r.ratios.loginsPerSec !== null && r.ratios.loginsPerSec !== undefined) {
    out.push({ goal: "logins/s in the storm vs Prosody's", target: '≥ 0.5×', measured: `${r.ratios.loginsPerSec}×`, met: r.ratios.loginsPerSec >= 0.5 });
  }
  if (r.cost?.withStreamManagement) {
    const before = 98.93; // docs/cost.md before issue 17: the month of 1,000 online users, measured on 2026-11-22
    const now = r.cost.withStreamManagement.perThousandUsersMonth.total;
    const sasl2 = r.cost.withSasl2;
    out.push({
      goal: 'cost of 1,000 users online for a month (with XEP-0198 resumption instead of relogin)',
      target: `≤ $${(before / 2).toFixed(2)} (half of $${before})`,
      measured: `$${now.toFixed(2)} ($${r.cost.perThousandUsersMonth.total.toFixed(2)} without resumption)${sasl2 ? `; with SASL2 logins $${sasl2.withStreamManagement.perThousandUsersMonth.total.toFixed(2)} ($${sasl2.perThousandUsersMonth.total.toFixed(2)} without resumption)` : ''}${sasl2?.withFastToken ? `, resuming with a FAST token $${sasl2.withFastToken.perThousandUsersMonth.total.toFixed(2)}` : ''}`,
      met: Math.min(now, sasl2?.withStreamManagement.perThousandUsersMonth.total ?? now, sasl2?.withFastToken?.perThousandUsersMonth.total ?? now) <= before / 2,
    });
  }
  if (r.cost) {
    out.push({ goal: 'cost per million 1:1 messages, all-in', target: '≤ $2.50', measured: `$${r.cost.perMillionMessages.total.toFixed(2)} unbatched, $${r.cost.perMillionMessagesBatched.total.toFixed(2)} batched`, met: r.cost.perMillionMessages.total <= 2.5 });
  }
  return out;
}
