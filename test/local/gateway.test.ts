import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { WebSocket } from 'ws';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import {
  ApiGatewayManagementApiClient,
  GetConnectionCommand,
  PostToConnectionCommand,
} from '@aws-sdk/client-apigatewaymanagementapi';
import { ApiGatewayConnectionSender } from '../../shared/transport/connections.ts';
import { DISCONNECT_BODY } from '../../shared/transport/events.ts';
import {
  startGateway,
  defaultConnectHandler,
  type ConnectEvent,
  type ConnectionsRequest,
  type DeadLetter,
  type Gateway,
  type GatewayOptions,
  type GatewayLogger,
} from '../../local/gateway.ts';
import { md5OfMessageAttributes } from '../../local/sqs-event.ts';
import { deferred, handshakeStatus, openClient, useDummyAwsEnv, waitFor } from './helpers.ts';

useDummyAwsEnv();

const quiet: GatewayLogger = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * A stream handler like the real one in miniature: it answers through the real
 * @aws-sdk/client-apigatewaymanagementapi client (ApiGatewayConnectionSender).
 *   whoami        → the connection id
 *   gate:*        → waits for the test to open the gate, then echoes
 *   fail-once     → reported in batchItemFailures on its first delivery (and processing stops there)
 *   throw-once    → the invocation throws on its first delivery
 *   always-fail   → always reported as failed
 *   anything else → echoed
 */
function echoStack() {
  const records: SQSRecord[] = [];
  const batches: SQSRecord[][] = [];
  const connects: ConnectEvent[] = [];
  const deadLetters: DeadLetter[] = [];
  const inFlight = new Set<string>();
  let overlaps = 0;
  let gate = deferred();
  let sender: ApiGatewayConnectionSender | undefined;

  const streamHandler = async (event: SQSEvent): Promise<SQSBatchResponse | void> => {
    const group = event.Records[0]!.attributes.MessageGroupId!;
    if (event.Records.some((r) => r.attributes.MessageGroupId !== group)) overlaps++;
    if (inFlight.has(group)) overlaps++;
    inFlight.add(group);
    batches.push(event.Records);
    try {
      for (const record of event.Records) {
        records.push(record);
        const id = record.messageAttributes.connectionId!.stringValue!;
        if (record.messageAttributes.eventType!.stringValue === 'DISCONNECT') continue;
        const first = record.attributes.ApproximateReceiveCount === '1';
        const body = record.body;
        if (body === 'whoami') await sender!.send(id, id);
        else if (body.startsWith('gate:')) {
          await gate.promise;
          await sender!.send(id, body);
        } else if ((body === 'fail-once' && first) || body === 'always-fail') {
          return { batchItemFailures: [{ itemIdentifier: record.messageId }] };
        } else if (body === 'throw-once' && first) {
          throw new Error('simulated failure');
        } else await sender!.send(id, body);
      }
    } finally {
      inFlight.delete(group);
    }
  };

  return {
    records,
    batches,
    connects,
    deadLetters,
    get overlaps() {
      return overlaps;
    },
    openGate() {
      gate.resolve();
    },
    closeGate() {
      gate = deferred();
    },
    async start(extra: Partial<GatewayOptions> = {}): Promise<Gateway> {
      const gw = await startGateway({
        port: 0,
        bind: '127.0.0.1',
        logger: quiet,
        redeliveryDelayMs: 50,
        maxReceiveCount: 3,
        streamHandler,
        connectHandler: async (event, context, callback) => {
          connects.push(event);
          return defaultConnectHandler(event, context, callback);
        },
        onDeadLetter: (d) => deadLetters.push(d),
        ...extra,
      });
      sender = new ApiGatewayConnectionSender(gw.connectionsEndpoint);
      return gw;
    },
    recordsOf(connectionId: string) {
      return records.filter((r) => r.attributes.MessageGroupId === connectionId);
    },
  };
}

async function whoami(client: { ws: WebSocket; next(): Promise<string> }): Promise<string> {
  client.ws.send('whoami');
  return client.next();
}

