/**
 * The measured phases of a run, the same for every server (bench/harness.ts runs them in order):
 * registration (setup), the login storm, going online, the presence broadcast, steady chat and
 * saturated chat. Each returns its phase's numbers; harness.ts adds the server's side (measured()).
 */
import { performance } from 'node:perf_hooks';
import { XmppWsClient, esc, nextId } from './client.ts';
import { BODY, CLIENT_TIMEOUT_MS, DELIVERY_TIMEOUT_MS, PASSWORD, type BenchOptions } from './options.ts';
import type { Chat, GoingOnline, LoadStats, LoginStorm, PresenceBroadcast } from './results.ts';
import { Errors, type Router, type UserSpec } from './sessions.ts';
import { distribution, round, sleep } from './stats.ts';
import type { Target } from './targets.ts';

async function pool<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

function errorKind(err: unknown): string {
  const e = err as { condition?: string; message?: string };
  return e?.condition ?? e?.message?.slice(0, 60) ?? String(err);
}

export async function register(target: Target, specs: UserSpec[], log: (l: string) => void): Promise<void> {
  let done = 0;
  await pool(specs, 8, async (u) => {
    for (let attempt = 1; ; attempt++) {
      const c = new XmppWsClient(target.wsUrl, target.domain, CLIENT_TIMEOUT_MS);
      let registered = false;
      try {
        await c.connect();
        const features = await c.openStream();
        try {
          await c.register(u.name, PASSWORD);
        } catch (err) {
          // A retry after a lost answer: the account is there.
          if (!(attempt > 1 && (err as { condition?: string }).condition === 'conflict')) throw err;
        }
        registered = true;
        // One SCRAM exchange on the same stream: the generator learns the salt and keeps the SaltedPassword.
        await c.authenticate(u.name, PASSWORD, features);
        c.terminate();
        break;
      } catch (err) {
        c.terminate();
        if (attempt >= 3) throw new Error(`registering ${u.bare} on ${target.kind}${registered ? ' (first login)' : ''}: ${(err as Error).message}`);
        await sleep(200 * attempt);
      }
    }
    if (++done % 100 === 0) log(`  registered ${done}/${specs.length}`);
  });
}

export async function loginStorm(target: Target, specs: UserSpec[], router: Router, clients: Map<string, XmppWsClient>): Promise<Omit<LoginStorm, keyof LoadStats>> {
  const errors = new Errors();
  const latencies: number[] = [];
  const start = performance.now();
  let last = start;
  await Promise.all(
    specs.map(async (u) => {
      const c = new XmppWsClient(target.wsUrl, target.domain, CLIENT_TIMEOUT_MS);
      router.attach(u, c);
      const t0 = performance.now();
      try {
        await c.login(u.name, PASSWORD, 'bench');
        const t1 = performance.now();
        latencies.push(t1 - t0);
        last = Math.max(last, t1);
        clients.set(u.bare, c);
      } catch (err) {
        errors.add(`login: ${errorKind(err)}`);
        c.terminate();
      }
    }),
  );
  const durationMs = last - start;
  return { clients: specs.length, ok: latencies.length, durationMs: round(durationMs), loginsPerSec: round((latencies.length / durationMs) * 1000), latencyMs: distribution(latencies), errors: errors.toJSON() };
}

