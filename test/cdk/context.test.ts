import { describe, expect, it } from 'vitest';
import { RemovalPolicy } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { DEFAULT_STACK_NAME, servicePropsFromContext, stackNameFromContext } from '../../cdk/lib/context.ts';

const reader = (ctx: Record<string, unknown>) => (key: string) => ctx[key];

describe('context → props', () => {
  it('requires the domain with a clear message', () => {
    expect(() => servicePropsFromContext(reader({}))).toThrow(/Missing context "domain".*-c domain=example\.com/);
    expect(() => servicePropsFromContext(reader({ domain: '' }))).toThrow(/Missing context "domain"/);
  });

  it('leaves everything else to the construct defaults', () => {
    const props = servicePropsFromContext(reader({ domain: 'example.com' }));
    expect(props.domain).toBe('example.com');
    for (const key of ['federation', 'registration', 'componentListener', 'customDomain', 'logRetention', 'removalPolicy', 'tracing', 'throttle']) {
      expect(props[key as keyof typeof props], key).toBeUndefined();
    }
  });

  it('parses -c strings and cdk.json values', () => {
    const props = servicePropsFromContext(
      reader({
        domain: 'example.com',
        federation: 'true',
        components: true,
        componentSources: '203.0.113.7/32, 198.51.100.0/24',
        s2sInsecureDomains: 'old.example.net',
        registration: 'FALSE',
        federationAzs: '1',
        logRetentionDays: '90',
        removalPolicy: 'destroy',
        logLevel: 'debug',
        tracing: 'true',
        dashboard: 'false',
        throttleRate: '500',
        customDomain: 'xmpp.example.com',
        certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abc',
        customDomainPath: '',
        pushSummary: 'true',
        contactAddresses: 'abuse=mailto:abuse@example.com,xmpp:abuse@example.com',
        turnHost: 'turn.example.com',
        admins: 'boss@example.com, ops@example.com',
        turnSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf',
      }),
    );
    expect(props).toMatchObject({
      pushSummary: true,
      contactAddresses: 'abuse=mailto:abuse@example.com,xmpp:abuse@example.com',
      admins: ['boss@example.com', 'ops@example.com'],
      turn: { host: 'turn.example.com', secretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf' },
      federation: true,
      componentListener: true,
      componentSources: ['203.0.113.7/32', '198.51.100.0/24'],
      s2sInsecureDomains: ['old.example.net'],
      registration: false,
      federationAzs: 1,
      logRetention: logs.RetentionDays.THREE_MONTHS,
      removalPolicy: RemovalPolicy.DESTROY,
      logLevel: lambda.ApplicationLogLevel.DEBUG,
      tracing: true,
      dashboard: false,
      throttle: { rateLimit: 500, burstLimit: 1000 },
      customDomain: { domainName: 'xmpp.example.com', certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abc' },
    });
    expect(servicePropsFromContext(reader({ domain: 'example.com', federation: 'false' })).federation).toBe(false);
  });

  it('rejects bad values clearly', () => {
    const bad = (ctx: Record<string, unknown>) => () => servicePropsFromContext(reader({ domain: 'example.com', ...ctx }));
    expect(bad({ federation: 'yes please' })).toThrow(/"federation" must be true or false/);
    expect(bad({ customDomain: 'xmpp.example.com' })).toThrow(/needs "certificateArn"/);
    expect(bad({ certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abc' })).toThrow(/only used with "customDomain"/);
    expect(bad({ logRetentionDays: '42' })).toThrow(/"logRetentionDays" must be one of/);
    expect(bad({ removalPolicy: 'snapshot' })).toThrow(/retain or destroy/);
    expect(bad({ logLevel: 'loud' })).toThrow(/"logLevel" must be one of/);
    expect(bad({ federationAzs: 'two' })).toThrow(/positive integer/);
    expect(bad({ resumeSeconds: '-1' })).toThrow(/"resumeSeconds" must be a whole number of seconds/);
    expect(bad({ contactAddresses: 'abuse=abuse@example.com' })).toThrow(/Context "contactAddresses": abuse needs URIs/);
    expect(bad({ contactAddresses: 'boss=mailto:b@example.com' })).toThrow(/kind one of abuse, admin/);
    expect(bad({ turnHost: 'turn.example.com' })).toThrow(/"turnHost" and "turnSecretArn" go together/);
    expect(bad({ admins: 'boss@example.com/desk' })).toThrow(/"admins" takes bare JIDs/);
    expect(servicePropsFromContext(reader({ domain: 'example.com', resumeSeconds: '0' })).smResumeSeconds).toBe(0);
  });

  it('names the stack', () => {
    expect(stackNameFromContext(reader({}))).toBe(DEFAULT_STACK_NAME);
    expect(stackNameFromContext(reader({ stackName: 'xmpp-prod' }))).toBe('xmpp-prod');
    expect(() => stackNameFromContext(reader({ stackName: 'bad name' }))).toThrow(/stack name/);
  });
});
