/**
 * Room fan-out: how long one groupchat message takes to reach every occupant of rooms of 10, 100
 * and 1,000 occupants (more with --sizes), through a real server (the local stack by default), with
 * the lean client of bench/client.ts (RFC 7395 frames by hand, jabber:client in every frame, so
 * Prosody takes them too). Prints JSON.
 *
 *   npx tsx bench/muc-fanout.ts                      its own local stack (a child process), 10/100/1000
 *   npx tsx bench/muc-fanout.ts --sizes 1000,5000    other room sizes; --runs 10: measured messages per room
 *
 * `runMucFanout(target, log)` is the entry point for `npm run bench` (bench/harness.ts).
 *
 * Measured: from the sender's frame leaving the client to the last occupant (the sender's own
 * reflection included) receiving it. Locally: a FIFO hop to the stream handler, the room and
 * occupant reads, the archive write, then the posts (FANOUT_CONCURRENCY at a time), from the
 * sender's frame up to XMPP_MUC_INLINE_FANOUT_MAX sessions and from fan-out jobs above it
 * (docs/muc-fanout.md). With its own stack it also measures the raw @connections POST rate.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Element } from 'ltx';
import { forEachBounded } from '../shared/core/bounded.ts';
import { FANOUT_CONCURRENCY } from '../shared/modules/muc/service.ts';
import { DynamoStore } from '../shared/storage/dynamo-store.ts';
import { MucStore } from '../shared/storage/muc-store.ts';
import { ApiGatewayConnectionSender } from '../shared/transport/connections.ts';
import { esc, nextId, XmppWsClient, type XmppClientError } from './client.ts';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const REPO = resolve(import.meta.dirname, '..');
const PASSWORD = 'bench-muc-pass';
const MUC = 'http://jabber.org/protocol/muc';
/** Rooms above this are filled by writing occupant items (each join reads the whole list: 5,000 joins are O(N²), ~20 min). */
const JOIN_AT_MOST = 1000;
/** The server's inline fan-out limit (shared/config.ts): rooms above it go through fan-out jobs. */
const INLINE_FANOUT_MAX = Number(process.env.XMPP_MUC_INLINE_FANOUT_MAX || 200);

export interface FanoutTarget {
  wsUrl: string;
  domain: string;
  kind: string;
  /** Only when the bench started the stack: for the raw @connections POST rate. */
  connectionsEndpoint?: string;
  dynamoEndpoint?: string;
  tableName?: string;
}

export interface FanoutOptions {
  sizes?: number[];
  runs?: number;
}

interface Stats {
  min: number;
  p50: number;
  p95: number;
  max: number;
}

