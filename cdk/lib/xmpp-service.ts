/**
 * The XmppService construct: the whole deployment from one props object. The table, the WebSocket
 * API, the queues and the Lambdas are built here; the federation and native-client service, the
 * upload bucket, the alarms and the web client are composed from their own files beside it.
 *
 * Long because: it is the one L3 construct of the app, with its props and their validation, and
 * each resource's least-privilege grants are written beside the resource.
 */
import * as path from 'node:path';
import { ArnFormat, Duration, RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { WebSocketAwsIntegration, WebSocketLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { TABLE_KEYS, TTL_ATTRIBUTE } from '../../shared/storage/table.ts';
import { REPO_ROOT, bundledCode } from './bundle.ts';
import { FEDERATION_CONTAINER, XmppFederation } from './federation.ts';
import { XmppMonitoring } from './monitoring.ts';
import { sqsIntegrationProps } from './sqs-integration.ts';
import { XmppUploads, type XmppUploadOptions } from './uploads.ts';
import { acknowledge, nagRef } from './nag.ts';
import { XmppWebClient } from './web-client.ts';

/** A custom domain for the WebSocket endpoint (a regional API Gateway domain name). */
export interface XmppCustomDomain {
  /** e.g. `xmpp.example.com`. Point a CNAME (or Route 53 alias) at the `CustomDomainTarget` output. */
  readonly domainName: string;
  /** ARN of an ACM certificate for `domainName`, in the stack's region. */
  readonly certificateArn: string;
  /**
   * Path the WebSocket is served under: `wss://<domainName>/<basePath>`. The same path as the local
   * stack by default; `''` serves it at the root.
   * @default 'xmpp-websocket'
   */
  readonly basePath?: string;
}

export interface XmppServiceProps {
  /** The XMPP domain served, e.g. `example.com` (the part after the `@` in JIDs). Required. */
  readonly domain: string;
  /**
   * Serve the WebSocket under your own host name.
   * @default - the API Gateway URL `wss://<api-id>.execute-api.<region>.amazonaws.com/<stageName>`
   */
  readonly customDomain?: XmppCustomDomain;
  /**
   * Server-to-server federation: a Fargate task (ARM64, 0.25 vCPU, 512 MiB) behind a Network Load
   * Balancer on TCP 5269 and 5270, an outbound queue, and Secrets Manager secrets for dialback and
   * TLS. About $35 a month idle (docs/cost.md). When false none of these resources exist.
   * @default false
   */
  readonly federation?: boolean;
  /**
   * With federation on, also listen for XEP-0114 external components on TCP 5347.
   * @default false
   */
  readonly componentListener?: boolean;
  /**
   * With federation on, native clients (Conversations, Gajim, Dino, Monal…) on TCP 5222 (STARTTLS)
   * and 5223 (direct TLS) at the same load balancer, served by the same task with the same
   * certificate (docs/native-clients.md). Each task gets an SQS FIFO queue of its own at start,
   * through which the stream Lambda reaches its sessions. About $0.07 a month idle on top of
   * federation (its long polls).
   * @default false
   */
  readonly tcpClients?: boolean;
  /**
   * With componentListener: the IPv4 CIDR blocks that may reach port 5347 through the load balancer
   * (required: the XEP-0114 protocol is plaintext, so it must not be open to the Internet).
   */
  readonly componentSources?: string[];
  /**
   * Federation authenticates every peer by a certificate valid for its domain (secure auth); these
   * domains are still accepted with dialback alone (Prosody's s2s_insecure_domains).
   * @default none
   */
  readonly s2sInsecureDomains?: string[];
  /**
   * Availability zones of the federation VPC and NLB (each one adds a public IPv4 address, $3.65/month).
   * @default 2
   */
  readonly federationAzs?: number;
  /**
   * XEP-0077 in-band registration: anyone who can reach the endpoint may create an account.
   * @default false
   */
  readonly registration?: boolean;
  /**
   * XEP-0198 resumption window in seconds: how long a session whose socket died stays available
   * for its client to resume it (0 to 900, the longest SQS message delay, which is the timer that
   * ends the window). @default 300
   */
  readonly smResumeSeconds?: number;
  /**
   * Rooms with more sessions than this get their copies from fan-out jobs (a FIFO queue and a
   * function of their own) instead of the sender's invocation (docs/muc-fanout.md). @default 200
   */
  readonly mucInlineFanoutMax?: number;
  /**
   * The most room fan-out jobs that run at once (the job queue's event source maximum concurrency,
   * 2 to 1000): about 580 posts/s each at 512 MB, so big rooms do not take the account's 10,000
   * @connections posts per second from everyone else. @default 10
   */
  readonly roomFanoutConcurrency?: number;
  /**
   * XEP-0357 notifications carry a summary (message count and last sender, never the body) instead
   * of nothing about the message. @default false
   */
  readonly pushSummary?: boolean;
  /**
   * XEP-0215: the STUN/TURN server calls use (run elsewhere: coturn, eturnal) and the Secrets
   * Manager secret holding the TURN REST API secret shared with it (a plain string). The stream
   * Lambda may read that one secret and nothing else. @default none (not offered)
   */
  readonly turn?: { host: string; secretArn: string; port?: number; tlsPort?: number };
  /**
   * XEP-0157 contact addresses published in the server's disco#info, e.g.
   * `abuse=mailto:abuse@example.com;security=https://example.com/security` (shared/contact-addresses.ts).
   */
  readonly contactAddresses?: string;
  /** Bare JIDs that may run the XEP-0133 admin commands (ad-hoc, XEP-0050). @default none */
  readonly admins?: string[];
  /**
   * Any user may create invitation links (XEP-0401 ad-hoc command), not only admins. With the web
   * client on, links open its landing page, where the invitee creates the account. @default false
   */
  readonly userInvites?: boolean;
  /** @default logs.RetentionDays.ONE_MONTH */
  readonly logRetention?: logs.RetentionDays;
  /**
   * What happens to the table, the federation secrets and the log groups when they leave the stack
   * (or the stack is destroyed). With RETAIN the table also gets deletion protection. Queues hold only
   * transient data and are always deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /** Lambda application log level (JSON logs). @default lambda.ApplicationLogLevel.INFO */
  readonly logLevel?: lambda.ApplicationLogLevel;
  /** AWS X-Ray active tracing on the Lambdas. @default false */
  readonly tracing?: boolean;
  /**
   * Stage throttling, applied to each route.
   * @default { rateLimit: 2000, burstLimit: 1000 } (the account limit is 10,000 / 5,000, shared with @connections)
   */
  readonly throttle?: { readonly rateLimit: number; readonly burstLimit: number };
  /** API Gateway stage name, the last part of the default WebSocket URL. @default 'xmpp-websocket' */
  readonly stageName?: string;
  /** Send alarm notifications to this e-mail address (confirm the subscription). @default - topic only */
  readonly alarmEmail?: string;
  /** Create the CloudWatch dashboard ($3/month beyond an account's first three). @default true */
  readonly dashboard?: boolean;
  /** Memory of the stream Lambda in MiB. @default 512 */
  readonly streamMemoryMiB?: number;
  /**
   * Lambda entry files (TypeScript, export `handler`). Meant for tests and forks.
   * @default lambdas/connect.ts and lambdas/stream.ts of this repository
   */
  readonly entries?: { readonly connect?: string; readonly stream?: string };
  /** Federation container image. Meant for tests. @default built from cdk/federation.Dockerfile */
  readonly federationImage?: ecs.ContainerImage;
  /**
   * Serve the web client (Converse.js, the page of `npm start`) and XEP-0156 host-meta from S3 +
   * CloudFront, pointed at this stack's WebSocket URL (cdk/lib/web-client.ts).
   * @default false
   */
  readonly webClient?: boolean;
  /**
   * XEP-0363 HTTP File Upload at upload.<domain>: an encrypted S3 bucket with a lifecycle expiry and
   * CORS, slots pre-signed by the stream Lambda (cdk/lib/uploads.ts). When false the bucket and its
   * permissions do not exist and no upload service is advertised.
   * @default false
   */
  readonly uploads?: boolean | XmppUploadOptions;
}

/** Idle timeout of API Gateway WebSocket connections (fixed by AWS), advertised via XEP-0478. */
export const IDLE_SECONDS = 600;
/** API Gateway's WebSocket message limit (128 KiB), advertised via XEP-0478. */
export const MAX_FRAME_BYTES = 131072;
/** Stream Lambda timeout; the FIFO visibility timeout is six times this plus 30 s. */
export const STREAM_TIMEOUT = Duration.seconds(30);

/** The DynamoDB actions the routing core uses (stream Lambda and federation task). */
export const TABLE_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
  'dynamodb:Query',
  'dynamodb:BatchGetItem',
  'dynamodb:BatchWriteItem',
  'dynamodb:TransactWriteItems',
  // A TransactWriteItems with a ConditionCheck element is authorized per element.
  'dynamodb:ConditionCheckItem',
];

/** Lambda log levels mapped to the levels of shared/log.ts. */
const LOG_LEVELS: Record<lambda.ApplicationLogLevel, string> = {
  TRACE: 'DEBUG',
  DEBUG: 'DEBUG',
  INFO: 'INFO',
  WARN: 'WARN',
  ERROR: 'ERROR',
  FATAL: 'ERROR',
};

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Checks that `domain` is a DNS host name usable as an XMPP domain: two or more labels of letters,
 * digits and inner hyphens, at most 253 characters, no trailing dot. Internationalized names must be
 * given in their ASCII (xn--) form. Returns the lower-cased domain; throws a clear error otherwise.
 */
export function validateDomain(domain: unknown, what = 'domain'): string {
  if (typeof domain !== 'string' || domain.trim() === '') {
    throw new Error(`XmppService: ${what} is required, e.g. "example.com"`);
  }
  const d = domain.trim().toLowerCase();
  const problem =
    d.length > 253
      ? 'is longer than 253 characters'
      : d.endsWith('.')
        ? 'must not end with a dot'
        : !d.includes('.')
          ? 'needs at least two labels (e.g. "example.com"); "localhost"-style names only work in the local stack'
          : d.split('.').some((label) => !DNS_LABEL.test(label))
            ? 'must consist of labels of letters, digits and inner hyphens (1–63 characters each), separated by dots; write internationalized names in their xn-- form'
            : /^[0-9.]+$/.test(d)
              ? 'is an IP address, not a domain'
              : undefined;
  if (problem) throw new Error(`XmppService: ${what} "${domain}" is not a valid DNS domain: it ${problem}`);
  return d;
}

function validateBasePath(basePath: string): string {
  if (basePath !== '' && !/^[A-Za-z0-9$\-_.+!*'()]+(\/[A-Za-z0-9$\-_.+!*'()]+)*$/.test(basePath)) {
    throw new Error(`XmppService: customDomain.basePath "${basePath}" may only contain letters, digits, / and $-_.+!*'()`);
  }
  return basePath;
}

