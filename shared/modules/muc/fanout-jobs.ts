/**
 * Fan-out of a room stanza to a big room through background jobs (docs/muc-fanout.md): the
 * sender's invocation archives the message and queues the copies, and job runs (in the cloud a
 * function of their own, whose reserved concurrency caps the post rate) post them. The sender's
 * frame is done after one queue call: no invocation runs into its timeout, and the sender's next
 * frames do not wait behind the fan-out.
 *
 * Order: an occupant's sessions always fall into the same one of SHARDS groups of the room (a hash
 * of the real bare JID), and jobs of a group run in the order they were queued, so every occupant
 * gets a sender's stanzas in the order they were sent, as with the posts made in the frame.
 *
 * Twice: a frame that runs again queues the same jobs under the same deduplication ids, which the
 * queue drops; a job that runs again skips the posts its journal holds (session-manager.ts).
 */
import { createHash } from 'node:crypto';
import type { Job, QueuedJob } from '../../transport/jobs.ts';
import { MAX_JOB_BYTES } from '../../transport/jobs.ts';
import type { ModuleServer } from '../../core/registry.ts';
import { frameUnique } from '../../storage/frame-context.ts';
import type { Occupant, OccupantSession } from '../../storage/muc-store.ts';
import { fanout, mayDeliver, type Target } from './fanout.ts';
import type { MucService } from './service.ts';
import { FrameTemplate } from './stanzas.ts';

export const ROOM_FANOUT_JOB = 'muc-fanout';
/** Ordering groups per room: jobs of different groups run side by side. */
export const SHARDS = 16;
/** Sessions per job at most: 500 posts at 32 in flight take about a second at 512 MB. */
export const TARGETS_PER_JOB = 500;

/** A message racing joins: the claim settles which side posts it (fanout.ts, mayDeliver). */
interface Admission {
  id: string;
  at: number;
}

interface JobTarget {
  nick: string;
  bare: string;
  session: OccupantSession;
}

export interface RoomFanoutJob extends Job {
  type: typeof ROOM_FANOUT_JOB;
  room: string;
  /** The stanza's text around the recipient's JID (FrameTemplate). */
  head: string;
  tail: string;
  targets: JobTarget[];
  admit?: Admission;
}

/** Whether this fan-out goes through jobs: a job queue exists and the room is over the inline limit. */
export function fansOutThroughJobs(server: ModuleServer, sessions: number): boolean {
  return server.jobs !== undefined && sessions > server.config.mucInlineFanoutMax;
}

function shardOf(bare: string): number {
  return createHash('sha256').update(bare).digest().readUInt32BE(0) % SHARDS;
}

/**
 * Queues the copies of one room stanza: per shard, jobs of at most TARGETS_PER_JOB sessions (fewer
 * when the stanza is large), in shard order.
 */
export async function queueRoomFanout(server: ModuleServer, room: string, occupants: Occupant[], template: FrameTemplate, admit?: Admission): Promise<void> {
  const { head, tail } = template.parts();
  const perJob = Math.max(1, Math.min(TARGETS_PER_JOB, Math.floor((MAX_JOB_BYTES - 2 * (head.length + tail.length) - 1024) / 400)));
  const shards = new Map<number, JobTarget[]>();
  for (const o of occupants) {
    const shard = shardOf(o.bare);
    const list = shards.get(shard) ?? [];
    for (const session of o.sessions) list.push({ nick: o.nick, bare: o.bare, session });
    shards.set(shard, list);
  }
  // One id per queued stanza, the same in every run of the frame (the queue drops the second copy).
  const stanzaKey = frameUnique('muc-fanout');
  const jobs: QueuedJob[] = [];
  for (const [shard, targets] of [...shards].sort(([a], [b]) => a - b)) {
    for (let i = 0; i < targets.length; i += perJob) {
      const job: RoomFanoutJob = { type: ROOM_FANOUT_JOB, room, head, tail, targets: targets.slice(i, i + perJob), admit };
      jobs.push({ group: `${room}#${shard}`, dedupId: `${stanzaKey}#${shard}#${i}`, job });
    }
  }
  await server.jobs!.enqueue(jobs);
}

/** Runs one job: the posts of fanout.ts (gone sessions leave, one failure fails the job after the rest). */
export async function runRoomFanout(muc: MucService, job: RoomFanoutJob): Promise<void> {
  const targets: Target[] = job.targets.map((t) => ({ occupant: { nick: t.nick, bare: t.bare } as Occupant, session: t.session }));
  const template = new FrameTemplate(job);
  const admit = job.admit;
  await fanout(muc, job.room, targets, (t) => template.for(t.session.jid), false, admit ? (t) => mayDeliver(muc, job.room, admit.id, admit.at, t.session) : undefined);
}

export function isRoomFanoutJob(job: Job): job is RoomFanoutJob {
  const j = job as Partial<RoomFanoutJob>;
  return j.type === ROOM_FANOUT_JOB && typeof j.room === 'string' && typeof j.head === 'string' && typeof j.tail === 'string' && Array.isArray(j.targets);
}
