/**
 * Password guessing and registration floods at the handler level: three stream handler instances
 * over one DynamoDB Local table, each frame carrying the client's address as API Gateway passes it
 * (`$context.identity.sourceIp`), a recording sender in place of @connections (AWS's edge).
 * Limits here: 3 failures per account, 6 per source, 2 registrations per source.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import ScramClient from 'sasl-scram-sha-1';
import { sourceSubject } from '../../shared/sasl/auth-limits.ts';
import { addAccount, Connection, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
let n = 0;
beforeAll(async () => {
  h = await startHarness(3, {
    XMPP_LOGIN_FAILURES_PER_ACCOUNT: '3',
    XMPP_LOGIN_FAILURES_PER_SOURCE: '6',
    XMPP_REGISTRATION: 'true',
    XMPP_REGISTRATIONS_PER_SOURCE: '2',
  });
});

const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';
const sasl = (name: string, data: string, mechanism = '') =>
  `<${name} xmlns="urn:ietf:params:xml:ns:xmpp-sasl"${mechanism && ` mechanism="${mechanism}"`}>${Buffer.from(data).toString('base64')}</${name}>`;

/** A fresh account (and a fresh address block per test, so tests do not share source counts). */
async function account(name: string): Promise<string> {
  n += 1;
  const bare = `${name}${n}@localhost`;
  await addAccount(h, bare);
  return bare;
}
const local = (bare: string) => bare.split('@')[0]!;

/** One PLAIN login on a new socket: resolves to the server's answer (<success> or <failure>). */
async function plainLogin(user: string, password: string, ip: string, instance?: number): Promise<string> {
  const c = new Connection(h, undefined, ip);
  await c.frame(OPEN, instance);
  await c.frame(sasl('auth', `\0${user}\0${password}`, 'PLAIN'), instance);
  return c.posts(/^<(success|failure)/)[0]!;
}

describe('failed logins per account', () => {
  it('a new socket does not start again: after 3 wrong passwords even the right one is refused, with a reason; other accounts go on', async () => {
    const alice = await account('alice');
    const bob = await account('bob');
    for (const ip of ['10.0.1.1', '10.0.1.2', '10.0.1.3']) expect(await plainLogin(local(alice), 'guess', ip)).toContain('<not-authorized/>');
    const refused = await plainLogin(local(alice), 'secret', '10.0.1.4');
    expect(refused).toContain('<temporary-auth-failure/>');
    expect(refused).toMatch(/Too many failed login attempts for this account; try again in \d+ minutes?/);
    expect(await plainLogin(local(bob), 'secret', '10.0.1.1')).toContain('<success');
  });

  it('a successful login is not counted as a failure', async () => {
    const carol = await account('carol');
    expect(await plainLogin(local(carol), 'guess', '10.0.2.1')).toContain('<not-authorized/>');
    expect(await plainLogin(local(carol), 'guess', '10.0.2.1')).toContain('<not-authorized/>');
    expect(await plainLogin(local(carol), 'secret', '10.0.2.1')).toContain('<success');
    // Two failures so far, not three: one more is still checked.
    expect(await plainLogin(local(carol), 'guess', '10.0.2.1')).toContain('<not-authorized/>');
    expect(await plainLogin(local(carol), 'secret', '10.0.2.1')).toContain('<temporary-auth-failure/>');
  });

  it('guesses sent at once on ten sockets across three instances are held at the limit (counted before the check)', async () => {
    const dave = await account('dave');
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => plainLogin(local(dave), `guess${i}`, `10.0.3.${i + 1}`, i % 3)));
    expect(answers.filter((a) => a.includes('<not-authorized/>'))).toHaveLength(3);
    expect(answers.filter((a) => a.includes('<temporary-auth-failure/>'))).toHaveLength(7);
  });

  it('a failing frame that runs twice (redelivered after a crash) counts once', async () => {
    const erin = await account('erin');
    const c = new Connection(h, undefined, '10.0.4.1');
    await c.frame(OPEN);
    h.crash.crashBefore('PutItemCommand'); // the failure is counted, then the instance dies before its commit
    await expect(c.frame(sasl('auth', `\0${local(erin)}\0guess`, 'PLAIN'))).rejects.toThrow(/crash before PutItemCommand/);
    await c.redeliver();
    await c.redeliver(); // committed: skipped
    expect(c.posts('<not-authorized/>')).toHaveLength(1);
    // Counted once: two more wrong guesses are still checked, the next attempt is not.
    expect(await plainLogin(local(erin), 'guess', '10.0.4.2')).toContain('<not-authorized/>');
    expect(await plainLogin(local(erin), 'guess', '10.0.4.3')).toContain('<not-authorized/>');
    expect(await plainLogin(local(erin), 'secret', '10.0.4.4')).toContain('<temporary-auth-failure/>');
  });

  it('SCRAM (sasl-scram-sha-1 client): wrong proofs count; over the limit the first message is refused before a challenge', async () => {
    const frank = await account('frank');
    const scramLogin = async (password: string, ip: string): Promise<string> => {
      const c = new Connection(h, undefined, ip);
      await c.frame(OPEN);
      const client = new ScramClient();
      const credentials = { username: local(frank), password };
      await c.frame(sasl('auth', await client.response(credentials), 'SCRAM-SHA-1'));
      const [challenge] = c.posts('<challenge');
      if (!challenge) return c.posts('<failure')[0]!;
      client.challenge(Buffer.from(/>([^<]*)</.exec(challenge)![1]!, 'base64').toString());
      await c.frame(sasl('response', await client.response(credentials)));
      return c.posts(/^<(success|failure)/)[0]!;
    };
    for (let i = 0; i < 3; i++) expect(await scramLogin('guess', `10.0.5.${i + 1}`)).toContain('<not-authorized/>');
    const refused = await scramLogin('secret', '10.0.5.9');
    expect(refused).toContain('<temporary-auth-failure/>');
  });
});

