/**
 * Delayed events for the stream Lambda: the only one today is the end of a XEP-0198 resumption
 * window. A Lambda cannot wait, so the event is a message that becomes visible after the delay: in
 * the cloud an SQS standard queue with a per-message delay (at most 900 s, which bounds the
 * window) that the stream Lambda also consumes; locally the gateway's loopback intake, which
 * queues it for the same handler after the delay. Delivery is at least once and may come early or
 * late by a little; handlers check the stored state, never the clock alone.
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { ServerConfig } from '../config.ts';
import { EVENT_ATTRIBUTES } from './events.ts';
import { QueueSender } from './queue-sender.ts';

export interface ResumptionWindowEnd {
  type: 'sm-expire';
  /** The session (its id is the connection it began on). */
  session: string;
  /** The socket that carried it when it hibernated: a session resumed since is not this one. */
  socket: string;
}

export type TimerEvent = ResumptionWindowEnd;

export interface TimerScheduler {
  schedule(event: TimerEvent, delaySeconds: number): Promise<void>;
}

/** The longest delay SQS gives a message. */
export const MAX_TIMER_DELAY_SECONDS = 900;

export function parseTimerEvent(body: string): TimerEvent | undefined {
  try {
    const event = JSON.parse(body) as Partial<TimerEvent>;
    if (event.type === 'sm-expire' && typeof event.session === 'string' && typeof event.socket === 'string') return event as TimerEvent;
  } catch {
    // not JSON: reported by the caller
  }
  return undefined;
}

const clampDelay = (seconds: number) => Math.min(MAX_TIMER_DELAY_SECONDS, Math.max(0, Math.ceil(seconds)));

export class SqsTimerScheduler implements TimerScheduler {
  private readonly queue: QueueSender;

  constructor(
    private readonly queueUrl: string,
    client?: SQSClient,
  ) {
    this.queue = new QueueSender(client);
  }

  async schedule(event: TimerEvent, delaySeconds: number): Promise<void> {
    await this.queue.send({
      QueueUrl: this.queueUrl,
      MessageBody: JSON.stringify(event),
      DelaySeconds: clampDelay(delaySeconds),
      MessageAttributes: { [EVENT_ATTRIBUTES.eventType]: { DataType: 'String', StringValue: 'TIMER' } },
    });
  }
}

/** POSTs the event to the local gateway's timer intake (loopback only; the URL carries a random token). */
export class HttpTimerScheduler implements TimerScheduler {
  constructor(private readonly endpoint: string) {}

  async schedule(event: TimerEvent, delaySeconds: number): Promise<void> {
    const response = await fetch(this.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ delaySeconds: clampDelay(delaySeconds), event }),
    });
    if (!response.ok) throw new Error(`timer intake answered ${response.status}`);
  }
}

/** The scheduler the configuration names; undefined = none, and sessions are not resumable. */
export function timerSchedulerFromConfig(config: Pick<ServerConfig, 'timerQueueUrl' | 'timerEndpoint'>): TimerScheduler | undefined {
  if (config.timerQueueUrl) return new SqsTimerScheduler(config.timerQueueUrl);
  if (config.timerEndpoint) return new HttpTimerScheduler(config.timerEndpoint);
  return undefined;
}
