/**
 * The stream Lambda's real bundle (cdk/lib/bundle.ts on lambdas/stream.ts, as `cdk deploy` stages
 * it): what a cold start loads leaves out the clients few frames need, and those chunks, loaded on
 * demand, resolve and link in a fresh Node process (a chunk that failed to would only show in AWS,
 * at the first upload or federation hand-off).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleLambdas } from '../../bench/lambdas.ts';

const bundles = await bundleLambdas();
afterAll(() => bundles.cleanup());

describe('the stream Lambda bundle', () => {
  it('loads no AWS SDK client at init (the lean clients carry DynamoDB and @connections), nor SASLprep (only a password in the clear needs it)', () => {
    const loaded = bundles.stream.composition.map((c) => c.from);
    expect(loaded).toContain('aws4');
    expect(loaded.filter((from) => /@aws-sdk\/(client-|lib-|core|credential)|@smithy|saslprep/.test(from))).toEqual([]);
    expect(bundles.stream.deployedBytes).toBeGreaterThan(bundles.stream.bytes);
  });

  it('has every on-demand chunk resolvable and linkable, with the SDK clients among them (S3, SQS, and DynamoDB and @connections for XMPP_AWS_CLIENT=sdk)', () => {
    const dir = join(dirname(bundles.stream.path), 'chunks');
    const chunks = readdirSync(dir).filter((f) => f.endsWith('.mjs'));
    const script = `for (const f of ${JSON.stringify(chunks)}) { const m = await import(${JSON.stringify(dir + '/')} + f); if (!m) throw new Error(f); }
const names = new Set(); for (const f of ${JSON.stringify(chunks)}) for (const k of Object.keys(await import(${JSON.stringify(dir + '/')} + f))) names.add(k);
console.log(JSON.stringify([...names]));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { PATH: process.env.PATH, AWS_REGION: 'local' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const exported = JSON.parse(r.stdout) as string[];
    expect(exported).toEqual(
      expect.arrayContaining(['S3Client', 'PutObjectCommand', 'getSignedUrl', 'SQSClient', 'SendMessageCommand', 'DynamoDBClient', 'DynamoDBDocumentClient', 'ApiGatewayManagementApiClient', 'PostToConnectionCommand']),
    );
  });
});
