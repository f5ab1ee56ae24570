/**
 * What both SASL profiles share (RFC 6120's in stream.ts, XEP-0388's in sasl2.ts): the context the
 * mechanisms run in, and the count of failed attempts on one stream (RFC 6120 §6.4.5: a few
 * retries, then the stream is closed).
 */
import { StreamError } from '../errors.ts';
import type { SaslContext } from '../sasl/mechanisms.ts';
import { frameChannelBindings } from '../storage/frame-context.ts';
import type { Element } from '../xml/element.ts';
import type { ClientSession } from './session.ts';

const MAX_AUTH_FAILURES = 3;

export function saslContext(session: ClientSession): SaslContext {
  const { server } = session;
  return {
    store: server.store,
    domain: server.config.domain,
    iterations: server.config.scramIterations,
    limits: server.config.authLimits,
    bindings: frameChannelBindings(),
  };
}

/** Sends the profile's `<failure/>`, forgets the exchange, and closes the stream after too many. */
export async function authenticationFailed(session: ClientSession, condition: string, failure: Element): Promise<void> {
  const failures = session.state.authFailures + (condition === 'aborted' ? 0 : 1);
  session.update({ sasl: undefined, sasl2: undefined, authFailures: failures });
  await session.send(failure);
  if (failures >= MAX_AUTH_FAILURES) throw new StreamError('policy-violation', 'too many failed authentication attempts');
}
