/**
 * Parses one RFC 7395 frame (a complete top-level element) with saxes, enforcing the restricted
 * XML profile of RFC 6120 §11 (no DTD, comments or processing instructions; only the predefined
 * entities) and the server's size, depth and attribute limits.
 */
import { SaxesParser } from 'saxes';
import { Element } from './element.ts';

export interface XmlLimits {
  maxBytes: number;
  maxDepth: number;
  maxAttributes: number;
}

export const DEFAULT_XML_LIMITS: XmlLimits = { maxBytes: 131072, maxDepth: 48, maxAttributes: 64 };

/** A violation that must end the stream; `condition` is the RFC 6120 §4.9.3 stream error. */
export class XmlFrameError extends Error {
  constructor(
    readonly condition: 'restricted-xml' | 'not-well-formed' | 'policy-violation',
    message: string,
  ) {
    super(message);
  }
}

export function parseFrame(frame: string, limits: XmlLimits = DEFAULT_XML_LIMITS): Element {
  if (Buffer.byteLength(frame, 'utf8') > limits.maxBytes) {
    throw new XmlFrameError('policy-violation', `frame larger than ${limits.maxBytes} bytes`);
  }
  const parser = new SaxesParser({ xmlns: false, position: false });
  let root: Element | undefined;
  let current: Element | undefined;
  let depth = 0;
  let failure: XmlFrameError | undefined;
  const fail = (e: XmlFrameError) => {
    failure ??= e;
  };

  parser.on('doctype', () => fail(new XmlFrameError('restricted-xml', 'DTDs are not allowed')));
  parser.on('comment', () => fail(new XmlFrameError('restricted-xml', 'comments are not allowed')));
  parser.on('processinginstruction', () =>
    fail(new XmlFrameError('restricted-xml', 'processing instructions are not allowed')),
  );
  parser.on('opentag', (tag) => {
    depth++;
    if (depth > limits.maxDepth) fail(new XmlFrameError('policy-violation', `nesting deeper than ${limits.maxDepth}`));
    const attrs = tag.attributes as Record<string, string>;
    if (Object.keys(attrs).length > limits.maxAttributes) {
      fail(new XmlFrameError('policy-violation', `more than ${limits.maxAttributes} attributes`));
    }
    const el = new Element(tag.name, { ...attrs });
    if (current) current.cnode(el);
    else if (root) fail(new XmlFrameError('not-well-formed', 'more than one top-level element'));
    else root = el;
    current = el;
  });
  parser.on('closetag', () => {
    depth--;
    current = (current?.parent as Element | null) ?? undefined;
  });
  parser.on('text', (text) => {
    if (current) current.t(text);
    else if (text.trim() !== '') fail(new XmlFrameError('not-well-formed', 'text outside the top-level element'));
  });
  parser.on('cdata', (text) => {
    if (current) current.t(text);
  });
  parser.on('error', (err) => fail(new XmlFrameError('not-well-formed', err.message)));

  try {
    parser.write(frame).close();
  } catch (err) {
    fail(new XmlFrameError('not-well-formed', (err as Error).message));
  }
  if (failure) throw failure;
  if (!root) throw new XmlFrameError('not-well-formed', 'no element in frame');
  return root;
}