export async function goingOnline(specs: UserSpec[], router: Router, clients: Map<string, XmppWsClient>, timeoutMs: number): Promise<Omit<GoingOnline, keyof LoadStats>> {
  const errors = new Errors();
  const latencies: number[] = [];
  const online = new Set(clients.keys());
  let rosterItems = 0;
  let complete = 0;
  const received0 = router.presencesReceived;
  const start = performance.now();
  let last = start;
  await Promise.all(
    specs
      .filter((u) => clients.has(u.bare))
      .map(async (u) => {
        const c = clients.get(u.bare)!;
        const t0 = performance.now();
        const need = new Set(u.contacts.filter((b) => online.has(b) && !router.seen.get(u.bare)!.has(b)));
        const allSeen = new Promise<void>((resolve) => {
          if (need.size === 0) resolve();
          else router.presenceWaiters.set(u.bare, { need, resolve });
        });
        try {
          const id = nextId('roster');
          const roster = await c.iq(`<iq xmlns="jabber:client" type="get" id="${id}"><query xmlns="jabber:iq:roster"/></iq>`, id);
          const items = roster.getChild('query')?.getChildren('item').length ?? 0;
          rosterItems += items;
          if (items !== u.contacts.length) errors.add(`roster: ${items} items instead of ${u.contacts.length}`);
          c.send('<presence xmlns="jabber:client"><priority>1</priority></presence>');
          let timer: NodeJS.Timeout | undefined;
          const ok = await Promise.race([allSeen.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
          clearTimeout(timer);
          if (!ok) {
            router.presenceWaiters.delete(u.bare);
            errors.add(`presence of online contacts missing after ${timeoutMs / 1000} s`, need.size);
            return;
          }
          const t1 = performance.now();
          latencies.push(t1 - t0);
          last = Math.max(last, t1);
          complete++;
        } catch (err) {
          errors.add(`online: ${errorKind(err)}`);
        }
      }),
  );
  return {
    clients: clients.size,
    complete,
    durationMs: round(last - start),
    rosterItems,
    presencesReceived: router.presencesReceived - received0,
    latencyMs: distribution(latencies),
    errors: errors.toJSON(),
  };
}

export async function presenceBroadcast(o: BenchOptions, broadcaster: UserSpec, router: Router, clients: Map<string, XmppWsClient>): Promise<Omit<PresenceBroadcast, keyof LoadStats>> {
  const errors = new Errors();
  const sender = clients.get(broadcaster.bare);
  const recipients = broadcaster.contacts.filter((b) => clients.has(b));
  const latencies: number[] = [];
  const fanOut: number[] = [];
  let deliveries = 0;
  const start = performance.now();
  if (!sender) errors.add('broadcaster offline');
  for (let k = 0; sender && k < o.presenceUpdates; k++) {
    const status = `status ${k} ${Math.random().toString(36).slice(2, 8)}`;
    let resolve!: () => void;
    const all = new Promise<void>((r) => (resolve = r));
    const b = { status, t0: performance.now(), pending: new Set(recipients), latencies: [] as number[], resolve };
    router.broadcast = b;
    sender.send(`<presence xmlns="jabber:client"><show>away</show><status>${esc(status)}</status><priority>1</priority></presence>`);
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([all.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), DELIVERY_TIMEOUT_MS)))]);
    clearTimeout(timer);
    deliveries += b.latencies.length;
    latencies.push(...b.latencies);
    if (ok) fanOut.push(Math.max(...b.latencies, 0));
    else errors.add('presence not delivered within 10 s', b.pending.size);
  }
  router.broadcast = undefined;
  const durationMs = performance.now() - start;
  return {
    rosterSize: recipients.length,
    updates: o.presenceUpdates,
    deliveries,
    expectedDeliveries: o.presenceUpdates * recipients.length,
    durationMs: round(durationMs),
    broadcastsPerSec: round((fanOut.length / durationMs) * 1000),
    deliveriesPerSec: round((deliveries / durationMs) * 1000),
    latencyMs: distribution(latencies),
    fanOutMs: distribution(fanOut),
    errors: errors.toJSON(),
  };
}

export function chatFrame(to: string, id: string): string {
  return `<message xmlns="jabber:client" type="chat" to="${to}" id="${id}"><body>${BODY}</body></message>`;
}

function chatPartners(specs: UserSpec[], clients: Map<string, XmppWsClient>): { from: UserSpec; to: string[] }[] {
  return specs
    .filter((u) => clients.has(u.bare))
    .map((u) => ({ from: u, to: u.contacts.filter((b) => clients.has(b) && b.startsWith('u')) }))
    .filter((p) => p.to.length > 0);
}

async function drain(router: Router, ids: Set<string>): Promise<number> {
  const deadline = performance.now() + DELIVERY_TIMEOUT_MS;
  while (performance.now() < deadline && [...ids].some((id) => router.chat.has(id))) await sleep(20);
  let lost = 0;
  for (const id of ids) {
    if (router.chat.has(id)) {
      router.chat.delete(id);
      lost++;
    }
  }
  return lost;
}

