/**
 * The benchmark harness: the same load against each server under test (bench/targets.ts), in one
 * run, so the results are ratios measured side by side; plus, for our stack, what each stanza costs
 * in DynamoDB requests and capacity, @connections posts and handler CPU (bench/local-server.ts), the
 * Lambda bundles and their cold start (bench/lambdas.ts), and the money (bench/cost-model.ts).
 *
 * Scenarios, in this order for each server:
 * 1. setup (not measured): accounts by XEP-0077 in-band registration (each followed by one SCRAM
 *    login on the same stream, so the generator knows each account's SaltedPassword, as real
 *    clients keep it); rosters written straight into the server's storage;
 * 2. login storm: every client connects, authenticates (SCRAM-SHA-1) and binds at once;
 * 3. going online: roster get + initial presence from everyone at once, until each client has seen
 *    every online contact's presence;
 * 4. presence broadcast: one user with a roster of `presenceRoster` online contacts changes status,
 *    one change after the other reaches everyone;
 * 5. 1:1 chat at a steady rate, first a light one (`lowChatRate`), then `chatRate` messages/s among
 *    the online users, each to a contact;
 * 6. 1:1 chat, saturation: every user keeps one message in flight (closed loop);
 * 7. room fan-out (bench/muc-fanout.ts), when it exists;
 * 8. (our stack only) per-operation probes, one frame at a time.
 *
 * This file runs them (runTarget, runBench) and measures each phase from the server's side
 * (measured). The parts: options.ts (what to run), sessions.ts (users, rosters, what clients
 * receive), scenarios.ts (phases 1–6), probes.ts (8), goals.ts (cost and goals), results.ts (types).
 */
import { cpus, freemem, loadavg, totalmem, release } from 'node:os';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { XmppWsClient } from './client.ts';
import { costFrom, goals } from './goals.ts';
import { bundleLambdas, measureColdInit, node22, type BundleInfo, type ColdInit } from './lambdas.ts';
import type { Snapshot } from './local-server.ts';
import type { BenchOptions } from './options.ts';
import { probeOperations } from './probes.ts';
import { ProsodyTarget, prosodyVersion } from './prosody-target.ts';
import type { BenchResults, Chat, ErrorCounts, LoadStats, PerStanza, TargetResult } from './results.ts';
import { chatSaturation, chatSteady, goingOnline, loginStorm, presenceBroadcast, register } from './scenarios.ts';
import { buildUsers, Router } from './sessions.ts';
import { round } from './stats.ts';
import { LocalTarget, processCpuMs, processPeakRss, REPO_ROOT, type Target, type TargetKind } from './targets.ts';

// ---------------------------------------------------------------------------------------------
// Measuring a phase

function cpuOf(target: Target): number {
  return target.pids().reduce((sum, pid) => sum + processCpuMs(pid), 0);
}

/** Measures a phase: server CPU, and (our stack) what the handlers did. */
async function measured<T extends object>(target: Target, run: () => Promise<T>, messages?: (r: T) => number): Promise<T & LoadStats> {
  const local = target instanceof LocalTarget ? target : undefined;
  const handlerPid0 = local ? (await local.reset()).handlerPid : undefined;
  const handlerCpu0 = handlerPid0 ? processCpuMs(handlerPid0) : 0;
  const cpu0 = cpuOf(target);
  const result = await run();
  const drainMs = local ? round(await local.idle(50, 120_000)) : undefined;
  const serverCpuMs = round(cpuOf(target) - cpu0);
  const stats: LoadStats = { serverCpuMs, drainMs };
  if (local) {
    const snap = await local.snapshot();
    // The handler process starts on the first frame: then its whole CPU time so far counts.
    if (snap.handlerPid) stats.handlerCpuMs = round(processCpuMs(snap.handlerPid) - (snap.handlerPid === handlerPid0 ? handlerCpu0 : 0));
    const d = Object.values(snap.counters.dynamo);
    stats.dynamoCalls = d.reduce((s, c) => s + c.calls, 0);
    stats.readUnits = round(d.reduce((s, c) => s + c.readUnits, 0));
    stats.writeUnits = round(d.reduce((s, c) => s + c.writeUnits, 0));
    stats.posts = snap.counters.posts;
    stats.invocations = snap.counters.invocations;
    const failed = snap.counters.deadLetters + snap.counters.gatewayErrors;
    const errors = (result as { errors?: ErrorCounts }).errors;
    if (failed && errors) {
      errors.byKind['handler failures (gateway errors, dead letters)'] = failed;
      errors.total += failed;
    }
  }
  const n = messages?.(result);
  if (n) {
    Object.assign(stats, {
      serverCpuMsPerMessage: round(serverCpuMs / n),
      ...(stats.dynamoCalls !== undefined ? { dynamoCallsPerMessage: round(stats.dynamoCalls / n), postsPerMessage: round(stats.posts! / n) } : {}),
      ...(stats.handlerCpuMs !== undefined ? { handlerCpuMsPerMessage: round(stats.handlerCpuMs / n) } : {}),
    });
  }
  return Object.assign(result, stats);
}

