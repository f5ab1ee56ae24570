/**
 * The gateway's shared mutable state: what the WebSocket server, the FIFO queue, the @connections
 * API, the timer intake and close() all read or change. One explicit object, created once per
 * gateway and passed to each piece (it used to be the variables of one big closure).
 */
import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { QueuedMessage } from '../sqs-event.ts';

export interface LiveConnection {
  id: string;
  socket: WebSocket;
  connectedAt: number;
  lastActiveAt: number;
  sourceIp: string;
  userAgent: string;
  idleTimer?: NodeJS.Timeout;
  lifetimeTimer?: NodeJS.Timeout;
  /** Set once the gateway decided to drop the socket (binary frame): ignore what follows. */
  rejecting: boolean;
}

/** One FIFO message group: every record of one connection, delivered strictly in order. */
export interface MessageGroup {
  connectionId: string;
  messages: QueuedMessage[];
  running: boolean;
}

export interface GatewayState {
  /** The open connections by id. */
  live: Map<string, LiveConnection>;
  /** Posts held unanswered by the timeout fault, ended when the gateway closes. */
  heldPosts: Set<ServerResponse>;
  /** The FIFO queue's message groups by connection id (a timer event has a group of its own). */
  groups: Map<string, MessageGroup>;
  /** Resolved once no queued record is left or being handled (idle() and close()). */
  idleWaiters: Set<() => void>;
  /** Delayed events not yet due (cleared on shutdown). */
  pendingTimers: Set<NodeJS.Timeout>;
  /** Set when close() starts: new handshakes are refused, due timers are dropped. */
  closing: boolean;
  /** Set once close() has given up waiting: nothing is delivered any more. */
  shutDown: boolean;
}

export function createGatewayState(): GatewayState {
  return {
    live: new Map<string, LiveConnection>(),
    heldPosts: new Set<ServerResponse>(),
    groups: new Map<string, MessageGroup>(),
    idleWaiters: new Set<() => void>(),
    pendingTimers: new Set<NodeJS.Timeout>(),
    closing: false,
    shutDown: false,
  };
}
