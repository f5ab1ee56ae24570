import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Annotations, Duration, IgnoreMode, Names, RemovalPolicy, SecretValue, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import { Construct } from 'constructs';
import { acknowledge } from './nag.ts';
import { REPO_ROOT } from './bundle.ts';

/** TCP ports of the federation service (the NLB listens on the same ports). */
export const FEDERATION_PORTS = {
  /** RFC 6120 server-to-server, STARTTLS. */
  s2s: 5269,
  /** XEP-0368 direct TLS server-to-server (`_xmpps-server._tcp`). */
  s2sDirectTls: 5270,
  /** XEP-0114 external components. */
  component: 5347,
  /** RFC 6120 client-to-server, STARTTLS (`_xmpp-client._tcp`). */
  c2s: 5222,
  /** XEP-0368 direct TLS client-to-server (`_xmpps-client._tcp`). */
  c2sDirectTls: 5223,
} as const;

/** The container's name in the task definition. */
export const FEDERATION_CONTAINER = 'federation';

/**
 * Files of the repository the federation image is built from. Everything else (node_modules,
 * .data, cdk.out, tests…) is left out of the Docker build context, which also keeps the asset
 * fingerprint cheap at synth time.
 */
export const FEDERATION_IMAGE_CONTEXT = [
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'shared',
  'federation',
  'cdk/federation.Dockerfile',
];

export interface XmppFederationProps {
  /** Environment shared with the stream Lambda (XMPP_DOMAIN, XMPP_TABLE, …). */
  readonly environment: Record<string, string>;
  /** Grants the task what the routing core needs (table, @connections). */
  readonly grantCore: (grantee: iam.IGrantable) => void;
  /** Open the XEP-0114 component listener on 5347. */
  readonly componentListener: boolean;
  /** IPv4 CIDR blocks admitted to 5347 at the load balancer (XEP-0114 is plaintext). */
  readonly componentSources: string[];
  /** Peers accepted with dialback alone; every other must present a certificate valid for its domain. */
  readonly insecureDomains: string[];
  /** Availability zones for the VPC and the NLB (each AZ adds one NLB public IPv4 address). */
  readonly maxAzs: number;
  /** Native clients on 5222/5223 through the same load balancer and task (docs/native-clients.md). */
  readonly tcpClients?: boolean;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /** The container image; by default built from cdk/federation.Dockerfile with the repository root as context. */
  readonly image?: ecs.ContainerImage;
}

/**
 * Server-to-server federation (and optionally XEP-0114 components): one small ARM Fargate task
 * behind a Network Load Balancer, an outbound queue the stream Lambda fills with stanzas for
 * remote domains, and two secrets.
 *
 * Network: a VPC with public subnets only and no NAT gateway. The task gets a public IPv4 address
 * for its outbound traffic (remote XMPP servers, AWS APIs); its security group admits the XMPP
 * ports from inside the VPC only (the NLB's nodes), so the task is not reachable directly. A NAT
 * gateway would cost about $33 a month per AZ before traffic, several times the task itself.
 */
export class XmppFederation extends Construct {
  readonly vpc: ec2.Vpc;
  readonly cluster: ecs.Cluster;
  readonly service: ecs.FargateService;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly loadBalancer: elbv2.NetworkLoadBalancer;
  /** Target groups by port. */
  readonly targetGroups: Record<number, elbv2.NetworkTargetGroup> = {};
  /** Standard queue of stanzas for remote domains (filled by the stream Lambda, drained by the task). */
  readonly s2sQueue: sqs.Queue;
  readonly s2sDeadLetterQueue: sqs.Queue;
  /** Random secret for Server Dialback keys (XEP-0185), injected as XMPP_DIALBACK_SECRET. */
  readonly dialbackSecret: secretsmanager.Secret;
  /**
   * TLS certificate and key for the domain, JSON `{"cert": "<PEM chain>", "key": "<PEM key>"}`,
   * injected whole as XMPP_TLS_SECRET. Created with empty values (= no certificate yet).
   */
  readonly tlsSecret: secretsmanager.Secret;
  readonly logGroup: logs.LogGroup;
  readonly ports: number[];
  /**
   * With tcpClients: the tasks' own mailbox queues, `<urlPrefix><task id>.fifo`, created and deleted
   * by the tasks themselves (federation/c2s/queue-intake.ts); the stream Lambda may send to them.
   */
  readonly clientMailboxes?: { urlPrefix: string; arnPattern: string; nagFinding: string };

