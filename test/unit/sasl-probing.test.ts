/**
 * Account probing through SASL (issue 13): an unknown user must get the answer a real one gets,
 * the same salt on every attempt and the iterations new accounts get, so SCRAM's first step does
 * not tell who has an account. Frames go through handleFrame on three instances over DynamoDB Local.
 */
import { randomBytes } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { sdkDocumentClient } from '../../shared/storage/sdk-document-client.ts';
import { beforeAll, describe, expect, it, inject } from 'vitest';
import { readOrCreateServerSecret } from '../../shared/storage/server-secret.ts';
import { ensureTable } from '../../shared/storage/table.ts';
import { addAccount, Connection, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;
beforeAll(async () => {
  h = await startHarness(3);
  await addAccount(h, 'realuser@localhost');
});

const OPEN = '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>';

/** The server-first-message's attributes for a SCRAM-SHA-1 or -256 start as `username`. */
async function serverFirst(username: string, mechanism = 'SCRAM-SHA-256'): Promise<{ s: string; i: string }> {
  const c = new Connection(h);
  await c.frame(OPEN);
  const clientFirst = `n,,n=${username},r=${randomBytes(12).toString('base64')}`;
  await c.frame(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="${mechanism}">${Buffer.from(clientFirst).toString('base64')}</auth>`);
  const [challenge] = c.posts('<challenge');
  const text = Buffer.from(/>([^<]*)</.exec(challenge!)![1]!, 'base64').toString();
  const attrs = Object.fromEntries(text.split(',').map((p) => [p[0], p.slice(2)]));
  return { s: attrs.s!, i: attrs.i! };
}

describe('SCRAM for an account that does not exist', () => {
  it('gives the same salt on every attempt, shaped like a real one, with the iterations of new accounts', async () => {
    const real = await serverFirst('realuser');
    const first = await serverFirst('nobody');
    const again = await serverFirst('nobody');
    expect(again).toEqual(first);
    expect(first.i).toBe(real.i);
    expect(first.i).toBe(String(h.config.scramIterations));
    expect(Buffer.from(first.s, 'base64')).toHaveLength(Buffer.from(real.s, 'base64').length);
    // Names are normalized as account names are; other names and the other hash get other salts.
    expect(await serverFirst('NoBody')).toEqual(first);
    expect((await serverFirst('somebody')).s).not.toBe(first.s);
    expect((await serverFirst('nobody', 'SCRAM-SHA-1')).s).not.toBe(first.s);
  });

  it('uses one server secret even when instances make it at the same moment', async () => {
    const endpoint = inject('dynamoEndpoint');
    const client = new DynamoDBClient({ endpoint, region: 'local', credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
    const table = `s${randomBytes(6).toString('hex')}`;
    await ensureTable(client, table);
    // Separate document clients stand for separate Lambda instances; none has it cached.
    const instances = Array.from({ length: 5 }, () => ({ doc: sdkDocumentClient(client), table }));
    const secrets = await Promise.all(instances.map((db) => readOrCreateServerSecret(db)));
    expect(new Set(secrets.map((s) => s.toString('base64'))).size).toBe(1);
    expect(secrets[0]).toHaveLength(32);
    expect((await readOrCreateServerSecret(instances[0]!)).equals(secrets[0]!)).toBe(true);
    client.destroy();
  });
});
