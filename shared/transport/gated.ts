/**
 * The ways out of the process other than posts and DynamoDB writes (timers, jobs, other domains),
 * each made to wait for the frame's gate first: a frame that runs on a remembered connection state
 * must not let anything out before the stored state confirms it (frame-context.ts, beforeEffect).
 */
import { beforeEffect } from '../storage/frame-context.ts';
import type { RemoteRouter } from '../core/server.ts';
import type { JobQueue } from './jobs.ts';
import type { TimerScheduler } from './timers.ts';

export function gatedTimers(inner: TimerScheduler): TimerScheduler {
  return {
    async schedule(event, delaySeconds) {
      await beforeEffect();
      return inner.schedule(event, delaySeconds);
    },
  };
}

export function gatedJobs(inner: JobQueue): JobQueue {
  return {
    async enqueue(jobs) {
      await beforeEffect();
      return inner.enqueue(jobs);
    },
  };
}

export function gatedRemote(inner: RemoteRouter): RemoteRouter {
  return {
    async send(stanza) {
      await beforeEffect();
      return inner.send(stanza);
    },
  };
}