  constructor(scope: Construct, id: string, props: XmppFederationProps) {
    super(scope, id);
    const { removalPolicy } = props;
    this.ports = [FEDERATION_PORTS.s2s, FEDERATION_PORTS.s2sDirectTls];
    if (props.componentListener) this.ports.push(FEDERATION_PORTS.component);
    if (props.tcpClients) {
      this.ports.push(FEDERATION_PORTS.c2s, FEDERATION_PORTS.c2sDirectTls);
      const stack = Stack.of(this);
      // Unique per stack and region; short enough for SQS's 80 characters with a task id and ".fifo".
      const namePrefix = `xmpp-c2s-${Names.uniqueResourceName(this, { maxLength: 40, separator: '-' }).toLowerCase()}-`;
      this.clientMailboxes = {
        urlPrefix: `https://sqs.${stack.region}.${stack.urlSuffix}/${stack.account}/${namePrefix}`,
        arnPattern: stack.formatArn({ service: 'sqs', resource: `${namePrefix}*` }),
        nagFinding: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:${namePrefix}*]`,
      };
    }

    // Outbound stanzas. Standard queue: per-remote-domain order is kept by the task's one stream per
    // domain; a stanza that cannot be handled after five receives goes to the DLQ (alarmed), never
    // silently dropped.
    this.s2sDeadLetterQueue = new sqs.Queue(this, 'S2sDeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // Transient data: queues always go with the stack, whatever removalPolicy says.
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.s2sQueue = new sqs.Queue(this, 'S2sQueue', {
      visibilityTimeout: Duration.seconds(120),
      retentionPeriod: Duration.days(1),
      maxMessageSizeBytes: 1024 * 1024,
      receiveMessageWaitTime: Duration.seconds(20),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: this.s2sDeadLetterQueue, maxReceiveCount: 5 },
      // Transient data: queues always go with the stack, whatever removalPolicy says.
      removalPolicy: RemovalPolicy.DESTROY,
    });

    this.dialbackSecret = new secretsmanager.Secret(this, 'DialbackSecret', {
      description: 'XMPP Server Dialback secret (XEP-0185 key generation); generated, rotate by replacing the value and restarting the task',
      generateSecretString: { passwordLength: 64, excludePunctuation: true },
      removalPolicy,
    });
    // Created with empty placeholders; put the real certificate with
    //   aws secretsmanager put-secret-value --secret-id <TlsSecretArn> --secret-string file://tls.json
    // (see docs/deploy.md). Empty values mean "no certificate": the service must then not offer TLS.
    this.tlsSecret = new secretsmanager.Secret(this, 'TlsSecret', {
      description: 'XMPP federation TLS certificate: JSON {"cert": "<PEM chain, leaf first>", "key": "<PEM private key>"}',
      secretObjectValue: {
        cert: SecretValue.unsafePlainText(''),
        key: SecretValue.unsafePlainText(''),
      },
      removalPolicy,
    });

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs,
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
      restrictDefaultSecurityGroup: false,
    });
    // Free: keeps DynamoDB traffic off the internet gateway.
    this.vpc.addGatewayEndpoint('DynamoDb', { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB });

    this.cluster = new ecs.Cluster(this, 'Cluster', { vpc: this.vpc });

    this.logGroup = new logs.LogGroup(this, 'Logs', { retention: props.logRetention, removalPolicy });
    // Refused connections only (scans, blocked component sources): little volume, the useful part.
    this.vpc.addFlowLog('RejectedTraffic', {
      trafficType: ec2.FlowLogTrafficType.REJECT,
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogs', { retention: props.logRetention, removalPolicy }),
      ),
    });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: 256,
      memoryLimitMiB: 512,
      runtimePlatform: {
        cpuArchitecture: ecs.CpuArchitecture.ARM64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
    });
    if (!props.image && !existsSync(path.join(REPO_ROOT, 'federation', 'main.ts'))) {
      Annotations.of(this).addWarningV2(
        'xmpp:federationSourceMissing',
        'federation/main.ts does not exist yet: synth works, but `cdk deploy` will fail to build the federation image',
      );
    }
    const image =
      props.image ??
      ecs.ContainerImage.fromAsset(REPO_ROOT, {
        file: 'cdk/federation.Dockerfile',
        platform: Platform.LINUX_ARM64,
        ignoreMode: IgnoreMode.DOCKER,
        exclude: ['*', ...FEDERATION_IMAGE_CONTEXT.map((p) => `!${p}`), '**/*.test.ts'],
      });
    this.taskDefinition.addContainer(FEDERATION_CONTAINER, {
      image,
      essential: true,
      logging: ecs.LogDrivers.awsLogs({
        logGroup: this.logGroup,
        streamPrefix: 'federation',
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
      }),
      environment: {
        ...props.environment,
        XMPP_S2S_QUEUE_URL: this.s2sQueue.queueUrl,
        XMPP_BIND: '0.0.0.0',
        XMPP_S2S_PORT: String(FEDERATION_PORTS.s2s),
        XMPP_S2S_DIRECT_TLS_PORT: String(FEDERATION_PORTS.s2sDirectTls),
        // Outbound TLS is verified and unverified peers are refused (issue 13): on the public network
        // an on-path attacker could otherwise read and impersonate both sides of a dialback link.
        XMPP_S2S_SECURE_AUTH: 'true',
        ...(props.insecureDomains.length ? { XMPP_S2S_INSECURE_DOMAINS: props.insecureDomains.join(',') } : {}),
        ...(props.componentListener ? { XMPP_COMPONENT_PORT: String(FEDERATION_PORTS.component) } : {}),
        ...(this.clientMailboxes
          ? {
              XMPP_C2S_PORT: String(FEDERATION_PORTS.c2s),
              XMPP_C2S_TLS_PORT: String(FEDERATION_PORTS.c2sDirectTls),
              XMPP_C2S_QUEUE_URL_PREFIX: this.clientMailboxes.urlPrefix,
              XMPP_C2S_PROXY_PROTOCOL: 'true',
            }
          : {}),
      },
      secrets: {
        XMPP_DIALBACK_SECRET: ecs.Secret.fromSecretsManager(this.dialbackSecret),
        // The whole JSON document, not one key each: ECS refuses to start a task when a selected JSON
        // key is missing, and the placeholder has empty values until a certificate is put.
        XMPP_TLS_SECRET: ecs.Secret.fromSecretsManager(this.tlsSecret),
      },
      portMappings: this.ports.map((containerPort) => ({ containerPort, protocol: ecs.Protocol.TCP })),
      stopTimeout: Duration.seconds(30),
    });

    const taskRole = this.taskDefinition.taskRole;
    props.grantCore(taskRole);
    taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'],
        resources: [this.s2sQueue.queueArn],
      }),
    );

    if (this.clientMailboxes) {
      // Its own mailbox queue: created at start, drained, deleted at stop; and the queues of tasks
      // that died, deleted by the sweep (federation/c2s/client-hub.ts). Nothing outside the prefix.
      taskRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['sqs:CreateQueue', 'sqs:DeleteQueue', 'sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'],
          resources: [this.clientMailboxes.arnPattern],
        }),
      );
    }

    const securityGroup = new ec2.SecurityGroup(this, 'TaskSecurityGroup', {
      vpc: this.vpc,
      description: 'XMPP federation task: XMPP ports from the NLB (inside the VPC) only',
      allowAllOutbound: true,
    });
    for (const port of this.ports) {
      securityGroup.addIngressRule(ec2.Peer.ipv4(this.vpc.vpcCidrBlock), ec2.Port.tcp(port), `XMPP ${port} from the NLB`);
    }

    this.service = new ecs.FargateService(this, 'Service', {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: 1,
      assignPublicIp: true,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      securityGroups: [securityGroup],
      // One task: start the new one before stopping the old one; roll back a deployment that fails.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
      healthCheckGracePeriod: Duration.seconds(60),
    });

    // The load balancer's own security group decides who reaches which port: server-to-server from
    // anywhere (it authenticates), the plaintext component port only from the configured sources.
    const nlbSecurityGroup = new ec2.SecurityGroup(this, 'NlbSecurityGroup', {
      vpc: this.vpc,
      description: 'XMPP federation NLB: s2s from anywhere, components from configured sources only',
      allowAllOutbound: true,
    });
    for (const port of [FEDERATION_PORTS.s2s, FEDERATION_PORTS.s2sDirectTls]) {
      nlbSecurityGroup.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(port), `XMPP server-to-server ${port}`);
    }
    if (props.tcpClients) {
      for (const port of [FEDERATION_PORTS.c2s, FEDERATION_PORTS.c2sDirectTls]) {
        nlbSecurityGroup.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(port), `XMPP clients ${port}`);
      }
    }
    if (props.componentListener) {
      for (const cidr of props.componentSources) {
        nlbSecurityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(FEDERATION_PORTS.component), `XEP-0114 components from ${cidr}`);
      }
    }
    this.loadBalancer = new elbv2.NetworkLoadBalancer(this, 'Nlb', {
      vpc: this.vpc,
      internetFacing: true,
      securityGroups: [nlbSecurityGroup],
      crossZoneEnabled: true,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
    });
    for (const port of this.ports) {
      const listener = this.loadBalancer.addListener(`Tcp${port}`, {
        port,
        protocol: elbv2.Protocol.TCP,
        // Server-to-server and client streams are long-lived and may be quiet for a long time; the
        // default (350 s) would cut them silently (clients ping well within 6000 s).
        tcpIdleTimeout: Duration.seconds(6000),
      });
      this.targetGroups[port] = listener.addTargets(`Tcp${port}`, {
        port,
        protocol: elbv2.Protocol.TCP,
        targets: [this.service.loadBalancerTarget({ containerName: FEDERATION_CONTAINER, containerPort: port })],
        deregistrationDelay: Duration.seconds(30),
        healthCheck: {
          protocol: elbv2.Protocol.TCP,
          interval: Duration.seconds(30),
          healthyThresholdCount: 2,
          unhealthyThresholdCount: 2,
        },
      });
    }

    if (props.tcpClients) {
      // The task sees the NLB's address, not the client's (IP targets): a PROXY v2 header carries the
      // client's, which the brute-force limits count by (federation/c2s/proxy-header.ts).
      for (const port of [FEDERATION_PORTS.c2s, FEDERATION_PORTS.c2sDirectTls]) this.targetGroups[port]!.setAttribute('proxy_protocol_v2.enabled', 'true');
    }

    this.acknowledgeNagFindings(nlbSecurityGroup, securityGroup);
  }

  /** cdk-nag findings kept on purpose (see cdk/lib/nag.ts), with the reasons. */
  private acknowledgeNagFindings(nlbSecurityGroup: ec2.SecurityGroup, taskSecurityGroup: ec2.SecurityGroup): void {
    acknowledge(nlbSecurityGroup, 'Server-to-server ports 5269/5270 (and with tcpClients the client ports 5222/5223) must accept the whole public network (servers authenticate by TLS and dialback, clients by TLS and SCRAM); the component port is limited to componentSources', 'AwsSolutions-EC23');
    acknowledge(taskSecurityGroup, 'Ingress is from the VPC\'s own CIDR block (the NLB) only; cdk-nag cannot read that CIDR, which is a CloudFormation reference', 'AwsSolutions-EC23');
    acknowledge(this.taskDefinition, 'The environment holds configuration only; the dialback secret and the TLS key come from Secrets Manager (container secrets)', 'AwsSolutions-ECS2');
    acknowledge(this.taskDefinition.obtainExecutionRole(), 'ecr:GetAuthorizationToken has no resource-level permissions (granted by CDK to pull the image)', 'AwsSolutions-IAM5[Resource::*]');
    acknowledge(this.cluster, 'One small task whose logs, task count and queue depth are already in CloudWatch (alarms in monitoring.ts); Container Insights would add metric charges larger than the task\'s share of the bill', 'AwsSolutions-ECS4');
    acknowledge(this.loadBalancer, 'Network Load Balancer access logs cover TLS listeners only; these listeners are TCP (TLS ends in the task, for STARTTLS and dialback), so there is nothing to log', 'AwsSolutions-ELB2');
    acknowledge(this.dialbackSecret, 'Rotation means replacing the value and restarting the task (the description says so); an automatic rotation Lambda would cut dialback keys of live streams', 'AwsSolutions-SMG4');
    acknowledge(this.tlsSecret, 'Holds the operator\'s certificate and key; it is renewed by putting the new pair (docs/deploy.md), not by a rotation Lambda', 'AwsSolutions-SMG4');
    if (this.clientMailboxes) {
      acknowledge(this.taskDefinition.taskRole, 'Each task creates its own mailbox queue at start (its name has the task id, unknown at deploy time) and deletes dead tasks\' queues; the wildcard covers only this stack\'s prefix', this.clientMailboxes.nagFinding);
    }
    acknowledge(this.s2sDeadLetterQueue, 'This is the dead-letter queue of the s2s queue; it has no dead-letter queue of its own', 'Serverless-SQSRedrivePolicy');
  }
}