export async function chatSteady(
  o: BenchOptions,
  specs: UserSpec[],
  router: Router,
  clients: Map<string, XmppWsClient>,
  rate = o.chatRate,
  seconds = o.chatSeconds,
): Promise<Omit<Chat, keyof LoadStats | 'serverCpuMsPerMessage'>> {
  const errors0 = router.messageErrors.total;
  const errors = new Errors();
  const pairs = chatPartners(specs, clients);
  const latencies: number[] = [];
  const ids = new Set<string>();
  const total = Math.max(1, Math.round(rate * seconds));
  let sent = 0;
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate) + 1);
      while (sent < due) {
        const p = pairs[Math.floor(Math.random() * pairs.length)]!;
        const to = p.to[Math.floor(Math.random() * p.to.length)]!;
        const id = nextId('c');
        ids.add(id);
        router.chat.set(id, { t0: performance.now(), latencies });
        try {
          clients.get(p.from.bare)!.send(chatFrame(to, id));
        } catch (err) {
          errors.add(`send: ${errorKind(err)}`);
          router.chat.delete(id);
        }
        sent++;
      }
      if (sent >= total) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, 5);
    tick();
  });
  const sendEnd = performance.now();
  const lost = await drain(router, ids);
  const delivered = latencies.length;
  if (lost) errors.add('not delivered within 10 s', lost);
  const messageErrors = router.messageErrors.total - errors0;
  if (messageErrors) errors.add('error replies', messageErrors);
  const durationMs = Math.max(sendEnd - start, seconds * 1000);
  return {
    senders: pairs.length,
    offeredRate: rate,
    durationMs: round(durationMs),
    sent,
    delivered,
    lost,
    messagesPerSec: round((delivered / durationMs) * 1000),
    latencyMs: distribution(latencies),
    errors: errors.toJSON(),
  };
}

export async function chatSaturation(o: BenchOptions, specs: UserSpec[], router: Router, clients: Map<string, XmppWsClient>): Promise<Omit<Chat, keyof LoadStats | 'serverCpuMsPerMessage'>> {
  const errors0 = router.messageErrors.total;
  const errors = new Errors();
  const pairs = chatPartners(specs, clients);
  const latencies: number[] = [];
  let sent = 0;
  let lost = 0;
  const start = performance.now();
  const end = start + o.saturationSeconds * 1000;
  let lastDelivery = start;
  await Promise.all(
    pairs.map(async (p) => {
      const c = clients.get(p.from.bare)!;
      while (performance.now() < end) {
        const to = p.to[Math.floor(Math.random() * p.to.length)]!;
        const id = nextId('s');
        let timer: NodeJS.Timeout | undefined;
        const ok = await new Promise<boolean>((resolve) => {
          router.chat.set(id, { t0: performance.now(), latencies, resolve });
          timer = setTimeout(() => resolve(false), DELIVERY_TIMEOUT_MS);
          try {
            c.send(chatFrame(to, id));
            sent++;
          } catch (err) {
            errors.add(`send: ${errorKind(err)}`);
            resolve(false);
          }
        });
        clearTimeout(timer);
        if (ok) lastDelivery = Math.max(lastDelivery, performance.now());
        else if (router.chat.delete(id)) {
          lost++;
        }
        if (!ok && c.closed) break;
      }
    }),
  );
  const durationMs = Math.max(lastDelivery, end) - start;
  if (lost) errors.add('not delivered within 10 s', lost);
  const messageErrors = router.messageErrors.total - errors0;
  if (messageErrors) errors.add('error replies', messageErrors);
  return {
    senders: pairs.length,
    offeredRate: null,
    durationMs: round(durationMs),
    sent,
    delivered: latencies.length,
    lost,
    messagesPerSec: round((latencies.length / durationMs) * 1000),
    latencyMs: distribution(latencies),
    errors: errors.toJSON(),
  };
}
