/**
 * The optional web client site (cdk/lib/web-client.ts): S3 + CloudFront serving the page of
 * `npm start` and XEP-0156 host-meta, pointed at the deployed WebSocket URL. Off by default.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Match } from 'aws-cdk-lib/assertions';
import { servicePropsFromContext } from '../../cdk/lib/context.ts';
import { resourcesOfType, synth, text, type Synthesized } from './helpers.ts';

const WEB_TYPES = [
  'AWS::S3::Bucket',
  'AWS::CloudFront::Distribution',
  'AWS::CloudFront::OriginAccessControl',
  'AWS::CloudFront::ResponseHeadersPolicy',
  'Custom::CDKBucketDeployment',
];

let off: Synthesized;
let on: Synthesized;

beforeAll(() => {
  off = synth();
  on = synth({ webClient: true, registration: true });
}, 120_000);

/** The value of a Fn::Join / plain string, rendered with the WebSocket URL's tokens left in. */
const flat = (v: unknown) => text(v);

describe('web client site', () => {
  it('does not exist unless enabled', () => {
    for (const type of WEB_TYPES) expect(resourcesOfType(off, type), type).toHaveLength(0);
    expect(off.json.Outputs?.WebClientUrl).toBeUndefined();
  });

  it('is a private bucket behind CloudFront with origin access control, HTTPS only', () => {
    on.template.resourceCountIs('AWS::S3::Bucket', 1);
    on.template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: Match.objectLike({}),
    });
    on.template.resourceCountIs('AWS::CloudFront::Distribution', 1);
    on.template.hasResourceProperties('AWS::CloudFront::Distribution', {
      DistributionConfig: Match.objectLike({
        DefaultRootObject: 'index.html',
        DefaultCacheBehavior: Match.objectLike({ ViewerProtocolPolicy: 'redirect-to-https' }),
        CacheBehaviors: [Match.objectLike({ PathPattern: '/.well-known/*', ViewerProtocolPolicy: 'redirect-to-https' })],
        Origins: [Match.objectLike({ OriginAccessControlId: Match.anyValue() })],
      }),
    });
    // Only CloudFront may read the bucket, and only over TLS.
    const [, policy] = resourcesOfType(on, 'AWS::S3::BucketPolicy')[0]!;
    const statements = policy.Properties!.PolicyDocument.Statement as Array<Record<string, any>>;
    const allows = statements.filter((s) => s.Effect === 'Allow' && text(s.Action).includes('s3:GetObject'));
    expect(allows).toHaveLength(1);
    expect(allows[0]!.Principal).toEqual({ Service: 'cloudfront.amazonaws.com' });
    expect(statements.some((s) => s.Effect === 'Deny' && text(s.Condition).includes('aws:SecureTransport'))).toBe(true);
    expect(on.json.Outputs?.WebClientUrl).toBeDefined();
  });

  it('sends a CSP that allows this origin and the deployed WebSocket only', () => {
    const policies = resourcesOfType(on, 'AWS::CloudFront::ResponseHeadersPolicy').map(([, r]) => r.Properties!.ResponseHeadersPolicyConfig);
    const page = policies.find((p) => p.SecurityHeadersConfig?.ContentSecurityPolicy);
    expect(page).toBeDefined();
    const csp = flat(page.SecurityHeadersConfig.ContentSecurityPolicy.ContentSecurityPolicy);
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).toContain("frame-ancestors 'none'");
    // connect-src: 'self' and the stage URL (wss://<api id>.execute-api.<region>.<suffix>/xmpp-websocket).
    expect(csp).toMatch(/connect-src 'self' wss:\/\/",\{"Ref":"XmppWebSocketApi[0-9A-F]+"\}/);
    expect(csp).not.toMatch(/https?:\/\//);
    expect(page.SecurityHeadersConfig.FrameOptions.FrameOption).toBe('DENY');
    expect(page.SecurityHeadersConfig.StrictTransportSecurity).toBeDefined();
    // host-meta is readable cross-origin (XEP-0156 §4), without credentials.
    const hostMeta = policies.find((p) => p.CorsConfig);
    expect(hostMeta.CorsConfig.AccessControlAllowOrigins.Items).toEqual(['*']);
    expect(hostMeta.CorsConfig.AccessControlAllowCredentials).toBe(false);
  });

  it('deploys the page, Converse.js, config.json and host-meta pointed at the WebSocket URL', () => {
    const deployments = resourcesOfType(on, 'Custom::CDKBucketDeployment').map(([, r]) => r.Properties!);
    expect(deployments).toHaveLength(4);
    expect(deployments.map((d) => d.DestinationBucketKeyPrefix ?? '').sort()).toEqual(['', '', '', 'converse/']);
    // Only the Converse.js deployment prunes (inside converse/): the others would delete each other's files.
    expect(deployments.filter((d) => d.Prune !== false).map((d) => d.DestinationBucketKeyPrefix)).toEqual(['converse/']);
    const all = flat(deployments);
    // Deploy-time values: the WebSocket URL goes into config.json and both host-meta documents.
    const markers = deployments.flatMap((d) => (d.SourceMarkers ?? []) as unknown[]);
    const withUrl = markers.filter((m) => text(m).includes('XmppWebSocketApi'));
    expect(withUrl.length).toBeGreaterThanOrEqual(3);
    expect(all).toContain('application/xrd+xml');
  });

  it('is where invitation links lead: the stream Lambda gets its address (XMPP_INVITE_URL) only when it exists', () => {
    const envOf = (s: typeof on) => resourcesOfType(s, 'AWS::Lambda::Function').find(([id]) => id.includes('StreamFunction'))![1].Properties!.Environment.Variables;
    expect(flat(envOf(on).XMPP_INVITE_URL)).toBe(flat(on.json.Outputs!.WebClientUrl!.Value));
    expect(envOf(off).XMPP_INVITE_URL).toBeUndefined();
    expect(envOf(off).XMPP_USER_INVITES).toBe('false');
  });

  it('is switched on by the webClient context parameter', () => {
    const read = (values: Record<string, unknown>) => (key: string) => values[key];
    expect(servicePropsFromContext(read({ domain: 'example.com', webClient: 'true' })).webClient).toBe(true);
    expect(servicePropsFromContext(read({ domain: 'example.com' })).webClient).toBeUndefined();
    expect(() => servicePropsFromContext(read({ domain: 'example.com', webClient: 'yes please' }))).toThrow(/webClient/);
  });
});
