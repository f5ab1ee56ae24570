/**
 * XEP-0388 Extensible SASL Profile (SASL2): the mechanisms of RFC 6120's profile
 * (sasl/mechanisms.ts, with the same brute-force limits), without the stream restart. A login is
 * one frame and one invocation shorter: `<success/>` is followed at once by the features of the
 * authenticated stream (stream-features.ts), and the client binds on the same stream.
 *
 * Between its frames the exchange lives in the connection state (`sasl` for the mechanism,
 * `sasl2` for the request), committed with each frame like the rest of it: a frame run twice
 * answers the same (the SCRAM nonce comes from the frame id), and a frame of another kind in
 * the middle of an exchange closes the stream (XEP-0388 §2.4).
 */
import { StreamError } from '../errors.ts';
import { JidError, normalizeLocal } from '../jid.ts';
import { continueMechanism, decodeSaslPayload, offeredMechanisms, startMechanism, type SaslStep } from '../sasl/mechanisms.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';
import { authenticationFailed, saslContext } from './authentication.ts';
import { bindInline } from './bind2.ts';
import { FAST_MECHANISMS, NS_FAST, checkToken, fastOffered, tokenAnswer } from './fast.ts';
import type { ClientSession } from './session.ts';
import { streamFeatures } from './stream-features.ts';
import { resumeAgain, resumeSession } from './stream-management.ts';