describe('local gateway', { timeout: 20_000 }, () => {
  const stack = echoStack();
  let gw: Gateway;
  let sdk: ApiGatewayManagementApiClient;

  beforeAll(async () => {
    gw = await stack.start();
    sdk = new ApiGatewayManagementApiClient({ endpoint: gw.connectionsEndpoint, maxAttempts: 1 });
  });

  afterAll(async () => {
    stack.openGate();
    sdk?.destroy();
    await gw?.close();
  });

  it('serves the endpoints on loopback', () => {
    expect(gw.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/xmpp-websocket$/);
    expect(gw.connectionsEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  describe('handshake', () => {
    it('echoes the xmpp subprotocol and passes a $connect event to the connect handler', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp', { 'User-Agent': 'gateway-test' });
      expect(client.ws.protocol).toBe('xmpp');
      const id = await whoami(client);
      expect(id).toMatch(/^[A-Za-z0-9_-]{15}=$/);
      const event = stack.connects.find((e) => e.requestContext.connectionId === id)!;
      expect(event.headers['Sec-WebSocket-Protocol']).toBe('xmpp');
      expect(event.multiValueHeaders['Sec-WebSocket-Protocol']).toEqual(['xmpp']);
      expect(event.requestContext).toMatchObject({
        routeKey: '$connect',
        eventType: 'CONNECT',
        messageDirection: 'IN',
        connectionId: id,
        identity: { sourceIp: '127.0.0.1', userAgent: 'gateway-test' },
      });
      expect(event.isBase64Encoded).toBe(false);
      client.ws.close();
      await client.closed;
    });

    it('accepts a client that requests no subprotocol, without echoing one', async () => {
      const client = await openClient(gw.wsUrl);
      expect(client.ws.protocol).toBe('');
      expect(await whoami(client)).toMatch(/=$/);
      client.ws.close();
      await client.closed;
    });

    it('echoes xmpp when it is one of several requested protocols', async () => {
      const client = await openClient(gw.wsUrl, ['chat', 'xmpp']);
      expect(client.ws.protocol).toBe('xmpp');
      client.ws.close();
      await client.closed;
    });

    it('refuses the handshake with the status the connect handler returns when xmpp is not requested', async () => {
      expect(await handshakeStatus(gw.wsUrl, 'chat')).toBe(400);
    });

    it('answers 404 to upgrades on other paths, 426 to plain GETs of the WebSocket path', async () => {
      expect(await handshakeStatus(gw.wsUrl.replace('/xmpp-websocket', '/other'), 'xmpp')).toBe(404);
      const status = await new Promise<number>((resolve, reject) => {
        request(gw.wsUrl.replace('ws:', 'http:'), (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      expect(status).toBe(426);
    });
  });

  describe('stream events', () => {
    it('delivers many rapid frames of one connection in order, one invocation at a time, at most 10 per batch', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      const frames = Array.from({ length: 300 }, (_, i) => `<message id="m${i}"/>`);
      for (const frame of frames) client.ws.send(frame);
      const got: string[] = [];
      for (let i = 0; i < frames.length; i++) got.push(await client.next());
      expect(got).toEqual(frames);

      const mine = stack.recordsOf(id);
      expect(mine.map((r) => r.body)).toEqual(['whoami', ...frames]);
      const sequence = mine.map((r) => BigInt(r.attributes.SequenceNumber!));
      for (let i = 1; i < sequence.length; i++) expect(sequence[i]! > sequence[i - 1]!).toBe(true);
      const myBatches = stack.batches.filter((b) => b[0]!.attributes.MessageGroupId === id);
      expect(Math.max(...myBatches.map((b) => b.length))).toBeLessThanOrEqual(10);
      expect(stack.overlaps).toBe(0);
      client.ws.close();
      await client.closed;
    });

    it('builds records shaped like SQS FIFO records', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      const before = Date.now();
      client.ws.send('<presence/>');
      expect(await client.next()).toBe('<presence/>');
      const record = stack.recordsOf(id).find((r) => r.body === '<presence/>')!;
      expect(record).toMatchObject({
        body: '<presence/>',
        eventSource: 'aws:sqs',
        eventSourceARN: 'arn:aws:sqs:local:000000000000:xmpp-stream.fifo',
        awsRegion: 'local',
        md5OfBody: createHash('md5').update('<presence/>').digest('hex'),
        attributes: { ApproximateReceiveCount: '1', MessageGroupId: id },
        messageAttributes: {
          connectionId: { stringValue: id, dataType: 'String', stringListValues: [], binaryListValues: [] },
          eventType: { stringValue: 'MESSAGE', dataType: 'String', stringListValues: [], binaryListValues: [] },
        },
      });
      expect(record.messageId).toMatch(/^[0-9a-f-]{36}$/);
      expect(record.receiptHandle.length).toBeGreaterThan(10);
      expect(record.attributes.MessageDeduplicationId).toMatch(/=$/);
      expect(record.attributes.SenderId).toBeTruthy();
      expect(record.attributes.SequenceNumber).toMatch(/^\d{20}$/);
      const requestTime = Number(record.messageAttributes.requestTimeEpoch!.stringValue);
      expect(requestTime).toBeGreaterThanOrEqual(before);
      expect(Number(record.attributes.SentTimestamp)).toBeGreaterThanOrEqual(requestTime);
      expect(Number(record.attributes.ApproximateFirstReceiveTimestamp)).toBeGreaterThanOrEqual(
        Number(record.attributes.SentTimestamp),
      );
      expect(record.md5OfMessageAttributes).toBe(md5OfMessageAttributes(record.messageAttributes));
      client.ws.close();
      await client.closed;
    });

    it('handles connections concurrently: a slow handler for one does not hold up another', async () => {
      stack.closeGate();
      const slow = await openClient(gw.wsUrl, 'xmpp');
      const fast = await openClient(gw.wsUrl, 'xmpp');
      slow.ws.send('gate:slow');
      slow.ws.send('after the gate');
      await waitFor(() => stack.records.some((r) => r.body === 'gate:slow'), 5000, 'the slow frame');
      fast.ws.send('fast');
      expect(await fast.next()).toBe('fast');
      expect(slow.received).toEqual([]); // still blocked behind the gate
      stack.openGate();
      expect(await slow.next()).toBe('gate:slow');
      expect(await slow.next()).toBe('after the gate');
      slow.ws.close();
      fast.ws.close();
      await Promise.all([slow.closed, fast.closed]);
    });

    it('queues a DISCONNECT record after the last frame of a closed connection', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      const frames = Array.from({ length: 25 }, (_, i) => `frame ${i}`);
      for (const frame of frames) client.ws.send(frame);
      client.ws.close();
      await client.closed;
      await waitFor(
        () => stack.recordsOf(id).some((r) => r.messageAttributes.eventType!.stringValue === 'DISCONNECT'),
        10_000,
        'the DISCONNECT record',
      );
      const mine = stack.recordsOf(id);
      expect(mine.map((r) => r.body)).toEqual(['whoami', ...frames, DISCONNECT_BODY]);
      const last = mine[mine.length - 1]!;
      expect(last.messageAttributes.eventType!.stringValue).toBe('DISCONNECT');
      expect(last.messageAttributes.connectionId!.stringValue).toBe(id);
      expect(gw.connectionIds()).not.toContain(id);
    });

    it('redelivers a failed record and every later record of that connection, in order', async () => {
      stack.closeGate();
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      client.ws.send('gate:hold');
      await waitFor(() => stack.recordsOf(id).some((r) => r.body === 'gate:hold'), 5000, 'the held frame');
      // These three queue up behind the held frame and then arrive in one batch.
      client.ws.send('fail-once');
      client.ws.send('after-1');
      client.ws.send('after-2');
      await new Promise((r) => setTimeout(r, 100));
      stack.openGate();
      const got = [await client.next(), await client.next(), await client.next(), await client.next()];
      expect(got).toEqual(['gate:hold', 'fail-once', 'after-1', 'after-2']);
      const bodies = stack.recordsOf(id).map((r) => r.body);
      // first delivery stops at fail-once; the redelivery carries fail-once and the two after it
      expect(bodies).toEqual(['whoami', 'gate:hold', 'fail-once', 'fail-once', 'after-1', 'after-2']);
      const retried = stack.recordsOf(id).filter((r) => r.body === 'fail-once');
      expect(retried.map((r) => r.attributes.ApproximateReceiveCount)).toEqual(['1', '2']);
      expect(retried[0]!.messageId).toBe(retried[1]!.messageId);
      const redeliveredBatch = stack.batches.find((b) => b.some((r) => r === retried[1]))!;
      expect(redeliveredBatch.map((r) => r.body)).toEqual(['fail-once', 'after-1', 'after-2']);
      const firstBatch = stack.batches.find((b) => b.some((r) => r === retried[0]))!;
      expect(firstBatch.map((r) => r.body)).toEqual(['fail-once', 'after-1', 'after-2']);
      client.ws.close();
      await client.closed;
    });

    it('redelivers the whole batch when the handler throws', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      client.ws.send('throw-once');
      client.ws.send('next');
      expect(await client.next()).toBe('throw-once');
      expect(await client.next()).toBe('next');
      client.ws.close();
      await client.closed;
    });

    it('dead-letters a record after maxReceiveCount deliveries and goes on with the next', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      client.ws.send('always-fail');
      await waitFor(() => stack.deadLetters.some((d) => d.connectionId === id), 10_000, 'the dead letter');
      const dead = stack.deadLetters.find((d) => d.connectionId === id)!;
      expect(dead).toMatchObject({ body: 'always-fail', eventType: 'MESSAGE', receiveCount: 3 });
      client.ws.send('still alive');
      expect(await client.next()).toBe('still alive');
      client.ws.close();
      await client.closed;
    });
  });

  describe('limits', () => {
    it('accepts a 128 KiB message and closes with 1009 on a larger one', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const exact = 'x'.repeat(131072);
      client.ws.send(exact);
      expect((await client.next()).length).toBe(131072);
      client.ws.send('y'.repeat(131073));
      expect((await client.closed).code).toBe(1009);
    });

    it('closes with 1003 on a binary frame', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      client.ws.send(Buffer.from('<presence/>'), { binary: true });
      expect((await client.closed).code).toBe(1003);
    });
  });

  describe('@connections API', () => {
    it('GetConnection describes an open connection', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp', { 'User-Agent': 'agent/1.0' });
      const id = await whoami(client);
      const info = await sdk.send(new GetConnectionCommand({ ConnectionId: id }));
      expect(info.ConnectedAt).toBeInstanceOf(Date);
      expect(info.LastActiveAt).toBeInstanceOf(Date);
      expect(info.LastActiveAt!.getTime()).toBeGreaterThanOrEqual(info.ConnectedAt!.getTime());
      expect(info.Identity).toEqual({ SourceIp: '127.0.0.1', UserAgent: 'agent/1.0' });
      client.ws.close();
      await client.closed;
    });

    it('answers 410 (GoneException) for a closed connection and for one that never existed', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      client.ws.close();
      await client.closed;
      await waitFor(() => !gw.connectionIds().includes(id), 5000, 'the connection to go');
      const post = new PostToConnectionCommand({ ConnectionId: id, Data: new TextEncoder().encode('<message/>') });
      await expect(sdk.send(post)).rejects.toMatchObject({ name: 'GoneException', $metadata: { httpStatusCode: 410 } });
      await expect(sdk.send(new GetConnectionCommand({ ConnectionId: 'AAAAAAAAAAAAAAA=' }))).rejects.toMatchObject({
        name: 'GoneException',
      });
      const sender = new ApiGatewayConnectionSender(gw.connectionsEndpoint);
      expect(await sender.send(id, '<message/>')).toBe(false);
      await expect(sender.close(id)).resolves.toBeUndefined();
    });

    it('refuses posts over 128 KiB with 413 (PayloadTooLargeException)', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      const post = new PostToConnectionCommand({ ConnectionId: id, Data: new Uint8Array(131073).fill(120) });
      await expect(sdk.send(post)).rejects.toMatchObject({
        name: 'PayloadTooLargeException',
        $metadata: { httpStatusCode: 413 },
      });
      expect(client.ws.readyState).toBe(WebSocket.OPEN);
      client.ws.close();
      await client.closed;
    });

    it('DeleteConnection closes the socket; a DISCONNECT record follows', async () => {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client);
      expect(gw.connectionIds()).toContain(id);
      await new ApiGatewayConnectionSender(gw.connectionsEndpoint).close(id);
      expect((await client.closed).code).toBe(1000);
      await waitFor(
        () => stack.recordsOf(id).some((r) => r.messageAttributes.eventType!.stringValue === 'DISCONNECT'),
        5000,
        'the DISCONNECT record',
      );
      expect(gw.connectionIds()).not.toContain(id);
    });
  });
});