// ---------------------------------------------------------------------------------------------
// Room fan-out (another engineer's bench/muc-fanout.ts), when present

type RunMucFanout = (
  target: { wsUrl: string; domain: string; kind: string; connectionsEndpoint?: string; dynamoEndpoint?: string; tableName?: string },
  log: (l: string) => void,
  options?: { sizes?: number[]; runs?: number },
) => Promise<{ status?: string }>;

async function roomFanOut(o: BenchOptions, target: Target, log: (l: string) => void): Promise<{ status: string; result?: unknown }> {
  const file = join(REPO_ROOT, 'bench', 'muc-fanout.ts');
  if (!existsSync(file)) return { status: 'bench/muc-fanout.ts does not exist yet: room fan-out not measured' };
  const mod = (await import(file)) as { runMucFanout?: RunMucFanout };
  if (typeof mod.runMucFanout !== 'function') return { status: 'bench/muc-fanout.ts exports no runMucFanout(target, log, options): not folded in' };
  if (o.roomSizes.length === 0) return { status: 'skipped (no room sizes given)' };
  log(`[${target.kind}] room fan-out (bench/muc-fanout.ts): rooms of ${o.roomSizes.join(', ')}`);
  const result = await mod.runMucFanout({ wsUrl: target.wsUrl, domain: target.domain, kind: target.kind }, (l) => log(`  ${l.trim()}`), { sizes: o.roomSizes, runs: o.roomRuns });
  return { status: result.status ?? 'measured', result };
}

// ---------------------------------------------------------------------------------------------
// One target

interface LocalExtras {
  perStanza?: PerStanza;
  lambdas?: BenchResults['lambdas'];
}

