/**
 * The lean DynamoDB client (shared/storage/lean-dynamodb.ts) against DynamoDB Local, side by side
 * with the SDK's document client on the same table: every command the stores send answers the
 * same, errors have the SDK's names and fields, throttling is retried with backoff and then given
 * up, and two clients racing one conditional write (two handler instances) get one winner.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import { BatchGetCommand, BatchWriteCommand, DeleteCommand, GetCommand, PutCommand, QueryCommand, ScanCommand, UpdateCommand } from '../../shared/storage/commands.ts';
import { sdkDocumentClient } from '../../shared/storage/sdk-document-client.ts';
import { addDynamoClientHook, DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { inFrame, newFrame } from '../../shared/storage/frame-context.ts';
import { LeanDynamoClient, leanOptionsFromEnv, signedHeaders } from '../../shared/storage/lean-dynamodb.ts';
import { leanClientHooks } from '../../shared/storage/dynamo-hooks.ts';
import { ensureTable } from '../../shared/storage/table.ts';
import { sdkSignature } from './sigv4-reference.ts';

const endpoint = inject('dynamoEndpoint');
const TableName = `lean${randomBytes(5).toString('hex')}`;
const credentials = { accessKeyId: 'local', secretAccessKey: 'local' };
const base = new DynamoDBClient({ endpoint, region: 'local', credentials });
// The SDK's document client, carrying the same command objects as the stores use it.
const sdk = sdkDocumentClient(base);
const lean = new LeanDynamoClient({ endpoint, region: 'local', credentials, maxAttempts: 3 });
const second = new LeanDynamoClient({ endpoint, region: 'local', credentials, maxAttempts: 3 });

/** An answer without its $metadata (which differs in request ids and timing). */
const body = ({ $metadata, ...rest }: Record<string, unknown>) => Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined));

beforeAll(async () => {
  await ensureTable(base, TableName);
});
afterAll(() => {
  lean.destroy();
  second.destroy();
  base.destroy();
});

