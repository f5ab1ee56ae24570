/**
 * Per-operation probes of our stack: one frame at a time (login steps, messages, pings, presence,
 * XEP-0198 and XEP-0352 on a mobile-like session), each step bracketed by the local server's
 * probe markers, turned into what one operation costs (DynamoDB calls and capacity, round trips,
 * posts, handler CPU, modelled Lambda ms).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Element } from 'ltx';
import { XmppWsClient, nextId } from './client.ts';
import { cloudCriticalPath, usageFromMeasurement, type MeasuredOperation } from './cost-model.ts';
import type { ProbeInvocation } from './local-server.ts';
import { CLIENT_TIMEOUT_MS, PASSWORD, type BenchOptions } from './options.ts';
import type { OperationCost, PerStanza } from './results.ts';
import { chatFrame } from './scenarios.ts';
import type { Router, UserSpec } from './sessions.ts';
import { round } from './stats.ts';
import type { LocalTarget } from './targets.ts';
import { loadConfig } from '../shared/config.ts';
import { enableWindowMs } from '../shared/core/stream-management.ts';

/** Longest chain of calls where each starts after the previous one ended. */
function sequentialDepth(calls: { start: number; end: number }[]): number {
  const sorted = [...calls].sort((a, b) => a.start - b.start);
  const depth: number[] = [];
  let best = 0;
  for (let i = 0; i < sorted.length; i++) {
    let d = 1;
    for (let j = 0; j < i; j++) if (sorted[j]!.end <= sorted[i]!.start) d = Math.max(d, depth[j]! + 1);
    depth.push(d);
    best = Math.max(best, d);
  }
  return best;
}

/**
 * XEP-0198 and XEP-0352 on probec's session (docs/mobile.md): what numbering, acknowledgements, a
 * socket's death, the resumption that replaces a login, and holding by client state indication
 * cost, for the per-user-month figures. `a` (probea, online) is the other party.
 */
