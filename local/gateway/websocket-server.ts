/**
 * The WebSocket side of API Gateway: the HTTP server on the WebSocket port (426 on the endpoint
 * path, other requests to httpHandler), the handshake run through the $connect handler (its status
 * and headers, e.g. the RFC 7395 `xmpp` subprotocol, decide the answer), then per socket: frames
 * (text only, 1003 for binary, 1009 over maxPayload via ws) queued as MESSAGE records, idle
 * timeout and maximum lifetime cut with 1001, and a DISCONNECT record queued on close.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type { GatewayConfig } from './config.ts';
import { buildConnectEvent, newConnectionId } from './connect-event.ts';
import type { FifoQueue } from './fifo-queue.ts';
import { invokeLambda } from './lambda-runner.ts';
import type { GatewayState, LiveConnection } from './state.ts';
import type { ConnectEvent, ConnectResult } from './types.ts';

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function rejectHandshake(socket: Duplex, status: number, body = '', headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const payload = Buffer.from(body, 'utf8');
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`, 'Connection: close'];
  for (const [name, value] of Object.entries(headers)) {
    if (/^(connection|content-length|upgrade|sec-websocket-accept)$/i.test(name)) continue;
    lines.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
  }
  if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    lines.push('Content-Type: text/plain; charset=utf-8');
  }
  lines.push(`Content-Length: ${payload.length}`);
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]));
  socket.once('finish', () => socket.destroy());
}

/** Creates the WebSocket port's HTTP server (not yet listening); its sockets are in state.live. */
export function createWebSocketServer(config: GatewayConfig, state: GatewayState, queue: FifoQueue): Server {
  const { path, maxPayload, idleMs, lifetimeMs, handlerTimeoutMs, stage, apiId, log, connectHandler, options } = config;
  const { live } = state;
  const { enqueue } = queue;
  const responseHeaders = new WeakMap<IncomingMessage, Record<string, string>>();

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload,
    perMessageDeflate: false,
    clientTracking: false,
    // The subprotocol is whatever the connect handler returned (added in 'headers' below), never
    // ws's default of "the first one requested".
    handleProtocols: () => false,
  });
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    const extra = responseHeaders.get(req);
    if (!extra) return;
    for (const [name, value] of Object.entries(extra)) {
      if (/^(connection|upgrade|sec-websocket-accept|content-length|content-type)$/i.test(name)) continue;
      headers.push(`${name}: ${value.replace(/[\r\n]/g, ' ')}`);
    }
  });

  const wsServer = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://local').pathname;
    if (pathname === path) {
      res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Upgrade: 'websocket' });
      res.end('Upgrade Required: this is the XMPP over WebSocket endpoint (RFC 7395)\n');
      return;
    }
    if (options.httpHandler) {
      try {
        options.httpHandler(req, res);
      } catch (err) {
        log.error(`httpHandler failed: ${(err as Error)?.stack ?? err}`);
        if (!res.headersSent) res.writeHead(500);
        res.end();
      }
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('Not Found\n');
  });

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://local');
    if (state.closing) return rejectHandshake(socket, 503, 'Service Unavailable\n');
    if (url.pathname !== path) return rejectHandshake(socket, 404, 'Not Found\n');

    const connectionId = newConnectionId();
    const connectedAt = Date.now();
    const event = buildConnectEvent(req, connectionId, url, connectedAt, stage, apiId);
    let result: ConnectResult;
    try {
      result = await invokeLambda(connectHandler, event, 'xmpp-connect', handlerTimeoutMs);
    } catch (err) {
      log.error(`connect handler failed: ${(err as Error)?.stack ?? err}`);
      return rejectHandshake(socket, 500, '{"message": "Internal server error"}', { 'Content-Type': 'application/json' });
    }
    let statusCode = 200;
    let headers: Record<string, string> = {};
    let body = '';
    if (result !== null && typeof result === 'object') {
      statusCode = result.statusCode ?? 200;
      for (const [k, v] of Object.entries(result.headers ?? {})) headers[k] = String(v);
      body = result.body ?? '';
    }
    if (statusCode < 200 || statusCode > 299) {
      log.info(`connection refused by the connect handler: ${statusCode}`);
      return rejectHandshake(socket, statusCode, body, headers);
    }
    if (state.closing || socket.destroyed) return rejectHandshake(socket, 503, 'Service Unavailable\n');
    responseHeaders.set(req, headers);
    wss.handleUpgrade(req, socket, head, (ws) => onOpen(ws, connectionId, connectedAt, event));
  }

  function onOpen(ws: WebSocket, connectionId: string, connectedAt: number, event: ConnectEvent): void {
    const connection: LiveConnection = {
      id: connectionId,
      socket: ws,
      connectedAt,
      lastActiveAt: connectedAt,
      sourceIp: event.requestContext.identity.sourceIp,
      userAgent: event.requestContext.identity.userAgent ?? '',
      rejecting: false,
    };
    live.set(connectionId, connection);
    log.info(`connect ${connectionId}`);

    const goAway = (code: number, reason: string) => {
      if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    };
    const armIdle = () => {
      connection.idleTimer = setTimeout(checkIdle, Math.max(0, connection.lastActiveAt + idleMs - Date.now()));
    };
    const checkIdle = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - connection.lastActiveAt >= idleMs) {
        log.info(`idle timeout ${connectionId}`);
        goAway(1001, 'Going away');
      } else {
        armIdle();
      }
    };
    armIdle();
    connection.lifetimeTimer = setTimeout(() => {
      log.info(`maximum lifetime reached ${connectionId}`);
      goAway(1001, 'Going away');
    }, lifetimeMs);

    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (connection.rejecting) return;
      if (isBinary) {
        // API Gateway does not accept binary frames: it disconnects with 1003.
        connection.rejecting = true;
        goAway(1003, 'Binary frames are not supported');
        return;
      }
      connection.lastActiveAt = Date.now();
      const body = rawToBuffer(data).toString('utf8');
      enqueue(connectionId, 'MESSAGE', body, connection.sourceIp);
      options.onFrame?.(connectionId, body);
    });
    ws.on('error', (err) => {
      // e.g. "Max payload size exceeded": ws closes with 1009 itself.
      log.info(`socket error ${connectionId}: ${err.message}`);
    });
    ws.once('close', (code) => {
      clearTimeout(connection.idleTimer);
      clearTimeout(connection.lifetimeTimer);
      live.delete(connectionId);
      log.info(`disconnect ${connectionId} (${code})`);
      enqueue(connectionId, 'DISCONNECT', undefined, connection.sourceIp);
    });
  }

  wsServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((err) => {
      log.error(`upgrade failed: ${(err as Error)?.stack ?? err}`);
      rejectHandshake(socket, 500, 'Internal Server Error\n');
    });
  });

  return wsServer;
}