describe('the lean DynamoDB client', () => {
  it('answers every command the stores send as the SDK document client does', async () => {
    const item = { pk: 'user#a', sk: 'x', n: 3, list: ['a', 1, { deep: true }], set: new Set(['s1', 's2']), nothing: null, gone: undefined };
    expect(body(await lean.send(new PutCommand({ TableName, Item: item, ReturnValues: 'ALL_OLD' })))).toEqual({});
    const key = { pk: 'user#a', sk: 'x' };
    expect(body(await lean.send(new GetCommand({ TableName, Key: key, ConsistentRead: true })))).toEqual(body(await sdk.send(new GetCommand({ TableName, Key: key, ConsistentRead: true }))));
    expect((await lean.send(new GetCommand({ TableName, Key: key, ConsistentRead: true }))).Item).toEqual({ pk: 'user#a', sk: 'x', n: 3, list: ['a', 1, { deep: true }], set: new Set(['s1', 's2']), nothing: null });
    const update = { TableName, Key: key, UpdateExpression: 'SET n = n + :one', ExpressionAttributeValues: { ':one': 1 }, ReturnValues: 'ALL_NEW' as const };
    expect((await lean.send(new UpdateCommand(update))).Attributes?.n).toBe(4);
    expect((await sdk.send(new UpdateCommand(update))).Attributes?.n).toBe(5);

    const items = Array.from({ length: 30 }, (_, i) => ({ pk: 'user#b', sk: `m#${String(i).padStart(2, '0')}`, i }));
    expect(body(await lean.send(new BatchWriteCommand({ RequestItems: { [TableName]: items.slice(0, 25).map((Item) => ({ PutRequest: { Item } })) } })))).toEqual({ UnprocessedItems: {} });
    await lean.send(new BatchWriteCommand({ RequestItems: { [TableName]: items.slice(25).map((Item) => ({ PutRequest: { Item } })) } }));
    const query = { TableName, KeyConditionExpression: 'pk = :pk AND begins_with(sk, :m)', ExpressionAttributeValues: { ':pk': 'user#b', ':m': 'm#' }, Limit: 7 };
    const page = await lean.send(new QueryCommand(query));
    expect(body(page)).toEqual(body(await sdk.send(new QueryCommand(query))));
    const next = await lean.send(new QueryCommand({ ...query, ExclusiveStartKey: page.LastEvaluatedKey as Record<string, unknown> }));
    expect(next.Items!.map((i) => i.i)).toEqual([7, 8, 9, 10, 11, 12, 13]);
    const keys = [{ pk: 'user#b', sk: 'm#03' }, { pk: 'user#b', sk: 'm#29' }, { pk: 'user#none', sk: 'x' }];
    const got = await lean.send(new BatchGetCommand({ RequestItems: { [TableName]: { Keys: keys, ConsistentRead: true } } }));
    expect(got.Responses![TableName]!.map((i) => i.i).sort((a, b) => a - b)).toEqual([3, 29]);
    const scan = await lean.send(new ScanCommand({ TableName, FilterExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': 'user#b' } }));
    expect(scan.Items).toHaveLength(30);
    await lean.send(new BatchWriteCommand({ RequestItems: { [TableName]: [{ DeleteRequest: { Key: { pk: 'user#b', sk: 'm#00' } } }] } }));
    expect(body(await lean.send(new DeleteCommand({ TableName, Key: key, ReturnValues: 'ALL_OLD' })))).toMatchObject({ Attributes: { n: 5 } });
    expect(body(await sdk.send(new GetCommand({ TableName, Key: { pk: 'user#b', sk: 'm#00' } })))).toEqual({});
  });

  it("gives a failed condition the SDK's error: its name, and the old item left marshalled as the SDK leaves it", async () => {
    const Key = { pk: 'user#c', sk: 'sm' };
    await lean.send(new PutCommand({ TableName, Item: { ...Key, acked: 2 } }));
    const update = { TableName, Key, UpdateExpression: 'SET acked = :a', ConditionExpression: 'acked = :old', ExpressionAttributeValues: { ':a': 3, ':old': 1 }, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const };
    const fromLean = (await lean.send(new UpdateCommand(update)).catch((e: unknown) => e)) as Record<string, unknown>;
    const fromSdk = (await sdk.send(new UpdateCommand(update)).catch((e: unknown) => e)) as Record<string, unknown>;
    expect(fromLean).toBeInstanceOf(Error);
    expect(fromLean.name).toBe('ConditionalCheckFailedException');
    expect(fromLean.name).toBe(fromSdk.name);
    expect(fromLean.Item).toEqual(fromSdk.Item);
    expect(fromLean.Item).toEqual({ pk: { S: 'user#c' }, sk: { S: 'sm' }, acked: { N: '2' } });
    expect(fromLean.$metadata).toMatchObject({ httpStatusCode: 400, attempts: 1 });
    const bad = await lean.send(new GetCommand({ TableName, Key: { pk: 'user#c' } })).catch((e: Error) => e);
    expect(bad).toMatchObject({ name: 'ValidationException', $fault: 'client' });
  });

  it('retries throttling with backoff (each attempt passes the attempt hooks) and gives up after its attempts with the error', async () => {
    const throttling = new LeanDynamoClient({ endpoint, region: 'local', credentials, maxAttempts: 3 });
    let failures = 2;
    let attempts = 0;
    leanClientHooks(throttling).aroundAttempt('throttle', async (_call, next) => {
      attempts += 1;
      if (failures-- > 0) throw Object.assign(new Error('slow down'), { name: 'ProvisionedThroughputExceededException' });
      return next();
    });
    const out = await throttling.send(new GetCommand({ TableName, Key: { pk: 'user#c', sk: 'sm' } }));
    expect(out.$metadata.attempts).toBe(3);
    expect(attempts).toBe(3);
    failures = 5;
    attempts = 0;
    await expect(throttling.send(new GetCommand({ TableName, Key: { pk: 'user#c', sk: 'sm' } }))).rejects.toMatchObject({ name: 'ProvisionedThroughputExceededException', $metadata: { attempts: 3 } });
    expect(attempts).toBe(3);
    // Not retried: an error the request itself causes.
    attempts = 0;
    failures = 0;
    await expect(throttling.send(new GetCommand({ TableName, Key: { pk: 'user#c' } }))).rejects.toMatchObject({ name: 'ValidationException' });
    expect(attempts).toBe(1);
    throttling.destroy();
  });

  it('two clients (two handler instances) racing one conditional write: exactly one wins, the other gets the failed condition', async () => {
    for (let round = 0; round < 10; round++) {
      const Item = { pk: 'claim#race', sk: String(round) };
      const claim = (c: LeanDynamoClient, owner: string) =>
        c.send(new PutCommand({ TableName, Item: { ...Item, owner }, ConditionExpression: 'attribute_not_exists(pk)' })).then(() => owner, (e: Error) => e.name);
      const results = await Promise.all([claim(lean, 'one'), claim(second, 'two')]);
      expect(results.filter((r) => r === 'ConditionalCheckFailedException')).toHaveLength(1);
      const winner = results.find((r) => r !== 'ConditionalCheckFailedException');
      expect((await sdk.send(new GetCommand({ TableName, Key: Item, ConsistentRead: true }))).Item?.owner).toBe(winner);
    }
  });

  it('refuses a command it does not know rather than send it half-understood', async () => {
    await expect(lean.send(new TransactWriteCommand({ TransactItems: [] }))).rejects.toThrow(/TransactWriteCommand is not supported/);
  });

  it('takes its credentials and region from the environment, or is not used', () => {
    expect(leanOptionsFromEnv(undefined, 5, { AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 's', AWS_SESSION_TOKEN: 't' })).toEqual({
      endpoint: undefined,
      region: 'eu-west-1',
      credentials: { accessKeyId: 'AKIA', secretAccessKey: 's', sessionToken: 't' },
      maxAttempts: 5,
    });
    expect(leanOptionsFromEnv(undefined, 5, { AWS_REGION: 'eu-west-1' })).toBeUndefined(); // Fargate: the container's endpoint has them
  });
});

describe("a store on the SDK's client (the Fargate service, XMPP_AWS_CLIENT=sdk)", () => {
  it('makes the client at its first request and gives it the hooks added before, the frame gate among them', async () => {
    const saved = { ...process.env };
    // As on Fargate the region is in the environment (the credentials come from the container endpoint there).
    Object.assign(process.env, { XMPP_AWS_CLIENT: 'sdk', AWS_REGION: 'local', AWS_ACCESS_KEY_ID: 'local', AWS_SECRET_ACCESS_KEY: 'local' });
    const names: string[] = [];
    const removeHook = addDynamoClientHook((hooks) =>
      hooks.aroundCall('testCounter', (call, next) => {
        names.push(call.name);
        return next();
      }),
    );
    try {
      const store = new DynamoStore({ tableName: TableName, endpoint });
      expect(store.doc).not.toBeInstanceOf(LeanDynamoClient);
      await store.doc.send(new PutCommand({ TableName, Item: { pk: 'user#sdk', sk: 'x', n: 1 } }));
      expect((await store.doc.send(new GetCommand({ TableName, Key: { pk: 'user#sdk', sk: 'x' }, ConsistentRead: true }))).Item).toEqual({ pk: 'user#sdk', sk: 'x', n: 1 });
      expect(names).toEqual(['PutItemCommand', 'GetItemCommand']);
      // The frame gate holds a write until the frame lets effects out (frame-context.ts).
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const key = { pk: 'user#sdk', sk: 'gated' };
      const write = inFrame(() => store.doc.send(new PutCommand({ TableName, Item: key })), newFrame({ gate }));
      await new Promise((r) => setTimeout(r, 100));
      expect((await sdk.send(new GetCommand({ TableName, Key: key, ConsistentRead: true }))).Item).toBeUndefined();
      open();
      await write;
      expect((await sdk.send(new GetCommand({ TableName, Key: key, ConsistentRead: true }))).Item).toEqual(key);
      store.doc.destroy();
    } finally {
      removeHook();
      process.env = saved;
    }
  });
});

describe('the lean client signs as the SDK does', () => {
  it("gives a DynamoDB request the same SigV4 signature as the SDK's own signer (DynamoDB Local checks none, so this is what stands for AWS)", async () => {
    const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', sessionToken: 'FwoGZXIvYXdzEXAMPLE' };
    const url = new URL('https://dynamodb.eu-west-1.amazonaws.com');
    const body = JSON.stringify({ TableName: 'xmpp', Key: { pk: { S: 'user#alice@example.org' }, sk: { S: 'conn#A=b/c' } }, ConsistentRead: true });
    const date = new Date('2026-12-07T12:00:00Z');
    const ours = signedHeaders(url, { region: 'eu-west-1', credentials }, 'GetItem', body, date);
    const reference = await sdkSignature(
      { method: 'POST', url, path: '/', headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.GetItem', 'content-length': String(Buffer.byteLength(body)) }, body },
      'dynamodb',
      'eu-west-1',
      credentials,
      date,
    );
    expect(ours.Authorization).toBe(reference.authorization);
    expect(ours['X-Amz-Date']).toBe(reference['x-amz-date']);
    expect(ours['X-Amz-Security-Token']).toBe(credentials.sessionToken);
  });
});
