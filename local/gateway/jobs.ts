/**
 * Background jobs: the cloud's job queue (an SQS FIFO queue, shared/transport/jobs.ts) played by a
 * loopback intake. The stream handler posts {jobs: [{group, dedupId, body}]} to the random path
 * (XMPP_JOB_ENDPOINT); each job is queued at once as a JOB record of its group, so jobs of one group
 * run in order. Like SQS FIFO, a job whose dedupId was queued in the last 5 minutes is dropped: a
 * frame that runs twice queues its jobs once. Served on the @connections API's server.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FifoQueue } from './fifo-queue.ts';
import { readBody, sendJson } from './http.ts';
import type { GatewayState } from './state.ts';
import type { Intake } from './timers.ts';

/** SQS FIFO's deduplication interval. */
const DEDUP_WINDOW_MS = 5 * 60_000;

interface JobRequest {
  group: string;
  dedupId: string;
  body: string;
}

function isJob(j: unknown): j is JobRequest {
  const job = j as Partial<JobRequest> | null;
  return typeof job === 'object' && job !== null && typeof job.group === 'string' && job.group !== '' && typeof job.dedupId === 'string' && typeof job.body === 'string';
}

export function createJobIntake(state: GatewayState, queue: FifoQueue): Intake {
  const path = `/@jobs/${randomBytes(16).toString('hex')}`;
  /** dedupId → when it was queued (oldest first: a Map keeps insertion order). */
  const seen = new Map<string, number>();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      req.resume();
      return sendJson(res, 405, { message: 'Method Not Allowed' });
    }
    // SQS takes 10 messages of 256 KiB per call; the handler sends its jobs in one request.
    const body = await readBody(req, 16 * 1024 * 1024);
    let jobs: unknown;
    try {
      jobs = body === 'too-large' ? undefined : (JSON.parse(body.toString('utf8')) as { jobs?: unknown }).jobs;
    } catch {
      jobs = undefined;
    }
    if (!Array.isArray(jobs) || !jobs.every(isJob)) return sendJson(res, 400, { message: 'expected {"jobs": [{"group", "dedupId", "body"}]}' });
    if (state.closing) return sendJson(res, 503, { message: 'shutting down' });
    const now = Date.now();
    for (const [id, at] of seen) {
      if (now - at < DEDUP_WINDOW_MS) break;
      seen.delete(id);
    }
    for (const job of jobs) {
      if (seen.has(job.dedupId)) continue;
      seen.set(job.dedupId, now);
      queue.enqueue(job.group, 'JOB', job.body, '127.0.0.1');
    }
    sendJson(res, 200, {});
  }

  return { path, handle };
}
