/**
 * Sending to client sockets. In the cloud and in the local stack alike this is the API Gateway
 * `@connections` management API (connections-api.ts: a lean signed client, or the SDK's); only
 * the endpoint differs.
 */
import { log } from '../log.ts';
import { isThrottlingError, type ServiceError } from '../aws/signed-http.ts';
import { connectionsApiFor, type ConnectionsApi } from './connections-api.ts';

/** What the caller knows of the target: `sm: false` = no XEP-0198 there, so the post is not numbered. */
export interface SendHint {
  sm?: boolean;
  /**
   * Post at most once: no retry of an attempt whose outcome is unknown (a timeout: it may have been
   * delivered); it throws instead. For XEP-0198 posts, where a copy delivered twice would shift the
   * client's count by one and make a later acknowledgement cover a stanza it never got.
   */
  once?: boolean;
  /**
   * The target may be enabling XEP-0198 right now (SessionRecord.smOpenUntil): a post that goes out
   * unnumbered is recorded until it is over, and the <enabled/> waits for it (sm-sender.ts).
   */
  enabling?: boolean;
  /**
   * What this post is, for the frame's journal (journaled-sender.ts), when its text does not say it
   * alone: a resumption resends each logged stanza once by its number, and two of them may be the
   * same text (a contact's unavailable presence, twice).
   */
  journalAs?: string;
}

/** Attempts of a post, retried by the SDK's rules (a timeout, a 5xx, throttling). */
const POST_ATTEMPTS = 4;

/**
 * The longest a post may take with its retries: each attempt may wait `timeoutMs` for its
 * connection and again for its answer, with a backoff of under a second between attempts.
 */
export function longestPostMs(timeoutMs: number): number {
  return POST_ATTEMPTS * 2 * timeoutMs + 2000;
}

export interface ConnectionSender {
  /** Sends one frame. Resolves false when the connection is gone (HTTP 410). */
  send(connectionId: string, frame: string, hint?: SendHint): Promise<boolean>;
  /** Closes a connection; a connection already gone is not an error. */
  close(connectionId: string): Promise<void>;
}

function isGone(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'GoneException' || e?.$metadata?.httpStatusCode === 410;
}

export class ApiGatewayConnectionSender implements ConnectionSender {
  private readonly api: ConnectionsApi;

  /**
   * `timeoutMs`: a post that hangs is given up and retried (by the client, then by the queue)
   * instead of holding the frame until the Lambda timeout; posts take milliseconds when all is
   * well. The clock runs only while the request is on its socket (connection set up, then idle
   * time waiting for the answer), never while it waits for a free socket: a whole-request timer
   * fired on posts that queued behind others, had just been delivered, and were then sent again
   * (measured in the chaos test: every doubled message was one of those).
   */
  constructor(endpoint: string, api?: ConnectionsApi, timeoutMs = 3000) {
    this.api = api ?? connectionsApiFor(endpoint, timeoutMs);
  }

  async send(connectionId: string, frame: string, hint?: SendHint): Promise<boolean> {
    if (hint?.once) return this.sendOnce(connectionId, frame);
    try {
      const { attempts } = await this.api.post(connectionId, frame, POST_ATTEMPTS);
      // A retried post may have gone out more than once (an attempt that timed out may have been delivered).
      if (attempts > 1) log.warn('post retried', { connectionId, attempts });
      return true;
    } catch (err) {
      if (isGone(err)) return false;
      throw err;
    }
  }

  /** One attempt, repeated only when it was refused for throttling (answered "too many requests", so not delivered). */
  private async sendOnce(connectionId: string, frame: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.api.post(connectionId, frame, 1);
        return true;
      } catch (err) {
        if (isGone(err)) return false;
        if (!isThrottlingError(err as ServiceError) || attempt === 4) throw err;
        await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
      }
    }
  }

  async close(connectionId: string): Promise<void> {
    try {
      await this.api.delete(connectionId, POST_ATTEMPTS);
    } catch (err) {
      if (!isGone(err)) throw err;
    }
  }
}
