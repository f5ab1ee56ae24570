/**
 * Stanza errors (RFC 6120 §8.3) and stream errors (§4.9), as exceptions that handlers throw and
 * the core turns into XML.
 */
import { Element, NS, x } from './xml/element.ts';

export type StanzaErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

/** Default error type of each defined condition (RFC 6120 §8.3.3). */
const DEFAULT_TYPE: Record<string, StanzaErrorType> = {
  'bad-request': 'modify',
  conflict: 'cancel',
  'feature-not-implemented': 'cancel',
  forbidden: 'auth',
  gone: 'cancel',
  'internal-server-error': 'cancel',
  'item-not-found': 'cancel',
  'jid-malformed': 'modify',
  'not-acceptable': 'modify',
  'not-allowed': 'cancel',
  'not-authorized': 'auth',
  'policy-violation': 'modify',
  'recipient-unavailable': 'wait',
  redirect: 'modify',
  'registration-required': 'auth',
  'remote-server-not-found': 'cancel',
  'remote-server-timeout': 'wait',
  'resource-constraint': 'wait',
  'service-unavailable': 'cancel',
  'subscription-required': 'auth',
  'undefined-condition': 'cancel',
  'unexpected-request': 'wait',
};

export class StanzaError extends Error {
  readonly type: StanzaErrorType;
  constructor(
    readonly condition: string,
    readonly text?: string,
    type?: StanzaErrorType,
    /** An application-specific condition (RFC 6120 §8.3.2), e.g. <precondition-not-met xmlns='…pubsub#errors'/>. */
    readonly application?: Element,
  ) {
    super(text ?? condition);
    this.type = type ?? DEFAULT_TYPE[condition] ?? 'cancel';
  }

  toElement(by?: string): Element {
    return x(
      'error',
      { type: this.type, by },
      x(this.condition, { xmlns: NS.STANZA_ERRORS }),
      this.text ? x('text', { xmlns: NS.STANZA_ERRORS }, this.text) : undefined,
      this.application ? cloneElement(this.application) : undefined,
    );
  }
}

export class StreamError extends Error {
  constructor(
    readonly condition: string,
    readonly text?: string,
  ) {
    super(text ?? condition);
  }

  toElement(): Element {
    return x(
      'stream:error',
      { 'xmlns:stream': NS.STREAMS },
      x(this.condition, { xmlns: NS.STREAM_ERRORS }),
      this.text ? x('text', { xmlns: NS.STREAM_ERRORS }, this.text) : undefined,
    );
  }
}

/**
 * The error reply to a stanza (RFC 6120 §8.2): same name and id, addresses swapped, original
 * payload kept. Returns undefined for stanzas that must never be answered with an error
 * (errors themselves), to prevent loops.
 */
export function errorReply(stanza: Element, error: StanzaError): Element | undefined {
  if (stanza.attrs.type === 'error') return undefined;
  const reply = x(stanza.name, { xmlns: NS.CLIENT, type: 'error', id: stanza.attrs.id, from: stanza.attrs.to, to: stanza.attrs.from });
  for (const child of stanza.children) if (typeof child !== 'string' && stanza.name !== 'iq') reply.append(cloneElement(child));
  if (stanza.name === 'iq') {
    const payload = stanza.getChildElements()[0];
    if (payload) reply.append(cloneElement(payload));
  }
  reply.append(error.toElement());
  return reply;
}

export function cloneElement(el: Element): Element {
  // ltx.clone would keep parent links; a fresh tree is needed when re-parenting.
  const copy = new Element(el.name, { ...el.attrs });
  for (const child of el.children) copy.append(typeof child === 'string' ? child : cloneElement(child));
  return copy;
}
