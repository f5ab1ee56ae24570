/**
 * A local instance's mailbox: a loopback HTTP intake (127.0.0.1, random port, a random token in
 * the path and in the address), to which other processes POST frames for its native client
 * sessions: `/<token>/deliver` {connection, frame} → 204, or 410 when the socket is gone;
 * `/<token>/close` {connection} → 204. The address `h.<port>.<token>` goes into connection ids.
 */
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { httpMailboxAddress, type Mailbox } from '../../shared/transport/tcp-sessions.ts';

/** Largest body the intake reads: one frame (the core's limits) with JSON around it. */
const MAX_INTAKE_BYTES = 1024 * 1024;

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_INTAKE_BYTES) {
        req.destroy();
        resolve(undefined);
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(undefined));
  });
}

export async function openHttpIntake(mailbox: Mailbox): Promise<{ address: string; stop(): Promise<void> }> {
  const token = randomBytes(18).toString('base64url');
  const intake = createHttpServer((req, res) => {
    const action = req.method === 'POST' ? /^\/([^/]+)\/(deliver|close)$/.exec(req.url ?? '') : null;
    if (!action || action[1] !== token) {
      res.writeHead(404).end();
      return;
    }
    void readBody(req).then(async (body) => {
      let request: { connection?: unknown; frame?: unknown };
      try {
        request = JSON.parse(body ?? '');
      } catch {
        res.writeHead(400).end();
        return;
      }
      if (typeof request.connection !== 'string' || (action[2] === 'deliver' && typeof request.frame !== 'string')) {
        res.writeHead(400).end();
        return;
      }
      if (action[2] === 'close') {
        await mailbox.close(request.connection);
        res.writeHead(204).end();
        return;
      }
      res.writeHead((await mailbox.post(request.connection, request.frame as string)) ? 204 : 410).end();
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    intake.once('error', reject);
    intake.listen(0, '127.0.0.1', () => resolve((intake.address() as AddressInfo).port));
  });
  return {
    address: httpMailboxAddress(port, token),
    stop: async () => {
      intake.closeAllConnections();
      await new Promise<void>((resolve) => intake.close(() => resolve()));
    },
  };
}
