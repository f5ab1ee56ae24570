import * as path from 'node:path';
import { createRequire } from 'node:module';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as cloudfront from 'aws-cdk-lib/aws-cloudfront';
import * as origins from 'aws-cdk-lib/aws-cloudfront-origins';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3deploy from 'aws-cdk-lib/aws-s3-deployment';
import { Construct } from 'constructs';
import {
  HOST_META_XRD_TYPE,
  contentSecurityPolicy,
  hostMetaJrd,
  hostMetaXrd,
  type WebClientConfig,
} from '../../shared/web-client.ts';
import { REPO_ROOT } from './bundle.ts';
import { acknowledge, acknowledgeBucketDeploymentHandler } from './nag.ts';

export interface XmppWebClientProps {
  /** The XMPP domain (default domain of the login and registration forms). */
  readonly domain: string;
  /** The WebSocket URL the page connects to (wss://…), usually a token of the deployed stage. */
  readonly webSocketUrl: string;
  /** Whether in-band registration is on (shows "Create an account"). */
  readonly registration: boolean;
  /** The group chat service. @default `conference.<domain>` */
  readonly mucDomain?: string;
  /** Folder of index.html, app.js, app.css. @default the repository's web/ */
  readonly webDir?: string;
  /** Converse.js's dist/ folder. @default resolved from the installed npm package converse.js */
  readonly converseDir?: string;
}

/**
 * The web client in the cloud: the same page as the local stack (web/ + Converse.js from npm) in a
 * private S3 bucket behind CloudFront (HTTPS only, origin access control), with config.json and
 * XEP-0156 host-meta (`/.well-known/host-meta`, `.json`) pointed at the deployed WebSocket URL, and
 * the same Content-Security-Policy (this origin and the WebSocket endpoint only).
 *
 * Cost: S3 storage of ~10 MB and CloudFront requests/transfer; nothing when nobody visits. The bucket
 * only holds build output, so it is emptied and deleted with the stack.
 */
export class XmppWebClient extends Construct {
  readonly bucket: s3.Bucket;
  readonly distribution: cloudfront.Distribution;
  /** https://<distribution domain>/ */
  readonly url: string;

  constructor(scope: Construct, id: string, props: XmppWebClientProps) {
    super(scope, id);
    const webDir = props.webDir ?? path.join(REPO_ROOT, 'web');
    const converseDir =
      props.converseDir ?? path.dirname(createRequire(import.meta.url).resolve('converse.js/dist/converse.min.js'));

    this.bucket = new s3.Bucket(this, 'Bucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.DESTROY,
      autoDeleteObjects: true,
    });

    const pageHeaders = new cloudfront.ResponseHeadersPolicy(this, 'PageHeaders', {
      comment: 'XMPP web client: CSP allowing this origin and the WebSocket endpoint only',
      securityHeadersBehavior: {
        contentSecurityPolicy: { contentSecurityPolicy: contentSecurityPolicy(props.webSocketUrl), override: true },
        contentTypeOptions: { override: true },
        frameOptions: { frameOption: cloudfront.HeadersFrameOption.DENY, override: true },
        referrerPolicy: { referrerPolicy: cloudfront.HeadersReferrerPolicy.NO_REFERRER, override: true },
        strictTransportSecurity: { accessControlMaxAge: Duration.days(365), includeSubdomains: true, override: true },
      },
    });
    // XEP-0156 §4: host-meta readable by web clients on other origins (no credentials).
    const hostMetaHeaders = new cloudfront.ResponseHeadersPolicy(this, 'HostMetaHeaders', {
      comment: 'XEP-0156 host-meta: readable cross-origin',
      corsBehavior: {
        accessControlAllowOrigins: ['*'],
        accessControlAllowMethods: ['GET', 'HEAD', 'OPTIONS'],
        accessControlAllowHeaders: ['*'],
        accessControlAllowCredentials: false,
        originOverride: true,
      },
      securityHeadersBehavior: { contentTypeOptions: { override: true } },
    });

