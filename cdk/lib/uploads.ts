import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct, type IConstruct } from 'constructs';
import { acknowledge, nagRef } from './nag.ts';

/** XEP-0363 HTTP File Upload settings (the `uploads` prop of XmppService). */
export interface XmppUploadOptions {
  /** Largest file accepted, in bytes (advertised in disco, enforced by the signed PUT). @default 100 MiB */
  readonly maxFileSize?: number;
  /**
   * GET links as plain object URLs that anyone holding them can read (unguessable keys; the bucket
   * policy allows s3:GetObject) instead of pre-signed URLs. Pre-signed links stop working when the
   * signing Lambda's temporary credentials expire (hours), so shared files stay reachable only with
   * public-read.
   * @default false
   */
  readonly publicRead?: boolean;
  /** Files are deleted this long after upload (lifecycle rule). @default Duration.days(30) */
  readonly retention?: Duration;
  /** Origins allowed to PUT/GET from a browser (CORS). @default ['*'] (the URLs are the credentials) */
  readonly corsOrigins?: string[];
}

export interface XmppUploadsProps extends XmppUploadOptions {
  /** @default RemovalPolicy.RETAIN */
  readonly removalPolicy?: RemovalPolicy;
}

export const DEFAULT_UPLOAD_MAX_FILE_SIZE = 100 * 1024 * 1024;

/**
 * The upload bucket: encrypted (SSE-S3), TLS only, ACLs off, public access blocked unless
 * public-read is chosen, files expiring after the retention period, CORS for browser clients.
 * The stream Lambda signs slot URLs with its own role, so it is granted s3:PutObject and
 * s3:GetObject on the bucket's objects and nothing else.
 */
export class XmppUploads extends Construct {
  readonly bucket: s3.Bucket;
  /** What the stream Lambda reads (shared/upload/storage.ts). */
  readonly environment: Record<string, string>;

  constructor(scope: Construct, id: string, props: XmppUploadsProps = {}) {
    super(scope, id);
    const maxFileSize = props.maxFileSize ?? DEFAULT_UPLOAD_MAX_FILE_SIZE;
    // A single PUT carries at most 5 GiB.
    if (!Number.isInteger(maxFileSize) || maxFileSize < 1 || maxFileSize > 5 * 1024 ** 3) {
      throw new Error(`XmppService: uploads.maxFileSize must be 1 byte to 5 GiB, got ${maxFileSize}`);
    }
    const publicRead = props.publicRead ?? false;
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.bucket = new s3.Bucket(this, 'Bucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      blockPublicAccess: publicRead
        ? new s3.BlockPublicAccess({ blockPublicAcls: true, ignorePublicAcls: true, blockPublicPolicy: false, restrictPublicBuckets: false })
        : s3.BlockPublicAccess.BLOCK_ALL,
      lifecycleRules: [
        {
          id: 'ExpireUploads',
          expiration: props.retention ?? Duration.days(30),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      cors: [
        {
          allowedMethods: [s3.HttpMethods.PUT, s3.HttpMethods.GET, s3.HttpMethods.HEAD],
          allowedOrigins: props.corsOrigins ?? ['*'],
          allowedHeaders: ['Content-Type', 'Content-Length'],
          exposedHeaders: ['ETag'],
          maxAge: 3600,
        },
      ],
      removalPolicy,
      autoDeleteObjects: removalPolicy === RemovalPolicy.DESTROY,
    });
    if (publicRead) {
      acknowledge(
        this.bucket,
        'publicRead is the operator\'s choice (off by default): files are then readable by whoever has the unguessable URL, as XEP-0363 GET URLs are shared in chats and outlive signatures; ACLs stay blocked and nothing can be listed',
        'AwsSolutions-S2',
      );
      this.bucket.addToResourcePolicy(
        new iam.PolicyStatement({ principals: [new iam.AnyPrincipal()], actions: ['s3:GetObject'], resources: [this.bucket.arnForObjects('*')] }),
      );
    }
    acknowledge(
      this.bucket,
      'Files are reached only through URLs the server signs for one upload slot, and it logs each slot it grants (uploader, size, type); server access logs would need a second bucket that outlives this one',
      'AwsSolutions-S1',
    );
    this.environment = {
      XMPP_UPLOAD_BUCKET: this.bucket.bucketName,
      XMPP_UPLOAD_PUBLIC_READ: String(publicRead),
      XMPP_UPLOAD_MAX_BYTES: String(maxFileSize),
    };
  }

  /** What signing slot URLs needs: put and get objects of this bucket, nothing more. */
  grantSigning(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:PutObject', 's3:GetObject'], resources: [this.bucket.arnForObjects('*')] }),
    );
    acknowledge(
      grantee.grantPrincipal as unknown as IConstruct,
      'Object keys are made per upload slot at run time (a random directory per file), so signing needs every key of this one bucket',
      `AwsSolutions-IAM5[Resource::${nagRef(this.bucket.node.defaultChild!).slice(0, -1)}.Arn>/*]`,
    );
  }
}
