/**
 * The contract between API Gateway (or the local gateway) and the stream Lambda.
 *
 * API Gateway's `$default` and `$disconnect` routes put one SQS FIFO message per WebSocket event
 * (MessageGroupId = connectionId, so one connection's events are processed in order). The body is the
 * frame text; `$disconnect` has no frame and SQS refuses empty bodies, so its body is DISCONNECT_BODY.
 * Message attributes (all String, as the API Gateway request template writes them):
 */
export const EVENT_ATTRIBUTES = {
  connectionId: 'connectionId',
  /** 'MESSAGE' for a frame, 'DISCONNECT' when the socket closed, 'TIMER' for a delayed event (timers.ts), 'JOB' for a background job (jobs.ts). */
  eventType: 'eventType',
  /** Epoch milliseconds when API Gateway received the event ($context.requestTimeEpoch). */
  requestTimeEpoch: 'requestTimeEpoch',
  /** The client's address as API Gateway saw it ($context.identity.sourceIp): brute-force limits per source. */
  sourceIp: 'sourceIp',
} as const;

export type StreamEventType = 'MESSAGE' | 'DISCONNECT' | 'TIMER' | 'JOB';
export const DISCONNECT_BODY = '-';
