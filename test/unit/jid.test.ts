import { describe, expect, it } from 'vitest';
import { JidError, parseJid, tryParseJid } from '../../shared/jid.ts';

describe('JIDs (RFC 7622)', () => {
  it('splits local, domain and resource', () => {
    const jid = parseJid('juliet@example.com/balcony/with/slashes');
    expect([jid.local, jid.domain, jid.resource]).toEqual(['juliet', 'example.com', 'balcony/with/slashes']);
    expect(jid.bare).toBe('juliet@example.com');
    expect(jid.toString()).toBe('juliet@example.com/balcony/with/slashes');
  });

  it('accepts domain-only and domain/resource JIDs', () => {
    expect(parseJid('example.com').bare).toBe('example.com');
    expect(parseJid('example.com/res').resource).toBe('res');
  });

  it('case-folds and width-maps the localpart and domain, keeps resource case', () => {
    const jid = parseJid('JuLiEt@EXAMPLE.com/Balcony');
    expect(jid.toString()).toBe('juliet@example.com/Balcony');
    expect(parseJid('ｊｕｌｉｅｔ@example.com').local).toBe('juliet');
  });

  it('normalizes to NFC and strips a trailing dot of the domain', () => {
    expect(parseJid('caf\u0065\u0301@example.com.').bare).toBe('caf\u00e9@example.com');
  });

  it.each([
    ['@example.com', 'empty localpart'],
    ['juliet@', 'empty domain'],
    ['juliet@example.com/', 'empty resource'],
    ['ju liet@example.com', 'space in localpart'],
    ['ju"liet@example.com', 'quote in localpart'],
    ['ju<liet@example.com', 'angle bracket in localpart'],
    ['juliet@exa mple.com', 'space in domain'],
    [`${'a'.repeat(1024)}@example.com`, 'localpart over 1023 bytes'],
    ['juliet@example.com/\u0007', 'control character in resource'],
  ])('rejects %s (%s)', (text) => {
    expect(() => parseJid(text)).toThrow(JidError);
    expect(tryParseJid(text)).toBeUndefined();
  });

  it('compares by normalized form', () => {
    expect(parseJid('Romeo@Example.NET/orchard').equals(parseJid('romeo@example.net/orchard'))).toBe(true);
    expect(parseJid('romeo@example.net/a').toBare().equals(parseJid('romeo@example.net'))).toBe(true);
  });
});
