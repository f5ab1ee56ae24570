import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { App } from 'aws-cdk-lib';
import { servicePropsFromContext, stackNameFromContext } from '../../cdk/lib/context.ts';
import { XmppStack } from '../../cdk/lib/xmpp-stack.ts';

describe('the app with the real Lambda entry points', () => {
  // What `npx cdk synth -c domain=example.com` does, minus the CLI.
  it('synthesizes and bundles lambdas/connect.ts and lambdas/stream.ts as loadable ESM', () => {
    const outdir = mkdtempSync(path.join(tmpdir(), 'xmpp-cdk-app-'));
    const app = new App({ outdir, context: { domain: 'example.com' } });
    const read = (key: string): unknown => app.node.tryGetContext(key);
    new XmppStack(app, stackNameFromContext(read), { service: servicePropsFromContext(read) });
    const assembly = app.synth();
    const template = assembly.getStackByName('Xmpp').template as { Resources: Record<string, { Type: string }> };
    // Connect, stream, and room fan-out (the stream bundle on the job queue).
    expect(Object.values(template.Resources).filter((r) => r.Type === 'AWS::Lambda::Function')).toHaveLength(3);

    const bundles = readdirSync(outdir)
      .filter((d) => d.startsWith('asset.'))
      .map((d) => path.join(outdir, d, 'index.mjs'))
      .filter((f) => existsSync(f));
    expect(bundles).toHaveLength(2);
    for (const bundle of bundles) {
      expect(readFileSync(bundle, 'utf8').startsWith('import { createRequire')).toBe(true);
      // Loaded by plain Node, as the Lambda runtime does (no bundler-side module resolution).
      const exported = execFileSync(
        process.execPath,
        ['--enable-source-maps', '--input-type=module', '-e', `const m = await import(${JSON.stringify(bundle)}); console.log(typeof m.handler);`],
        { encoding: 'utf8', env: { ...process.env, XMPP_DOMAIN: 'example.com' } },
      );
      expect(exported.trim()).toBe('function');
    }
  }, 60_000);
});