/**
 * A complete serverless XMPP service: WebSocket API (RFC 7395) → SQS FIFO (ordered per connection) →
 * stream Lambda → DynamoDB and @connections; optionally federation on Fargate. See docs/deploy.md.
 */
export class XmppService extends Construct {
  readonly domain: string;
  readonly table: dynamodb.Table;
  readonly webSocketApi: apigwv2.WebSocketApi;
  readonly stage: apigwv2.WebSocketStage;
  readonly inboundQueue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  /** Delayed events for the stream Lambda (the end of XEP-0198 resumption windows), with its DLQ. */
  readonly timerQueue: sqs.Queue;
  readonly timerDeadLetterQueue: sqs.Queue;
  /** Background jobs (shared/transport/jobs.ts): room fan-out to big rooms, with its DLQ. */
  readonly jobQueue: sqs.Queue;
  readonly jobDeadLetterQueue: sqs.Queue;
  readonly connectFunction: lambda.Function;
  readonly streamFunction: lambda.Function;
  /** Runs the jobs (the stream bundle), at most `roomFanoutConcurrency` at once: that caps the fan-out's post rate. */
  readonly roomFanoutFunction: lambda.Function;
  readonly federation?: XmppFederation;
  readonly uploads?: XmppUploads;
  readonly monitoring: XmppMonitoring;
  readonly customDomainName?: apigwv2.DomainName;
  /** The web client site, when `webClient` is on. */
  readonly webClient?: XmppWebClient;
  /** The URL clients connect to (custom domain when set). */
  readonly webSocketUrl: string;
  /** The @connections management endpoint, https://{apiId}.execute-api.{region}.amazonaws.com/{stage}. */
  readonly connectionsEndpoint: string;

