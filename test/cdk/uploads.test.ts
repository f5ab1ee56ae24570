/**
 * XEP-0363 uploads in the cloud (cdk/lib/uploads.ts): the bucket and its permissions exist only
 * when `uploads` is on; encrypted, TLS only, public access blocked unless public-read is chosen,
 * a lifecycle expiry, CORS for browsers; the stream Lambda may put and get objects of that bucket
 * and nothing else, and finds it in XMPP_UPLOAD_BUCKET.
 */
import { Duration } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { servicePropsFromContext } from '../../cdk/lib/context.ts';
import { actions, logicalId, onlyResource, resources, resourcesOfType, roleOfFunction, statementsOfRole, synth, text, type Synthesized } from './helpers.ts';

let off: Synthesized;
let on: Synthesized;
let publicRead: Synthesized;

const streamFn = (s: Synthesized) => logicalId(s, 'AWS::Lambda::Function', 'XmppStreamFunction');
const streamEnv = (s: Synthesized) => s.json.Resources[streamFn(s)]!.Properties!.Environment.Variables as Record<string, unknown>;
const s3Statements = (s: Synthesized) => statementsOfRole(s, roleOfFunction(s, streamFn(s))).filter((st) => actions(st).some((a) => a.startsWith('s3:')));

beforeAll(() => {
  off = synth();
  on = synth({ uploads: true });
  publicRead = synth({ uploads: { publicRead: true, maxFileSize: 10 * 1024 * 1024, retention: Duration.days(7) } });
}, 180_000);

describe('uploads off (the default)', () => {
  it('has no bucket, no S3 permission and no upload settings', () => {
    expect(resourcesOfType(off, 'AWS::S3::Bucket')).toHaveLength(0);
    expect(resourcesOfType(off, 'AWS::S3::BucketPolicy')).toHaveLength(0);
    expect(s3Statements(off)).toEqual([]);
    expect(Object.keys(streamEnv(off)).filter((k) => k.startsWith('XMPP_UPLOAD'))).toEqual([]);
  });
});

describe('uploads on', () => {
  it('creates one encrypted, private bucket with an expiry rule and CORS for browser PUT/GET', () => {
    on.template.resourceCountIs('AWS::S3::Bucket', 1);
    on.template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
      LifecycleConfiguration: { Rules: [Match.objectLike({ Status: 'Enabled', ExpirationInDays: 30, AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } })] },
      CorsConfiguration: {
        CorsRules: [Match.objectLike({ AllowedMethods: Match.arrayWith(['PUT', 'GET']), AllowedOrigins: ['*'], AllowedHeaders: Match.arrayWith(['Content-Type']) })],
      },
    });
    // user files outlive the stack unless told otherwise
    expect(onlyResource(on, 'AWS::S3::Bucket')[1].DeletionPolicy).toBe('Retain');
  });

  it('refuses plain HTTP and grants nobody public reads', () => {
    const [, policy] = onlyResource(on, 'AWS::S3::BucketPolicy');
    const statements = policy.Properties!.PolicyDocument.Statement as Array<Record<string, any>>;
    expect(statements).toEqual([expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]);
  });

  it('lets the stream Lambda put and get objects of that bucket only', () => {
    const bucket = logicalId(on, 'AWS::S3::Bucket', 'XmppUploadsBucket');
    const statements = s3Statements(on);
    expect(statements).toHaveLength(1);
    expect(actions(statements[0]!).sort()).toEqual(['s3:GetObject', 's3:PutObject']);
    expect(resources(statements[0]!)).toEqual([{ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, '/*']] }]);
    // the connect Lambda gets nothing of it
    const connect = logicalId(on, 'AWS::Lambda::Function', 'XmppConnectFunction');
    expect(statementsOfRole(on, roleOfFunction(on, connect)).flatMap(actions).filter((a) => a.startsWith('s3:'))).toEqual([]);
  });

  it('tells the stream Lambda the bucket, the size limit and the URL mode', () => {
    expect(streamEnv(on)).toMatchObject({
      XMPP_UPLOAD_BUCKET: { Ref: logicalId(on, 'AWS::S3::Bucket', 'XmppUploadsBucket') },
      XMPP_UPLOAD_PUBLIC_READ: 'false',
      XMPP_UPLOAD_MAX_BYTES: String(100 * 1024 * 1024),
    });
  });
});

describe('uploads with public-read links', () => {
  it('opens reads of objects (and nothing else) to anyone holding a link', () => {
    publicRead.template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: false, IgnorePublicAcls: true, RestrictPublicBuckets: false },
      LifecycleConfiguration: { Rules: [Match.objectLike({ ExpirationInDays: 7 })] },
    });
    const [, policy] = onlyResource(publicRead, 'AWS::S3::BucketPolicy');
    const allows = (policy.Properties!.PolicyDocument.Statement as Array<Record<string, any>>).filter((s) => s.Effect === 'Allow');
    expect(allows).toHaveLength(1);
    expect(allows[0]).toMatchObject({ Principal: { AWS: '*' }, Action: 's3:GetObject' });
    expect(text(allows[0]!.Resource)).toMatch(/XmppUploadsBucket[^"]*","Arn"\]\},"\/\*"/);
    expect(streamEnv(publicRead)).toMatchObject({ XMPP_UPLOAD_PUBLIC_READ: 'true', XMPP_UPLOAD_MAX_BYTES: String(10 * 1024 * 1024) });
  });

  it('is switched on from the command line with -c uploads=true', () => {
    expect(servicePropsFromContext((key) => ({ domain: 'example.com', uploads: 'true' })[key]).uploads).toBe(true);
    expect(servicePropsFromContext((key) => ({ domain: 'example.com' })[key]).uploads).toBeUndefined();
  });

  it('refuses sizes a single PUT cannot carry', () => {
    expect(() => synth({ uploads: { maxFileSize: 6 * 1024 ** 3 } })).toThrow(/maxFileSize/);
  });
});
