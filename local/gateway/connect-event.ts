/**
 * What API Gateway puts into a WebSocket $connect event: its style of ids, header names as it
 * hands them over, the requestContext, and the default connect decision (RFC 7395's `xmpp`
 * subprotocol) used when no connect handler is given. Pure functions of the upgrade request.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ConnectEvent, ConnectHandler } from './types.ts';

/** API Gateway style ids, e.g. "JC1dgf9yoAMCK-g=" (16 chars, base64url of 11 bytes, padded). */
export function newConnectionId(): string {
  return `${randomBytes(11).toString('base64url')}=`;
}

/** Header names as API Gateway hands them over: `Sec-WebSocket-Protocol`, `User-Agent`, … */
export function canonicalHeaderName(name: string): string {
  return name
    .split('-')
    .map((part) => (part.toLowerCase() === 'websocket' ? 'WebSocket' : part.charAt(0).toUpperCase() + part.slice(1).toLowerCase()))
    .join('-');
}

function headerValue(headers: Record<string, unknown> | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  const value = key === undefined ? undefined : headers[key];
  return value === undefined || value === null ? undefined : String(value);
}

/**
 * What the project's connect Lambda decides, for when no connect handler is given: echo `xmpp` when
 * requested, refuse (400) when protocols are requested but not `xmpp`, accept without a protocol when
 * none is requested.
 */
export const defaultConnectHandler: ConnectHandler = async (event) => {
  const requested = headerValue(event.headers, 'Sec-WebSocket-Protocol');
  if (!requested) return { statusCode: 200 };
  const protocols = requested.split(',').map((p) => p.trim());
  if (protocols.includes('xmpp')) return { statusCode: 200, headers: { 'Sec-WebSocket-Protocol': 'xmpp' } };
  return { statusCode: 400, body: 'The WebSocket subprotocol "xmpp" is required (RFC 7395)' };
};

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/** API Gateway's $context.requestTime format: "11/Mar/2020:00:14:16 +0000". */
function requestTimeString(epochMs: number): string {
  const d = new Date(epochMs);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

/** The `$connect` event for an upgrade request (`stage` and `apiId` as configured). */
export function buildConnectEvent(
  req: IncomingMessage,
  connectionId: string,
  url: URL,
  now: number,
  stage: string,
  apiId: string,
): ConnectEvent {
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = canonicalHeaderName(req.rawHeaders[i]!);
    const value = req.rawHeaders[i + 1]!;
    (multiValueHeaders[name] ??= []).push(value);
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const sourceIp = (req.socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  headers['X-Forwarded-For'] ??= sourceIp;
  multiValueHeaders['X-Forwarded-For'] ??= [sourceIp];
  const query: Record<string, string> = {};
  const multiQuery: Record<string, string[]> = {};
  for (const [k, v] of url.searchParams) {
    query[k] = query[k] === undefined ? v : `${query[k]},${v}`;
    (multiQuery[k] ??= []).push(v);
  }
  const requestId = newConnectionId();
  // API Gateway sends no messageId for $connect (the type says string): leave it out.
  const requestContext = {
    routeKey: '$connect',
    eventType: 'CONNECT',
    extendedRequestId: requestId,
    requestTime: requestTimeString(now),
    messageDirection: 'IN',
    stage,
    connectedAt: now,
    requestTimeEpoch: now,
    requestId,
    domainName: headerValue(headers, 'Host') ?? '127.0.0.1',
    connectionId,
    apiId,
    identity: { sourceIp, userAgent: headerValue(headers, 'User-Agent') },
  } as ConnectEvent['requestContext'];
  const event: ConnectEvent = { headers, multiValueHeaders, requestContext, isBase64Encoded: false };
  if (Object.keys(query).length > 0) {
    event.queryStringParameters = query;
    event.multiValueQueryStringParameters = multiQuery;
  }
  return event;
}
