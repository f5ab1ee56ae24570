import { describe, expect, it } from 'vitest';
import { frameJournal, frameTask, inFrame, invalidateRoute, memoizedRoute, newFrame, postKey, recordPost } from '../../shared/storage/frame-context.ts';

describe('frame context (route memo and frame tasks)', () => {
  it('reads a route once per frame and again after a write invalidates it', async () => {
    let reads = 0;
    const load = async () => ++reads;
    await inFrame(async () => {
      expect(await memoizedRoute('a@x', load)).toBe(1);
      expect(await memoizedRoute('a@x', load)).toBe(1);
      invalidateRoute('a@x');
      expect(await memoizedRoute('a@x', load)).toBe(2);
    });
    // a new frame reads afresh: nothing is cached across frames
    await inFrame(async () => expect(await memoizedRoute('a@x', load)).toBe(3));
  });

  it('does not remember a failed read', async () => {
    let calls = 0;
    await inFrame(async () => {
      await expect(memoizedRoute('b@x', async () => { calls++; throw new Error('boom'); })).rejects.toThrow('boom');
      expect(await memoizedRoute('b@x', async () => ++calls)).toBe(2);
    });
  });

  it('ends a frame only after its tasks, including tasks they start', async () => {
    const order: string[] = [];
    const later = (ms: number, name: string) => new Promise<void>((r) => setTimeout(() => { order.push(name); r(); }, ms));
    await inFrame(async () => {
      await frameTask(later(30, 'task').then(() => frameTask(later(10, 'nested'))));
      order.push('body');
    });
    order.push('after');
    expect(order).toEqual(['body', 'task', 'nested', 'after']);
  });

  it('fails the frame when a task fails, so the queue redelivers it', async () => {
    await expect(inFrame(async () => { await frameTask(Promise.reject(new Error('write failed'))); })).rejects.toThrow('write failed');
  });
});

describe('the journal of posts (what a second run of a frame skips)', () => {
  /** A first run that posts (a third element `false`: the post found the socket gone), fails, then a second run. */
  const runs = async (first: [string, string, boolean?][], second: [string, string][]) => {
    const frame = newFrame({ id: 'm-1' });
    await inFrame(async () => {
      for (const [connection, text, delivered = true] of first) {
        const key = postKey(connection, text)!;
        if (delivered) recordPost(key.key);
      }
    }, frame);
    const journal = frameJournal(frame);
    return inFrame(async () => second.map(([connection, text]) => postKey(connection, text)!.done), newFrame({ id: 'm-1', before: journal }));
  };
  const toSession = '<message to="bob@x/phone" type="groupchat"><body>hi</body></message>';
  const toBare = '<message to="bob@x" type="chat"><body>hi</body></message>';

  it('a stanza to a full JID counts as delivered whichever connection took it, in whatever order (a reconnect, a replaced room entry)', async () => {
    // First run: the same text to an old and a new connection of bob/phone; second run: only the new one.
    expect(await runs([['old', toSession, false], ['new', toSession]], [['new', toSession]])).toEqual([true]);
    expect(await runs([['new', toSession], ['old', toSession, false]], [['new', toSession]])).toEqual([true]);
    expect(await runs([['old', toSession]], [['new', toSession]])).toEqual([true]);
  });

  it('a message to a bare JID is per connection: a resource the first run missed still gets it', async () => {
    expect(await runs([['desk', toBare]], [['desk', toBare], ['phone', toBare]])).toEqual([true, false]);
  });

  it('stream-level frames (no addressee) are per connection', async () => {
    const close = '<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>';
    expect(await runs([['a', close]], [['a', close], ['b', close]])).toEqual([true, false]);
  });
});
