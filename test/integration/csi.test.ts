/**
 * XEP-0352 through the local stack with real client libraries: StanzaJS in the background (its own
 * XEP-0352 elements; StanzaJS 12 has markInactive()/markActive() but never parses the <csi/> stream
 * feature and passes `type` where its element definition reads `state`, so those send nothing: the
 * test sends its `csi` elements itself, typed as the definition reads them), @xmpp/client as its
 * contact changing presence and typing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, connectXmppJs, Inbox, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const CHAT_STATES = 'http://jabber.org/protocol/chatstates';

describe('XEP-0352 client state indication', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack();
    for (const user of ['ivy', 'jon']) await addUser(stack.store, `${user}@localhost`, 'pw');
    await stack.store.putRosterItem('ivy@localhost', { jid: 'jon@localhost', groups: [], subscription: 'both' });
    await stack.store.putRosterItem('jon@localhost', { jid: 'ivy@localhost', groups: [], subscription: 'both' });
  });
  afterAll(() => stack?.stop());

  it('an inactive client gets no presence updates or chat states, but messages; the latest of each on <active/>', async () => {
    const ivy = await connectStanza(stack.wsUrl, 'ivy@localhost', 'pw', 'phone');
    const jon = await connectXmppJs(stack.wsUrl, 'jon', 'pw', 'desk');
    try {
      // What Ivy gets before she goes inactive (her login's probe answers may repeat Jon's first
      // presence) goes to `before`; from then on everything goes to `seen`.
      const before = new Inbox<string>();
      const seen = new Inbox<{ kind: 'presence' | 'state' | 'body'; value: string }>();
      let inactive = false;
      ivy.on('presence', (p) => {
        if (!p.from?.startsWith('jon@localhost/')) return;
        const value = p.status ?? p.type ?? 'available';
        if (inactive) seen.push({ kind: 'presence', value });
        else before.push(value);
      });
      ivy.on('chat:state', (m) => seen.push({ kind: 'state', value: m.chatState! }));
      ivy.on('message', (m) => {
        if (m.body) seen.push({ kind: 'body', value: m.body });
      });
      const ping = xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
      await ivy.sendPresence();
      await jon.client.send(xml('presence', {}, xml('status', {}, 'at my desk')));
      await before.wait((value) => value === 'at my desk', "Jon's first presence");
      // Both connections' frames so far are handled once their pings are answered.
      await Promise.all([ivy.ping(), jon.client.iqCaller.request(ping)]);
      inactive = true;

      ivy.send('csi', { state: 'inactive' } as never);
      // The frames of one connection are handled in order: once the ping is answered, so is <inactive/>.
      await ivy.ping();
      for (const status of ['in a meeting', 'lunch', 'back']) await jon.client.send(xml('presence', {}, xml('status', {}, status)));
      await jon.client.send(xml('message', { to: 'ivy@localhost/phone', type: 'chat' }, xml('composing', { xmlns: CHAT_STATES })));
      await jon.client.send(xml('message', { to: 'ivy@localhost/phone', type: 'chat' }, xml('body', {}, 'call me')));
      // Jon's frames are handled in order too: the message comes after every presence above.
      await seen.wait((s) => s.kind === 'body' && s.value === 'call me', 'the message');
      expect(seen.seen((s) => s.kind === 'presence' || s.kind === 'state')).toEqual([]);
      await jon.client.send(xml('message', { to: 'ivy@localhost/phone', type: 'chat' }, xml('paused', { xmlns: CHAT_STATES })));
      await jon.client.send(xml('presence', {}, xml('status', {}, 'leaving soon')));
      // Jon's ping is answered once his frames above were handled (held, since Ivy is still inactive).
      await jon.client.iqCaller.request(ping);

      ivy.send('csi', { state: 'active' } as never);
      await ivy.ping();
      expect(seen.seen((s) => s.kind === 'presence')).toEqual([{ kind: 'presence', value: 'leaving soon' }]);
      // <composing/> was superseded by the message; only the latest chat state is flushed.
      expect(seen.seen((s) => s.kind === 'state')).toEqual([{ kind: 'state', value: 'paused' }]);

      // Active again: the next change arrives as it happens.
      await jon.client.send(xml('presence', {}, xml('status', {}, 'gone home')));
      await seen.wait((s) => s.kind === 'presence' && s.value === 'gone home', 'presence after <active/>');
    } finally {
      ivy.disconnect();
      await jon.client.stop();
    }
  });
});
