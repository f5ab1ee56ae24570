/**
 * XML input with saxes, under the restricted XML profile of RFC 6120 §11 (no DTD, comments or
 * processing instructions; only the predefined entities) and the server's size, depth and
 * attribute limits:
 * - `parseFrame`: one RFC 7395 frame (a complete top-level element), for WebSocket clients;
 * - `XmlStreamParser`: a TCP stream (`<stream:stream>` with stanzas as its children) for
 *   server-to-server links and XEP-0114 components, fed chunk by chunk.
 */
import { SaxesParser, type SaxesOptions } from 'saxes';
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

/**
 * A saxes parser that reports every construct restricted XML forbids, and syntax errors, to `fail`.
 * It reads XML 1.0 only (RFC 6120 §11.6), whatever the declaration says: under 1.1 rules
 * `&#x1;` would be a character reference the server stores raw, and the stored copy would not be
 * XML 1.0 any more.
 */
function restrictedParser<O extends SaxesOptions>(options: O, fail: (e: XmlFrameError) => void): SaxesParser<O> {
  const parser = new SaxesParser<O>({ position: false, ...options, defaultXMLVersion: '1.0', forceXMLVersion: true });
  // A declared version other than 1.0 is refused as not-well-formed: the document is read as XML
  // 1.0 and may not be well-formed as such. Not restricted-xml (that names DTDs, comments, PIs and
  // entity references), not unsupported-version (that is the stream's XMPP version attribute).
  parser.on('xmldecl', (decl) => {
    if (decl.version !== undefined && decl.version !== '1.0') fail(new XmlFrameError('not-well-formed', `XML ${decl.version} is not supported (XML 1.0 only)`));
  });
  parser.on('doctype', () => fail(new XmlFrameError('restricted-xml', 'DTDs are not allowed')));
  parser.on('comment', () => fail(new XmlFrameError('restricted-xml', 'comments are not allowed')));
  parser.on('processinginstruction', () => fail(new XmlFrameError('restricted-xml', 'processing instructions are not allowed')));
  parser.on('error', (err) => fail(new XmlFrameError('not-well-formed', err.message)));
  return parser;
}

/** The depth and attribute-count limits, checked at each start tag. */
function checkTag(depth: number, attributes: number, limits: XmlLimits): XmlFrameError | undefined {
  if (depth > limits.maxDepth) return new XmlFrameError('policy-violation', `nesting deeper than ${limits.maxDepth}`);
  if (attributes > limits.maxAttributes) return new XmlFrameError('policy-violation', `more than ${limits.maxAttributes} attributes`);
  return undefined;
}

/**
 * Whether a stanza the server has stamped (`from`, `xmlns`, namespace declarations) still fits the
 * limits it was parsed under: what the server stores must parse again. Returns why not, or
 * undefined. Checks the attributes and depth of every element and the serialized size in UTF-8
 * bytes (escaping makes it larger than the input: a raw `>` is stored as `&gt;`).
 */
export function exceedsLimits(el: Element, limits: XmlLimits): string | undefined {
  const walk = (e: Element, depth: number): string | undefined => {
    const violation = checkTag(depth, Object.keys(e.attrs).length, limits);
    if (violation) return violation.message;
    for (const child of e.children) {
      if (typeof child === 'string') continue;
      const deeper = walk(child as Element, depth + 1);
      if (deeper) return deeper;
    }
    return undefined;
  };
  const tree = walk(el, 1);
  if (tree) return tree;
  const bytes = Buffer.byteLength(el.toString(), 'utf8');
  if (bytes > limits.maxBytes) return `stanza larger than ${limits.maxBytes} bytes once serialized (${bytes})`;
  return undefined;
}