describe('local gateway @connections observer', { timeout: 20_000 }, () => {
  it('reports each answered @connections call: posts with their size, 410s and deletes', async () => {
    const seen: ConnectionsRequest[] = [];
    const stack = echoStack();
    const gw = await stack.start({ onConnectionsRequest: (r) => seen.push(r) });
    try {
      const client = await openClient(gw.wsUrl, 'xmpp');
      const id = await whoami(client); // the handler posts the id back: one POST of id.length bytes
      const sender = new ApiGatewayConnectionSender(gw.connectionsEndpoint);
      await sender.close(id);
      await client.closed;
      await waitFor(() => !gw.connectionIds().includes(id), 5000, 'the connection to go');
      expect(await sender.send(id, '<message/>')).toBe(false);
      await waitFor(() => seen.length >= 3, 5000, 'three observed calls');
      expect(seen.map(({ method, connectionId, status, bytes }) => ({ method, connectionId, status, bytes }))).toEqual([
        { method: 'POST', connectionId: id, status: 200, bytes: Buffer.byteLength(id) },
        { method: 'DELETE', connectionId: id, status: 204, bytes: 0 },
        { method: 'POST', connectionId: id, status: 410, bytes: '<message/>'.length },
      ]);
      for (const r of seen) expect(r.durationMs).toBeGreaterThanOrEqual(0);
    } finally {
      await gw.close();
    }
  });
});