export interface FanoutResult {
  bench: 'muc-fanout';
  target: string;
  startedAt: string;
  machine: { cpus: number; node: string; loadAverageAtStart: number[] };
  fanoutConcurrency: number;
  setup: { occupants: number; registerMs: number; loginMs: number; joinMs: Record<string, number> };
  rooms: {
    occupants: number;
    runs: number;
    /** How the occupants got in: by joining, or written to the table (JOIN_AT_MOST). */
    filled: 'joined' | 'seeded';
    /** Where the copies were posted from (local stack only: XMPP_MUC_INLINE_FANOUT_MAX). */
    fanout?: 'sender invocation' | 'fan-out jobs';
    lastDeliveryMs: Stats;
    firstDeliveryMs: Stats;
    occupantsPerSecond: number;
  }[];
  /** Raw @connections POSTs from this process (the real SDK client): rate and the sender's CPU per post. */
  postRate?: { concurrency: number; posts: number; ms: number; postsPerSecond: number; senderCpuMsPerPost: number }[];
  status?: string;
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

function stats(values: number[]): Stats {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { min: round(sorted[0]!), p50: round(at(0.5)), p95: round(at(0.95)), max: round(sorted[sorted.length - 1]!) };
}

/**
 * One occupant on the shared client (bench/client.ts): in-band registration (XEP-0077; an existing
 * account is fine), PLAIN login, bind. Stanzas nobody waits for are dropped.
 */
async function occupant(target: FanoutTarget, user: string): Promise<XmppWsClient> {
  const c = new XmppWsClient(target.wsUrl, target.domain, 60_000);
  c.onStanza = () => {};
  await c.connect();
  await c.openStream();
  try {
    await c.register(user, PASSWORD);
  } catch (err) {
    if ((err as XmppClientError).condition !== 'conflict') throw new Error(`registering ${user}: ${(err as Error).message}`);
  }
  await c.authenticatePlain(user, PASSWORD);
  await c.openStream();
  await c.bind('bench');
  return c;
}

/** An iq; an error reply rejects. Every frame names jabber:client (RFC 7395 §3.3.3: Prosody refuses those that do not). */
function iq(c: XmppWsClient, type: 'get' | 'set', to: string, payload: string): Promise<Element> {
  const id = nextId('q');
  return c.iq(`<iq xmlns="jabber:client" type="${type}" id="${id}" to="${esc(to)}">${payload}</iq>`, id);
}

/** Joins without history; resolves on the self-presence (status 110). */
async function joinRoom(c: XmppWsClient, room: string, nick: string): Promise<void> {
  const from = `${room}/${nick}`;
  const self = c.next(
    (el) =>
      el.name === 'presence' &&
      el.attrs.from === from &&
      (el.attrs.type === 'error' || el.getChildren('x').some((x) => x.getChildren('status').some((s) => s.attrs.code === '110'))),
    `self-presence in ${room}`,
    120_000,
  );
  c.send(`<presence xmlns="jabber:client" to="${esc(room)}/${esc(nick)}"><x xmlns="${MUC}"><history maxchars="0"/></x></presence>`);
  const el = await self;
  if (el.attrs.type === 'error') throw new Error(`joining ${room} as ${nick}: ${el.toString()}`);
}

/** Finds the conference service in the server's disco#items (XEP-0045 §6.1). */
async function findService(client: XmppWsClient, domain: string): Promise<string | undefined> {
  const items = await iq(client, 'get', domain, '<query xmlns="http://jabber.org/protocol/disco#items"/>');
  for (const item of items.getChild('query')?.getChildren('item') ?? []) {
    const jid = item.attrs.jid as string | undefined;
    if (!jid) continue;
    const info = await iq(client, 'get', jid, '<query xmlns="http://jabber.org/protocol/disco#info"/>').catch(() => undefined);
    const query = info?.getChild('query');
    if (query?.getChildren('identity').some((i) => i.attrs.category === 'conference') && query.getChildren('feature').some((f) => f.attrs.var === MUC)) return jid;
  }
  return undefined;
}

export async function runMucFanout(target: FanoutTarget, log: (line: string) => void = () => {}, options: FanoutOptions = {}): Promise<FanoutResult> {
  const sizes = [...(options.sizes ?? [10, 100, 1000])].sort((a, b) => a - b);
  const runs = options.runs ?? 5;
  const total = sizes[sizes.length - 1]!;
  const tag = randomBytes(3).toString('hex');
  const result: FanoutResult = {
    bench: 'muc-fanout',
    target: target.kind,
    startedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version, loadAverageAtStart: loadavg().map((l) => round(l, 2)) },
    fanoutConcurrency: FANOUT_CONCURRENCY,
    setup: { occupants: total, registerMs: 0, loginMs: 0, joinMs: {} },
    rooms: [],
  };
  const clients: XmppWsClient[] = [];
  try {
    // Occupants: registered and logged in 16 at a time.
    const start = performance.now();
    const names = Array.from({ length: total }, (_, i) => `muc-${tag}-${i}`);
    await forEachBounded(names, 16, async (name) => {
      clients[names.indexOf(name)] = await occupant(target, name);
      if (clients.filter(Boolean).length % 200 === 0) log(`  ${clients.filter(Boolean).length}/${total} occupants logged in`);
    });
    result.setup.loginMs = round(performance.now() - start);
    result.setup.registerMs = result.setup.loginMs; // registration and login share one stream per occupant

    const owner = clients[0]!;
    const service = await findService(owner, target.domain);
    if (!service) {
      result.status = `no XEP-0045 service in the disco#items of ${target.domain}`;
      return result;
    }
    for (const size of sizes) {
      const room = `fanout-${tag}-${size}@${service}`;
      const joinStart = performance.now();
      await joinRoom(owner, room, 'c0');
      // A big room broadcasts only moderators' presence, so joining costs O(1) posts, not O(N).
      await iq(
        owner,
        'set',
        room,
        `<query xmlns="${MUC}#owner"><x xmlns="jabber:x:data" type="submit">` +
          `<field var="FORM_TYPE"><value>${MUC}#roomconfig</value></field>` +
          `<field var="muc#roomconfig_maxusers"><value>none</value></field>` +
          `<field var="muc#roomconfig_presencebroadcast"><value>moderator</value></field>` +
          `</x></query>`,
      );
      const seeded = size > JOIN_AT_MOST && target.dynamoEndpoint !== undefined && target.tableName !== undefined;
      if (seeded) {
        await seedOccupants(target, room, names.slice(1, size));
      } else {
        await forEachBounded(clients.slice(1, size), 16, async (c) => {
          await joinRoom(c, room, `c${clients.indexOf(c)}`);
        });
      }
      result.setup.joinMs[String(size)] = round(performance.now() - joinStart);
      log(`  room of ${size}: ${seeded ? 'occupants written' : 'joined'} in ${result.setup.joinMs[String(size)]} ms`);

      const members = clients.slice(0, size);
      const last: number[] = [];
      const first: number[] = [];
      for (let run = 0; run <= runs; run++) {
        const marker = `m-${tag}-${size}-${run}-${randomBytes(4).toString('hex')}`;
        let got = 0;
        let firstAt = 0;
        const done = new Promise<number>((res, rej) => {
          const timer = setTimeout(() => rej(new Error(`room of ${size}: only ${got} of ${size} occupants got the message`)), 120_000);
          for (const c of members) {
            // On the frame's text, before any parse: what the occupant's receiving costs stays a string search.
            c.onFrame = (frame) => {
              if (!frame.includes(marker)) return false;
              got++;
              if (got === 1) firstAt = performance.now();
              if (got === size) {
                clearTimeout(timer);
                res(performance.now());
              }
              return true;
            };
          }
        });
        const sent = performance.now();
        owner.send(`<message xmlns="jabber:client" to="${room}" type="groupchat" id="${marker}"><body>${marker}</body></message>`);
        const end = await done;
        for (const c of members) c.onFrame = undefined;
        if (run === 0) continue; // warm-up
        last.push(end - sent);
        first.push(firstAt - sent);
      }
      const lastStats = stats(last);
      const fanout = target.kind === 'local' ? (size > INLINE_FANOUT_MAX ? 'fan-out jobs' : 'sender invocation') : undefined;
      result.rooms.push({ occupants: size, runs, filled: seeded ? 'seeded' : 'joined', fanout, lastDeliveryMs: lastStats, firstDeliveryMs: stats(first), occupantsPerSecond: round((size / lastStats.p50) * 1000, 0) });
      log(`  room of ${size}: last occupant after ${lastStats.p50} ms (p50 of ${runs})`);
    }

    if (target.connectionsEndpoint && target.dynamoEndpoint && target.tableName) {
      result.postRate = await measurePostRate(target, tag, log);
    }
    result.status = 'measured';
    return result;
  } finally {
    for (const c of clients) c?.terminate();
  }
}