export function parseFrame(frame: string, limits: XmlLimits = DEFAULT_XML_LIMITS): Element {
  if (Buffer.byteLength(frame, 'utf8') > limits.maxBytes) {
    throw new XmlFrameError('policy-violation', `frame larger than ${limits.maxBytes} bytes`);
  }
  let root: Element | undefined;
  let current: Element | undefined;
  let depth = 0;
  let failure: XmlFrameError | undefined;
  const fail = (e: XmlFrameError) => {
    failure ??= e;
  };
  const parser = restrictedParser({ xmlns: false }, fail);

  parser.on('opentag', (tag) => {
    depth++;
    const attrs = tag.attributes as Record<string, string>;
    const violation = checkTag(depth, Object.keys(attrs).length, limits);
    if (violation) fail(violation);
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

  try {
    parser.write(frame).close();
  } catch (err) {
    fail(new XmlFrameError('not-well-formed', (err as Error).message));
  }
  if (failure) throw failure;
  if (!root) throw new XmlFrameError('not-well-formed', 'no element in frame');
  return root;
}

/** The opening `<stream:stream>` tag of a TCP stream. */
export interface StreamHeader {
  /** Namespace and local name of the root element (`http://etherx.jabber.org/streams`, `stream`). */
  uri: string;
  local: string;
  /** The stream's default namespace (`jabber:server`, `jabber:component:accept`, …). */
  defaultNamespace: string;
  /** Attributes as written (`from`, `to`, `id`, `version`, `xml:lang`, declarations). */
  attrs: Record<string, string>;
}

export interface XmlStreamHandlers {
  open(header: StreamHeader): void;
  /**
   * A complete child of the stream root. The element carries the namespace declarations it needs
   * (its default namespace as `xmlns`, used prefixes as `xmlns:p`), so it can be serialized alone.
   */
  element(el: Element, name: { uri: string; local: string }): void;
  /** `</stream:stream>` */
  close(): void;
  /** The stream must end with this stream error; nothing more is parsed. */
  error(err: XmlFrameError): void;
}

/**
 * Incremental parser of an XML stream (RFC 6120 §4): reports the stream header, each top-level
 * child as an element tree, and the end of the stream. `maxBytes` limits one top-level child.
 * A stream restart (after STARTTLS or SASL) needs a new parser.
 */
export class XmlStreamParser {
  private readonly parser: SaxesParser<{ xmlns: true }>;
  private depth = 0;
  private current: Element | undefined;
  private bytes = 0;
  private failed = false;

  constructor(
    private readonly handlers: XmlStreamHandlers,
    private readonly limits: XmlLimits = DEFAULT_XML_LIMITS,
  ) {
    this.parser = restrictedParser({ xmlns: true }, (e) => this.fail(e));
    this.parser.on('opentag', (tag) => {
      this.depth++;
      if (this.depth === 1) {
        const attrs: Record<string, string> = {};
        for (const a of Object.values(tag.attributes)) attrs[a.name] = a.value;
        this.handlers.open({ uri: tag.uri, local: tag.local, defaultNamespace: tag.ns[''] ?? this.parser.resolve('') ?? '', attrs });
        return;
      }
      const attributes = Object.values(tag.attributes);
      const violation = checkTag(this.depth - 1, attributes.length, this.limits);
      if (violation) return this.fail(violation);
      const attrs: Record<string, string> = {};
      for (const a of attributes) attrs[a.name] = a.value;
      const el = new Element(tag.name, attrs);
      // Declare what this element relies on from outside the stanza (the stream root's declarations).
      const declare = (prefix: string, uri: string) => {
        const attr = prefix ? `xmlns:${prefix}` : 'xmlns';
        if (inScope(this.current, attr) !== uri) el.attrs[attr] = uri;
      };
      declare(tag.prefix, tag.uri);
      for (const a of attributes) if (a.prefix && a.prefix !== 'xmlns' && a.prefix !== 'xml') declare(a.prefix, a.uri);
      if (this.current) this.current.cnode(el);
      this.current = el;
    });
    this.parser.on('closetag', (tag) => {
      this.depth--;
      if (this.depth === 0) {
        this.handlers.close();
        return;
      }
      const el = this.current;
      this.current = (el?.parent as Element | null) ?? undefined;
      if (this.depth === 1 && el && !this.failed) {
        this.bytes = 0;
        this.handlers.element(el, { uri: tag.uri, local: tag.local });
      }
    });
    this.parser.on('text', (text) => {
      if (this.current) this.current.t(text);
      // Whitespace between stanzas is a keepalive; other text there is ignored.
    });
    this.parser.on('cdata', (text) => {
      if (this.current) this.current.t(text);
    });
  }

  /** Feeds a decoded chunk of the stream. */
  write(chunk: string): void {
    if (this.failed) return;
    // Bytes since the last complete top-level child (at most one chunk under-counted).
    this.bytes += Buffer.byteLength(chunk, 'utf8');
    if (this.bytes > this.limits.maxBytes) return this.fail(new XmlFrameError('policy-violation', `stanza larger than ${this.limits.maxBytes} bytes`));
    try {
      this.parser.write(chunk);
    } catch (err) {
      this.fail(new XmlFrameError('not-well-formed', (err as Error).message));
    }
    if (this.depth <= 1) this.bytes = 0;
  }

  private fail(err: XmlFrameError): void {
    if (this.failed) return;
    this.failed = true;
    this.handlers.error(err);
  }
}

/** The value of a namespace declaration in scope at `el` (inside one stanza tree). */
function inScope(el: Element | undefined, attr: string): string | undefined {
  for (let e: Element | undefined = el; e; e = (e.parent as Element | null) ?? undefined) {
    if (e.attrs[attr] !== undefined) return e.attrs[attr];
  }
  return undefined;
}
