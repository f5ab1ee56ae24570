/**
 * Which messages are kept offline and archived (shared/message-storage.ts), through the local stack
 * with @xmpp/client on both sides: body-less content that encrypted clients send (an OMEMO
 * key-transport message, a reaction, a message hinted <store/>) is kept like a message with a body;
 * XEP-0334's <no-store/> and <no-permanent-store/> are honoured; chat states alone are not kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
type Client = Awaited<ReturnType<typeof connectXmppJs>>;
const HINTS = 'urn:xmpp:hints';
const MAM = 'urn:xmpp:mam:2';

/** The ids of the messages in the user's archive (a MAM query over the stream). */
async function archivedIds(c: Client, queryid: string): Promise<string[]> {
  await c.client.iqCaller.request(xml('iq', { type: 'set' }, xml('query', { xmlns: MAM, queryid })));
  return c.inbox
    .seen((s) => s.getChild('result', MAM)?.attrs.queryid === queryid)
    .map((s) => s.getChild('result', MAM)!.getChild('forwarded')!.getChild('message')!.attrs.id as string);
}

describe('what is kept offline and archived', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack();
    for (const user of ['una', 'val']) await addUser(stack.store, `${user}@localhost`, 'pw');
  });
  afterAll(() => stack?.stop());

  it('keeps body-less content and honours the storage hints, offline and in both archives', async () => {
    const una = await connectXmppJs(stack.wsUrl, 'una', 'pw', 'phone');
    let val: Client | undefined;
    try {
      const to = 'val@localhost';
      const messages = [
        // OMEMO key transport: no payload, no body; it sets up the session the next messages use.
        xml('message', { to, type: 'chat', id: 'omemo-kt' },
          xml('encrypted', { xmlns: 'eu.siacs.conversations.axolotl' }, xml('header', { sid: '11' }, xml('key', { rid: '22' }, 'a2V5'), xml('iv', {}, 'aXY='))),
          xml('store', { xmlns: HINTS })),
        xml('message', { to, type: 'chat', id: 'reaction' }, xml('reactions', { xmlns: 'urn:xmpp:reactions:0', id: 'omemo-kt' }, xml('reaction', {}, '👍'))),
        xml('message', { to, type: 'chat', id: 'no-store' }, xml('body', {}, 'off the record'), xml('no-store', { xmlns: HINTS })),
        xml('message', { to, type: 'chat', id: 'no-permanent-store' }, xml('body', {}, 'offline only'), xml('no-permanent-store', { xmlns: HINTS })),
        xml('message', { to, type: 'chat', id: 'chat-state' }, xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })),
        xml('message', { to, type: 'chat', id: 'hinted' }, xml('custom', { xmlns: 'urn:example:app' }), xml('store', { xmlns: HINTS })),
      ];
      for (const m of messages) await una.client.send(m);
      // Una's frames are handled in order: once the ping is answered, so is every message above.
      await una.client.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));

      val = await connectXmppJs(stack.wsUrl, 'val', 'pw', 'laptop');
      const offline: string[] = [];
      val.client.on('stanza', (s) => {
        if (s.is('message') && s.getChild('delay', 'urn:xmpp:delay')) offline.push(s.attrs.id);
      });
      await val.client.send(xml('presence'));
      await val.inbox.wait((s) => s.attrs.id === 'hinted', 'the last stored message');
      // In the order sent, though they reached the server within a millisecond or two.
      expect(offline).toEqual(['omemo-kt', 'reaction', 'no-permanent-store', 'hinted']);
      expect(val.inbox.seen((s) => s.attrs.id === 'omemo-kt')[0]!.getChild('encrypted', 'eu.siacs.conversations.axolotl')).toBeDefined();

      const kept = ['omemo-kt', 'reaction', 'hinted'];
      expect(await archivedIds(una, 'una-q')).toEqual(kept);
      expect(await archivedIds(val, 'val-q')).toEqual(kept);
    } finally {
      await una.client.stop();
      await val?.client.stop();
    }
  });
});
