/**
 * RFC 7395 stream handling for one client connection: open/close framing, stream features,
 * SASL, resource binding, then stanza validation and `from` stamping before routing.
 */
import { setTimeout } from 'node:timers/promises';
import { StanzaError, StreamError, errorReply } from '../errors.ts';
import { JidError, normalizeResource, parseJid } from '../jid.ts';
import { log } from '../log.ts';
import { continueMechanism, decodeSaslPayload, offeredMechanisms, startMechanism, type SaslStep } from '../sasl/mechanisms.ts';
import { frameUnique } from '../storage/frame-context.ts';
import { DEFAULT_XML_LIMITS, XmlFrameError, exceedsLimits, parseFrame, type XmlLimits } from '../xml/parse.ts';
import { Element, NS, x } from '../xml/element.ts';
import { ClientSession } from './session.ts';
import { authenticationFailed, saslContext } from './authentication.ts';
import { bindResource } from './resource-binding.ts';
import { runAgain as sasl2RunAgain, sasl2Element } from './sasl2.ts';
import { streamFeatures } from './stream-features.ts';
import { countInbound, isResumptionRunAgain, streamManagementElement } from './stream-management.ts';

const STANZAS = new Set(['message', 'presence', 'iq']);

/** The limits of client input (docs/architecture.md, "Security"). */
const clientLimits = (session: ClientSession): XmlLimits => ({ ...DEFAULT_XML_LIMITS, maxBytes: session.server.config.maxFrameBytes });

