import { describe, expect, it } from 'vitest';
import { frameTask, inFrame, invalidateRoute, memoizedRoute } from '../../shared/storage/frame-context.ts';

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
