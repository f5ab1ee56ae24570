import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_XML_LIMITS, XmlFrameError, XmlStreamParser, exceedsLimits, parseFrame } from '../../shared/xml/parse.ts';
import { STORED_XML_LIMITS, parseStored, tooLargeToPost } from '../../shared/xml/stored.ts';
import { StanzaError, errorReply } from '../../shared/errors.ts';
import { log } from '../../shared/log.ts';
import { x } from '../../shared/xml/element.ts';

function condition(frame: string, limits?: Parameters<typeof parseFrame>[1]): string {
  try {
    parseFrame(frame, limits);
  } catch (err) {
    if (err instanceof XmlFrameError) return err.condition;
    throw err;
  }
  return 'parsed';
}

describe('RFC 7395 frames and restricted XML (RFC 6120 §11)', () => {
  it('parses a stanza with namespaces, attributes, entities and CDATA', () => {
    const el = parseFrame('<message xmlns="jabber:client" to="a@b" type="chat"><body>1 &lt; 2 &amp; <![CDATA[<3]]></body></message>');
    expect(el.name).toBe('message');
    expect(el.attrs).toMatchObject({ xmlns: 'jabber:client', to: 'a@b', type: 'chat' });
    expect(el.getChildText('body')).toBe('1 < 2 & <3');
  });

  it('parses the framing open element', () => {
    const el = parseFrame('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>');
    expect(el.is('open', 'urn:ietf:params:xml:ns:xmpp-framing')).toBe(true);
  });

  it.each([
    ['<!DOCTYPE m [<!ENTITY x "y">]><m>&x;</m>', 'restricted-xml'],
    ['<m><!-- hidden --></m>', 'restricted-xml'],
    ['<m><?evil x?></m>', 'restricted-xml'],
    ['<m>&lol;</m>', 'not-well-formed'],
    ['<m><b></m>', 'not-well-formed'],
    ['<m/><m/>', 'not-well-formed'],
    ['<m', 'not-well-formed'],
    ['just text', 'not-well-formed'],
    ['<m a="1" a="2"/>', 'not-well-formed'],
  ])('refuses %s with %s', (frame, expected) => {
    expect(condition(frame)).toBe(expected);
  });

  it('enforces size, depth and attribute limits', () => {
    const limits = { maxBytes: 100, maxDepth: 3, maxAttributes: 2 };
    expect(condition(`<m>${'x'.repeat(200)}</m>`, limits)).toBe('policy-violation');
    expect(condition('<a><b><c><d/></c></b></a>', limits)).toBe('policy-violation');
    expect(condition('<a x="1" y="2" z="3"/>', limits)).toBe('policy-violation');
    expect(condition('<a><b><c x="1" y="2"/></b></a>', limits)).toBe('parsed');
  });

  it('counts the limit in UTF-8 bytes, not characters', () => {
    expect(condition(`<m>${'é'.repeat(60)}</m>`, { maxBytes: 100, maxDepth: 5, maxAttributes: 5 })).toBe('policy-violation');
  });

  it('serializes with escaping so stanzas round-trip', () => {
    const el = x('message', { to: 'a@b', id: '"<&>' }, x('body', {}, '</body><evil/>'));
    expect(parseFrame(el.toString()).getChildText('body')).toBe('</body><evil/>');
    expect(parseFrame(el.toString()).attrs.id).toBe('"<&>');
  });
});

