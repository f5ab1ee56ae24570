/** Small helpers for the local-stack tests: a WebSocket client that queues what it receives. */
import { WebSocket } from 'ws';

export interface TestClient {
  ws: WebSocket;
  /** Every text frame received so far. */
  received: string[];
  /** The next frame not yet taken by next(). */
  next(timeoutMs?: number): Promise<string>;
  /** Resolves with the close code and reason once the socket is closed. */
  closed: Promise<{ code: number; reason: string }>;
}

export function openClient(url: string, protocols?: string | string[], headers?: Record<string, string>): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { headers });
    const received: string[] = [];
    let taken = 0;
    const waiters: Array<() => void> = [];
    ws.on('message', (data, isBinary) => {
      received.push(isBinary ? `<binary ${String(data)}>` : data.toString());
      for (const w of waiters.splice(0)) w();
    });
    const closed = new Promise<{ code: number; reason: string }>((r) => {
      ws.on('close', (code, reason) => {
        r({ code, reason: reason.toString() });
        for (const w of waiters.splice(0)) w();
      });
    });
    const next = (timeoutMs = 10_000) =>
      new Promise<string>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`no frame within ${timeoutMs} ms (have ${received.length})`)), timeoutMs);
        const check = () => {
          if (taken < received.length) {
            clearTimeout(timer);
            res(received[taken++]!);
          } else if (ws.readyState === WebSocket.CLOSED) {
            clearTimeout(timer);
            rej(new Error('socket closed'));
          } else {
            waiters.push(check);
          }
        };
        check();
      });
    ws.once('open', () => resolve({ ws, received, next, closed }));
    ws.once('error', reject);
  });
}

/** The HTTP status of a refused handshake (or an error if the handshake succeeded). */
export function handshakeStatus(url: string, protocols?: string | string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      ws.terminate();
      reject(new Error('handshake succeeded'));
    });
    ws.on('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

export async function waitFor(predicate: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Dummy AWS settings so SDK clients can sign requests to the local endpoints. */
export function useDummyAwsEnv(): void {
  process.env.AWS_REGION = 'local';
  process.env.AWS_ACCESS_KEY_ID ??= 'local';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'local';
}
