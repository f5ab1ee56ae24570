import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { App, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks, ServerlessChecks } from 'cdk-nag';
import { XmppStack } from '../../cdk/lib/xmpp-stack.ts';
import type { XmppServiceProps } from '../../cdk/lib/xmpp-service.ts';
import { FIXTURE_ENTRIES } from './helpers.ts';

/**
 * cdk-nag's AwsSolutions and Serverless packs over the stack in each shape it can be deployed in.
 * Every finding is either fixed or acknowledged with its reason where the resource is made
 * (cdk/lib/nag.ts); a new resource that trips a rule fails here until one of the two is done.
 */
interface Finding {
  rule: string;
  severity: string;
  path: string;
}

function nagFindings(props: Partial<XmppServiceProps>, extend?: (stack: XmppStack) => void): Finding[] {
  const outdir = mkdtempSync(path.join(tmpdir(), 'xmpp-nag-'));
  const app = new App({ outdir });
  const stack = new XmppStack(app, 'XmppNag', { service: { domain: 'example.com', entries: FIXTURE_ENTRIES, ...props } });
  extend?.(stack);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app), new ServerlessChecks(app));
  try {
    app.synth();
  } catch (err) {
    // Findings of severity "error" make synth throw after writing the report, read below.
    if ((err as Error).name !== 'ValidationFailed' && !/Validation failed/.test((err as Error).message)) throw err;
  }
  const report = JSON.parse(readFileSync(path.join(outdir, 'validation-report.json'), 'utf8')) as {
    pluginReports: Array<{ violations: Array<{ ruleName: string; severity: string; violatingConstructs: Array<{ constructPath: string }> }> }>;
  };
  return report.pluginReports.flatMap((plugin) =>
    plugin.violations.flatMap((v) => v.violatingConstructs.map((c) => ({ rule: v.ruleName, severity: v.severity, path: c.constructPath }))),
  );
}

describe('cdk-nag (AwsSolutions and Serverless packs)', () => {
  it('finds nothing unacknowledged in the default stack', () => {
    expect(nagFindings({})).toEqual([]);
  });

  it('finds nothing unacknowledged with every option on (federation, components, native clients, uploads, web client, tracing, custom domain)', () => {
    const findings = nagFindings({
      federation: true,
      componentListener: true,
      tcpClients: true,
      componentSources: ['10.0.0.0/8'],
      uploads: { publicRead: true },
      webClient: true,
      registration: true,
      tracing: true,
      removalPolicy: RemovalPolicy.DESTROY,
      customDomain: { domainName: 'xmpp.example.com', certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abc', basePath: '' },
    });
    expect(findings).toEqual([]);
  });

  it('reports a resource nobody looked at (the check above can fail)', () => {
    const findings = nagFindings({}, (stack) => new s3.Bucket(stack, 'Unreviewed'));
    expect(findings.map((f) => `${f.rule} ${f.path}`)).toEqual(
      expect.arrayContaining(['AwsSolutions-S1 XmppNag/Unreviewed/Resource', 'AwsSolutions-S10 XmppNag/Unreviewed/Resource']),
    );
  });
});