/**
 * The raw @connections POST rate one process reaches at each concurrency, with the real SDK client.
 * Measured in a child process of its own, so its CPU time is the sender's alone (the occupants'
 * sockets are in this process).
 */
async function measurePostRate(target: FanoutTarget, tag: string, log: (l: string) => void): Promise<FanoutResult['postRate']> {
  localAwsEnv();
  const store = new DynamoStore({ tableName: target.tableName!, endpoint: target.dynamoEndpoint });
  const ids = (await store.listSessions()).filter((s) => s.bare.startsWith(`muc-${tag}-`)).map((s) => s.connectionId);
  const child = spawn(process.execPath, ['--import', 'tsx', import.meta.filename, '--post-rate', target.connectionsEndpoint!], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stdin!.end(JSON.stringify(ids));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`post-rate child exited with ${code}`);
  const rows = JSON.parse(output) as NonNullable<FanoutResult['postRate']>;
  for (const row of rows) log(`  @connections POST at concurrency ${row.concurrency}: ${row.postsPerSecond}/s, ${row.senderCpuMsPerPost} ms CPU per post`);
  return rows;
}

/**
 * Puts the bench users `names` (logged in, one session each) into `room` as participants, as their
 * joins would: an occupant item per nick and the user's join record. Nicks are c1, c2… as joinRoom's.
 */
