/**
 * XEP-0421 occupant ids through the local stack with @xmpp/client: the room stamps every presence
 * and message of an occupant with one id per real account, the same after a rejoin under another
 * nick, different for another account, and a client cannot forge it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const OID = 'urn:xmpp:occupant-id:0';
const MUC = 'http://jabber.org/protocol/muc';
const ROOM = 'oid@conference.localhost';

describe('XEP-0421 occupant ids', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startTestStack();
    for (const user of ['ada', 'ben']) await addUser(stack.store, `${user}@localhost`, 'pw');
  });
  afterAll(() => stack?.stop());

  it('are stable per account across rejoins and nicks, differ between accounts, and cannot be forged', async () => {
    const ada = await connectXmppJs(stack.wsUrl, 'ada', 'pw', 'desk');
    const ben = await connectXmppJs(stack.wsUrl, 'ben', 'pw', 'desk');
    try {
      const idOf = (s: ReturnType<typeof xml>) => s.getChild('occupant-id', OID)?.attrs.id as string | undefined;
      const join = async (c: typeof ada, nick: string) => {
        await c.client.send(xml('presence', { to: `${ROOM}/${nick}` }, xml('x', { xmlns: MUC })));
        return c.inbox.wait((s) => s.is('presence') && s.attrs.from === `${ROOM}/${nick}` && !s.attrs.type, `${nick} joined`);
      };
      const adaSelf = await join(ada, 'Ada');
      const adaId = idOf(adaSelf);
      expect(adaId).toMatch(/^[A-Za-z0-9_-]{22}$/);
      // A new room is locked until its owner accepts the default configuration (an instant room).
      await ada.client.iqCaller.request(
        xml('iq', { type: 'set', to: ROOM }, xml('query', { xmlns: `${MUC}#owner` }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))),
      );
      await join(ben, 'Ben');
      expect(idOf(await ben.inbox.wait((s) => s.is('presence') && s.attrs.from === `${ROOM}/Ada`, "Ada's presence at Ben"))).toBe(adaId);
      const benId = idOf(await ada.inbox.wait((s) => s.is('presence') && s.attrs.from === `${ROOM}/Ben` && !s.attrs.type, "Ben's presence at Ada"));
      expect(benId).toBeDefined();
      expect(benId).not.toBe(adaId);

      // Ben tries to pass as Ada: the room replaces the id he put in.
      await ben.client.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'I am Ada'), xml('occupant-id', { xmlns: OID, id: adaId })));
      const forged = await ada.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'I am Ada', 'the message');
      expect(forged.getChildren('occupant-id', OID).map((e) => e.attrs.id)).toEqual([benId]);

      // Ada leaves and comes back under another nick: the same id.
      await ada.client.send(xml('presence', { to: `${ROOM}/Ada`, type: 'unavailable' }));
      await ben.inbox.wait((s) => s.is('presence') && s.attrs.from === `${ROOM}/Ada` && s.attrs.type === 'unavailable', 'Ada left');
      expect(idOf(await join(ada, 'Ada2'))).toBe(adaId);
      await ada.client.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'back')));
      expect(idOf(await ben.inbox.wait((s) => s.is('message') && s.getChildText('body') === 'back', 'message from Ada2'))).toBe(adaId);
    } finally {
      await ada.client.stop();
      await ben.client.stop();
    }
  });
});
