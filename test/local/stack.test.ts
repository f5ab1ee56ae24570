import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import type { SQSEvent } from 'aws-lambda';
import { ApiGatewayConnectionSender } from '../../shared/transport/connections.ts';
import { localDynamoClient, findFreePort } from '../../local/dynamodb.ts';
import { startLocalStack, LOCAL_STACK_INFO_FILE, type LocalStack } from '../../local/stack.ts';
import { openClient } from './helpers.ts';

const quiet = { info: () => {}, warn: () => {}, error: () => {} };
const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" version="1.0" to="%s"/>';

describe('local stack', { timeout: 120_000 }, () => {
  const started: LocalStack[] = [];
  afterAll(async () => {
    for (const stack of started) await stack.stop();
  });

  it('starts DynamoDB Local with the table, sets the environment, and feeds the given handlers', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-stack-'));
    let seenEnv: Record<string, string | undefined> = {};
    const stack = await startLocalStack({
      inMemory: true,
      dataDir,
      wsPort: 0,
      domain: 'Example.Test',
      idleSeconds: 30,
      logger: quiet,
      env: { XMPP_TABLE: 'xmpp-stack-test' },
      streamHandler: async (event: SQSEvent) => {
        seenEnv = { ...process.env };
        const sender = new ApiGatewayConnectionSender(process.env.XMPP_CONNECTIONS_ENDPOINT!);
        for (const r of event.Records) {
          if (r.messageAttributes.eventType?.stringValue === 'MESSAGE') {
            await sender.send(r.messageAttributes.connectionId!.stringValue!, `echo ${r.body}`);
          }
        }
      },
    });
    started.push(stack);
    try {
      expect(stack.domain).toBe('example.test');
      expect(stack.tableName).toBe('xmpp-stack-test');
      expect(stack.wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/xmpp-websocket$/);
      const client = localDynamoClient(stack.dynamoEndpoint);
      const table = await client.send(new DescribeTableCommand({ TableName: 'xmpp-stack-test' }));
      client.destroy();
      expect(table.Table?.KeySchema?.map((k) => k.AttributeName)).toEqual(['pk', 'sk']);

      // no connect handler given: the real lambdas/connect.ts decides (echoes xmpp)
      const ws = await openClient(stack.wsUrl, 'xmpp');
      expect(ws.ws.protocol).toBe('xmpp');
      ws.ws.send('hello');
      expect(await ws.next()).toBe('echo hello');
      expect(seenEnv).toMatchObject({
        XMPP_DOMAIN: 'example.test',
        XMPP_TABLE: 'xmpp-stack-test',
        XMPP_DYNAMODB_ENDPOINT: stack.dynamoEndpoint,
        XMPP_CONNECTIONS_ENDPOINT: stack.connectionsEndpoint,
        XMPP_REGISTRATION: 'true',
        XMPP_IDLE_SECONDS: '30',
        AWS_REGION: 'local',
      });
      expect(seenEnv.AWS_ACCESS_KEY_ID).toBeTruthy();
      expect(seenEnv.AWS_SECRET_ACCESS_KEY).toBeTruthy();
      ws.ws.close();
      await ws.closed;
      // in memory: no info file for xmppctl
      expect(existsSync(join(dataDir, LOCAL_STACK_INFO_FILE))).toBe(false);
    } finally {
      await stack.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a WebSocket port that is taken, before starting anything', async () => {
    const port = await findFreePort('127.0.0.1');
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      await expect(startLocalStack({ inMemory: true, wsPort: port, logger: quiet })).rejects.toMatchObject({
        code: 'PORT_IN_USE',
      });
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it('writes <dataDir>/local-stack.json for xmppctl while a persistent stack runs', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-stack-'));
    const stack = await startLocalStack({
      dataDir,
      wsPort: 0,
      logger: quiet,
      streamHandler: async () => {},
      connectHandler: async () => ({ statusCode: 200 }),
    });
    started.push(stack);
    try {
      const info = JSON.parse(readFileSync(join(dataDir, LOCAL_STACK_INFO_FILE), 'utf8'));
      expect(info).toEqual({
        pid: process.pid,
        domain: 'localhost',
        tableName: stack.tableName,
        dynamoEndpoint: stack.dynamoEndpoint,
        wsUrl: stack.wsUrl,
        connectionsEndpoint: stack.connectionsEndpoint,
      });
      expect(existsSync(join(dataDir, 'dynamodb'))).toBe(true);
    } finally {
      await stack.stop();
    }
    expect(existsSync(join(dataDir, LOCAL_STACK_INFO_FILE))).toBe(false);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs the real Lambda handlers; a later stack in the same process gets fresh ones', async () => {
    for (const domain of ['localhost', 'second.test']) {
      const stack = await startLocalStack({ inMemory: true, wsPort: 0, domain, logger: quiet, env: { XMPP_TABLE: 'xmpp' } });
      started.push(stack);
      try {
        // the real connect handler refuses clients that do not ask for xmpp
        const refused = await openClient(stack.wsUrl, 'chat').then(
          () => false,
          () => true,
        );
        expect(refused).toBe(true);
        const client = await openClient(stack.wsUrl, 'xmpp');
        client.ws.send(OPEN.replace('%s', domain));
        const open = await client.next(30_000);
        expect(open).toMatch(/^<open /);
        expect(open).toContain(`from="${domain}"`);
        expect(await client.next(30_000)).toMatch(/features/);
        client.ws.close();
        await client.closed;
      } finally {
        await stack.stop();
      }
    }
  });
});
