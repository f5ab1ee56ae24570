/**
 * XEP-0388 SASL2 at the handler level: each frame of an exchange on another of three server
 * instances sharing one table (no instance remembers anything between frames), frames run again
 * as SQS redelivers them, and what a client that breaks the profile's rules is told.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, freshUsers, startHarness, type Harness } from './handler-harness.ts';
import { scramClientFinal } from '../scram-client.ts';

const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';
const SASL2 = 'urn:xmpp:sasl:2';
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');
const textOf = (frame: string, name: string) => new RegExp(`<${name}[^>]*>([^<]*)</${name}>`).exec(frame)?.[1];

let h: Harness;
beforeAll(async () => {
  h = await startHarness(3);
});
afterAll(() => h?.crash.client.destroy());

/** SCRAM-SHA-256 by SASL2 up to the server's first message; returns what the proof needs. */
async function startScram(c: Connection, bare: string, initial = true) {
  await c.frame(OPEN);
  const clientFirstBare = `n=${bare.split('@')[0]},r=clientnonce${c.id}`;
  const first = b64(`n,,${clientFirstBare}`);
  if (initial) {
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="SCRAM-SHA-256"><initial-response>${first}</initial-response><user-agent id="d4565fa7-4d72-4749-b3d3-740edbf87770"><software>test</software></user-agent></authenticate>`);
  } else {
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="SCRAM-SHA-256"/>`);
    expect(c.posts('<challenge').at(-1)).toMatch(/<challenge xmlns="urn:xmpp:sasl:2"\s*\/>/);
    await c.frame(`<response xmlns="${SASL2}">${first}</response>`);
  }
  const serverFirst = unb64(textOf(c.posts('<challenge').at(-1)!, 'challenge')!);
  return { serverFirst, clientFirstBare };
}

function proof(password: string, scram: { serverFirst: string; clientFirstBare: string }): string {
  return `<response xmlns="${SASL2}">${b64(scramClientFinal(password, scram.serverFirst, scram.clientFirstBare, 'n,,', Buffer.alloc(0)))}</response>`;
}