async function probeMobileOperations(
  local: LocalTarget,
  step: (label: string, framesSent: number, action: () => Promise<unknown>) => Promise<void>,
  router: Router,
  a: XmppWsClient,
  probec: UserSpec,
  rounds: number,
): Promise<void> {
  const SM = 'urn:xmpp:sm:3';
  const CSI = 'urn:xmpp:csi:0';
  const c = new XmppWsClient(local.wsUrl, local.domain, CLIENT_TIMEOUT_MS);
  router.attach(probec, c);
  await c.login(probec.name, PASSWORD, 'phone');
  let smId = '';
  await step('SM: <enable resume/>', 1, async () => {
    c.send(`<enable xmlns="${SM}" resume="true"/>`);
    smId = (await c.next((el) => el.name === 'enabled' || el.name === 'failed', 'enabled')).attrs.id ?? '';
  });
  if (!smId) throw new Error('SM probe: stream management not enabled');
  const enabled = c.stanzasIn;
  c.send('<presence xmlns="jabber:client"/>'); // not measured: flushes probec's stored messages
  await local.idle(200);
  for (let i = 0; i < rounds; i++) {
    await step('SM: 1:1 message to a session with stream management', 1, async () => {
      const id = nextId('sm');
      const delivered = new Promise<boolean>((resolve) => router.chat.set(id, { t0: performance.now(), latencies: [], resolve }));
      a.send(chatFrame(probec.bare, id));
      await delivered;
    });
  }
  for (let i = 0; i < rounds; i++) {
    await step('SM: ping (XEP-0199) on a session with stream management', 1, async () => {
      const id = nextId('ping');
      await c.iq(`<iq xmlns="jabber:client" type="get" id="${id}" to="${local.domain}"><ping xmlns="urn:xmpp:ping"/></iq>`, id);
    });
  }
  for (let i = 0; i < rounds; i++) {
    // What clients with stream management send to keep the socket alive (Conversations, Monal): no stanza, nothing numbered.
    await step('SM: <r/> keepalive (answered with <a h/>)', 1, async () => {
      c.send(`<r xmlns="${SM}"/>`);
      await c.next((el) => el.name === 'a', 'a');
    });
  }
  for (let i = 0; i < rounds; i++) {
    await step('SM: acknowledgement (<a h/>)', 1, async () => {
      c.send(`<a xmlns="${SM}" h="${c.stanzasIn - enabled}"/>`);
    });
  }
  await step('SM: socket dies ($disconnect: hibernation)', 0, async () => c.terminate());
  // One, so the resumption below resends one stanza, as after a short network drop (the figure
  // for the month counts the resumption as measured).
  await step('SM: message to a hibernated session (kept)', 1, async () => a.send(chatFrame(probec.bare, nextId('h'))));
  // The resumption: a new socket, SASL, and <resume/> instead of bind, roster and initial presence.
  const r = new XmppWsClient(local.wsUrl, local.domain, CLIENT_TIMEOUT_MS);
  router.attach(probec, r);
  let features!: Awaited<ReturnType<XmppWsClient['openStream']>>;
  await step('SM resumption: stream open', 1, async () => {
    await r.connect();
    features = await r.openStream();
  });
  await step('SM resumption: SASL (both SCRAM steps)', 2, () => r.authenticate(probec.name, PASSWORD, features));
  await step('SM resumption: stream restart', 1, () => r.openStream());
  await step('SM resumption: <resume/> (missed stanzas resent)', 1, async () => {
    r.send(`<resume xmlns="${SM}" previd="${smId}" h="${c.stanzasIn - enabled}"/>`);
    const answer = await r.next((el) => el.name === 'resumed' || el.name === 'failed', 'resumed');
    if (answer.name !== 'resumed') throw new Error('SM probe: resumption failed');
  });
  r.resumed(`${probec.bare}/phone`);
  // Client state indication: a contact's presence while inactive is held, and posted on <active/>;
  // the same presence to the session while active first, for the difference (docs/cost.md).
  for (let i = 0; i < rounds; i++) {
    await step('CSI: presence to an active session (posted)', 1, async () => a.send(`<presence xmlns="jabber:client" to="${r.jid}"><status>posted ${i}</status></presence>`));
  }
  await step('CSI: <inactive/>', 1, async () => r.send(`<inactive xmlns="${CSI}"/>`));
  for (let i = 0; i < rounds; i++) {
    await step('CSI: presence to an inactive session (held)', 1, async () => a.send(`<presence xmlns="jabber:client" to="${r.jid}"><status>held ${i}</status></presence>`));
  }
  await step('CSI: <active/> (held presence posted)', 1, async () => r.send(`<active xmlns="${CSI}"/>`));
  // The socket dies again, and the client resumes by XEP-0388 with <resume/> inside: two frames
  // where RFC 6120's SASL takes four.
  await step('SM: socket dies again ($disconnect: hibernation)', 0, async () => r.terminate());
  await step('SM: message to a hibernated session (kept), again', 1, async () => a.send(chatFrame(probec.bare, nextId('h'))));
  const r2 = new XmppWsClient(local.wsUrl, local.domain, CLIENT_TIMEOUT_MS);
  router.attach(probec, r2);
  let r2features!: Awaited<ReturnType<XmppWsClient['openStream']>>;
  await step('SASL2 resumption: stream open', 1, async () => {
    await r2.connect();
    r2features = await r2.openStream();
  });
  // It asks for a XEP-0484 token too, as @xmpp/client does at its first SASL2 login.
  const userAgent = `<user-agent id="${randomUUID()}"/>`;
  let token = '';
  await step('SASL2 resumption: SCRAM with <resume/> inside (missed stanzas resent)', 2, async () => {
    const h = c.stanzasIn - enabled + r.stanzasIn;
    const success = await r2.authenticate(probec.name, PASSWORD, r2features, {
      inline: `<resume xmlns="${SM}" previd="${smId}" h="${h}"/>${userAgent}<request-token xmlns="urn:xmpp:fast:0" mechanism="HT-SHA-256-NONE"/>`,
    });
    if (!success.getChild('resumed', SM)) throw new Error('SM probe: resumption inside SASL2 failed');
    token = success.getChild('token', 'urn:xmpp:fast:0')?.attrs.token ?? '';
  });
  // Once more with the token: the authentication is the one frame.
  await step('SM: socket dies a third time ($disconnect: hibernation)', 0, async () => r2.terminate());
  await step('SM: message to a hibernated session (kept), a third time', 1, async () => a.send(chatFrame(probec.bare, nextId('h'))));
  const r3 = new XmppWsClient(local.wsUrl, local.domain, CLIENT_TIMEOUT_MS);
  router.attach(probec, r3);
  await step('FAST resumption: stream open', 1, async () => {
    await r3.connect();
    await r3.openStream();
  });
  await step('FAST resumption: token with <resume/> inside (missed stanzas resent)', 1, async () => {
    if (!token) throw new Error('SM probe: no XEP-0484 token was issued');
    const h = c.stanzasIn - enabled + r.stanzasIn + r2.stanzasIn;
    const success = await r3.authenticateWithToken(probec.name, token, `<resume xmlns="${SM}" previd="${smId}" h="${h}"/>${userAgent}`);
    if (!success.getChild('resumed', SM)) throw new Error('SM probe: resumption with a token failed');
  });
  await r3.close();
}

