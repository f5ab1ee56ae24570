/**
 * Delayed events: the cloud's timer queue (an SQS message per event, visible after its delay)
 * played by a loopback intake. The stream handler posts {delaySeconds, event} to the random
 * path (XMPP_TIMER_ENDPOINT, shared/transport/timers.ts); when due, the event is queued as a TIMER
 * record of a group of its own. Served on the @connections API's server.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FifoQueue } from './fifo-queue.ts';
import { readBody, sendJson } from './http.ts';
import type { GatewayState } from './state.ts';

/** A loopback intake of the stream handler's own events, served on the @connections API's server. */
export interface Intake {
  /** `/@timers/<random token>`, `/@jobs/<random token>`. */
  path: string;
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

export function createTimerIntake(state: GatewayState, queue: FifoQueue): Intake {
  const { enqueue } = queue;
  const { pendingTimers } = state;
  const timerToken = randomBytes(16).toString('hex');
  const timerPath = `/@timers/${timerToken}`;

  async function handleTimerIntake(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      req.resume();
      return sendJson(res, 405, { message: 'Method Not Allowed' });
    }
    const body = await readBody(req, 64 * 1024);
    let request: { delaySeconds?: unknown; event?: unknown };
    try {
      request = body === 'too-large' ? {} : JSON.parse(body.toString('utf8'));
    } catch {
      request = {};
    }
    const delay = Number(request.delaySeconds);
    if (!(delay >= 0 && delay <= 900) || typeof request.event !== 'object' || request.event === null) {
      return sendJson(res, 400, { message: 'expected {"delaySeconds": 0..900, "event": {...}}' });
    }
    const eventBody = JSON.stringify(request.event);
    const timer = setTimeout(() => {
      pendingTimers.delete(timer);
      if (!state.closing) enqueue(`timer:${randomUUID()}`, 'TIMER', eventBody, '127.0.0.1');
    }, delay * 1000);
    pendingTimers.add(timer);
    sendJson(res, 200, {});
  }

  return { path: timerPath, handle: handleTimerIntake };
}