export async function processFrame(session: ClientSession, frame: string): Promise<void> {
  if (frame.trim() === '') return; // whitespace keepalive
  let el: Element;
  try {
    el = parseFrame(frame, clientLimits(session));
  } catch (err) {
    if (err instanceof XmlFrameError) throw new StreamError(err.condition, err.message);
    throw err;
  }
  if (session.state.stage === 'replaced') return replacedStreamFrame(session, el);
  // The session moved on to another connection (XEP-0198): the client sends again what that one's count misses.
  if (session.state.stage === 'resumed' || session.state.stage === 'hibernated') {
    log.debug('frame dropped: its session moved to another connection', { connectionId: session.state.id, stage: session.state.stage, element: el.name, id: el.attrs.id });
    return;
  }
  if (el.name === 'open') return handleOpen(session, el);
  if (el.name === 'close') return closeStream(session);
  const { stage } = session.state;
  if (stage === 'connected') throw new StreamError('not-authorized', 'open the stream first');
  if (el.name.startsWith('stream:') || el.attrs.xmlns === NS.FRAMING) throw new StreamError('unsupported-stanza-type');
  if (stage === 'open') return preAuth(session, el);
  if (stage === 'authenticated') throw new StreamError('not-authorized', 'restart the stream after SASL');
  if (el.attrs.xmlns === NS.SASL2 && isResumptionRunAgain(session)) return sasl2RunAgain(session);
  if (el.attrs.xmlns === NS.SM) return streamManagementElement(session, el);
  const module = session.server.streamElementHandler(el.attrs.xmlns);
  if (module) {
    if (stage !== 'bound') throw new StreamError('not-authorized', `bind a resource before <${el.name}/>`);
    return module(session, el);
  }
  if (!STANZAS.has(el.name) || (el.attrs.xmlns !== undefined && el.attrs.xmlns !== NS.CLIENT)) {
    throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stanza`);
  }
  if (stage === 'auth-open') return bind(session, el);
  return stanza(session, el);
}

async function handleOpen(session: ClientSession, open: Element): Promise<void> {
  const { server, state } = session;
  if (open.attrs.xmlns !== NS.FRAMING) throw new StreamError('invalid-namespace');
  if (state.stage === 'bound' || state.stage === 'auth-open') throw new StreamError('policy-violation', 'the stream is already open');
  const streamId = frameUnique('stream-id', 9);
  await session.send(x('open', { xmlns: NS.FRAMING, from: server.config.domain, id: streamId, version: '1.0', 'xml:lang': 'en' }));
  if (open.attrs.to && open.attrs.to.toLowerCase() !== server.config.domain) throw new StreamError('host-unknown', `this server serves ${server.config.domain}`);
  if (open.attrs.version && !/^1\.\d+$/.test(open.attrs.version)) throw new StreamError('unsupported-version');
  const authenticated = state.stage === 'authenticated';
  session.update({ stage: authenticated ? 'auth-open' : 'open', streamId, sasl: undefined });
  await session.send(streamFeatures(session));
}

/** Sends the optional stream error and <close/>, closes the socket and ends the session. */
export async function closeStream(session: ClientSession, error?: StreamError): Promise<void> {
  const { server, state } = session;
  if (state.stage === 'closed') return;
  if (error) {
    if (state.stage === 'connected') {
      await session.send(x('open', { xmlns: NS.FRAMING, from: server.config.domain, id: frameUnique('stream-id', 9), version: '1.0', 'xml:lang': 'en' }));
    }
    await session.send(error.toElement());
  }
  // The session leaves first, while its socket is open: its contacts and rooms are told (its own
  // room exits reach it before <close/>), and bare-JID messages stop choosing it. A handler that
  // chose it just before may still be posting: the close waits a moment, so that the message lands
  // before <close/>, not after it where the client drops it (RFC 6120 §4.4). No handler can tell
  // when it is done; without the wait, 2 of 750 logouts racing a message lost it (races test).
  const routable = state.stage === 'bound' && !session.ended;
  await server.sessions.leave(session);
  if (routable && server.config.closeGraceMs > 0) await setTimeout(server.config.closeGraceMs);
  // A socket that is gone by now (the client's </close> was processed late) did not get what was
  // posted to it meanwhile: under XEP-0198 what it never acknowledged is re-routed, as when a
  // socket dies (measured: resends after a late resumption, lost at the close that followed).
  const open = await session.send(x('close', { xmlns: NS.FRAMING }));
  await server.sender.close(state.id);
  await server.sessions.endSession(session, { socketGone: !open });
}

async function preAuth(session: ClientSession, el: Element): Promise<void> {
  if (el.attrs.xmlns === NS.SASL2 && session.server.config.sasl2) return sasl2Element(session, el);
  // XEP-0388: nothing but its own elements while an exchange runs.
  if (session.state.sasl2) throw new StreamError('policy-violation', `<${el.name}/> in the middle of a SASL2 exchange`);
  if (el.attrs.xmlns === NS.SASL) return sasl(session, el);
  const payload = el.getChildElements()[0];
  const handler = el.name === 'iq' && payload ? session.server.preAuthIqHandler(payload.attrs.xmlns) : undefined;
  if (!handler) throw new StreamError('not-authorized', 'authenticate first');
  const type = el.attrs.type;
  if (type !== 'get' && type !== 'set') return;
  const domain = session.server.domainJid;
  await session.server.answerIq(
    // Before authentication the requester has no JID; replies carry no 'to' (RFC 6120 §8.1.1.1).
    { server: session.server, stanza: el, payload, type, from: domain, to: domain, session },
    handler,
    (reply) => {
      delete reply.attrs.to;
      delete reply.attrs.from;
      return session.send(reply);
    },
  );
}

async function sasl(session: ClientSession, el: Element): Promise<void> {
  const { state } = session;
  const ctx = saslContext(session);
  let step: SaslStep;
  if (el.name === 'abort') {
    session.update({ sasl: undefined });
    return saslFailure(session, 'aborted');
  }
  const data = decodeSaslPayload(el.getText());
  if (el.name === 'auth') {
    const mechanism = el.attrs.mechanism ?? '';
    if (!offeredMechanisms(ctx.bindings).includes(mechanism)) return saslFailure(session, 'invalid-mechanism');
    if (!data) return saslFailure(session, 'incorrect-encoding');
    step = await startMechanism(ctx, mechanism, data);
    if (step.kind === 'challenge') {
      session.update({ sasl: { ...step.state, mechanism } });
    }
  } else if (el.name === 'response') {
    if (!state.sasl) throw new StreamError('policy-violation', 'no SASL exchange in progress');
    if (!data) return saslFailure(session, 'incorrect-encoding');
    step = await continueMechanism(ctx, state.sasl, data);
  } else {
    throw new StreamError('unsupported-stanza-type');
  }
  if (step.kind === 'challenge') {
    await session.send(x('challenge', { xmlns: NS.SASL }, Buffer.from(step.data).toString('base64')));
  } else if (step.kind === 'success') {
    session.update({ stage: 'authenticated', user: step.user, sasl: undefined, authFailures: 0 });
    await session.send(x('success', { xmlns: NS.SASL }, step.data ? Buffer.from(step.data).toString('base64') : undefined));
  } else {
    return saslFailure(session, step.condition, step.text);
  }
}

function saslFailure(session: ClientSession, condition: string, text?: string): Promise<void> {
  return authenticationFailed(session, condition, x('failure', { xmlns: NS.SASL }, x(condition), text ? x('text', { 'xml:lang': 'en' }, text) : undefined));
}

async function bind(session: ClientSession, el: Element): Promise<void> {
  const request = el.name === 'iq' && el.attrs.type === 'set' ? el.getChild('bind', NS.BIND) : undefined;
  if (!request) throw new StreamError('not-authorized', 'bind a resource first');
  const reply = (payload: Element) =>
    session.send(x('iq', { xmlns: NS.CLIENT, type: 'result', id: el.attrs.id }, payload));
  let resource: string;
  const wanted = request.getChildText('resource');
  try {
    resource = wanted?.trim() ? normalizeResource(wanted) : frameUnique('resource');
  } catch (err) {
    if (!(err instanceof JidError)) throw err;
    await session.send(errorReply(el, new StanzaError('bad-request', err.message))!);
    return;
  }
  await bindResource(session, resource);
  await reply(x('bind', { xmlns: NS.BIND }, x('jid', {}, session.jid.toString())));
}

/**
 * A frame still queued on a stream that a newer session replaced (see SessionManager.replaceOther):
 * its client sent it before it saw the close. Messages are routed as the user sent them; anything
 * else belonged to the old session (requests whose answers it cannot get, presence it no longer
 * has) and is dropped. The socket is already closed; $disconnect removes the connection item.
 */
async function replacedStreamFrame(session: ClientSession, el: Element): Promise<void> {
  if (el.name === 'message' && (el.attrs.xmlns === undefined || el.attrs.xmlns === NS.CLIENT)) return stanza(session, el);
}

async function stanza(session: ClientSession, el: Element): Promise<void> {
  const { server } = session;
  countInbound(session);
  const jid = session.jid;
  const from = el.attrs.from;
  if (from && from !== jid.toString() && from !== jid.bare) throw new StreamError('invalid-from');
  el.attrs.from = jid.toString();
  el.attrs.xmlns = NS.CLIENT;
  if (el.name === 'iq') {
    const type = el.attrs.type;
    const ok = el.attrs.id && (((type === 'get' || type === 'set') && el.getChildElements().length === 1) || type === 'result' || type === 'error');
    if (!ok) {
      if (type !== 'error' && type !== 'result') await session.send(errorReply(el, new StanzaError('bad-request', 'iq needs an id, a type and one payload for get/set'))!);
      return;
    }
    const payload = el.getChildElements()[0];
    if (payload?.is('session', NS.SESSION) && !el.attrs.to) {
      await session.send(x('iq', { xmlns: NS.CLIENT, type: 'result', id: el.attrs.id, to: jid.toString() }));
      return;
    }
    if (payload?.is('bind', NS.BIND)) {
      await session.send(errorReply(el, new StanzaError('not-allowed', 'a resource is already bound'))!);
      return;
    }
  }
  if (el.attrs.to) {
    try {
      parseJid(el.attrs.to);
    } catch (err) {
      if (!(err instanceof JidError)) throw err;
      const reply = errorReply(el, new StanzaError('jid-malformed', err.message));
      if (reply) await session.send(reply.attr('from', server.config.domain));
      return;
    }
  }
  // Stamped, the stanza must still fit the limits it was read under: what the server stores
  // (offline, archives, history) must parse again. The error carries no copy of the content.
  const tooLarge = exceedsLimits(el, clientLimits(session));
  if (tooLarge) {
    if (el.name === 'iq' && el.attrs.type === 'result') return;
    const reply = errorReply(new Element(el.name, { ...el.attrs }), new StanzaError('policy-violation', tooLarge));
    if (reply) await session.send(reply.attr('from', reply.attrs.from ?? server.config.domain));
    return;
  }
  await server.route(el, jid, session);
}