/** An element of the SASL2 namespace before authentication: `<authenticate/>`, `<response/>`, `<abort/>`. */
export async function sasl2Element(session: ClientSession, el: Element): Promise<void> {
  const { server } = session;
  const ctx = saslContext(session);
  const exchange = session.state.sasl2;
  let step: SaslStep;
  let mechanism: string;
  let request: string;
  if (el.name === 'abort') return failure(session, 'aborted');
  if (el.name === 'authenticate') {
    mechanism = el.attrs.mechanism ?? '';
    const initial = el.getChild('initial-response');
    request = withoutInitialResponse(el).toString();
    // XEP-0484: a token, in one frame.
    if (el.getChild('fast', NS_FAST) && fastOffered(server) && (FAST_MECHANISMS as readonly string[]).includes(mechanism)) {
      const data = initial && decodeSaslPayload(initial.getText());
      if (!data) return failure(session, 'incorrect-encoding');
      const check = await checkToken(session, mechanism, el, data);
      if (!check.ok) return failure(session, check.condition, check.text);
      return authenticated(session, el, mechanism, request, check.user, check.additionalData);
    }
    if (!offeredMechanisms(ctx.bindings).includes(mechanism)) return failure(session, 'invalid-mechanism', `${mechanism || 'no mechanism'} is not offered`);
    if (!initial) {
      // The mechanisms offered all start with the client: an empty challenge asks for its first message.
      session.update({ sasl: undefined, sasl2: { mechanism, request, awaitingInitial: true } });
      return challenge(session, '');
    }
    const data = decodeSaslPayload(initial.getText());
    if (!data) return failure(session, 'incorrect-encoding');
    step = await startMechanism(ctx, mechanism, data);
  } else if (el.name === 'response') {
    if (!exchange) throw new StreamError('policy-violation', 'no SASL2 exchange in progress');
    ({ mechanism, request } = exchange);
    const data = decodeSaslPayload(el.getText());
    if (!data) return failure(session, 'incorrect-encoding');
    if (exchange.awaitingInitial) step = await startMechanism(ctx, mechanism, data);
    else if (session.state.sasl) {
      prefetchRouteForBind(session, request, session.state.sasl.username);
      step = await continueMechanism(ctx, session.state.sasl, data);
    }
    else throw new StreamError('policy-violation', 'no SASL2 exchange in progress');
  } else {
    throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a SASL2 element the client sends`);
  }
  if (step.kind === 'challenge') {
    session.update({ sasl: { ...step.state, mechanism }, sasl2: { mechanism, request } });
    return challenge(session, step.data);
  }
  if (step.kind === 'failure') return failure(session, step.condition, step.text);
  return authenticated(session, el, mechanism, request, step.user, step.data ? Buffer.from(step.data).toString('base64') : undefined);
}

/**
 * The client is authenticated as `user`: its inline requests are answered (a resumption, else a
 * bind; a token), then `<success/>` and what follows it.
 */
async function authenticated(session: ClientSession, el: Element, mechanism: string, request: string, user: string, additionalData: string | undefined): Promise<void> {
  const { server } = session;
  session.update({ stage: 'auth-open', user, sasl: undefined, sasl2: undefined, authFailures: 0 });
  const answers: Element[] = [];
  const after: (() => Promise<void>)[] = [];
  const parsed = el.name === 'authenticate' ? el : parseStored(request, 'SASL2 request');
  // XEP-0198 resumption first (XEP-0386 §4): resumed, the session has its resource, and <bind/> is ignored.
  const resume = server.config.streamManagement ? parsed?.getChild('resume', NS.SM) : undefined;
  if (resume) {
    // Kept through the resumption's commit: a run again of this frame answers from it (runAgain).
    session.update({ sasl2: { mechanism, request, additionalData } });
    const sm = await resumeSession(session, resume);
    session.update({ sasl2: undefined });
    if (sm.answer) answers.push(sm.answer);
    if (sm.afterAnswer) after.push(sm.afterAnswer);
  }
  const bind = parsed?.getChild('bind', NS.BIND2);
  if (session.state.stage !== 'bound' && bind) {
    const userAgent = parsed?.getChild('user-agent')?.attrs.id;
    const { bound, afterSuccess } = await bindInline(session, bind, userAgent?.slice(0, 128));
    answers.push(bound);
    after.push(afterSuccess);
  }
  const token = parsed && (await tokenAnswer(session, parsed));
  if (token) answers.push(token);
  await succeed(session, additionalData, answers);
  for (const step of after) await step();
}

/**
 * The frame whose inline resumption committed this connection as the session's runs again (it
 * failed after that commit): the same `<success/>` (the journal skips it if it was posted) and
 * the resends go on, as for RFC 6120's `<resume/>` (stream-management.ts, resumeAgain).
 */
export async function runAgain(session: ClientSession): Promise<void> {
  const exchange = session.state.sasl2;
  const resume = exchange && parseStored(exchange.request, 'SASL2 request')?.getChild('resume', NS.SM);
  if (!exchange || !resume) throw new StreamError('policy-violation', 'the stream is already authenticated');
  session.update({ sasl2: undefined });
  const sm = await resumeAgain(session, resume);
  if (!sm.answer) return; // another connection has the session: this one let go
  await succeed(session, exchange.additionalData, [sm.answer]);
  await sm.afterAnswer?.();
}

/** `<success/>`, then the authenticated stream's features at once: there is no stream restart (§2.6.1). */
async function succeed(session: ClientSession, additionalData: string | undefined, answers: Element[]): Promise<void> {
  const identity = session.state.stage === 'bound' ? session.jid.toString() : session.bare;
  await session.send(
    x('success', { xmlns: NS.SASL2 }, additionalData ? x('additional-data', {}, additionalData) : undefined, x('authorization-identifier', {}, identity), ...answers),
  );
  await session.send(streamFeatures(session));
}

/**
 * A bind is to follow the proof (XEP-0386): the user's routes, which the bind reads for a
 * conflicting resource, are read beside the proof's check instead of after it: one round trip less
 * (the frame's memo hands the bind this read; nothing is sent from it before the proof holds).
 */
function prefetchRouteForBind(session: ClientSession, request: string, username: string): void {
  if (!request.includes(NS.BIND2)) return;
  let local: string;
  try {
    local = normalizeLocal(username);
  } catch (err) {
    if (err instanceof JidError) return;
    throw err;
  }
  session.server.store.getUserRoute(`${local}@${session.server.config.domain}`).catch(() => undefined);
}

async function challenge(session: ClientSession, data: string): Promise<void> {
  await session.send(x('challenge', { xmlns: NS.SASL2 }, data ? Buffer.from(data).toString('base64') : undefined));
}

/** `<failure/>` with RFC 6120's condition (XEP-0388 §2.6.2); nothing the request asked for is done. */
function failure(session: ClientSession, condition: string, text?: string): Promise<void> {
  return authenticationFailed(
    session,
    condition,
    x('failure', { xmlns: NS.SASL2 }, x(condition, { xmlns: NS.SASL }), text ? x('text', { 'xml:lang': 'en' }, text) : undefined),
  );
}

function withoutInitialResponse(el: Element): Element {
  const copy = x(el.name, { ...el.attrs });
  for (const child of el.getChildElements()) if (child.name !== 'initial-response') copy.append(child);
  return copy;
}
