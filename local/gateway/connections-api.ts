/**
 * The @connections management API (POST/GET/DELETE /@connections/{id}) on 127.0.0.1, as the
 * ApiGatewayManagementApiClient calls it: 410 GoneException for unknown or closed connections,
 * 413 PayloadTooLargeException over maxPayload, posts count as activity for the idle timeout,
 * fault injection (410 with the connection dropped, or never answered), late-delivery detection
 * (onLateDelivery) and per-call observation (onConnectionsRequest). Also routes the timer and job
 * intakes.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { WebSocket } from 'ws';
import type { GatewayConfig } from './config.ts';
import { readBody, sendJson } from './http.ts';
import type { GatewayState } from './state.ts';
import type { Intake } from './timers.ts';

export function createConnectionsServer(config: GatewayConfig, state: GatewayState, intakes: Intake[]): Server {
  const { maxPayload, log, options } = config;
  const { live, heldPosts } = state;
  /** SDK invocation ids of recently delivered posts (onLateDelivery), oldest first, bounded. */
  const deliveredInvocations = new Set<string>();

  const gone = (res: ServerResponse) => sendJson(res, 410, { message: 'Gone' }, 'GoneException');

  async function handleConnectionsApi(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const pathname = new URL(req.url ?? '/', 'http://local').pathname;
    const intake = intakes.find((i) => i.path === pathname);
    if (intake) return intake.handle(req, res);
    // The SDK appends /@connections/{id} to the endpoint's path (in the cloud: /{stage}).
    const marker = pathname.indexOf('/@connections/');
    let connectionId: string | undefined;
    if (marker >= 0) {
      const raw = pathname.slice(marker + '/@connections/'.length).replace(/\/$/, '');
      if (raw && !raw.includes('/')) {
        try {
          connectionId = decodeURIComponent(raw);
        } catch {
          connectionId = undefined;
        }
      }
    }
    if (!connectionId) {
      req.resume();
      return sendJson(res, 404, { message: 'Not Found' }, 'NotFoundException');
    }
    const connection = live.get(connectionId);
    const open = connection !== undefined && connection.socket.readyState === WebSocket.OPEN;
    let postedBytes = 0;
    const observe = options.onConnectionsRequest;
    if (observe) {
      const method = req.method ?? '';
      const id = connectionId;
      const started = performance.now();
      res.once('finish', () =>
        observe({ method, connectionId: id, status: res.statusCode, bytes: postedBytes, durationMs: performance.now() - started }),
      );
    }

    switch (req.method) {
      case 'POST': {
        const body = await readBody(req, maxPayload);
        if (body === 'too-large') {
          res.setHeader('Connection', 'close');
          return sendJson(res, 413, { message: 'Request entity too large' }, 'PayloadTooLargeException');
        }
        postedBytes = body.length;
        const target = live.get(connectionId);
        if (!target || target.socket.readyState !== WebSocket.OPEN) return gone(res);
        if (options.faults && Math.random() < options.faults.gone) {
          // The connection goes away as API Gateway drops one (idle, 2 h cut): a close frame after
          // what was already sent, so only this post is lost to the client, and it is answered 410.
          log.info(`fault: post to ${connectionId} answered 410, connection closed`);
          target.socket.close(1001, 'Going away');
          return gone(res);
        }
        if (options.faults && Math.random() < options.faults.timeout) {
          log.info(`fault: post to ${connectionId} left unanswered`);
          heldPosts.add(res);
          res.once('close', () => heldPosts.delete(res));
          return;
        }
        target.lastActiveAt = Date.now();
        const invocation = req.headers['amz-sdk-invocation-id'];
        let late = false;
        if (typeof invocation === 'string') {
          late = deliveredInvocations.has(invocation);
          deliveredInvocations.add(invocation);
          if (deliveredInvocations.size > 10_000) deliveredInvocations.delete(deliveredInvocations.values().next().value!);
        }
        await new Promise<void>((resolve) => {
          target.socket.send(body, { binary: false }, (err) => {
            if (!err && (late || req.socket.destroyed)) {
              log.warn(`post to ${connectionId} delivered after its sender gave up on it (it will come again)`);
              options.onLateDelivery?.(connectionId, body.toString('utf8'));
            }
            if (err) gone(res);
            else sendJson(res, 200, undefined);
            resolve();
          });
        });
        return;
      }
      case 'GET': {
        req.resume();
        if (!open) return gone(res);
        return sendJson(res, 200, {
          connectedAt: new Date(connection.connectedAt).toISOString(),
          identity: { sourceIp: connection.sourceIp, userAgent: connection.userAgent },
          lastActiveAt: new Date(connection.lastActiveAt).toISOString(),
        });
      }
      case 'DELETE': {
        req.resume();
        if (!open) return gone(res);
        connection.socket.close(1000, '');
        res.writeHead(204, { 'x-amzn-RequestId': randomUUID() });
        res.end();
        return;
      }
      default:
        req.resume();
        return sendJson(res, 405, { message: 'Method Not Allowed' });
    }
  }

  const connectionsServer = createServer((req, res) => {
    handleConnectionsApi(req, res).catch((err) => {
      log.error(`@connections request failed: ${(err as Error)?.stack ?? err}`);
      if (!res.headersSent) sendJson(res, 500, { message: 'Internal server error' });
      else res.end();
    });
  });

  return connectionsServer;
}
