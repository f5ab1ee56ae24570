/**
 * Federation with certificates both sides can verify (a test CA both trust), against a real
 * Prosody that refuses dialback (s2s_secure_auth): authentication by SASL EXTERNAL both ways.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client as xmppClient, xml } from '@xmpp/client';
import { generateCertificate } from '../../federation/tls.ts';
import { Inbox, connectStanza } from './helpers.ts';
import { startFederatedPair } from './prosody.ts';

type XmlElement = ReturnType<typeof xml>;
const HOME = 'home.test';
const PEER = 'peer.test';
const WAIT = 20_000;

let pair: Awaited<ReturnType<typeof startFederatedPair>>;

beforeAll(async () => {
  const ca = await generateCertificate('Federation Test CA', { ca: true });
  pair = await startFederatedPair({
    home: HOME,
    peer: PEER,
    homeUser: 'juliet',
    peerUser: 'romeo',
    // Secure authentication on our side too: the link must be verified both ways.
    federation: { tls: { ...(await generateCertificate(HOME, { issuer: ca })), ca: [ca.cert] }, secureAuth: true },
    prosody: { certificate: await generateCertificate(PEER, { issuer: ca }), trust: ca.cert, secureAuth: true },
  });
});

afterAll(async () => {
  await pair?.stop();
});

describe('federation with verified certificates (Prosody with s2s_secure_auth)', () => {
  it('authenticates with SASL EXTERNAL both ways and carries messages', async () => {
    const { stack, prosody } = pair;
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
