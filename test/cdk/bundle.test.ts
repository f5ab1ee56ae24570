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
  it('loads neither the S3 nor the SQS client nor SASLprep (only a password in the clear needs it) at init', () => {
    const loaded = bundles.stream.composition.map((c) => c.from);
    expect(loaded).toContain('@aws-sdk/client-dynamodb');
    expect(loaded.filter((from) => /client-s3|client-sqs|s3-request-presigner|nested-clients|saslprep/.test(from))).toEqual([]);
    expect(bundles.stream.deployedBytes).toBeGreaterThan(bundles.stream.bytes);
  });

  it('has every on-demand chunk resolvable and linkable, with the S3 client and presigner among them', () => {
    const dir = join(dirname(bundles.stream.path), 'chunks');
    const chunks = readdirSync(dir).filter((f) => f.endsWith('.mjs'));
    const script = `for (const f of ${JSON.stringify(chunks)}) { const m = await import(${JSON.stringify(dir + '/')} + f); if (!m) throw new Error(f); }
const names = new Set(); for (const f of ${JSON.stringify(chunks)}) for (const k of Object.keys(await import(${JSON.stringify(dir + '/')} + f))) names.add(k);
console.log(JSON.stringify([...names]));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { PATH: process.env.PATH, AWS_REGION: 'local' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const exported = JSON.parse(r.stdout) as string[];
    expect(exported).toEqual(expect.arrayContaining(['S3Client', 'PutObjectCommand', 'getSignedUrl', 'SQSClient', 'SendMessageCommand']));
  });
});
