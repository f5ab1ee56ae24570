/**
 * Background jobs: work a frame hands off instead of doing in its own invocation (today: posting a
 * room stanza to the sessions of a big room, docs/muc-fanout.md). A job is a JSON message on a FIFO
 * queue; `group` orders jobs (jobs of one group run one at a time, in the order queued), and
 * `dedupId` makes queueing idempotent: a frame that runs twice queues the same ids, and the queue
 * drops the second copy (SQS FIFO: within 5 minutes). In the cloud the queue feeds a function of
 * its own (its reserved concurrency caps the post rate); locally the gateway's loopback intake
 * queues each job as a JOB record of its group for the same handler.
 */
import { createHash } from 'node:crypto';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { ServerConfig } from '../config.ts';
import { EVENT_ATTRIBUTES } from './events.ts';
import { QueueSender } from './queue-sender.ts';
import { forEachBounded } from '../core/bounded.ts';

export interface Job {
  /** The registered handler's name (Registry.job). */
  type: string;
  [field: string]: unknown;
}

export interface QueuedJob {
  /** Jobs of one group run in order, one at a time. At most 128 characters. */
  group: string;
  /** The same on every run of the frame that queues it (frameUnique). At most 128 characters. */
  dedupId: string;
  job: Job;
}

export interface JobQueue {
  enqueue(jobs: QueuedJob[]): Promise<void>;
}

/** The largest body SQS takes is 256 KiB; jobs stay well below it (room for attributes). */
export const MAX_JOB_BYTES = 200 * 1024;
/** What one SendMessageBatch may carry in all. */
const MAX_BATCH_BYTES = 256 * 1024;

export function parseJob(body: string): Job | undefined {
  try {
    const job = JSON.parse(body) as Partial<Job>;
    if (job && typeof job === 'object' && typeof job.type === 'string') return job as Job;
  } catch {
    // not JSON: reported by the caller
  }
  return undefined;
}

/**
 * SQS group and deduplication ids allow [A-Za-z0-9] and punctuation, at most 128 characters; a
 * room JID may hold anything. One that does not fit is replaced by its SHA-256: two ids never become one.
 */
function sqsId(value: string): string {
  if (value.length <= 128 && /^[A-Za-z0-9!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]+$/.test(value)) return value;
  return createHash('sha256').update(value).digest('hex');
}

export class SqsJobQueue implements JobQueue {
  private readonly queue: QueueSender;

  constructor(
    private readonly queueUrl: string,
    client?: SQSClient,
  ) {
    this.queue = new QueueSender(client);
  }

  async enqueue(jobs: QueuedJob[]): Promise<void> {
    // A group's jobs go in order, batch after batch (a batch keeps its entries' order within a
    // group); groups go side by side. A batch holds at most 10 messages and 256 KiB in all.
    const groups = new Map<string, QueuedJob[]>();
    for (const j of jobs) groups.set(j.group, [...(groups.get(j.group) ?? []), j]);
    await forEachBounded([...groups.values()], 8, async (list) => {
      let batch: { Id: string; MessageBody: string; MessageGroupId: string; MessageDeduplicationId: string; MessageAttributes: Record<string, { DataType: string; StringValue: string }> }[] = [];
      let bytes = 0;
      const flush = async () => {
        if (batch.length) await this.queue.sendBatch({ QueueUrl: this.queueUrl, Entries: batch });
        batch = [];
        bytes = 0;
      };
      for (const j of list) {
        const body = JSON.stringify(j.job);
        const size = Buffer.byteLength(body) + 100; // and its attributes
        if (batch.length === 10 || (batch.length > 0 && bytes + size > MAX_BATCH_BYTES)) await flush();
        batch.push({
          Id: String(batch.length),
          MessageBody: body,
          MessageGroupId: sqsId(j.group),
          MessageDeduplicationId: sqsId(j.dedupId),
          MessageAttributes: { [EVENT_ATTRIBUTES.eventType]: { DataType: 'String', StringValue: 'JOB' } },
        });
        bytes += size;
      }
      await flush();
    });
  }
}

/** POSTs the jobs to the local gateway's job intake (loopback only; the URL carries a random token). */
export class HttpJobQueue implements JobQueue {
  constructor(private readonly endpoint: string) {}

  async enqueue(jobs: QueuedJob[]): Promise<void> {
    const response = await fetch(this.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: jobs.map((j) => ({ group: j.group, dedupId: j.dedupId, body: JSON.stringify(j.job) })) }),
    });
    if (!response.ok) throw new Error(`job intake answered ${response.status}`);
  }
}

/** The queue the configuration names; undefined = none, and everything runs in the frame's invocation. */
export function jobQueueFromConfig(config: Pick<ServerConfig, 'jobQueueUrl' | 'jobEndpoint'>): JobQueue | undefined {
  if (config.jobQueueUrl) return new SqsJobQueue(config.jobQueueUrl);
  if (config.jobEndpoint) return new HttpJobQueue(config.jobEndpoint);
  return undefined;
}