describe('failed logins per source address', () => {
  it('guesses at many accounts from one address are held at the limit; another address goes on', async () => {
    const grace = await account('grace');
    for (let i = 0; i < 6; i++) expect(await plainLogin(`nobody${n}x${i}`, 'guess', '10.0.6.1')).toContain('<not-authorized/>');
    const refused = await plainLogin(local(grace), 'secret', '10.0.6.1');
    expect(refused).toContain('<temporary-auth-failure/>');
    expect(refused).toContain('for your address');
    expect(await plainLogin(local(grace), 'secret', '10.0.6.2')).toContain('<success');
  });

  it('twenty good logins from one address at once across three instances all succeed (an office behind NAT): logins in flight are not failures', async () => {
    const users = await Promise.all(Array.from({ length: 20 }, (_, i) => account(`office${i}-`)));
    const answers = await Promise.all(users.map((u, i) => plainLogin(local(u), 'secret', '10.0.9.1', i % 3)));
    expect(answers.filter((a) => a.includes('<success'))).toHaveLength(20);
    // Failures from that address still count: six of them, and the address is held.
    for (let i = 0; i < 6; i++) expect(await plainLogin(`nobody${n}y${i}`, 'guess', '10.0.9.1')).toContain('<not-authorized/>');
    expect(await plainLogin(local(users[0]!), 'secret', '10.0.9.1')).toContain('<temporary-auth-failure/>');
  });

  it('an IPv6 source is its /64 (one host holds a whole /64); IPv4-mapped addresses count as IPv4', async () => {
    expect(sourceSubject('2001:db8:1:2:aaaa::1')).toBe(sourceSubject('2001:db8:1:2:ffff::2'));
    expect(sourceSubject('2001:db8:1:2::1')).not.toBe(sourceSubject('2001:db8:1:3::1'));
    expect(sourceSubject('::ffff:192.0.2.7')).toBe('192.0.2.7');
    const henry = await account('henry');
    for (let i = 0; i < 6; i++) expect(await plainLogin(`nobody${n}y${i}`, 'guess', `2001:db8:7:7::${i + 1}`)).toContain('<not-authorized/>');
    expect(await plainLogin(local(henry), 'secret', '2001:db8:7:7:1234::9')).toContain('<temporary-auth-failure/>');
    expect(await plainLogin(local(henry), 'secret', '2001:db8:7:8::1')).toContain('<success');
  });
});

describe('in-band registration per source address', () => {
  const register = async (user: string, ip: string): Promise<string> => {
    const c = new Connection(h, undefined, ip);
    await c.frame(OPEN);
    await c.frame(`<iq type="set" id="reg" xmlns="jabber:client"><query xmlns="jabber:iq:register"><username>${user}</username><password>pw-${user}</password></query></iq>`);
    return c.posts('id="reg"')[0]!;
  };

  it('creates at most 2 accounts per address per hour; a name already taken is not counted', async () => {
    n += 1;
    expect(await register(`new${n}a`, '10.0.7.1')).toContain('type="result"');
    expect(await register(`new${n}a`, '10.0.7.1')).toContain('<conflict');
    expect(await register(`new${n}b`, '10.0.7.1')).toContain('type="result"');
    const refused = await register(`new${n}c`, '10.0.7.1');
    expect(refused).toContain('<policy-violation');
    expect(refused).toContain('type="wait"');
    expect(await h.store.getAccount(`new${n}c@localhost`)).toBeUndefined();
    expect(await register(`new${n}c`, '10.0.7.2')).toContain('type="result"');
  });

  it('does not limit the machine itself (loopback: scripts, the bench)', async () => {
    n += 1;
    for (const [i, ip] of ['127.0.0.1', '127.0.0.1', '127.0.0.1', '::1'].entries()) expect(await register(`local${n}x${i}`, ip)).toContain('type="result"');
  });
});
