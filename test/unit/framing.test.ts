import { describe, expect, it } from 'vitest';
import { XmlFrameError, parseFrame } from '../../shared/xml/parse.ts';
import { StanzaError, errorReply } from '../../shared/errors.ts';
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
