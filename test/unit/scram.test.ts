import { describe, expect, it } from 'vitest';
import { makeCredentials } from '../../shared/accounts.ts';
import {
  PasswordError,
  ScramError,
  deriveCredentials,
  preparePassword,
  parseClientFirst,
  serverFirst,
  verifyClientFinal,
  verifyPassword,
} from '../../shared/sasl/scram.ts';
import { parsePlain } from '../../shared/sasl/plain.ts';
import { scramClientFinal } from '../scram-client.ts';

const rfc5802Credentials = await deriveCredentials('sha1', 'pencil', 4096, Buffer.from('QSXCR+Q6sek8bf92', 'base64'));
const rfc7677Credentials = await deriveCredentials('sha256', 'pencil', 4096, Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'));

describe('SCRAM-SHA-1 (RFC 5802 §5 test vector)', () => {
  const creds = rfc5802Credentials;
  const clientFirst = 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL';
  const clientFinal = 'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=';

  it('produces the server-first message and the server signature of the RFC', () => {
    const parsed = parseClientFirst(clientFirst);
    expect(parsed.username).toBe('user');
    const first = serverFirst('sha1', parsed, creds, '3rfcNHYJY1ZVvWVs7j');
    expect(first.message).toBe('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096');
    expect(verifyClientFinal(first.state, clientFinal, creds)).toBe('v=rmF9pqV8S7suAoZWja4dJRkFsKQ=');
  });

  it('rejects a wrong proof and a tampered nonce', () => {
    const first = serverFirst('sha1', parseClientFirst(clientFirst), creds, '3rfcNHYJY1ZVvWVs7j');
    expect(() => verifyClientFinal(first.state, clientFinal.replace('p=v0X8', 'p=v1X8'), creds)).toThrow(ScramError);
    expect(() => verifyClientFinal(first.state, clientFinal.replace('Vs7j,', 'Vs7k,'), creds)).toThrow(/nonce/);
  });
});

describe('SCRAM-SHA-256 (RFC 7677 §3 test vector)', () => {
  it('produces the server signature of the RFC', async () => {
    const creds = rfc7677Credentials;
    const first = serverFirst('sha256', parseClientFirst('n,,n=user,r=rOprNGfwEbeRWgbNEkqO'), creds, '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0');
    expect(first.message).toBe('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096');
    const final = 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=';
    expect(verifyClientFinal(first.state, final, creds)).toBe('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
  });
});

describe('SCRAM message parsing', () => {
  it('decodes escaped usernames', () => {
    expect(parseClientFirst('n,,n=a=2Cb=3Dc,r=abc').username).toBe('a,b=c');
  });

  it.each([
    ['p=tls-unique,,n=user,r=abc', /channel binding needs a -PLUS mechanism/],
    ['n,a=admin,n=user,r=abc', /authzid/],
    ['x,,n=user,r=abc', /gs2/],
    ['n,,r=abc', /username/],
    ['n,,n=us=41er,r=abc', /escape/],
  ])('refuses %s', (message, error) => {
    expect(() => parseClientFirst(message)).toThrow(error);
  });

  it('stores keys, not passwords, and still verifies a plaintext password (PLAIN)', async () => {
    const creds = await deriveCredentials('sha256', 'correct horse', 4096);
    expect(JSON.stringify(creds)).not.toContain('correct horse');
    expect(Buffer.from(creds.salt, 'base64').length).toBe(16);
    expect(await verifyPassword('sha256', 'correct horse', creds)).toBe(true);
    expect(await verifyPassword('sha256', 'wrong', creds)).toBe(false);
  });

  it('gives each credential its own salt', async () => {
    expect((await deriveCredentials('sha1', 'x', 4096)).salt).not.toBe((await deriveCredentials('sha1', 'x', 4096)).salt);
  });

  it('parses PLAIN messages', () => {
    expect(parsePlain(Buffer.from('\0alice\0secret'))).toEqual({ authzid: '', authcid: 'alice', password: 'secret' });
    expect(parsePlain(Buffer.from('alice\0secret'))).toBeUndefined();
    expect(parsePlain(Buffer.from('\0\0secret'))).toBeUndefined();
  });
});

describe('SASLprep of passwords (RFC 4013 §3 examples, as RFC 5802 requires)', () => {
  it('maps and normalizes: a password set as I<soft hyphen>X is checked as IX or as the Roman numeral nine', async () => {
    const creds = (await makeCredentials('I\u00ADX', 4096)).sha256;
    for (const typed of ['IX', '\u2168', 'I\u00ADX']) expect(await verifyPassword('sha256', typed, creds)).toBe(true);
    expect(await verifyPassword('sha256', 'ix', creds)).toBe(false); // case is kept
    expect(await verifyPassword('sha256', 'a b', (await makeCredentials('a\u00A0b', 4096)).sha256)).toBe(true); // non-ASCII space → space
  });

  it('refuses to set a password with prohibited characters or mixed directions, and never matches one at login', async () => {
    for (const bad of ['\u0007bell', '\u0627\u0031']) {
      await expect(preparePassword(bad, true)).rejects.toThrow(PasswordError);
      await expect(makeCredentials(bad, 4096)).rejects.toThrow(PasswordError);
    }
    const creds = (await makeCredentials('fine', 4096)).sha256;
    expect(await verifyPassword('sha256', '\u0007bell', creds)).toBe(false);
  });
});

describe('SCRAM-*-PLUS channel binding (RFC 5802 §6, RFC 9266)', () => {
  const creds = rfc7677Credentials;
  const exporter = Buffer.alloc(32, 7);
  const offer = { plus: true, available: ['tls-exporter', 'tls-server-end-point'] };

  it('accepts a proof bound to this connection and refuses one bound to another', () => {
    const parsed = parseClientFirst('p=tls-exporter,,n=user,r=abc', offer);
    expect(parsed.channelBinding).toBe('tls-exporter');
    const first = serverFirst('sha256', parsed, creds, 'xyz');
    const final = scramClientFinal('pencil', first.message, 'n=user,r=abc', 'p=tls-exporter,,', exporter);
    expect(verifyClientFinal(first.state, final, creds, exporter)).toMatch(/^v=/);
    // A man in the middle terminates TLS itself: its connection's data differs from the client's.
    expect(() => verifyClientFinal(first.state, final, creds, Buffer.alloc(32, 8))).toThrow(/channel binding mismatch/);
    expect(() => verifyClientFinal(first.state, final, creds, undefined)).toThrow(/no channel binding data/);
  });

  it('refuses -PLUS without binding, binding without -PLUS and unknown types; takes "y" (tls-unique-only clients send it)', () => {
    expect(parseClientFirst('y,,n=user,r=abc', { plus: false, available: ['tls-exporter'] }).gs2Header).toBe('y,,');
    expect(parseClientFirst('y,,n=user,r=abc', { plus: false, available: [] }).gs2Header).toBe('y,,');
    expect(() => parseClientFirst('n,,n=user,r=abc', offer)).toThrow(/needs channel binding/);
    expect(() => parseClientFirst('p=tls-exporter,,n=user,r=abc', { plus: false, available: ['tls-exporter'] })).toThrow(/-PLUS/);
    expect(() => parseClientFirst('p=tls-unique,,n=user,r=abc', offer)).toThrow(/tls-unique is not supported/);
  });
});
