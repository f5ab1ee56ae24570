/**
 * Federation with certificates both sides can verify (a test CA both trust), against a real
 * Prosody that refuses dialback (s2s_secure_auth): authentication by SASL EXTERNAL both ways.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client as xmppClient, xml } from '@xmpp/client';
import { generateCertificate } from '../../federation/tls.ts';
import type { Target } from '../../federation/resolve.ts';
import { Inbox, addUser, connectStanza, startTestStack } from './helpers.ts';
import { createProsody, removeProsodyDir, type Prosody } from './prosody.ts';

type XmlElement = ReturnType<typeof xml>;
const HOME = 'home.test';
const PEER = 'peer.test';
const WAIT = 20_000;

let stack: Awaited<ReturnType<typeof startTestStack>>;
let prosody: Prosody;
const routes = new Map<string, Target>();

beforeAll(async () => {
  const ca = await generateCertificate('Federation Test CA', { ca: true });
  stack = await startTestStack({
    domain: HOME,
    federation: { s2sPort: 0, routes, tls: { ...(await generateCertificate(HOME, { issuer: ca })), ca: [ca.cert] } },
  });
  prosody = await createProsody({
    domain: PEER,
    homeDomain: HOME,
    homePort: stack.federation!.s2sPort,
    certificate: await generateCertificate(PEER, { issuer: ca }),
    trust: ca.cert,
    secureAuth: true,
  });
  routes.set(PEER, { host: '127.0.0.1', port: prosody.s2sPort, directTls: false });
  prosody.register('romeo', 'peerpass');
  await prosody.start();
  await addUser(stack.store, `juliet@${HOME}`, 'homepass');
});

afterAll(async () => {
  await stack?.stop();
  await prosody?.stop();
  removeProsodyDir(prosody);
});

describe('federation with verified certificates (Prosody with s2s_secure_auth)', () => {
  it('authenticates with SASL EXTERNAL both ways and carries messages', async () => {
    const juliet = await connectStanza(stack.wsUrl, `juliet@${HOME}`, 'homepass', 'balcony');
    const julietInbox = new Inbox<{ body?: string; from?: string }>();
    juliet.on('message', (m) => julietInbox.push(m as { body?: string; from?: string }));
    juliet.sendPresence();
    const romeo = xmppClient({ service: prosody.wsUrl, domain: PEER, username: 'romeo', password: 'peerpass', resource: 'web' });
    const romeoInbox = new Inbox<XmlElement>();
    romeo.on('stanza', (s: XmlElement) => romeoInbox.push(s));
    romeo.on('error', () => {});
    await romeo.start();
    await romeo.send(xml('presence'));
    try {
      juliet.sendMessage({ to: `romeo@${PEER}`, type: 'chat', body: 'signed, sealed' });
      await romeoInbox.wait((s) => s.is('message') && s.getChildText('body') === 'signed, sealed', 'message at Prosody', WAIT);
      await romeo.send(xml('message', { to: `juliet@${HOME}/balcony`, type: 'chat' }, xml('body', {}, 'delivered')));
      const back = await julietInbox.wait((m) => m.body === 'delivered', 'message from Prosody', WAIT);
      expect(back.from).toBe(`romeo@${PEER}/web`);

      const router = stack.federation!.router;
      const link = router.link(HOME, PEER);
      expect(link.certificateValid).toBe(true);
      expect(link.auth).toBe('sasl-external');
      expect([...router.inbound].some((s) => s.authMethod === 'sasl-external' && s.authenticated.has(`${PEER} ${HOME}`))).toBe(true);
    } finally {
      await romeo.stop();
      juliet.disconnect();
    }
  });
});
