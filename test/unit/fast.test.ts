/**
 * XEP-0484 FAST tokens at the handler level, on three instances sharing one DynamoDB Local table:
 * a token asked for at a password login, a one-frame login with it (HT-SHA-256-NONE), the two
 * slots of rotation, invalidation, expiry, a password change, and frames SQS runs twice.
 */
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCredentials } from '../../shared/accounts.ts';
import { FastStore } from '../../shared/storage/fast-store.ts';
import { Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';

const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';
const SASL2 = 'urn:xmpp:sasl:2';
const FAST = 'urn:xmpp:fast:0';
const UA = '8e6f1b5e-6a9d-4b53-9a8e-2f5d1f4c7a01';
const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');
const hmac = (token: string, label: string) => createHmac('sha256', token).update(label).digest();
const local = (bare: string) => bare.split('@')[0]!;

let h: Harness;
beforeAll(async () => {
  h = await startHarness(3);
});
afterAll(() => h?.crash.client.destroy());

/** A password login (PLAIN) asking for a token; returns the token and the connection. */
async function passwordLogin(bare: string, userAgent = UA): Promise<{ c: Connection; token: string; expiry: string }> {
  const c = new Connection(h);
  await c.frame(OPEN);
  await c.frame(
    `<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${b64(`\0${local(bare)}\0secret`)}</initial-response><user-agent id="${userAgent}"/><request-token xmlns="${FAST}" mechanism="HT-SHA-256-NONE"/></authenticate>`,
  );
  const success = c.posts('<success')[0]!;
  const [, token, expiry] = /<token xmlns="urn:xmpp:fast:0" token="([^"]+)" expiry="([^"]+)"\/>/.exec(success) ?? [];
  return { c, token: token!, expiry: expiry! };
}

/** A token login: one frame after the open. Returns what the server answered. */
async function tokenLogin(bare: string, token: string, inline = '', userAgent = UA): Promise<{ c: Connection; answer: string }> {
  const c = new Connection(h);
  await c.frame(OPEN);
  const response = Buffer.concat([Buffer.from(`${local(bare)}\0`), hmac(token, 'Initiator')]);
  await c.frame(`<authenticate xmlns="${SASL2}" mechanism="HT-SHA-256-NONE"><initial-response>${b64(response)}</initial-response><user-agent id="${userAgent}"/><fast xmlns="${FAST}"${inline.includes('invalidate') ? ' invalidate="true"' : ''}/>${inline.replace('invalidate', '')}</authenticate>`);
  return { c, answer: c.posts(/^<(success|failure)/)[0]! };
}

describe('XEP-0484 FAST', () => {
  it('offers HT-SHA-256-NONE inline, issues a token at a password login, and logs in with it in one frame, bound', async () => {
    const [alice] = await freshUsers(h, 'alice');
    const { c, token, expiry } = await passwordLogin(alice!);
    expect(c.posts('<stream:features')[0]).toContain(`<fast xmlns="${FAST}"><mechanism>HT-SHA-256-NONE</mechanism></fast>`);
    // 256 random bits, valid for the configured 14 days.
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
    expect(Date.parse(expiry) - Date.now()).toBeGreaterThan(13.9 * 86_400_000);
    // The mechanism is not among the password ones.
    expect(c.posts('<stream:features')[0]).not.toContain('<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>HT-');
    const { answer } = await tokenLogin(alice!, token, '<bind xmlns="urn:xmpp:bind:0"><tag>App</tag></bind>');
    expect(answer).toContain(`<success xmlns="${SASL2}">`);
    // The server proves it knows the token too.
    expect(/<additional-data>([^<]+)</.exec(answer)![1]).toBe(b64(hmac(token, 'Responder')));
    expect(/<authorization-identifier>([^<]+)</.exec(answer)![1]).toMatch(new RegExp(`^${alice}/App/`));
  });

  it('refuses a wrong token, a token of another installation, and a token mechanism without <fast/>', async () => {
    const [bob] = await freshUsers(h, 'bob');
    const { token } = await passwordLogin(bob!);
    expect((await tokenLogin(bob!, `${token}x`)).answer).toContain('<not-authorized');
    expect((await tokenLogin(bob!, token, '', '1d4d2b1a-0000-4000-8000-000000000000')).answer).toContain('<not-authorized');
    const c = new Connection(h);
    await c.frame(OPEN);
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="HT-SHA-256-NONE"><initial-response>${b64(Buffer.concat([Buffer.from(`${local(bob!)}\0`), hmac(token, 'Initiator')]))}</initial-response><user-agent id="${UA}"/></authenticate>`);
    expect(c.posts('<failure')[0]).toContain('<invalid-mechanism');
  });

  it('keeps two slots: a new token does not end the one the client has until it is used, then the older one goes', async () => {
    const [carol] = await freshUsers(h, 'carol');
    const { token: first } = await passwordLogin(carol!);
    // Logged in with the first and asking for a new one: the first still works (the new one may never have arrived).
    const renewed = await tokenLogin(carol!, first, `<request-token xmlns="${FAST}" mechanism="HT-SHA-256-NONE"/>`);
    const second = /token="([^"]+)"/.exec(renewed.answer)![1]!;
    expect(second).not.toBe(first);
    expect((await tokenLogin(carol!, first)).answer).toContain('<success');
    // The second is used: the first is gone.
    expect((await tokenLogin(carol!, second)).answer).toContain('<success');
    expect((await tokenLogin(carol!, first)).answer).toContain('<not-authorized');
    expect((await tokenLogin(carol!, second)).answer).toContain('<success');
  });

  it('ends tokens on request, at their expiry, and all of them when the password changes', async () => {
    const [dave] = await freshUsers(h, 'dave');
    const { token } = await passwordLogin(dave!);
    expect((await tokenLogin(dave!, token, 'invalidate')).answer).toContain('<success');
    expect((await tokenLogin(dave!, token)).answer).toContain('<not-authorized');

    const { token: old } = await passwordLogin(dave!);
    await h.store.open(FastStore).issue(dave!, UA, { token: old, mechanism: 'HT-SHA-256-NONE', expiry: Date.now() - 1000 });
    expect((await tokenLogin(dave!, old)).answer).toContain('<credentials-expired');

    const { token: fresh } = await passwordLogin(dave!);
    const { token: phone } = await passwordLogin(dave!, '7f7e6a1c-1111-4222-8333-944455556666');
    await h.store.setCredentials(dave!, await makeCredentials('new secret', 4096));
    expect((await tokenLogin(dave!, fresh)).answer).toContain('<not-authorized');
    expect((await tokenLogin(dave!, phone, '', '7f7e6a1c-1111-4222-8333-944455556666')).answer).toContain('<not-authorized');
  });

  it('a token request SQS runs again on another instance issues one token, the one the client got', async () => {
    const [erin] = await freshUsers(h, 'erin');
    const c = new Connection(h);
    await c.frame(OPEN, 0);
    // The instance dies after posting the <success/> with the token, before its frame is done;
    // SQS runs the frame again elsewhere.
    let crashed = false;
    h.sender.beforePost = ({ connectionId, frame }) => {
      if (!crashed && connectionId === c.id && frame.startsWith('<stream:features') && c.posts('<success').length === 1) {
        crashed = true;
        throw new Error('instance died');
      }
    };
    const authenticate = `<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${b64(`\0${local(erin!)}\0secret`)}</initial-response><user-agent id="${UA}"/><request-token xmlns="${FAST}" mechanism="HT-SHA-256-NONE"/></authenticate>`;
    await expect(c.frame(authenticate, 1)).rejects.toThrow(/instance died/);
    h.sender.beforePost = undefined;
    await c.redeliver(2);
    const successes = c.posts('<success');
    expect(successes).toHaveLength(1);
    const token = /token="([^"]+)"/.exec(successes[0]!)![1]!;
    expect((await h.store.open(FastStore).get(erin!, UA)).next?.token).toBe(token);
    expect((await tokenLogin(erin!, token)).answer).toContain('<success');
  });
});
