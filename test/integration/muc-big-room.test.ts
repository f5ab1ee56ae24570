/**
 * A room over the inline fan-out limit through the local stack (docs/muc-fanout.md): the limit is
 * set to 2 sessions, so a room of six @xmpp/client users gets its copies from fan-out jobs queued
 * at the local gateway's job intake (the cloud's job queue) and run by the same handler. Every
 * occupant gets every message once, in the order sent, with the room archive's stanza-id; and the
 * archive holds each once. Jobs across instances, a frame run twice and a job failing half-way are
 * forced in test/unit/muc-fanout-jobs.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addFreshUser, connectXmppJs, startTestStack, xml, type LocalStack, type XmppJsClient } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { ArchiveStore } from '../../shared/storage/archive-store.ts';
import { roomPk } from '../../shared/storage/keys.ts';

const SID = 'urn:xmpp:sid:0';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack({ env: { XMPP_MUC_INLINE_FANOUT_MAX: '2' } });
});

afterAll(async () => {
  await stack?.stop();
});

describe('a room over the inline fan-out limit', () => {
  it('six users each get three messages once, in order, with the archive\'s ids', async () => {
    const room = `bigroom@conference.localhost`;
    const users = await Promise.all(['ann', 'ben', 'cat', 'dan', 'eve', 'fay'].map((n) => addFreshUser(stack.store, n)));
    const clients: Awaited<ReturnType<typeof connectXmppJs>>[] = [];
    try {
      for (const bare of users) {
        const c = await connectXmppJs(stack.wsUrl, bare.split('@')[0]!, `${bare.split('@')[0]}-pass`, 'big');
        clients.push(c);
        await c.client.send(xml('presence', { to: `${room}/${bare.split('@')[0]}` }));
        await c.inbox.wait((s) => s.is('presence') && s.attrs.from === `${room}/${bare.split('@')[0]}`, 'own room presence');
      }
      const [sender] = clients;
      for (const n of [1, 2, 3]) await (sender!.client as XmppJsClient).send(xml('message', { to: room, type: 'groupchat', id: `m${n}` }, xml('body', {}, `big room message ${n}`)));
      const ids = new Map<string, string>();
      for (const c of clients) {
        const got: string[] = [];
        for (const n of [1, 2, 3]) {
          const m = await c.inbox.wait((s) => s.is('message') && s.attrs.type === 'groupchat' && /big room message/.test(s.getChildText('body') ?? ''), `message ${n}`, 20_000);
          got.push(m.getChildText('body')!);
          const id = m.getChild('stanza-id', SID)?.attrs.id as string;
          expect(id).toBeTruthy();
          expect(ids.get(got.at(-1)!) ?? id).toBe(id); // the same id for every occupant
          ids.set(got.at(-1)!, id);
        }
        expect(got).toEqual(['big room message 1', 'big room message 2', 'big room message 3']);
      }
      // Nothing more comes (no copy twice), and the archive has each message once.
      await stack.gateway.idle();
      for (const c of clients) expect(c.inbox.seen((s) => s.is('message') && /big room message/.test(s.getChildText('body') ?? ''))).toEqual([]);
      const archived = await stack.store.open(ArchiveStore).query(roomPk(room), { max: 50 });
      expect(archived.items.filter((i) => i.xml.includes('big room message')).map((i) => i.id).sort()).toEqual([...ids.values()].sort());
      expect(new Set(ids.values()).size).toBe(3);
    } finally {
      await Promise.all(clients.map((c) => c.client.stop().catch(() => {})));
    }
  }, 120_000);
});
