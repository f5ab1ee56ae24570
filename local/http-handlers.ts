/**
 * Plain HTTP on the WebSocket port of the local stack (the web client, host-meta, uploads …): a list
 * of handlers tried in order. Each one answers the requests it owns and returns true, or returns false
 * without touching the response so the next one gets a chance; when none claims a request it is a 404.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** What a handler may want to know about the stack it runs in. */
export interface LocalHttpContext {
  /** The XMPP domain served (XMPP_DOMAIN). */
  domain: string;
  /** Whether XEP-0077 in-band registration is on (XMPP_REGISTRATION). */
  registration: boolean;
  /** Path of the WebSocket endpoint on this same port, e.g. `/xmpp-websocket`. */
  wsPath: string;
}

/** true = handled (the response is or will be ended by the handler); false = not mine. */
export type LocalHttpHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  context: LocalHttpContext,
) => boolean | Promise<boolean>;

/** One gateway `httpHandler` that tries `handlers` in order; 404 when none claims the request. */
export function chainHttpHandlers(
  handlers: readonly LocalHttpHandler[],
  context: LocalHttpContext,
  onError: (message: string) => void = (m) => console.error(m),
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    void (async () => {
      for (const handler of handlers) {
        if (await handler(req, res, context)) return;
        if (res.headersSent || res.writableEnded) return; // answered, even if it said otherwise
      }
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end('Not Found\n');
    })().catch((err: unknown) => {
      onError(`HTTP handler failed for ${req.method} ${req.url}: ${(err as Error)?.stack ?? err}`);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end();
    });
  };
}