export async function probeOperations(o: BenchOptions, local: LocalTarget, specs: { probes: UserSpec[]; broadcaster: UserSpec }, router: Router, clients: Map<string, XmppWsClient>, log: (l: string) => void): Promise<PerStanza> {
  const [probea, probeb] = specs.probes as [UserSpec, UserSpec, UserSpec];
  const domain = local.domain;
  const frames = new Map<string, number>();
  const samples = new Map<string, number>();
  const step = async (label: string, framesSent: number, action: () => Promise<unknown>) => {
    await local.idle(30);
    await local.probe(label);
    await action();
    await local.idle(30);
    await local.probe(null);
    frames.set(label, (frames.get(label) ?? 0) + framesSent);
    samples.set(label, (samples.get(label) ?? 0) + 1);
  };

  // probeb online first (not measured): the recipient of probea's messages.
  const b = new XmppWsClient(local.wsUrl, domain, CLIENT_TIMEOUT_MS);
  router.attach(probeb, b);
  await b.login(probeb.name, PASSWORD, 'probe');
  b.send('<presence xmlns="jabber:client"/>');
  clients.set(probeb.bare, b);
  // Until its window for enabling XEP-0198 has passed, a post to it from another handler is
  // recorded against a possible <enabled/> (two more writes: docs/mobile.md, "Enabling"); the
  // message probe measures the steady state, a recipient bound a while ago.
  const probebSteadyAt = Date.now() + enableWindowMs(loadConfig()) + 1000;

  const a = new XmppWsClient(local.wsUrl, domain, CLIENT_TIMEOUT_MS);
  router.attach(probea, a);
  let features!: Element;
  await step('stream open', 1, async () => {
    await a.connect();
    features = await a.openStream();
  });
  await step('SASL (both SCRAM steps)', 2, () => a.authenticate(probea.name, PASSWORD, features));
  await step('stream restart', 1, () => a.openStream());
  await step('bind', 1, () => a.bind('probe'));
  clients.set(probea.bare, a);
  await step('roster get', 1, async () => {
    const id = nextId('roster');
    await a.iq(`<iq xmlns="jabber:client" type="get" id="${id}"><query xmlns="jabber:iq:roster"/></iq>`, id);
  });
  await step(`initial presence (${probea.contacts.length} contacts)`, 1, async () => {
    a.send('<presence xmlns="jabber:client"/>');
  });
  // The same login by XEP-0388 and XEP-0386 (what @xmpp/client, Conversations and Monal do where
  // offered): no restart, the bind inside the authentication. A second session of probeb, closed after.
  const s2 = new XmppWsClient(local.wsUrl, domain, CLIENT_TIMEOUT_MS);
  router.attach(probeb, s2);
  let s2features!: Element;
  await step('SASL2 login: stream open', 1, async () => {
    await s2.connect();
    s2features = await s2.openStream();
  });
  await step('SASL2 login: SCRAM with Bind 2 (both steps)', 2, () => s2.authenticate(probeb.name, PASSWORD, s2features, { inline: '<bind xmlns="urn:xmpp:bind:0"><tag>bench</tag></bind>' }));
  await s2.close();
  const rounds = Math.max(1, o.probeRepeats);
  await new Promise((r) => setTimeout(r, Math.max(0, probebSteadyAt - Date.now())));
  // Warm up again after that idle half-minute (not measured): the mean CPU of the rounds right
  // after it doubled when the wait came in (docs/performance.md, session 8), while a busy Lambda
  // instance does not sit idle between messages.
  for (let i = 0; i < rounds; i++) {
    const id = nextId('warm');
    const delivered = new Promise<boolean>((resolve) => router.chat.set(id, { t0: performance.now(), latencies: [], resolve }));
    a.send(chatFrame(probeb.bare, id));
    await delivered;
  }
  for (let i = 0; i < rounds; i++) {
    await step('1:1 message (recipient online)', 1, async () => {
      const id = nextId('p');
      const delivered = new Promise<boolean>((resolve) => router.chat.set(id, { t0: performance.now(), latencies: [], resolve }));
      a.send(chatFrame(probeb.bare, id));
      await delivered;
    });
  }
  for (let i = 0; i < rounds; i++) {
    await step('1:1 message (recipient offline: stored)', 1, async () => {
      a.send(chatFrame(`probec@${domain}`, nextId('o')));
    });
  }
  for (let i = 0; i < rounds; i++) {
    await step('ping (XEP-0199)', 1, async () => {
      const id = nextId('ping');
      await a.iq(`<iq xmlns="jabber:client" type="get" id="${id}" to="${domain}"><ping xmlns="urn:xmpp:ping"/></iq>`, id);
    });
  }
  for (let i = 0; i < rounds; i++) {
    await step(`presence change (${probea.contacts.length} contacts)`, 1, async () => {
      a.send(`<presence xmlns="jabber:client"><status>probe ${i}</status></presence>`);
    });
  }
  const pres = clients.get(specs.broadcaster.bare);
  if (pres) {
    // Not measured: the broadcast phase left priority 1, and the first change back to 0 also commits
    // the connection state (the priority is part of it); what follows are plain status changes.
    pres.send('<presence xmlns="jabber:client"><status>probe</status></presence>');
    await local.idle(200);
    for (let i = 0; i < Math.min(rounds, 5); i++) {
      await step(`presence change (${specs.broadcaster.contacts.length} contacts)`, 1, async () => {
        pres.send(`<presence xmlns="jabber:client"><status>probe ${i}</status></presence>`);
      });
    }
  }
  await probeMobileOperations(local, step, router, a, specs.probes[2]!, rounds);
  await step('logout (<close/> and $disconnect)', 1, async () => {
    clients.delete(probea.bare);
    await a.close();
  });
  const invocations = await local.probeResults();

  // The local @connections endpoint's own CPU per post, to take out of the handler's numbers.
  const dynamoLocal = await local.dynamoCeiling([...clients.keys()].slice(0, 50));
  log(`  DynamoDB Local alone: ${dynamoLocal.map((d) => `${d.requestsPerSec} Query/s at concurrency ${d.concurrency} (${d.meanMs} ms each)`).join(', ')}`);

  const operations: Record<string, OperationCost> = {};
  const byLabel = new Map<string, ProbeInvocation[]>();
  for (const inv of invocations) byLabel.set(inv.label, [...(byLabel.get(inv.label) ?? []), inv]);
  for (const [label, list] of byLabel) {
    const n = samples.get(label) ?? 1;
    const dynamo = list.flatMap((i) => i.dynamo);
    const posts = list.flatMap((i) => i.posts);
    const byCommand: Record<string, number> = {};
    for (const c of dynamo) byCommand[c.what] = round((byCommand[c.what] ?? 0) + 1 / n);
    const cpu = list.reduce((s, i) => s + i.cpuUs, 0) / 1000;
    // Round trips per operation: per invocation, then summed over the operation's invocations.
    const dynamoRoundTrips = list.reduce((s, i) => s + sequentialDepth(i.dynamo), 0) / n;
    const beforeFirstPost = (i: ProbeInvocation) => {
      const first = Math.min(...i.posts.map((p) => p.start));
      return sequentialDepth(i.dynamo.filter((c) => c.end <= first));
    };
    const dynamoRoundTripsBeforeFirstPost = list.reduce((s, i) => s + beforeFirstPost(i), 0) / n;
    const paths = list.map((i) =>
      cloudCriticalPath([...i.dynamo.map((c) => ({ kind: 'dynamo' as const, start: c.start, end: c.end })), ...i.posts.map((c) => ({ kind: 'post' as const, start: c.start, end: c.end }))]),
    );
    const measuredOp: MeasuredOperation = {
      invocations: list.length / n,
      framesIn: (frames.get(label) ?? list.length) / n,
      posts: posts.length / n,
      readUnits: dynamo.reduce((s, c) => s + c.readUnits, 0) / n,
      writeUnits: dynamo.reduce((s, c) => s + c.writeUnits, 0) / n,
      cpuMs: cpu / n,
      cloudWaitMs: paths.reduce((s, p) => s + p.ms, 0) / n,
    };
    operations[label] = {
      label,
      samples: n,
      framesIn: round(measuredOp.framesIn),
      invocations: round(measuredOp.invocations),
      dynamoCalls: round(dynamo.length / n),
      dynamoByCommand: byCommand,
      readUnits: round(measuredOp.readUnits),
      writeUnits: round(measuredOp.writeUnits),
      dynamoRoundTrips: round(dynamoRoundTrips),
      dynamoRoundTripsBeforeFirstPost: round(dynamoRoundTripsBeforeFirstPost),
      posts: round(measuredOp.posts),
      criticalPath: {
        dynamo: round(paths.reduce((s, p) => s + p.dynamo, 0) / n),
        posts: round(paths.reduce((s, p) => s + p.posts, 0) / n),
        cloudMs: round(measuredOp.cloudWaitMs),
        peakConcurrency: round(paths.reduce((s, p) => s + p.peakConcurrency, 0) / list.length),
      },
      handlerCpuMs: round(cpu / n),
      handlerWallMs: round(list.reduce((s, i) => s + i.wallMs, 0) / n),
      cloudLambdaMs: usageFromMeasurement(measuredOp).streamLambdaMs,
    };
  }
  return { modules: local.info.modules, dynamoLocal, operations };
}