describe('local gateway timeouts', { timeout: 20_000 }, () => {
  const stack = echoStack();
  let gw: Gateway;

  beforeAll(async () => {
    gw = await stack.start({ idleSeconds: 1, maxLifetimeSeconds: 3 });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('closes an idle connection with 1001 and queues DISCONNECT', async () => {
    const client = await openClient(gw.wsUrl, 'xmpp');
    const id = await whoami(client);
    const { code } = await client.closed;
    expect(code).toBe(1001);
    await waitFor(
      () => stack.recordsOf(id).some((r) => r.messageAttributes.eventType!.stringValue === 'DISCONNECT'),
      5000,
      'the DISCONNECT record',
    );
  });

  it('client frames keep a connection open until its maximum lifetime, then it closes with 1001', async () => {
    const client = await openClient(gw.wsUrl, 'xmpp');
    const opened = Date.now();
    const keepalive = setInterval(() => {
      if (client.ws.readyState === WebSocket.OPEN) client.ws.send(' ');
    }, 250);
    const { code } = await client.closed;
    clearInterval(keepalive);
    expect(code).toBe(1001);
    // It outlived several idle periods: closed by the lifetime limit, not the idle timer.
    expect(Date.now() - opened).toBeGreaterThanOrEqual(2500);
  });

  it('posts to a connection count as activity', async () => {
    const client = await openClient(gw.wsUrl, 'xmpp');
    const id = await whoami(client);
    const sender = new ApiGatewayConnectionSender(gw.connectionsEndpoint);
    const started = Date.now();
    let stillOpenAfterIdle = false;
    while (Date.now() - started < 1800) {
      expect(await sender.send(id, ' ')).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
    }
    stillOpenAfterIdle = client.ws.readyState === WebSocket.OPEN;
    expect(stillOpenAfterIdle).toBe(true);
    client.ws.close();
    await client.closed;
  });
});

describe('local gateway shutdown', { timeout: 20_000 }, () => {
  it('close() closes sockets with 1001, handles their DISCONNECT records, and stops listening', async () => {
    const stack = echoStack();
    const gw = await stack.start();
    const client = await openClient(gw.wsUrl, 'xmpp');
    const id = await whoami(client);
    await gw.close();
    expect((await client.closed).code).toBe(1001);
    expect(stack.recordsOf(id).at(-1)!.messageAttributes.eventType!.stringValue).toBe('DISCONNECT');
    expect(gw.connectionIds()).toEqual([]);
    await expect(openClient(gw.wsUrl, 'xmpp')).rejects.toThrow();
  });

  it('close() gives up after drainTimeoutMs on records that keep failing, and delivers nothing afterwards', async () => {
    let calls = 0;
    const gw = await startGateway({
      port: 0,
      logger: quiet,
      redeliveryDelayMs: 20,
      maxReceiveCount: 1_000_000,
      drainTimeoutMs: 300,
      streamHandler: async () => {
        calls++;
        throw new Error('storage is down');
      },
    });
    const client = await openClient(gw.wsUrl);
    client.ws.send('<presence/>');
    await waitFor(() => calls > 1, 5000, 'redeliveries');
    await gw.close();
    const atClose = calls;
    await new Promise((r) => setTimeout(r, 300));
    expect(calls).toBe(atClose);
  });

  it('passes plain HTTP requests to the httpHandler hook', async () => {
    const stack = echoStack();
    const gw = await stack.start({
      httpHandler: (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('hello');
      },
    });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        request(gw.wsUrl.replace('ws:', 'http:').replace('/xmpp-websocket', '/'), (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve(text));
        })
          .on('error', reject)
          .end();
      });
      expect(body).toBe('hello');
    } finally {
      await gw.close();
    }
  });

  it('reports a WebSocket port that is taken', async () => {
    const stack = echoStack();
    const first = await stack.start();
    try {
      await expect(stack.start({ port: first.port })).rejects.toMatchObject({ code: 'PORT_IN_USE' });
    } finally {
      await first.close();
    }
  });
});
