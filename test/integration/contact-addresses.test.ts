/**
 * XEP-0157 contact addresses through the local stack: configured with XMPP_CONTACT_ADDRESSES,
 * read by StanzaJS from the server's disco#info (an XEP-0128 extended form), and counted in the
 * server's XEP-0115 verification string as clients compute it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capsVer } from '../../shared/caps.ts';
import { parseContactAddresses } from '../../shared/contact-addresses.ts';
import { parseFrame } from '../../shared/xml/parse.ts';
import { addUser, connectStanza, RawClient, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const ADDRESSES = 'abuse=mailto:abuse@example.com,xmpp:abuse@localhost;security=https://example.com/security';

describe('XEP-0157 contact addresses', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack({ env: { XMPP_CONTACT_ADDRESSES: ADDRESSES } });
    await addUser(stack.store, 'ops@localhost', 'pw');
  });
  afterAll(() => stack?.stop());

  it('are in the server’s disco#info, and the advertised caps hash covers them', async () => {
    const client = await connectStanza(stack.wsUrl, 'ops@localhost', 'pw', 'web');
    try {
      const info = await client.getDiscoInfo('localhost');
      const form = info.extensions.find((f) => f.fields?.some((field) => field.name === 'FORM_TYPE' && field.value === 'http://jabber.org/network/serverinfo'));
      const values = Object.fromEntries((form?.fields ?? []).filter((f) => f.name !== 'FORM_TYPE').map((f) => [f.name, f.value]));
      expect(values).toEqual({ 'abuse-addresses': ['mailto:abuse@example.com', 'xmpp:abuse@localhost'], 'security-addresses': ['https://example.com/security'] });
    } finally {
      client.disconnect();
    }
    // The verification string in the stream features is the one computed from that disco#info.
    const fresh = await RawClient.open(stack.wsUrl);
    fresh.open();
    const features = await fresh.next('</stream:features>');
    fresh.close();
    const raw = await RawClient.open(stack.wsUrl);
    await raw.login('ops', 'pw', 'raw');
    raw.send('<iq type="get" id="info" to="localhost"><query xmlns="http://jabber.org/protocol/disco#info"/></iq>');
    const answer = parseFrame(await raw.next('id="info"'));
    expect(features).toContain(`ver="${capsVer(answer.getChild('query')!, 'sha-1')}"`);
    raw.close();
  });

  it('refuse a setting that is not kind=URI', () => {
    expect(parseContactAddresses(ADDRESSES)).toEqual({ abuse: ['mailto:abuse@example.com', 'xmpp:abuse@localhost'], security: ['https://example.com/security'] });
    expect(() => parseContactAddresses('abuse=someone')).toThrow(/abuse needs URIs/);
    expect(() => parseContactAddresses('boss=mailto:b@example.com')).toThrow(/kind one of/);
    expect(parseContactAddresses(undefined)).toEqual({});
  });
});