describe('XEP-0388 SASL2', () => {
  it('offers the mechanisms in <authentication/>, and authenticates by SCRAM with no stream restart', async () => {
    const [alice, bob] = await freshUsers(h, 'alice', 'bob');
    const c = new Connection(h);
    const scram = await startScram(c, alice!);
    const features = c.posts('<stream:features')[0]!;
    expect(features).toContain(`<authentication xmlns="${SASL2}"><mechanism>SCRAM-SHA-256</mechanism>`);
    await c.frame(proof('secret', scram));
    const success = c.posts('<success')[0]!;
    expect(success).toContain(`<success xmlns="${SASL2}">`);
    // The server's signature (v=) proves it knows the credentials; the identity is the bare JID.
    expect(unb64(textOf(success, 'additional-data')!)).toMatch(/^v=/);
    expect(textOf(success, 'authorization-identifier')).toBe(alice);
    // The authenticated stream's features follow at once: resource binding, no mechanisms.
    const after = c.posts('<stream:features')[1]!;
    expect(after).toContain('urn:ietf:params:xml:ns:xmpp-bind');
    expect(after).not.toContain('<mechanism>');
    // Bound on the same stream, the session routes stanzas.
    await c.frame('<iq type="set" id="b" xmlns="jabber:client"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>r</resource></bind></iq>');
    expect(c.posts('id="b"')[0]).toContain(`<jid>${alice}/r</jid>`);
    const b = new Connection(h);
    await b.login(bob!, 'secret', 'r');
    await c.frame(`<message xmlns="jabber:client" to="${bob}/r" id="m1"><body>hi</body></message>`);
    expect(b.posts('id="m1"')[0]).toContain(`from="${alice}/r"`);
  });

  it('answers a frame SQS runs again as it did, once, on any instance', async () => {
    const [carol] = await freshUsers(h, 'carol');
    const c = new Connection(h);
    await c.frame(OPEN, 0);
    const clientFirstBare = `n=${carol!.split('@')[0]},r=again${c.id}`;
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="SCRAM-SHA-256"><initial-response>${b64(`n,,${clientFirstBare}`)}</initial-response></authenticate>`, 1);
    await c.redeliver(2);
    // One challenge, with the nonce the state holds: the proof against it succeeds.
    expect(c.posts('<challenge')).toHaveLength(1);
    const serverFirst = unb64(textOf(c.posts('<challenge')[0]!, 'challenge')!);
    await c.frame(proof('secret', { serverFirst, clientFirstBare }), 0);
    await c.redeliver(1);
    expect(c.posts('<success')).toHaveLength(1);
    expect(c.posts('<stream:features')).toHaveLength(2);
    expect(c.posts('<stream:error')).toHaveLength(0);
  });

  it('takes the first message in a <response/> when <authenticate/> had none', async () => {
    const [dave] = await freshUsers(h, 'dave');
    const c = new Connection(h);
    const scram = await startScram(c, dave!, false);
    await c.frame(proof('secret', scram));
    expect(textOf(c.posts('<success')[0]!, 'authorization-identifier')).toBe(dave);
  });

  it('fails a wrong proof with the RFC 6120 condition, and closes the stream at the third failure', async () => {
    const [erin] = await freshUsers(h, 'erin');
    const c = new Connection(h);
    for (let i = 0; i < 3; i++) {
      const scram = i === 0 ? await startScram(c, erin!) : await (async () => {
        const clientFirstBare = `n=${erin!.split('@')[0]},r=retry${i}`;
        await c.frame(`<authenticate xmlns="${SASL2}" mechanism="SCRAM-SHA-256"><initial-response>${b64(`n,,${clientFirstBare}`)}</initial-response></authenticate>`);
        return { serverFirst: unb64(textOf(c.posts('<challenge').at(-1)!, 'challenge')!), clientFirstBare };
      })();
      await c.frame(proof('wrong', scram));
    }
    const failures = c.posts('<failure');
    expect(failures).toHaveLength(3);
    expect(failures[0]).toContain(`<failure xmlns="${SASL2}"><not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>`);
    expect(c.posts('<stream:error')[0]).toContain('policy-violation');
    expect(c.posts('<success')).toHaveLength(0);
  });

  it('refuses a mechanism it does not offer, and anything but its own elements during an exchange', async () => {
    const [frank] = await freshUsers(h, 'frank');
    const c = new Connection(h);
    await c.frame(OPEN);
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="DIGEST-MD5"><initial-response>${b64('x')}</initial-response></authenticate>`);
    expect(c.posts('<failure')[0]).toContain('<invalid-mechanism');
    await startScram(c, frank!);
    await c.frame('<iq type="get" id="v" xmlns="jabber:client"><query xmlns="jabber:iq:version"/></iq>');
    expect(c.posts('<stream:error')[0]).toContain('policy-violation');
    expect(c.posts('id="v"')).toHaveLength(0);
    // An RFC 6120 <auth/> in the middle of a SASL2 exchange is no way around it either.
    const d = new Connection(h);
    await startScram(d, frank!);
    await d.frame(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${b64(`\0${frank!.split('@')[0]}\0secret`)}</auth>`);
    expect(d.posts('<stream:error')[0]).toContain('policy-violation');
    expect(d.posts('<success')).toHaveLength(0);
  });

  it('is not offered with XMPP_SASL2=false, and its elements are refused', async () => {
    const off = await startHarness(1, { XMPP_SASL2: 'false' });
    const c = new Connection(off);
    await c.frame(OPEN);
    expect(c.posts('<stream:features')[0]).not.toContain(SASL2);
    await c.frame(`<authenticate xmlns="${SASL2}" mechanism="PLAIN"><initial-response>${b64('\0a\0b')}</initial-response></authenticate>`);
    expect(c.posts('<stream:error')[0]).toContain('not-authorized');
    off.crash.client.destroy();
  });
});
