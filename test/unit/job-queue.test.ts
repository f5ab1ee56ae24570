/**
 * The SQS side of the job queue (shared/transport/jobs.ts). SQS itself is the edge we cannot reach:
 * a recording client stands in for it and answers as SQS does (a batch over 10 entries or 256 KiB
 * is refused whole). What is checked is what the queue's ordering rests on: each group's jobs go
 * out in the order given, and no call breaks SQS's batch limits.
 */
import { describe, expect, it } from 'vitest';
import type { SQSClient, SendMessageBatchCommandInput } from '@aws-sdk/client-sqs';
import { SqsJobQueue, type QueuedJob } from '../../shared/transport/jobs.ts';

function recordingSqs() {
  const calls: SendMessageBatchCommandInput[] = [];
  const client = {
    async send(command: { input: SendMessageBatchCommandInput }) {
      const entries = command.input.Entries ?? [];
      const bytes = entries.reduce((n, e) => n + Buffer.byteLength(e.MessageBody ?? ''), 0);
      if (entries.length > 10 || bytes > 256 * 1024) throw Object.assign(new Error('refused'), { name: entries.length > 10 ? 'TooManyEntriesInBatchRequest' : 'BatchRequestTooLong' });
      calls.push(command.input);
      return { Successful: entries.map((e) => ({ Id: e.Id })), Failed: [] };
    },
  };
  return { calls, client: client as unknown as SQSClient };
}

const job = (group: string, n: number, padding = 0): QueuedJob => ({ group, dedupId: `${group}-${n}`, job: { type: 'test', n, pad: 'x'.repeat(padding) } });

describe('the SQS job queue', () => {
  it('sends each group\'s jobs in order, within SQS\'s limits of 10 entries and 256 KiB a batch', async () => {
    const { calls, client } = recordingSqs();
    const queue = new SqsJobQueue('https://sqs.example/jobs.fifo', client);
    // Three groups: many small jobs, a few of 100 KiB, and one alone.
    const jobs = [...Array.from({ length: 23 }, (_, n) => job('room#1', n)), ...Array.from({ length: 5 }, (_, n) => job('room#2', n, 100 * 1024)), job('room#3', 0)];
    await queue.enqueue(jobs);
    const sent = calls.flatMap((c) => c.Entries!);
    expect(sent).toHaveLength(jobs.length);
    for (const group of ['room#1', 'room#2', 'room#3']) {
      const order = sent.filter((e) => e.MessageGroupId === group).map((e) => (JSON.parse(e.MessageBody!) as { n: number }).n);
      expect(order).toEqual([...order.keys()]);
    }
    expect(new Set(sent.map((e) => e.MessageDeduplicationId)).size).toBe(jobs.length);
    expect(sent.every((e) => e.MessageAttributes?.eventType?.StringValue === 'JOB')).toBe(true);
    for (const c of calls) expect(new Set(c.Entries!.map((e) => e.Id)).size).toBe(c.Entries!.length);
  });

  it('writes group and deduplication ids SQS accepts, whatever the room JID holds, and keeps different ids different', async () => {
    const { calls, client } = recordingSqs();
    const long = 'a'.repeat(140);
    await new SqsJobQueue('https://sqs.example/jobs.fifo', client).enqueue([
      { group: 'café@conference.example#3', dedupId: `${long}1`, job: { type: 'test' } },
      { group: 'cafè@conference.example#3', dedupId: `${long}2`, job: { type: 'test' } },
      { group: 'plain@conference.example#3', dedupId: 'f-1#3#0', job: { type: 'test' } },
    ]);
    const entries = calls.flatMap((c) => c.Entries!);
    for (const e of entries) {
      for (const id of [e.MessageGroupId!, e.MessageDeduplicationId!]) expect(id).toMatch(/^[A-Za-z0-9!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]{1,128}$/);
    }
    expect(new Set(entries.map((e) => e.MessageGroupId)).size).toBe(3);
    expect(new Set(entries.map((e) => e.MessageDeduplicationId)).size).toBe(3);
    expect(entries.find((e) => e.MessageGroupId === 'plain@conference.example#3')?.MessageDeduplicationId).toBe('f-1#3#0'); // what fits is kept
  });
});
