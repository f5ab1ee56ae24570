/**
 * The local gateway: what API Gateway (WebSocket API) + the SQS FIFO stream queue + Lambda's SQS
 * event source mapping do in the cloud, in one process, so the SAME handler code runs locally.
 *
 *   client ──ws──▶ handshake ──▶ connect handler ($connect, decides status and Sec-WebSocket-Protocol)
 *   frames ──▶ per-connection FIFO (MessageGroupId = connectionId) ──▶ stream handler (SQS event)
 *   close  ──▶ DISCONNECT record queued after that connection's frames
 *   handler code ──▶ @connections HTTP API on 127.0.0.1 (POST/GET/DELETE) ──▶ socket
 *
 * Behaviour mirrored from API Gateway (see docs/local-stack.md for the full list):
 * - messages over 128 KiB close the socket with 1009; binary frames close it with 1003;
 * - idle timeout (default 600 s) and maximum lifetime (default 7200 s) close with 1001;
 * - client frames and @connections posts both count as activity for the idle timeout (ping/pong
 *   control frames do not);
 * - @connections answers 410 GoneException for unknown or closed connections, 413
 *   PayloadTooLargeException for posts over 128 KiB.
 *
 * This file only wires the pieces in local/gateway/ and keeps the API that local/stack.ts and the
 * tests import (it re-exports the types and helpers):
 *   types.ts             public types (events, handlers, options, Gateway)
 *   config.ts            options + environment → settings
 *   state.ts             the shared mutable state (connections, groups, waiters, flags)
 *   lambda-runner.ts     invoking a handler as the Lambda runtime does (context, timeout)
 *   connect-event.ts     ids, header names, the $connect event, the default connect decision
 *   fifo-queue.ts        the FIFO queue and the event source mapping (batches, retries, dead letters)
 *   websocket-server.ts  handshake, frames, idle and lifetime cuts, DISCONNECT on close
 *   connections-api.ts   the @connections HTTP API
 *   timers.ts            delayed events (the cloud's timer queue)
 *   jobs.ts              background jobs (the cloud's job queue)
 *   http.ts              listening, JSON answers, bounded body reads
 */
import { WebSocket } from 'ws';
import { MAX_PAYLOAD_BYTES, WS_PATH, resolveConfig } from './gateway/config.ts';
import { canonicalHeaderName, defaultConnectHandler, newConnectionId } from './gateway/connect-event.ts';
import { createConnectionsServer } from './gateway/connections-api.ts';
import { createFifoQueue } from './gateway/fifo-queue.ts';
import { hostForUrl, listen } from './gateway/http.ts';
import { callHandler } from './gateway/lambda-runner.ts';
import { createGatewayState } from './gateway/state.ts';
import { createTimerIntake } from './gateway/timers.ts';
import { createJobIntake } from './gateway/jobs.ts';
import type { Gateway, GatewayOptions } from './gateway/types.ts';
import { createWebSocketServer } from './gateway/websocket-server.ts';

export type {
  ConnectEvent,
  ConnectHandler,
  ConnectionsRequest,
  ConnectResult,
  DeadLetter,
  Gateway,
  GatewayLogger,
  GatewayOptions,
  StreamHandler,
} from './gateway/types.ts';
export { MAX_PAYLOAD_BYTES, WS_PATH, callHandler, canonicalHeaderName, defaultConnectHandler, newConnectionId };

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const config = resolveConfig(options);
  const { bind, path, port, drainTimeoutMs, log } = config;
  const state = createGatewayState();
  const { live, groups, idleWaiters, pendingTimers, heldPosts } = state;

  const queue = createFifoQueue(config, state);
  const { busy } = queue;
  const wsServer = createWebSocketServer(config, state, queue);
  const timers = createTimerIntake(state, queue);
  const jobs = createJobIntake(state, queue);
  const connectionsServer = createConnectionsServer(config, state, [timers, jobs]);

  // --- start ----------------------------------------------------------------------------------------

  const connectionsPort = await listen(connectionsServer, options.connectionsPort ?? 0, '127.0.0.1', '@connections API');
  let wsPort: number;
  try {
    wsPort = await listen(wsServer, port, bind, 'WebSocket (XMPP_WS_PORT)');
  } catch (err) {
    await new Promise((r) => connectionsServer.close(r));
    throw err;
  }

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    state.closing = true;
    const stopListening = new Promise<void>((r) => wsServer.close(() => r()));
    // Close every socket like API Gateway does when it goes away; DISCONNECT records follow.
    const sockets = [...live.values()].map((c) => c.socket);
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) return resolve();
            ws.once('close', () => resolve());
            ws.close(1001, 'Going away');
            setTimeout(() => ws.terminate(), 2000).unref();
          }),
      ),
    );
    wsServer.closeAllConnections();
    await stopListening;
    // Let the stream handler see every queued record (it may still post to @connections).
    if (busy()) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => idleWaiters.add(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, drainTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      const left = [...groups.values()].reduce((n, g) => n + g.messages.length, 0);
      if (left > 0) log.warn(`shutting down with ${left} undelivered record(s)`);
    }
    state.shutDown = true;
    for (const timer of pendingTimers) clearTimeout(timer);
    pendingTimers.clear();
    for (const res of heldPosts) res.destroy();
    await new Promise<void>((r) => {
      connectionsServer.close(() => r());
      connectionsServer.closeAllConnections();
    });
  }

  return {
    wsUrl: `ws://${hostForUrl(bind)}:${wsPort}${path}`,
    connectionsEndpoint: `http://127.0.0.1:${connectionsPort}`,
    port: wsPort,
    close: () => (closed ??= close()),
    connectionIds: () => [...live.keys()],
    timerEndpoint: `http://127.0.0.1:${connectionsPort}${timers.path}`,
    jobEndpoint: `http://127.0.0.1:${connectionsPort}${jobs.path}`,
    idle: () => (busy() ? new Promise<void>((resolve) => idleWaiters.add(resolve)) : Promise.resolve()),
  };
}