async function seedOccupants(target: FanoutTarget, room: string, names: string[]): Promise<void> {
  localAwsEnv();
  const store = new DynamoStore({ tableName: target.tableName!, endpoint: target.dynamoEndpoint });
  const muc = store.open(MucStore);
  const sessions = new Map((await store.listSessions()).map((s) => [s.bare, s]));
  await forEachBounded(names, 32, async (name) => {
    const bare = `${name}@${target.domain}`;
    const session = sessions.get(bare);
    if (!session) throw new Error(`seeding ${room}: ${bare} has no session`);
    const nick = `c${Number(name.split('-').at(-1))}`;
    const jid = `${bare}/${session.resource}`;
    // Joined two minutes ago: a room in its steady state. A message within a minute of a join also
    // claims its delivery to that session (fanout.ts, mayDeliver): one conditional write per recent joiner.
    await muc.putOccupant(room, { nick, bare, role: 'participant', affiliation: 'none', sessions: [{ jid, connectionId: session.connectionId, joinedAt: Date.now() - 120_000 }], version: 0 }, 0);
    await muc.putJoin(bare, { room, nick, resource: session.resource, connectionId: session.connectionId });
  });
}

/** DynamoDB Local and the local gateway ignore signatures, but the SDK wants a region and keys. */
function localAwsEnv(): void {
  process.env.AWS_REGION ??= 'local';
  process.env.AWS_ACCESS_KEY_ID ??= 'local';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'local';
}

/** The child's side of measurePostRate: connection ids on stdin, JSON rows on stdout. */
async function postRateChild(endpoint: string): Promise<void> {
  localAwsEnv();
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  const ids = JSON.parse(input) as string[];
  const sender = new ApiGatewayConnectionSender(endpoint);
  await forEachBounded(ids.slice(0, 100), 8, async (id) => void (await sender.send(id, ' '))); // warm the HTTP agent
  const out: NonNullable<FanoutResult['postRate']> = [];
  for (const concurrency of [1, 8, 16, 32, 64, 128]) {
    // Three rounds over every occupant's connection; the median round is kept (the machine is shared).
    const rounds: { ms: number; cpuMs: number }[] = [];
    for (let r = 0; r < 3; r++) {
      const cpu = process.cpuUsage();
      const start = performance.now();
      // A whitespace frame: the clients ignore it, the gateway treats it as any other POST.
      await forEachBounded(ids, concurrency, async (id) => void (await sender.send(id, ' ')));
      const used = process.cpuUsage(cpu);
      rounds.push({ ms: performance.now() - start, cpuMs: (used.user + used.system) / 1000 });
    }
    const { ms, cpuMs } = rounds.sort((a, b) => a.ms - b.ms)[1]!;
    out.push({ concurrency, posts: ids.length, ms: round(ms), postsPerSecond: round((ids.length / ms) * 1000, 0), senderCpuMsPerPost: round(cpuMs / ids.length, 3) });
  }
  process.stdout.write(JSON.stringify(out));
}

/** Starts `local/start.ts --in-memory` as a child process (so the clients do not share its CPU time). */
async function startLocalStackProcess(log: (l: string) => void): Promise<{ target: FanoutTarget; stop: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'muc-fanout-'));
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'local', 'start.ts'), '--in-memory'], {
    cwd: REPO,
    env: { ...process.env, XMPP_WS_PORT: '0', XMPP_REGISTRATION: 'true', XMPP_FEDERATION: 'false', XMPP_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const target = await new Promise<FanoutTarget>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`local stack did not start:\n${output}`)), 120_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const ws = /XMPP over WebSocket: (\S+) \(domain ([^)]+)\)/.exec(output);
      const dynamo = /DynamoDB Local: (\S+) \(table (\S+?),/.exec(output);
      const conns = /@connections API: (\S+)/.exec(output);
      if (ws && dynamo && conns) {
        clearTimeout(timer);
        res({ kind: 'local', wsUrl: ws[1]!, domain: ws[2]!, dynamoEndpoint: dynamo[1]!, tableName: dynamo[2]!, connectionsEndpoint: conns[1]! });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => rej(new Error(`local stack exited (${code}):\n${output}`)));
  });
  log(`local stack at ${target.wsUrl} (pid ${child.pid})`);
  return {
    target,
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const value = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  if (value('--post-rate')) return postRateChild(value('--post-rate')!);
  if (args.includes('--help')) {
    console.log('usage: npx tsx bench/muc-fanout.ts [--sizes 10,100,1000] [--runs 5]');
    return;
  }
  const sizes = value('--sizes')?.split(',').map(Number);
  const runs = value('--runs') ? Number(value('--runs')) : undefined;
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const { target, stop } = await startLocalStackProcess(log);
  try {
    const result = await runMucFanout(target, log, { sizes, runs });
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await stop();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
