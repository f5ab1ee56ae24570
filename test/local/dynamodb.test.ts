import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTable } from '../../shared/storage/table.ts';
import {
  checkJava,
  findFreePort,
  localDynamoClient,
  startDynamoDbLocal,
  LocalStackError,
  type DynamoDbLocal,
} from '../../local/dynamodb.ts';

describe('DynamoDB Local (in memory)', () => {
  let ddb: DynamoDbLocal;

  beforeAll(async () => {
    ddb = await startDynamoDbLocal({ inMemory: true });
  }, 90_000);

  afterAll(async () => {
    await ddb?.stop();
  });

  it('answers on a loopback endpoint', () => {
    expect(ddb.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(ddb.dbPath).toBeUndefined();
  });

  it('ensureTable creates the table once, then finds it', async () => {
    const client = localDynamoClient(ddb.endpoint);
    try {
      expect(await ensureTable(client, 'xmpp-test')).toBe('created');
      expect(await ensureTable(client, 'xmpp-test')).toBe('exists');
    } finally {
      client.destroy();
    }
  });

  it('stop() is idempotent and ends the Java process', async () => {
    const other = await startDynamoDbLocal({ inMemory: true });
    await other.stop();
    await other.stop();
    expect(other.process.exitCode !== null || other.process.signalCode !== null).toBe(true);
  }, 90_000);
});

describe('DynamoDB Local start-up errors', () => {
  it('reports a port that is taken', async () => {
    const port = await findFreePort();
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(port, r));
    try {
      await expect(startDynamoDbLocal({ inMemory: true, port })).rejects.toMatchObject({ code: 'PORT_IN_USE' });
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it('reports a missing java', () => {
    let error: unknown;
    try {
      checkJava('java-does-not-exist-here');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(LocalStackError);
    expect((error as LocalStackError).code).toBe('JAVA_MISSING');
    expect((error as Error).message).toMatch(/Java/);
  });

  it('finds the installed java', () => {
    expect(checkJava().major).toBeGreaterThanOrEqual(17);
  });
});

describe('DynamoDB Local (persistent)', () => {
  it('keeps tables under <dataDir>/dynamodb across restarts', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'xmpp-ddb-'));
    try {
      let ddb = await startDynamoDbLocal({ dataDir });
      expect(ddb.dbPath).toBe(join(dataDir, 'dynamodb'));
      let client = localDynamoClient(ddb.endpoint);
      expect(await ensureTable(client, 'persisted')).toBe('created');
      client.destroy();
      await ddb.stop();
      expect(existsSync(join(dataDir, 'dynamodb'))).toBe(true);
      expect(readdirSync(join(dataDir, 'dynamodb')).length).toBeGreaterThan(0);

      ddb = await startDynamoDbLocal({ dataDir });
      client = localDynamoClient(ddb.endpoint);
      expect(await ensureTable(client, 'persisted')).toBe('exists');
      client.destroy();
      await ddb.stop();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