async function runTarget(o: BenchOptions, kind: TargetKind, extras: LocalExtras): Promise<TargetResult> {
  const log = o.log;
  const before = loadavg().map((l) => round(l, 2));
  log(`[${kind}] starting (load average ${before.join(' ')})`);
  const target: Target =
    kind === 'local' ? await LocalTarget.start({ dynamoEndpoint: o.dynamoEndpoint, handlerHeapMb: o.handlerHeapMb }) : await ProsodyTarget.start();
  const failures: string[] = [];
  const result: TargetResult = { kind, server: target.describe(), loadAverage: { before, after: [] }, setupMs: 0, peakRssMb: 0, failures };
  const clients = new Map<string, XmppWsClient>();
  const router = new Router();
  try {
    await runScenarios();
  } catch (err) {
    failures.push(`setup: ${(err as Error).stack ?? err}`);
    log(`[${kind}] FAILED: ${(err as Error).message}`);
  } finally {
    await Promise.all([...clients.values()].map((c) => c.close(2000).catch(() => c.terminate())));
    if (target instanceof LocalTarget && target.stderr.includes('Error')) {
      const lines = target.stderr.split('\n').filter((l) => /error/i.test(l)).slice(-5);
      if (lines.length) log(`[local] stderr (last errors):\n  ${lines.join('\n  ')}`);
    }
    await target.stop();
    result.loadAverage.after = loadavg().map((l) => round(l, 2));
  }
  return result;

  async function runScenarios(): Promise<void> {
    const setupStart = performance.now();
    const { users, broadcaster, probes, rosters } = buildUsers(o, target.domain);
    await register(target, [...users, broadcaster, ...probes], log);
    await target.writeRosters(rosters);
    result.setupMs = round(performance.now() - setupStart);
    log(`[${kind}] setup: ${users.length + 1 + probes.length} accounts, ${[...rosters.values()].reduce((s, r) => s + r.length, 0)} roster items in ${(result.setupMs / 1000).toFixed(1)} s`);

    const online = [...users, broadcaster];
    const phase = async <T>(name: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (err) {
        failures.push(`${name}: ${(err as Error).stack ?? err}`);
        log(`[${kind}] ${name} FAILED: ${(err as Error).message}`);
        return undefined;
      }
    };

    result.loginStorm = await phase('login storm', async () => (await measured(target, () => loginStorm(target, online, router, clients))));
    log(`[${kind}] login storm: ${result.loginStorm?.ok}/${online.length} in ${result.loginStorm?.durationMs} ms = ${result.loginStorm?.loginsPerSec} logins/s, p99 ${result.loginStorm?.latencyMs.p99} ms`);

    result.goingOnline = await phase('going online', async () => (await measured(target, () => goingOnline(online, router, clients, o.onlineTimeoutMs))));
    log(`[${kind}] going online: ${result.goingOnline?.complete}/${result.goingOnline?.clients} in ${result.goingOnline?.durationMs} ms, p99 ${result.goingOnline?.latencyMs.p99} ms`);

    result.presenceBroadcast = await phase('presence broadcast', async () => (await measured(target, () => presenceBroadcast(o, broadcaster, router, clients))));
    log(`[${kind}] presence broadcast to ${result.presenceBroadcast?.rosterSize}: ${result.presenceBroadcast?.broadcastsPerSec}/s, fan-out p99 ${result.presenceBroadcast?.fanOutMs.p99} ms`);

    result.chatLowRate = await phase('chat at a light rate', async () =>
      ((await measured(target, () => chatSteady(o, users, router, clients, o.lowChatRate, o.lowChatSeconds), (r) => r.delivered)) as Chat),
    );
    log(`[${kind}] chat at ${o.lowChatRate}/s: ${result.chatLowRate?.delivered}/${result.chatLowRate?.sent} delivered, p50/p95/p99 ${result.chatLowRate?.latencyMs.p50}/${result.chatLowRate?.latencyMs.p95}/${result.chatLowRate?.latencyMs.p99} ms`);

    result.chatSteady = await phase('chat steady', async () => ((await measured(target, () => chatSteady(o, users, router, clients), (r) => r.delivered)) as Chat));
    log(`[${kind}] chat at ${o.chatRate}/s: ${result.chatSteady?.delivered}/${result.chatSteady?.sent} delivered, p50/p95/p99 ${result.chatSteady?.latencyMs.p50}/${result.chatSteady?.latencyMs.p95}/${result.chatSteady?.latencyMs.p99} ms`);

    result.chatSaturation = await phase('chat saturation', async () => ((await measured(target, () => chatSaturation(o, users, router, clients), (r) => r.delivered)) as Chat));
    log(`[${kind}] chat saturation: ${result.chatSaturation?.messagesPerSec} msg/s, p99 ${result.chatSaturation?.latencyMs.p99} ms`);

    if (target instanceof LocalTarget) {
      extras.perStanza = await phase('per-operation probes', () => probeOperations(o, target, { probes, broadcaster }, router, clients, log));
      if (o.coldStartRuns > 0) {
        extras.lambdas = await phase('lambda bundles and cold start', async () => {
          log('[local] bundling the Lambdas with cdk/lib/bundle.ts');
          const bundles = await bundleLambdas();
          const node = o.node22 ? node22(log) : { path: process.execPath, version: process.version, source: 'machine' as const };
          log(`[local] cold start on Node ${node.version} (${node.source}), ${o.coldStartRuns} runs each`);
          const env = { domain: target.domain, tableName: target.info.tableName, dynamoEndpoint: target.info.dynamoEndpoint, connectionsEndpoint: target.info.connectionsEndpoint };
          let coldInit: Record<'connect' | 'stream', ColdInit>;
          try {
            coldInit = {
              connect: measureColdInit(node, 'connect', bundles.connect, o.coldStartRuns, env),
              stream: measureColdInit(node, 'stream', bundles.stream, o.coldStartRuns, env),
            };
          } finally {
            bundles.cleanup();
          }
          const strip = ({ path: _p, ...rest }: BundleInfo) => rest;
          return { node, bundles: { connect: strip(bundles.connect), stream: strip(bundles.stream) }, coldInit };
        });
      }
      const snap: Snapshot = await target.snapshot();
      result.gatewayProcessPeakRssMb = round(snap.maxRssKb / 1024);
      if (snap.handlerPid) result.handlerProcessPeakRssMb = round(processPeakRss(snap.handlerPid) / 1024 / 1024);
    }
    // Last: its 1,000-occupant room leaves a backlog the other phases should not wait behind.
    result.roomFanOut = await phase('room fan-out', () => roomFanOut(o, target, log));
    result.peakRssMb = round(target.pids().reduce((s, pid) => s + processPeakRss(pid), 0) / 1024 / 1024);
  }
}