describe('stanza error replies (RFC 6120 §8.2)', () => {
  it('swaps addresses, keeps the id and names the condition with its default type', () => {
    const iq = x('iq', { type: 'get', id: 'q1', from: 'a@b/c', to: 'b' }, x('query', { xmlns: 'urn:x' }));
    const reply = errorReply(iq, new StanzaError('service-unavailable'))!;
    expect(reply.attrs).toMatchObject({ type: 'error', id: 'q1', from: 'b', to: 'a@b/c' });
    const error = reply.getChild('error')!;
    expect(error.attrs.type).toBe('cancel');
    expect(error.getChild('service-unavailable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
  });

  it('never answers an error with an error', () => {
    expect(errorReply(x('message', { type: 'error' }), new StanzaError('bad-request'))).toBeUndefined();
  });
});

/** The conditions of the stream errors an s2s/component stream parser reports for these chunks. */
function streamErrors(chunks: string[]): string[] {
  const errors: string[] = [];
  const parser = new XmlStreamParser({ open() {}, element() {}, close() {}, error: (e) => errors.push(e.condition) });
  for (const chunk of chunks) parser.write(chunk);
  return errors;
}

const streamOpen = (decl: string) =>
  `${decl}<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='b.test' version='1.0'>`;

/** `count` attributes a0…, as a client could send them (within the 64-attribute limit). */
const attrs = (count: number) => Array.from({ length: count }, (_, i) => ` a${i}="${i}"`).join('');

describe('XML 1.0 only (issue 13)', () => {
  it('refuses an XML 1.1 declaration in a frame, with or without a 1.1-only character reference', () => {
    expect(condition('<?xml version="1.1"?><message xmlns="jabber:client"><body>hi</body></message>')).toBe('not-well-formed');
    expect(condition('<?xml version="1.1"?><message xmlns="jabber:client"><body>&#x1;</body></message>')).toBe('not-well-formed');
  });

  it('refuses &#x1; whatever the declaration says, and still reads XML 1.0 with or without one', () => {
    expect(condition('<message><body>&#x1;</body></message>')).toBe('not-well-formed');
    expect(condition('<?xml version="1.0"?><message><body>&#x1;</body></message>')).toBe('not-well-formed');
    expect(condition("<?xml version='1.0' encoding='UTF-8'?><message><body>&#x9;ok</body></message>")).toBe('parsed');
    expect(condition('<message><body>ok</body></message>')).toBe('parsed');
  });

  it('refuses an XML 1.1 stream (s2s, components) and &#x1; in a 1.0 one', () => {
    expect(streamErrors([streamOpen("<?xml version='1.0'?>"), '<message><body>ok</body></message>'])).toEqual([]);
    expect(streamErrors([streamOpen("<?xml version='1.1'?>"), '<message><body>ok</body></message>'])).toEqual(['not-well-formed']);
    expect(streamErrors([streamOpen("<?xml version='1.1'?>"), '<message><body>&#x1;</body></message>'])).toEqual(['not-well-formed']);
    expect(streamErrors([streamOpen("<?xml version='1.0'?>"), '<message><body>&#x1;</body></message>'])).toEqual(['not-well-formed']);
  });
});

describe('stamped stanzas must still fit the limits (issue 13)', () => {
  it('finds a stanza that outgrows the attribute limit once from and xmlns are stamped', () => {
    const el = parseFrame(`<message to="b@localhost" type="chat"${attrs(62)}><body>x</body></message>`);
    expect(exceedsLimits(el, DEFAULT_XML_LIMITS)).toBeUndefined();
    el.attrs.from = 'a@localhost/r';
    el.attrs.xmlns = 'jabber:client';
    expect(exceedsLimits(el, DEFAULT_XML_LIMITS)).toBe('more than 64 attributes');
  });

  it('finds a stanza whose escaped serialization is larger than the frame limit', () => {
    const frame = `<message to="b@localhost" type="chat"><body>${'>'.repeat(40_000)}</body></message>`;
    const el = parseFrame(frame);
    expect(exceedsLimits(el, { ...DEFAULT_XML_LIMITS, maxBytes: 131072 })).toMatch(/^stanza larger than 131072 bytes once serialized/);
    expect(exceedsLimits(el, { ...DEFAULT_XML_LIMITS, maxBytes: 200_000 })).toBeUndefined();
  });
});

describe('stored stanzas are read with trusted limits (issue 13)', () => {
  afterEach(() => vi.restoreAllMocks());

  it('parses a stored item over the client limits (escaping growth, stamped attributes)', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => {});
    const stored = `<message xmlns="jabber:client" from="a@localhost/r" to="b@localhost" type="chat"${attrs(62)}><body>${'&gt;'.repeat(40_000)}</body></message>`;
    expect(condition(stored)).toBe('policy-violation');
    const el = parseStored(stored)!;
    expect(el.attrs.from).toBe('a@localhost/r');
    expect(el.getChildText('body')).toBe('>'.repeat(40_000));
    expect(Buffer.byteLength(stored)).toBeLessThan(STORED_XML_LIMITS.maxBytes);
    expect(warn).not.toHaveBeenCalled();
  });

  it('returns undefined for a stored item it cannot read, with one warning that names what and why, not the content', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => {});
    expect(parseStored('<message><body>secret garbage', 'offline message', { user: 'b@localhost' })).toBeUndefined();
    expect(parseStored('<?xml version="1.1"?><message><body>secret \u0001</body></message>')).toBeUndefined();
    expect(parseStored(`<message>${'x'.repeat(STORED_XML_LIMITS.maxBytes)}</message>`)).toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(3);
    const [message, extra] = warn.mock.calls[0]!;
    expect(message).toBe('unreadable offline message skipped');
    expect(extra).toMatchObject({ what: 'offline message', user: 'b@localhost', reason: expect.stringMatching(/^not-well-formed: /) });
    expect(JSON.stringify(warn.mock.calls)).not.toContain('secret');
  });

  it('tells a frame built from stored XML that is too large to post from one that fits', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => {});
    expect(tooLargeToPost('<m/>', 100, 'archived message')).toBe(false);
    expect(tooLargeToPost(`<m>${'x'.repeat(200)}</m>`, 100, 'archived message', { id: '1' })).toBe(true);
    expect(warn).toHaveBeenCalledOnce();
    expect(warn.mock.calls[0]![1]).toMatchObject({ what: 'archived message', id: '1', bytes: 207 });
  });
});