    const origin = origins.S3BucketOrigin.withOriginAccessControl(this.bucket);
    this.distribution = new cloudfront.Distribution(this, 'Distribution', {
      comment: `XMPP web client for ${props.domain}`,
      defaultRootObject: 'index.html',
      minimumProtocolVersion: cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
      priceClass: cloudfront.PriceClass.PRICE_CLASS_100,
      defaultBehavior: {
        origin,
        viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
        allowedMethods: cloudfront.AllowedMethods.ALLOW_GET_HEAD,
        cachePolicy: cloudfront.CachePolicy.CACHING_OPTIMIZED,
        responseHeadersPolicy: pageHeaders,
      },
      additionalBehaviors: {
        '/.well-known/*': {
          origin,
          viewerProtocolPolicy: cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
          allowedMethods: cloudfront.AllowedMethods.ALLOW_GET_HEAD_OPTIONS,
          cachePolicy: cloudfront.CachePolicy.CACHING_OPTIMIZED,
          responseHeadersPolicy: hostMetaHeaders,
        },
      },
    });
    this.url = `https://${this.distribution.distributionDomainName}/`;

    const config: WebClientConfig = {
      domain: props.domain,
      registration: props.registration,
      mucDomain: props.mucDomain ?? `conference.${props.domain}`,
      websocketUrl: props.webSocketUrl,
    };
    const common = { destinationBucket: this.bucket, memoryLimit: 512 };
    // Converse.js under converse/ (pruned to what the package ships; no source maps).
    const converse = new s3deploy.BucketDeployment(this, 'Converse', {
      ...common,
      sources: [s3deploy.Source.asset(converseDir, { exclude: ['*.map'] })],
      destinationKeyPrefix: 'converse/',
    });
    // The page and its settings at the root; prune off, or it would delete converse/ and .well-known/.
    const page = new s3deploy.BucketDeployment(this, 'Page', {
      ...common,
      sources: [s3deploy.Source.asset(webDir), s3deploy.Source.jsonData('config.json', config)],
      prune: false,
      cacheControl: [s3deploy.CacheControl.noCache()],
      distribution: this.distribution,
      distributionPaths: ['/index.html', '/app.js', '/app.css', '/config.json', '/.well-known/*'],
    });
    const xrd = new s3deploy.BucketDeployment(this, 'HostMetaXrd', {
      ...common,
      sources: [s3deploy.Source.data('.well-known/host-meta', hostMetaXrd(props.webSocketUrl))],
      prune: false,
      contentType: HOST_META_XRD_TYPE,
      cacheControl: [s3deploy.CacheControl.noCache()],
    });
    const jrd = new s3deploy.BucketDeployment(this, 'HostMetaJrd', {
      ...common,
      sources: [s3deploy.Source.jsonData('.well-known/host-meta.json', hostMetaJrd(props.webSocketUrl))],
      prune: false,
      contentType: 'application/json; charset=utf-8',
      cacheControl: [s3deploy.CacheControl.noCache()],
    });
    // The page's deployment goes last: its CloudFront invalidation then covers everything.
    page.node.addDependency(converse, xrd, jrd);

    acknowledge(this.bucket, 'Holds only the public build of the web client (no user data), read by CloudFront alone', 'AwsSolutions-S1');
    acknowledge(this.distribution, 'Serves the public static files of the web client (no user data, no cookies): request logs would tell nothing worth their cost', 'AwsSolutions-CFR3');
    acknowledge(this.distribution, 'A team\'s members may sign in from any country', 'AwsSolutions-CFR1');
    acknowledge(this.distribution, 'Static files only, no request reaches code or data through it; a web ACL costs at least $5 a month when idle, against the stack\'s zero', 'AwsSolutions-CFR2');
    acknowledge(
      this.distribution,
      'TLSv1.2_2021 is set (minimumProtocolVersion); CloudFront only applies it with a custom certificate, and the default *.cloudfront.net certificate keeps CloudFront\'s own policy',
      'AwsSolutions-CFR4',
    );
    acknowledgeBucketDeploymentHandler(this, [this.bucket.node.defaultChild!]);
  }
}