// ---------------------------------------------------------------------------------------------
// The run

function gitInfo(): { commit?: string; dirty?: boolean } {
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  // Earlier results in bench/results/ do not make the measured code dirty.
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results'], { cwd: REPO_ROOT, encoding: 'utf8' });
  return { commit: head.stdout?.trim() || undefined, dirty: status.status === 0 ? status.stdout.trim().length > 0 : undefined };
}

function ratio(a: number | undefined, b: number | undefined): number | null {
  return a !== undefined && b !== undefined && b !== 0 && Number.isFinite(a) && Number.isFinite(b) ? round(a / b) : null;
}

export async function runBench(o: BenchOptions): Promise<BenchResults> {
  const startedAt = new Date().toISOString();
  const cpu = cpus();
  const { log: _log, ...options } = o;
  const results: BenchResults = {
    schema: 1,
    mode: o.mode,
    startedAt,
    finishedAt: '',
    options,
    machine: {
      cpu: `${cpu[0]?.model ?? 'unknown'} × ${cpu.length}`,
      memoryGb: round(totalmem() / 2 ** 30, 1),
      freeMemoryGb: round(freemem() / 2 ** 30, 1),
      kernel: release(),
      node: process.version,
      prosody: o.targets.includes('prosody') ? prosodyVersion() : undefined,
      loadAverageAtStart: loadavg().map((l) => round(l, 2)),
      ...gitInfo(),
    },
    targets: {},
    ratios: {},
    goals: [],
    roomFanOut: '',
  };
  const extras: LocalExtras = {};
  for (const kind of o.targets) results.targets[kind] = await runTarget(o, kind, kind === 'local' ? extras : {});
  results.perStanza = extras.perStanza;
  results.lambdas = extras.lambdas;
  results.cost = costFrom(extras.perStanza, o);
  const l = results.targets.local;
  const p = results.targets.prosody;
  results.ratios = {
    loginsPerSec: ratio(l?.loginStorm?.loginsPerSec, p?.loginStorm?.loginsPerSec),
    messagesPerSec: ratio(l?.chatSaturation?.messagesPerSec, p?.chatSaturation?.messagesPerSec),
    p99AtSteadyRate: ratio(l?.chatSteady?.latencyMs.p99, p?.chatSteady?.latencyMs.p99),
    p99AtLowRate: ratio(l?.chatLowRate?.latencyMs.p99, p?.chatLowRate?.latencyMs.p99),
    presenceBroadcastsPerSec: ratio(l?.presenceBroadcast?.broadcastsPerSec, p?.presenceBroadcast?.broadcastsPerSec),
    serverCpuPerMessage: ratio(l?.chatSaturation?.serverCpuMsPerMessage, p?.chatSaturation?.serverCpuMsPerMessage),
  };
  const room = (l?.roomFanOut ?? p?.roomFanOut) as { status?: string } | undefined;
  results.roomFanOut = room?.status ?? 'not run';
  results.goals = goals(results);
  results.machine.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
  results.finishedAt = new Date().toISOString();
  return results;
}