  constructor(scope: Construct, id: string, props: XmppServiceProps) {
    super(scope, id);
    // Validate everything before any bundling happens, so a bad input fails fast.
    this.domain = Token.isUnresolved(props.domain) ? props.domain : validateDomain(props.domain);
    const customDomain = props.customDomain
      ? {
          domainName: validateDomain(props.customDomain.domainName, 'customDomain.domainName'),
          certificateArn: props.customDomain.certificateArn,
          basePath: validateBasePath(props.customDomain.basePath ?? 'xmpp-websocket'),
        }
      : undefined;
    if (customDomain && !Token.isUnresolved(customDomain.certificateArn) && !/^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[A-Za-z0-9-]+$/.test(customDomain.certificateArn)) {
      throw new Error(`XmppService: customDomain.certificateArn "${customDomain.certificateArn}" is not an ACM certificate ARN`);
    }
    const federation = props.federation ?? false;
    if (props.componentListener && !federation) {
      throw new Error('XmppService: componentListener needs federation: true (the component listener runs in the federation service)');
    }
    if (props.tcpClients && !federation) {
      throw new Error('XmppService: tcpClients needs federation: true (native clients are served by the federation service, which holds the TCP sockets)');
    }
    const componentSources = props.componentSources ?? [];
    if (props.componentListener && componentSources.length === 0) {
      throw new Error('XmppService: componentListener needs componentSources (context componentSources=203.0.113.7/32,...): XEP-0114 is plaintext, so say which addresses may reach port 5347');
    }
    for (const cidr of componentSources) {
      if (!/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/.test(cidr) || cidr.split('/')[0]!.split('.').some((o) => Number(o) > 255)) {
        throw new Error(`XmppService: componentSources entry "${cidr}" is not an IPv4 CIDR block`);
      }
    }
    const federationAzs = props.federationAzs ?? 2;
    if (!Number.isInteger(federationAzs) || federationAzs < 1 || federationAzs > 3) {
      throw new Error(`XmppService: federationAzs must be 1, 2 or 3, got ${federationAzs}`);
    }
    const throttle = props.throttle ?? { rateLimit: 2000, burstLimit: 1000 };
    if (!(throttle.rateLimit > 0 && throttle.burstLimit > 0)) throw new Error('XmppService: throttle limits must be positive');
    const stageName = props.stageName ?? 'xmpp-websocket';
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(stageName)) {
      throw new Error(`XmppService: stageName "${stageName}" may only contain letters, digits, - and _`);
    }
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const logRetention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const entries = {
      connect: props.entries?.connect ?? path.join(REPO_ROOT, 'lambdas', 'connect.ts'),
      stream: props.entries?.stream ?? path.join(REPO_ROOT, 'lambdas', 'stream.ts'),
    };
    const stack = Stack.of(this);

