/**
 * The $connect Lambda: RFC 7395 requires the "xmpp" WebSocket subprotocol. It is echoed when the
 * client offers it; a client that does not offer it is refused (400). Nothing is stored: the
 * stream Lambda creates the connection's state on its first frame.
 */
import type { APIGatewayProxyResultV2, APIGatewayProxyWebsocketEventV2 } from 'aws-lambda';

type ConnectEvent = APIGatewayProxyWebsocketEventV2 & { headers?: Record<string, string | undefined> };

export async function handler(event: ConnectEvent): Promise<APIGatewayProxyResultV2> {
  const headers = event.headers ?? {};
  const offered = headers['Sec-WebSocket-Protocol'] ?? headers['sec-websocket-protocol'] ?? '';
  const protocols = offered.split(',').map((p) => p.trim().toLowerCase());
  if (!protocols.includes('xmpp')) {
    return { statusCode: 400, body: 'The WebSocket subprotocol "xmpp" is required (RFC 7395).' };
  }
  return { statusCode: 200, headers: { 'Sec-WebSocket-Protocol': 'xmpp' } };
}
