/**
 * XEP-0215 through the local stack with StanzaJS (the discovery its Jingle calls use): STUN and TURN
 * services with TURN REST API credentials that a TURN server holding the same secret accepts
 * (checked here with an independent HMAC, as coturn's use-auth-secret does), a fresh credential for
 * one service, and nothing offered when no TURN server is configured.
 */
import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { addUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const TURN = { XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET: 'shared-with-coturn', XMPP_TURN_TLS_PORT: '5349' };

// One stack at a time: a stack's settings live in process.env until it stops.
describe('XEP-0215 external services (STUN/TURN for calls)', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack({ env: TURN });
    await addUser(stack.store, 'caller@localhost', 'pw');
  });
  afterAll(() => stack?.stop());

  it('lists STUN and TURN with credentials the TURN server can check, and renews one on request', async () => {
    const client = await connectStanza(stack.wsUrl, 'caller@localhost', 'pw', 'phone');
    try {
      expect((await client.getDiscoInfo('localhost')).features).toContain('urn:xmpp:extdisco:2');
      const before = Math.floor(Date.now() / 1000);
      const { services = [] } = await client.getServices('localhost');
      expect(services.map((s) => `${s.type}:${s.transport}:${s.port}`)).toEqual(['stun:udp:3478', 'turn:udp:3478', 'turn:tcp:3478', 'turns:tcp:5349']);
      const turn = services.find((s) => s.type === 'turn')!;
      expect(turn.host).toBe('turn.example.com');
      const [expiry, user] = turn.username!.split(':');
      expect(user).toBe('caller@localhost');
      expect(Number(expiry)).toBeGreaterThanOrEqual(before + 86400);
      expect(turn.password).toBe(createHmac('sha1', TURN.XMPP_TURN_SECRET).update(turn.username!).digest('base64'));
      expect(turn.expires?.getTime()).toBe(Number(expiry) * 1000);
      expect(services.find((s) => s.type === 'stun')?.password).toBeUndefined();

      const onlyTurn = await client.getServices('localhost', 'turn');
      expect(onlyTurn.services?.map((s) => s.type)).toEqual(['turn', 'turn']);
      const renewed = await client.getServiceCredentials('localhost', 'turn.example.com', 'turns', 5349);
      expect(renewed).toMatchObject({ type: 'turns', host: 'turn.example.com', port: 5349 });
      expect(renewed.password).toBe(createHmac('sha1', TURN.XMPP_TURN_SECRET).update(renewed.username!).digest('base64'));
      await expect(client.getServiceCredentials('localhost', 'elsewhere.example.com', 'turn')).rejects.toMatchObject({ error: { condition: 'item-not-found' } });
    } finally {
      client.disconnect();
    }
  });

});

describe('XEP-0215 without a TURN server', () => {
  let plain: Stack;

  beforeAll(async () => {
    plain = await startTestStack();
    await addUser(plain.store, 'caller@localhost', 'pw');
  });
  afterAll(() => plain?.stop());

  it('offers nothing without a TURN server, and refuses a half-made configuration', async () => {
    const client = await connectStanza(plain.wsUrl, 'caller@localhost', 'pw', 'phone');
    try {
      expect((await client.getDiscoInfo('localhost')).features).not.toContain('urn:xmpp:extdisco:2');
      await expect(client.getServices('localhost')).rejects.toMatchObject({ error: { condition: 'service-unavailable' } });
    } finally {
      client.disconnect();
    }
    expect(() => loadConfig({ XMPP_TURN_HOST: 'turn.example.com' })).toThrow(/go together/);
    expect(() => loadConfig({ XMPP_TURN_HOST: 'turn example', XMPP_TURN_SECRET: 's' })).toThrow(/host name or address/);
  });
});