    // ---- Storage -------------------------------------------------------------------------------
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: TABLE_KEYS.partitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: TABLE_KEYS.sortKey, type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: TTL_ATTRIBUTE,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy,
    });

    // ---- Inbound queue: one FIFO group per connection -----------------------------------------------
    // Every queue: encrypted, TLS only, and (transient data) gone with the stack whatever removalPolicy says.
    const queueBasics = { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true, removalPolicy: RemovalPolicy.DESTROY };
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      ...queueBasics,
      fifo: true,
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: 1024 * 1024,
    });
    this.inboundQueue = new sqs.Queue(this, 'InboundQueue', {
      fifo: true,
      contentBasedDeduplication: false,
      // High-throughput FIFO: quotas per message group (= connection) instead of per queue.
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      // A URL-encoded 128 KiB frame can exceed the old 256 KiB limit.
      maxMessageSizeBytes: 1024 * 1024,
      visibilityTimeout: Duration.seconds(STREAM_TIMEOUT.toSeconds() * 6 + 30),
      // A connection lives at most 2 h: older frames have nobody left to answer.
      retentionPeriod: Duration.days(1),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
      ...queueBasics,
    });

    // ---- Timer queue: delayed events (shared/transport/timers.ts) -----------------------------------
    const smResumeSeconds = props.smResumeSeconds ?? 300;
    if (!Number.isInteger(smResumeSeconds) || smResumeSeconds < 0 || smResumeSeconds > 900) {
      throw new Error(`XmppService: smResumeSeconds must be an integer from 0 to 900 (the longest SQS delay), got ${smResumeSeconds}`);
    }
    this.timerDeadLetterQueue = new sqs.Queue(this, 'TimerDeadLetterQueue', { ...queueBasics, retentionPeriod: Duration.days(14) });
    // Standard, not FIFO: only standard queues delay each message on its own (DelaySeconds ≤ 900).
    this.timerQueue = new sqs.Queue(this, 'TimerQueue', {
      ...queueBasics,
      visibilityTimeout: Duration.seconds(STREAM_TIMEOUT.toSeconds() * 6 + 30),
      retentionPeriod: Duration.days(1),
      deadLetterQueue: { queue: this.timerDeadLetterQueue, maxReceiveCount: 5 },
    });

    // ---- Job queue: room fan-out (shared/transport/jobs.ts, docs/muc-fanout.md) ---------------------
    this.jobDeadLetterQueue = new sqs.Queue(this, 'JobDeadLetterQueue', { ...queueBasics, fifo: true, retentionPeriod: Duration.days(14) });
    this.jobQueue = new sqs.Queue(this, 'JobQueue', {
      ...queueBasics,
      fifo: true,
      contentBasedDeduplication: false,
      // Groups are room shards: quotas per group, as for the inbound queue's connections.
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      visibilityTimeout: Duration.seconds(STREAM_TIMEOUT.toSeconds() * 6 + 30),
      // A room message older than this is in the archive for whoever missed it.
      retentionPeriod: Duration.hours(1),
      deadLetterQueue: { queue: this.jobDeadLetterQueue, maxReceiveCount: 5 },
    });
    const mucInlineFanoutMax = props.mucInlineFanoutMax ?? 200;
    const roomFanoutConcurrency = props.roomFanoutConcurrency ?? 10;
    if (!Number.isInteger(mucInlineFanoutMax) || mucInlineFanoutMax < 1) throw new Error(`XmppService: mucInlineFanoutMax must be a positive integer, got ${mucInlineFanoutMax}`);
    if (!Number.isInteger(roomFanoutConcurrency) || roomFanoutConcurrency < 2 || roomFanoutConcurrency > 1000) {
      throw new Error(`XmppService: roomFanoutConcurrency must be an integer from 2 to 1000 (SQS event source maximum concurrency), got ${roomFanoutConcurrency}`);
    }

    // ---- WebSocket API ---------------------------------------------------------------------------
    const logLevel = props.logLevel ?? lambda.ApplicationLogLevel.INFO;
    const fnDefaults = (name: string) => {
      const logGroup = new logs.LogGroup(this, `${name}Logs`, { retention: logRetention, removalPolicy });
      // Only what the function uses: writing its own log group (no AWSLambdaBasicExecutionRole, whose
      // logs:CreateLogGroup is on *).
      const role = new iam.Role(this, `${name}Role`, {
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        description: `XMPP ${name} Lambda`,
      });
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resources: [logGroup.logGroupArn],
        }),
      );
      return {
        runtime: lambda.Runtime.NODEJS_22_X,
        architecture: lambda.Architecture.ARM_64,
        handler: 'index.handler',
        logGroup,
        role,
        loggingFormat: lambda.LoggingFormat.JSON,
        applicationLogLevelV2: logLevel,
        systemLogLevelV2: lambda.SystemLogLevel.INFO,
        tracing: props.tracing ? lambda.Tracing.ACTIVE : lambda.Tracing.DISABLED,
      };
    };
    const baseEnvironment = {
      NODE_OPTIONS: '--enable-source-maps',
      // shared/log.ts writes JSON lines itself (not through console.*), so Lambda's log-level filter
      // does not see them: it reads its threshold from here.
      XMPP_LOG_LEVEL: LOG_LEVELS[logLevel],
      XMPP_DOMAIN: this.domain,
      XMPP_IDLE_SECONDS: String(IDLE_SECONDS),
      XMPP_MAX_FRAME_BYTES: String(MAX_FRAME_BYTES),
    };

    this.connectFunction = new lambda.Function(this, 'ConnectFunction', {
      ...fnDefaults('Connect'),
      description: 'XMPP $connect: negotiates the xmpp WebSocket subprotocol',
      code: bundledCode(entries.connect),
      memorySize: 128,
      timeout: Duration.seconds(5),
      environment: baseEnvironment,
    });

    const sqsRole = new iam.Role(this, 'ApiToSqsRole', {
      assumedBy: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      description: 'API Gateway $default and $disconnect routes to the inbound FIFO queue',
    });
    sqsRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.inboundQueue.queueArn] }),
    );

    this.webSocketApi = new apigwv2.WebSocketApi(this, 'WebSocketApi', {
      description: `XMPP over WebSocket (RFC 7395) for ${this.domain}`,
      connectRouteOptions: { integration: new WebSocketLambdaIntegration('Connect', this.connectFunction) },
      defaultRouteOptions: {
        integration: new WebSocketAwsIntegration('DefaultToSqs', sqsIntegrationProps(this.inboundQueue, sqsRole, 'MESSAGE')),
      },
      disconnectRouteOptions: {
        integration: new WebSocketAwsIntegration('DisconnectToSqs', sqsIntegrationProps(this.inboundQueue, sqsRole, 'DISCONNECT')),
      },
    });
    this.stage = new apigwv2.WebSocketStage(this, 'Stage', {
      webSocketApi: this.webSocketApi,
      stageName,
      autoDeploy: true,
      throttle,
    });
    this.connectionsEndpoint = this.stage.callbackUrl;

    if (customDomain) {
      this.customDomainName = new apigwv2.DomainName(this, 'CustomDomain', {
        domainName: customDomain.domainName,
        certificate: acm.Certificate.fromCertificateArn(this, 'Certificate', customDomain.certificateArn),
      });
      new apigwv2.ApiMapping(this, 'CustomDomainMapping', {
        api: this.webSocketApi,
        domainName: this.customDomainName,
        stage: this.stage,
        apiMappingKey: customDomain.basePath || undefined,
      });
      this.webSocketUrl = `wss://${customDomain.domainName}/${customDomain.basePath}`;
    } else {
      this.webSocketUrl = this.stage.url;
    }

    // ---- Stream Lambda -----------------------------------------------------------------------------
    const manageConnectionsArns = ['POST', 'GET', 'DELETE'].map((method) =>
      stack.formatArn({
        service: 'execute-api',
        resource: this.webSocketApi.apiId,
        resourceName: `${stageName}/${method}/@connections/*`,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      }),
    );
    const grantCore = (grantee: iam.IGrantable) => {
      grantee.grantPrincipal.addToPrincipalPolicy(
        new iam.PolicyStatement({ actions: TABLE_ACTIONS, resources: [this.table.tableArn] }),
      );
      // Room messages to big rooms are queued as fan-out jobs by whoever handles them.
      grantee.grantPrincipal.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.jobQueue.queueArn] }));
      grantee.grantPrincipal.addToPrincipalPolicy(
        new iam.PolicyStatement({ actions: ['execute-api:ManageConnections'], resources: manageConnectionsArns }),
      );
    };
    const coreEnvironment: Record<string, string> = {
      ...baseEnvironment,
      XMPP_TABLE: this.table.tableName,
      XMPP_CONNECTIONS_ENDPOINT: this.connectionsEndpoint,
      XMPP_REGISTRATION: String(props.registration ?? false),
      XMPP_PUSH_SUMMARY: String(props.pushSummary ?? false),
      ...(props.contactAddresses ? { XMPP_CONTACT_ADDRESSES: props.contactAddresses } : {}),
      ...(props.admins?.length ? { XMPP_ADMINS: props.admins.join(',') } : {}),
      XMPP_USER_INVITES: String(props.userInvites ?? false),
      XMPP_JOB_QUEUE_URL: this.jobQueue.queueUrl,
      XMPP_MUC_INLINE_FANOUT_MAX: String(mucInlineFanoutMax),
    };

    if (federation) {
      this.federation = new XmppFederation(this, 'Federation', {
        environment: coreEnvironment,
        grantCore,
        componentListener: props.componentListener ?? false,
        componentSources,
        insecureDomains: props.s2sInsecureDomains ?? [],
        maxAzs: federationAzs,
        tcpClients: props.tcpClients ?? false,
        logRetention,
        removalPolicy,
        image: props.federationImage,
      });
    }

    this.streamFunction = new lambda.Function(this, 'StreamFunction', {
      ...fnDefaults('Stream'),
      description: 'XMPP stream processing: frames of one connection, in order, from the inbound FIFO queue',
      code: bundledCode(entries.stream),
      memorySize: props.streamMemoryMiB ?? 512,
      timeout: STREAM_TIMEOUT,
      environment: {
        ...coreEnvironment,
        XMPP_TIMER_QUEUE_URL: this.timerQueue.queueUrl,
        XMPP_SM_RESUME_SECONDS: String(smResumeSeconds),
        ...(this.federation ? { XMPP_S2S_QUEUE_URL: this.federation.s2sQueue.queueUrl } : {}),
      },
    });
    this.streamFunction.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.timerQueue.queueArn] }));
    if (props.turn) {
      const { host, secretArn, port, tlsPort } = props.turn;
      if (!/^[a-z0-9.-]+$/i.test(host)) throw new Error(`XmppService: turn.host must be a host name, got "${host}"`);
      if (!/^arn:aws[a-z-]*:secretsmanager:/.test(secretArn)) throw new Error(`XmppService: turn.secretArn must be a Secrets Manager secret ARN, got "${secretArn}"`);
      this.streamFunction.addEnvironment('XMPP_TURN_HOST', host);
      this.streamFunction.addEnvironment('XMPP_TURN_SECRET_ARN', secretArn);
      if (port) this.streamFunction.addEnvironment('XMPP_TURN_PORT', String(port));
      if (tlsPort) this.streamFunction.addEnvironment('XMPP_TURN_TLS_PORT', String(tlsPort));
      this.streamFunction.addToRolePolicy(new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [secretArn] }));
    }
    grantCore(this.streamFunction);
    if (this.federation) {
      this.streamFunction.addToRolePolicy(
        new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.federation.s2sQueue.queueArn] }),
      );
    }
    const mailboxes = this.federation?.clientMailboxes;
    if (mailboxes) {
      // Native client sessions: post to the queue of the task that holds the socket (named in the connection id).
      this.streamFunction.addEnvironment('XMPP_C2S_QUEUE_URL_PREFIX', mailboxes.urlPrefix);
      this.streamFunction.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [mailboxes.arnPattern] }));
      acknowledge(this.streamFunction.role!, 'Sends to the mailbox queues the federation tasks create for themselves (named by task id at run time); only this stack\'s prefix', mailboxes.nagFinding);
    }
    this.streamFunction.addEventSource(
      new SqsEventSource(this.inboundQueue, { batchSize: 10, reportBatchItemFailures: true }),
    );
    this.streamFunction.addEventSource(new SqsEventSource(this.timerQueue, { batchSize: 10, reportBatchItemFailures: true }));

    // ---- Room fan-out function: the stream bundle on the job queue ----------------------------------
    this.roomFanoutFunction = new lambda.Function(this, 'RoomFanoutFunction', {
      ...fnDefaults('RoomFanout'),
      description: 'XMPP room fan-out: posts the copies of a big room\'s stanzas, queued as jobs by the stream Lambda',
      code: bundledCode(entries.stream),
      memorySize: props.streamMemoryMiB ?? 512,
      timeout: STREAM_TIMEOUT,
      environment: { ...coreEnvironment, XMPP_TIMER_QUEUE_URL: this.timerQueue.queueUrl, XMPP_SM_RESUME_SECONDS: String(smResumeSeconds) },
    });
    grantCore(this.roomFanoutFunction);
    // A gone occupant's session leaves its room from the job; with XEP-0198 it may hibernate there.
    this.roomFanoutFunction.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.timerQueue.queueArn] }));
    // One job per invocation (up to 500 posts, about a second); the event source's maximum
    // concurrency caps the post rate without throttling (a reserved concurrency would throttle the
    // poller's extra invocations and take capacity from the account's pool).
    this.roomFanoutFunction.addEventSource(new SqsEventSource(this.jobQueue, { batchSize: 1, reportBatchItemFailures: true, maxConcurrency: roomFanoutConcurrency }));
    if (props.uploads) {
      this.uploads = new XmppUploads(this, 'Uploads', { ...(props.uploads === true ? {} : props.uploads), removalPolicy });
      this.uploads.grantSigning(this.streamFunction);
      for (const [name, value] of Object.entries(this.uploads.environment)) this.streamFunction.addEnvironment(name, value);
    }

    // ---- Operations --------------------------------------------------------------------------------
    this.monitoring = new XmppMonitoring(this, 'Monitoring', {
      apiId: this.webSocketApi.apiId,
      stageName,
      connectFunction: this.connectFunction,
      streamFunction: this.streamFunction,
      roomFanoutFunction: this.roomFanoutFunction,
      streamLogGroup: this.streamFunction.logGroup,
      inboundQueue: this.inboundQueue,
      deadLetterQueue: this.deadLetterQueue,
      timerDeadLetterQueue: this.timerDeadLetterQueue,
      jobDeadLetterQueue: this.jobDeadLetterQueue,
      table: this.table,
      federation: this.federation,
      alarmEmail: props.alarmEmail,
      dashboard: props.dashboard ?? true,
    });

    if (props.webClient) {
      this.webClient = new XmppWebClient(this, 'WebClient', {
        domain: this.domain,
        webSocketUrl: this.webSocketUrl,
        registration: props.registration ?? false,
      });
      // Invitation links open the web client's landing page (web/app.js).
      this.streamFunction.addEnvironment('XMPP_INVITE_URL', this.webClient.url);
    }
    if (this.federation?.clientMailboxes) this.serveClientFeaturesInTask(this.federation, smResumeSeconds, props.turn);

    this.acknowledgeNagFindings(props.tracing ?? false);
  }

  /** cdk-nag findings kept on purpose (see cdk/lib/nag.ts), with the reasons. */
  private acknowledgeNagFindings(tracing: boolean): void {
    const apiRef = nagRef(this.webSocketApi.node.defaultChild!);
    const connectionFindings = ['POST', 'GET', 'DELETE'].map(
      (method) => `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:${apiRef}/${this.stage.stageName}/${method}/@connections/*]`,
    );
    const connectionsReason = 'execute-api:ManageConnections is granted on this API and stage only; the connection id is known only at run time, so the last part must be a wildcard';
    acknowledge(this.streamFunction.role!, connectionsReason, ...connectionFindings);
    acknowledge(this.roomFanoutFunction.role!, connectionsReason, ...connectionFindings);
    if (this.federation) acknowledge(this.federation.taskDefinition.taskRole, connectionsReason, ...connectionFindings);
    if (tracing) {
      for (const fn of [this.connectFunction, this.streamFunction, this.roomFanoutFunction]) {
        acknowledge(fn.role!, 'X-Ray PutTraceSegments/PutTelemetryRecords have no resource-level permissions (granted by CDK for tracing)', 'AwsSolutions-IAM5[Resource::*]');
      }
    }
    acknowledge(
      this.stage,
      'WebSocket access logs need the account-wide API Gateway CloudWatch role (one per account and region, shared by every API there: a stack that set it would overwrite another team\'s); the stream Lambda logs logins, refused logins and errors as JSON lines instead',
      'AwsSolutions-APIG1',
      'Serverless-APIGWAccessLogging',
    );
    acknowledge(
      this.webSocketApi,
      'XMPP authenticates inside the stream (SASL, RFC 6120 §6): the WebSocket handshake carries no credentials, and a stream that has not authenticated can only do SASL (and registration when enabled)',
      'AwsSolutions-APIG4',
    );
    for (const fn of [this.connectFunction, this.streamFunction, this.roomFanoutFunction]) {
      acknowledge(
        fn,
        'Node.js 22 is the runtime the code is built and tested for (CI runs Node 22; it is in LTS until April 2027); moving to a newer runtime is a tested change of its own',
        'AwsSolutions-L1',
        'Serverless-LambdaLatestVersion',
      );
      if (!tracing) acknowledge(fn, 'X-Ray tracing costs per trace; it is an option (tracing: true / -c tracing=true), off by default', 'Serverless-LambdaTracing');
    }
    acknowledge(this.connectFunction, 'Invoked synchronously by API Gateway ($connect): a dead-letter target only applies to asynchronous invocations', 'Serverless-LambdaDLQ');
    acknowledge(
      this.streamFunction,
      'Invoked by the SQS event source: a frame that fails five times goes to the inbound queue\'s dead-letter queue (alarmed), which is where SQS sources keep failures (a function DLQ or an on-failure destination does not apply to them)',
      'Serverless-LambdaDLQ',
      'Serverless-LambdaEventSourceMappingDestination',
    );
    acknowledge(
      this.roomFanoutFunction,
      'Invoked by the SQS event source: a job that fails five times goes to the job queue\'s dead-letter queue (alarmed); the room archive still has the message',
      'Serverless-LambdaDLQ',
      'Serverless-LambdaEventSourceMappingDestination',
    );
    acknowledge(this.jobDeadLetterQueue, 'This is the dead-letter queue of the job queue; it has no dead-letter queue of its own', 'Serverless-SQSRedrivePolicy');
    acknowledge(this.deadLetterQueue, 'This is the dead-letter queue of the inbound queue; it has no dead-letter queue of its own', 'Serverless-SQSRedrivePolicy');
    acknowledge(this.timerDeadLetterQueue, 'This is the dead-letter queue of the timer queue; it has no dead-letter queue of its own', 'Serverless-SQSRedrivePolicy');
  }

  /**
   * Native clients are served by the federation task's core: it needs what the stream Lambda has
   * for the client-facing features (the resumption timers of XEP-0198, TURN credentials, upload
   * slots), with the same grants and nothing more.
   */
  private serveClientFeaturesInTask(federation: XmppFederation, smResumeSeconds: number, turn: XmppServiceProps['turn']): void {
    const container = federation.taskDefinition.findContainer(FEDERATION_CONTAINER)!;
    const env: Record<string, string | undefined> = {
      XMPP_TIMER_QUEUE_URL: this.timerQueue.queueUrl,
      XMPP_SM_RESUME_SECONDS: String(smResumeSeconds),
      XMPP_TURN_HOST: turn?.host,
      XMPP_TURN_SECRET_ARN: turn?.secretArn,
      XMPP_TURN_PORT: turn?.port ? String(turn.port) : undefined,
      XMPP_TURN_TLS_PORT: turn?.tlsPort ? String(turn.tlsPort) : undefined,
      XMPP_INVITE_URL: this.webClient?.url,
      ...this.uploads?.environment,
    };
    for (const [name, value] of Object.entries(env)) if (value !== undefined) container.addEnvironment(name, value);
    const taskRole = federation.taskDefinition.taskRole;
    taskRole.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.timerQueue.queueArn] }));
    if (turn) taskRole.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [turn.secretArn] }));
    this.uploads?.grantSigning(taskRole);
  }
}
