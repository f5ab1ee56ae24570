import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { App, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { TABLE_ACTIONS, XmppService, validateDomain } from '../../cdk/lib/xmpp-service.ts';
import { sqsSendMessageTemplate } from '../../cdk/lib/sqs-integration.ts';
import { DISCONNECT_BODY, EVENT_ATTRIBUTES } from '../../shared/transport/events.ts';
import { LOGIN_REFUSED } from '../../shared/sasl/auth-limits.ts';
import {
  FIXTURE_ENTRIES,
  actions,
  logicalId,
  onlyResource,
  resources,
  resourcesOfType,
  roleActions,
  roleOfFunction,
  statementsOfRole,
  synth,
  text,
  type Synthesized,
} from './helpers.ts';

const FEDERATION_TYPES = [
  'AWS::EC2::VPC',
  'AWS::EC2::Subnet',
  'AWS::EC2::SecurityGroup',
  'AWS::ECS::Cluster',
  'AWS::ECS::TaskDefinition',
  'AWS::ECS::Service',
  'AWS::ElasticLoadBalancingV2::LoadBalancer',
  'AWS::ElasticLoadBalancingV2::Listener',
  'AWS::ElasticLoadBalancingV2::TargetGroup',
  'AWS::SecretsManager::Secret',
];

// Two configurations, each synthesized (with bundling) once for the whole file.
let base: Synthesized; // every default
const TURN_SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf';
let full: Synthesized; // federation + components + custom domain + the non-default options

beforeAll(() => {
  base = synth();
  full = synth({
    federation: true,
    componentListener: true,
    componentSources: ['203.0.113.7/32'],
    s2sInsecureDomains: ['legacy.example.net'],
    registration: true,
    pushSummary: true,
    contactAddresses: 'abuse=mailto:abuse@example.com',
    admins: ['boss@example.com'],
    turn: { host: 'turn.example.com', secretArn: TURN_SECRET, tlsPort: 5349 },
    tracing: true,
    removalPolicy: RemovalPolicy.DESTROY,
    customDomain: { domainName: 'xmpp.example.com', certificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abcd-1234' },
    alarmEmail: 'ops@example.com',
  });
}, 60_000);

const fn = (s: Synthesized, name: 'Connect' | 'Stream' | 'RoomFanout') => logicalId(s, 'AWS::Lambda::Function', `Xmpp${name}Function`);
const inboundQueue = (s: Synthesized) => logicalId(s, 'AWS::SQS::Queue', 'XmppInboundQueue');

describe('WebSocket API', () => {
  it('has exactly the $connect, $default and $disconnect routes', () => {
    const keys = resourcesOfType(base, 'AWS::ApiGatewayV2::Route').map(([, r]) => r.Properties!.RouteKey).sort();
    expect(keys).toEqual(['$connect', '$default', '$disconnect']);
  });

  it('sends $connect to the connect Lambda (proxy integration)', () => {
    const route = resourcesOfType(base, 'AWS::ApiGatewayV2::Route').find(([, r]) => r.Properties!.RouteKey === '$connect')![1];
    const integrationId = text(route.Properties!.Target).match(/"Ref":"([^"]+)"/)![1]!;
    const integration = base.json.Resources[integrationId]!;
    expect(integration.Properties!.IntegrationType).toBe('AWS_PROXY');
    expect(text(integration.Properties!.IntegrationUri)).toContain(fn(base, 'Connect'));
  });

  for (const [routeKey, eventType] of [['$default', 'MESSAGE'], ['$disconnect', 'DISCONNECT']] as const) {
    it(`sends ${routeKey} to the FIFO queue with SendMessage (${eventType})`, () => {
      const route = resourcesOfType(base, 'AWS::ApiGatewayV2::Route').find(([, r]) => r.Properties!.RouteKey === routeKey)![1];
      const integrationId = text(route.Properties!.Target).match(/"Ref":"([^"]+)"/)![1]!;
      const p = base.json.Resources[integrationId]!.Properties!;
      expect(p.IntegrationType).toBe('AWS');
      expect(p.IntegrationMethod).toBe('POST');
      expect(text(p.IntegrationUri)).toContain(':sqs:path/');
      expect(text(p.IntegrationUri)).toContain(`"Fn::GetAtt":["${inboundQueue(base)}","QueueName"]`);
      expect(p.RequestParameters).toEqual({ 'integration.request.header.Content-Type': "'application/x-www-form-urlencoded'" });
      expect(p.TemplateSelectionExpression).toBe('\\$default');
      expect(p.PassthroughBehavior).toBe('NEVER');
      expect(Object.keys(p.RequestTemplates)).toEqual(['$default']);

      const fields = new Map(
        (p.RequestTemplates.$default as string).split('&').map((kv) => {
          const i = kv.indexOf('=');
          return [kv.slice(0, i), kv.slice(i + 1)] as [string, string];
        }),
      );
      expect(fields.get('Action')).toBe('SendMessage');
      expect(fields.get('MessageGroupId')).toBe('$util.urlEncode($context.connectionId)');
      expect(fields.get('MessageDeduplicationId')).toBe('$util.urlEncode($context.requestId)');
      expect(fields.get('MessageBody')).toBe(eventType === 'MESSAGE' ? '$util.urlEncode($input.body)' : DISCONNECT_BODY);
      const attributes: Record<string, string> = {};
      for (let n = 1; fields.has(`MessageAttribute.${n}.Name`); n++) {
        expect(fields.get(`MessageAttribute.${n}.Value.DataType`)).toBe('String');
        attributes[fields.get(`MessageAttribute.${n}.Name`)!] = fields.get(`MessageAttribute.${n}.Value.StringValue`)!;
      }
      expect(attributes).toEqual({
        [EVENT_ATTRIBUTES.connectionId]: '$util.urlEncode($context.connectionId)',
        [EVENT_ATTRIBUTES.eventType]: eventType,
        [EVENT_ATTRIBUTES.requestTimeEpoch]: '$context.requestTimeEpoch',
        [EVENT_ATTRIBUTES.sourceIp]: '$util.urlEncode($context.identity.sourceIp)',
      });

      // The credentials role may only SendMessage to that queue.
      const roleId = (p.CredentialsArn as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
      const statements = statementsOfRole(base, roleId);
      expect(statements).toHaveLength(1);
      expect(actions(statements[0]!)).toEqual(['sqs:SendMessage']);
      expect(statements[0]!.Resource).toEqual({ 'Fn::GetAtt': [inboundQueue(base), 'Arn'] });
      base.template.hasResourceProperties('AWS::IAM::Role', {
        AssumeRolePolicyDocument: Match.objectLike({
          Statement: [Match.objectLike({ Principal: { Service: 'apigateway.amazonaws.com' } })],
        }),
      });
    });
  }

  it('keeps the disconnect body non-empty (SQS refuses empty bodies)', () => {
    expect(sqsSendMessageTemplate('DISCONNECT')).toContain(`MessageBody=${DISCONNECT_BODY}&`);
    expect(DISCONNECT_BODY.length).toBeGreaterThan(0);
  });

  it('deploys one auto-deployed stage with throttling', () => {
    const [, stage] = onlyResource(base, 'AWS::ApiGatewayV2::Stage');
    expect(stage.Properties).toMatchObject({
      AutoDeploy: true,
      StageName: 'xmpp-websocket',
      DefaultRouteSettings: { ThrottlingRateLimit: 2000, ThrottlingBurstLimit: 1000 },
    });
  });

  it('maps a custom domain when asked', () => {
    expect(resourcesOfType(base, 'AWS::ApiGatewayV2::DomainName')).toHaveLength(0);
    full.template.hasResourceProperties('AWS::ApiGatewayV2::DomainName', {
      DomainName: 'xmpp.example.com',
      DomainNameConfigurations: [Match.objectLike({ CertificateArn: 'arn:aws:acm:eu-west-1:123456789012:certificate/abcd-1234', EndpointType: 'REGIONAL' })],
    });
    full.template.hasResourceProperties('AWS::ApiGatewayV2::ApiMapping', { ApiMappingKey: 'xmpp-websocket' });
    expect(full.json.Outputs!.WebSocketUrl!.Value).toBe('wss://xmpp.example.com/xmpp-websocket');
  });
});

describe('inbound FIFO queue', () => {
  it('is FIFO, without content-based dedup, high-throughput, with a FIFO dead-letter queue', () => {
    const q = base.json.Resources[inboundQueue(base)]!.Properties!;
    expect(q.FifoQueue).toBe(true);
    expect(q.ContentBasedDeduplication).toBe(false);
    expect(q.DeduplicationScope).toBe('messageGroup');
    expect(q.FifoThroughputLimit).toBe('perMessageGroupId');
    expect(q.MaximumMessageSize).toBe(1048576);
    expect(q.SqsManagedSseEnabled).toBe(true);
    expect(q.RedrivePolicy.maxReceiveCount).toBeGreaterThanOrEqual(3);
    const dlqId = q.RedrivePolicy.deadLetterTargetArn['Fn::GetAtt'][0];
    expect(base.json.Resources[dlqId]!.Properties!.FifoQueue).toBe(true);
  });

  it('has a visibility timeout above six times the stream function timeout', () => {
    const q = base.json.Resources[inboundQueue(base)]!.Properties!;
    const timeout = base.json.Resources[fn(base, 'Stream')]!.Properties!.Timeout as number;
    expect(q.VisibilityTimeout).toBeGreaterThan(timeout * 6);
  });

  it('feeds the stream Lambda in batches of 10 with partial batch responses, frames and timer events', () => {
    const mappings = resourcesOfType(base, 'AWS::Lambda::EventSourceMapping').map(([, m]) => m.Properties);
    const timerQueue = logicalId(base, 'AWS::SQS::Queue', 'XmppTimerQueue');
    expect(mappings).toHaveLength(3); // and the job queue's, below
    for (const queue of [inboundQueue(base), timerQueue]) {
      expect(mappings).toContainEqual(
        expect.objectContaining({
          BatchSize: 10,
          FunctionResponseTypes: ['ReportBatchItemFailures'],
          EventSourceArn: { 'Fn::GetAtt': [queue, 'Arn'] },
          FunctionName: { Ref: fn(base, 'Stream') },
        }),
      );
    }
  });

  it('has a standard timer queue (per-message delays) with a dead-letter queue, for the ends of resumption windows', () => {
    const timer = base.json.Resources[logicalId(base, 'AWS::SQS::Queue', 'XmppTimerQueue')]!.Properties!;
    expect(timer.FifoQueue).toBeUndefined();
    expect(timer.RedrivePolicy).toMatchObject({ maxReceiveCount: 5, deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(base, 'AWS::SQS::Queue', 'XmppTimerDeadLetterQueue'), 'Arn'] } });
    const env = base.json.Resources[fn(base, 'Stream')]!.Properties!.Environment.Variables;
    expect(env).toMatchObject({ XMPP_TIMER_QUEUE_URL: { Ref: logicalId(base, 'AWS::SQS::Queue', 'XmppTimerQueue') }, XMPP_SM_RESUME_SECONDS: '300' });
    const role = roleOfFunction(base, fn(base, 'Stream'));
    const send = statementsOfRole(base, role).filter((st) => actions(st).includes('sqs:SendMessage'));
    expect(send.map((st) => st.Resource)).toEqual(
      expect.arrayContaining([{ 'Fn::GetAtt': [logicalId(base, 'AWS::SQS::Queue', 'XmppTimerQueue'), 'Arn'] }, { 'Fn::GetAtt': [logicalId(base, 'AWS::SQS::Queue', 'XmppJobQueue'), 'Arn'] }]),
    );
    expect(send).toHaveLength(2);
  });

  it('has a FIFO job queue with a dead-letter queue, feeding the room fan-out function one job per invocation at a capped concurrency', () => {
    const jobQueue = logicalId(base, 'AWS::SQS::Queue', 'XmppJobQueue');
    const q = base.json.Resources[jobQueue]!.Properties!;
    expect(q.FifoQueue).toBe(true);
    expect(q.ContentBasedDeduplication).toBe(false);
    expect(q.RedrivePolicy).toMatchObject({ maxReceiveCount: 5, deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(base, 'AWS::SQS::Queue', 'XmppJobDeadLetterQueue'), 'Arn'] } });
    const mappings = resourcesOfType(base, 'AWS::Lambda::EventSourceMapping').map(([, m]) => m.Properties);
    expect(mappings).toContainEqual(
      expect.objectContaining({ BatchSize: 1, FunctionResponseTypes: ['ReportBatchItemFailures'], EventSourceArn: { 'Fn::GetAtt': [jobQueue, 'Arn'] }, FunctionName: { Ref: fn(base, 'RoomFanout') } }),
    );
    expect(mappings).toContainEqual(expect.objectContaining({ EventSourceArn: { 'Fn::GetAtt': [jobQueue, 'Arn'] }, ScalingConfig: { MaximumConcurrency: 10 } }));
    const fanout = base.json.Resources[fn(base, 'RoomFanout')]!.Properties!;
    expect(fanout.Environment.Variables).toMatchObject({ XMPP_JOB_QUEUE_URL: { Ref: jobQueue }, XMPP_MUC_INLINE_FANOUT_MAX: '200' });
    expect(base.json.Resources[fn(base, 'Stream')]!.Properties!.Environment.Variables).toMatchObject({ XMPP_JOB_QUEUE_URL: { Ref: jobQueue } });
    // The fan-out function posts to connections and reads and writes the table, like the stream function; it sends to no queue but the timers'.
    const send = statementsOfRole(base, roleOfFunction(base, fn(base, 'RoomFanout'))).filter((st) => actions(st).includes('sqs:SendMessage'));
    expect(send.map((st) => st.Resource)).toEqual(
      expect.arrayContaining([{ 'Fn::GetAtt': [logicalId(base, 'AWS::SQS::Queue', 'XmppTimerQueue'), 'Arn'] }, { 'Fn::GetAtt': [jobQueue, 'Arn'] }]),
    );
    expect(send).toHaveLength(2);
  });
});

describe('Lambda functions', () => {
  it('run Node 22 on arm64 with JSON logs, source maps and an ESM bundle', () => {
    for (const s of [base, full]) {
      for (const name of ['Connect', 'Stream', 'RoomFanout'] as const) {
        const p = s.json.Resources[fn(s, name)]!.Properties!;
        expect(p.Runtime).toBe('nodejs22.x');
        expect(p.Architectures).toEqual(['arm64']);
        expect(p.Handler).toBe('index.handler');
        expect(p.LoggingConfig).toMatchObject({ LogFormat: 'JSON', ApplicationLogLevel: 'INFO' });
        expect(p.LoggingConfig.LogGroup).toBeDefined();
        expect(p.Environment.Variables.NODE_OPTIONS).toBe('--enable-source-maps');
      }
    }
  });

  it('have the sizes and timeouts of the design', () => {
    expect(base.json.Resources[fn(base, 'Connect')]!.Properties).toMatchObject({ MemorySize: 128, Timeout: 5 });
    expect(base.json.Resources[fn(base, 'Stream')]!.Properties).toMatchObject({ MemorySize: 512, Timeout: 30 });
  });

  it('give the stream Lambda the environment of shared/config.ts', () => {
    const env = base.json.Resources[fn(base, 'Stream')]!.Properties!.Environment.Variables;
    expect(env).toMatchObject({
      XMPP_DOMAIN: 'example.com',
      XMPP_REGISTRATION: 'false',
      XMPP_PUSH_SUMMARY: 'false',
      XMPP_IDLE_SECONDS: '600',
      XMPP_MAX_FRAME_BYTES: '131072',
      XMPP_TABLE: { Ref: logicalId(base, 'AWS::DynamoDB::Table', 'XmppTable') },
    });
    expect(text(env.XMPP_CONNECTIONS_ENDPOINT)).toMatch(/"https:\/\/",\{"Ref":"XmppWebSocketApi[^"]*"\},".execute-api.",\{"Ref":"AWS::Region"\},".",\{"Ref":"AWS::URLSuffix"\},"\/xmpp-websocket"/);
    expect(env.XMPP_S2S_QUEUE_URL).toBeUndefined();
    const fullEnv = full.json.Resources[fn(full, 'Stream')]!.Properties!.Environment.Variables;
    expect(fullEnv.XMPP_REGISTRATION).toBe('true');
    expect(fullEnv.XMPP_PUSH_SUMMARY).toBe('true');
    expect(fullEnv.XMPP_CONTACT_ADDRESSES).toBe('abuse=mailto:abuse@example.com');
    expect(fullEnv.XMPP_ADMINS).toBe('boss@example.com');
    expect(env.XMPP_ADMINS).toBeUndefined();
    expect(env.XMPP_CONTACT_ADDRESSES).toBeUndefined();
    expect(fullEnv).toMatchObject({ XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET_ARN: TURN_SECRET, XMPP_TURN_TLS_PORT: '5349' });
    expect(fullEnv.XMPP_TURN_SECRET).toBeUndefined(); // the secret itself is never in the template
    expect(env.XMPP_TURN_HOST).toBeUndefined();
    // The stream Lambda reads that one secret, and only when TURN is configured.
    const streamRole = (s: Synthesized) => full.json.Resources[fn(s, 'Stream')]!.Properties!.Role['Fn::GetAtt'][0] as string;
    const reads = statementsOfRole(full, streamRole(full)).filter((st) => actions(st).includes('secretsmanager:GetSecretValue'));
    expect(reads.flatMap(resources)).toEqual([TURN_SECRET]);
    expect(statementsOfRole(base, base.json.Resources[fn(base, 'Stream')]!.Properties!.Role['Fn::GetAtt'][0] as string).flatMap(actions)).not.toContain('secretsmanager:GetSecretValue');
    expect(fullEnv.XMPP_S2S_QUEUE_URL).toEqual({ Ref: logicalId(full, 'AWS::SQS::Queue', 'XmppFederationS2sQueue') });
  });

  it('trace with X-Ray only when asked', () => {
    expect(base.json.Resources[fn(base, 'Stream')]!.Properties!.TracingConfig).toBeUndefined();
    expect(full.json.Resources[fn(full, 'Stream')]!.Properties!.TracingConfig).toEqual({ Mode: 'Active' });
  });

  it('are bundled in-process into distinct minified ESM files with source maps', () => {
    const assets = readdirSync(base.outdir).filter((d) => d.startsWith('asset.'));
    const bundles = assets.filter((d) => existsSync(path.join(base.outdir, d, 'index.mjs')));
    expect(bundles).toHaveLength(2);
    const sources = bundles.map((d) => readFileSync(path.join(base.outdir, d, 'index.mjs'), 'utf8'));
    expect(sources[0]).not.toBe(sources[1]);
    for (const [i, d] of bundles.entries()) {
      expect(existsSync(path.join(base.outdir, d, 'index.mjs.map'))).toBe(true);
      expect(sources[i]).toMatch(/export\s*\{[^}]*as handler\s*\}|export\s*\{\s*handler\s*\}/);
      expect(sources[i]).toContain('sourceMappingURL=index.mjs.map');
    }
    // The stream fixture imports the event contract; the connect fixture does not.
    expect(sources.filter((s) => s.includes('"connectionId"') || s.includes("'connectionId'"))).toHaveLength(1);
  });
});

describe('DynamoDB table', () => {
  it('is on-demand with pk/sk, TTL on "expires", PITR, AWS-managed encryption', () => {
    const [, table] = onlyResource(base, 'AWS::DynamoDB::Table');
    expect(table.Properties).toMatchObject({
      BillingMode: 'PAY_PER_REQUEST',
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }, { AttributeName: 'sk', KeyType: 'RANGE' }],
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }, { AttributeName: 'sk', AttributeType: 'S' }],
      TimeToLiveSpecification: { AttributeName: 'expires', Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true },
    });
    expect(table.Properties!.SSESpecification.KMSMasterKeyId).toBeUndefined();
  });

  it('is retained with deletion protection by default, deletable when asked; queues always go', () => {
    const [, retained] = onlyResource(base, 'AWS::DynamoDB::Table');
    expect(retained.DeletionPolicy).toBe('Retain');
    expect(retained.Properties!.DeletionProtectionEnabled).toBe(true);
    for (const [, queue] of resourcesOfType(base, 'AWS::SQS::Queue')) expect(queue.DeletionPolicy).toBe('Delete');
    for (const [, secret] of resourcesOfType(full, 'AWS::SecretsManager::Secret')) expect(secret.DeletionPolicy).toBe('Delete');
    const [, destroyed] = onlyResource(full, 'AWS::DynamoDB::Table');
    expect(destroyed.DeletionPolicy).toBe('Delete');
    expect(destroyed.Properties!.DeletionProtectionEnabled).toBe(false);
  });
});

describe('IAM least privilege', () => {
  it('never grants DynamoDB, SQS or execute-api actions on "*"', () => {
    for (const s of [base, full]) {
      for (const [, policy] of resourcesOfType(s, 'AWS::IAM::Policy')) {
        for (const st of policy.Properties!.PolicyDocument.Statement) {
          if (!actions(st).some((a) => /^(dynamodb|sqs|execute-api):/.test(a))) continue;
          for (const r of resources(st)) expect(r).not.toBe('*');
          expect(actions(st).some((a) => a.endsWith(':*') || a === '*')).toBe(false);
        }
      }
    }
  });

  it('gives the connect Lambda nothing beyond writing its logs', () => {
    const role = roleOfFunction(base, fn(base, 'Connect'));
    expect(roleActions(base, role).sort()).toEqual(['logs:CreateLogStream', 'logs:PutLogEvents']);
    expect(base.json.Resources[role]!.Properties!.ManagedPolicyArns).toBeUndefined();
  });

  it('gives the stream Lambda the table actions on the table and @connections on this API and stage', () => {
    const role = roleOfFunction(base, fn(base, 'Stream'));
    const statements = statementsOfRole(base, role);
    const table = statements.find((st) => actions(st).some((a) => a.startsWith('dynamodb:')))!;
    expect(actions(table).sort()).toEqual([...TABLE_ACTIONS].sort());
    expect(table.Resource).toEqual({ 'Fn::GetAtt': [logicalId(base, 'AWS::DynamoDB::Table', 'XmppTable'), 'Arn'] });
    for (const a of ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:Query', 'dynamodb:BatchWriteItem', 'dynamodb:BatchGetItem', 'dynamodb:TransactWriteItems']) {
      expect(actions(table)).toContain(a);
    }
    expect(roleActions(base, role)).not.toContain('dynamodb:Scan');

    const manage = statements.find((st) => actions(st).includes('execute-api:ManageConnections'))!;
    const arns = resources(manage).map(text);
    expect(arns).toHaveLength(3);
    for (const method of ['POST', 'GET', 'DELETE']) {
      expect(arns.some((a) => a.includes(`/xmpp-websocket/${method}/@connections/*`) && a.includes('"Ref":"XmppWebSocketApi') && a.includes(':execute-api:'))).toBe(true);
    }

    const sqsActions = roleActions(base, role).filter((a) => a.startsWith('sqs:'));
    // Sending: to the timer and job queues only (checked with those queues above).
    expect(statements.filter((st) => actions(st).includes('sqs:SendMessage'))).toHaveLength(2);
    expect(sqsActions).toEqual(expect.arrayContaining(['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility']));
  });

  it('lets the stream Lambda send to the s2s queue only when federation is on', () => {
    const role = roleOfFunction(full, fn(full, 'Stream'));
    const send = statementsOfRole(full, role).filter((st) => actions(st).includes('sqs:SendMessage')).map((st) => st.Resource);
    expect(send).toContainEqual({ 'Fn::GetAtt': [logicalId(full, 'AWS::SQS::Queue', 'XmppFederationS2sQueue'), 'Arn'] });
  });
});

describe('federation', () => {
  it('creates no federation resources when off', () => {
    for (const type of FEDERATION_TYPES) expect(resourcesOfType(base, type), type).toHaveLength(0);
    expect(resourcesOfType(base, 'AWS::SQS::Queue')).toHaveLength(6); // inbound, timer, job and their dead-letter queues
    expect(base.json.Outputs!.FederationEndpoint).toBeUndefined();
  });

  it('runs one ARM64 Fargate task (0.25 vCPU / 512 MiB) with a public IP and no NAT gateway', () => {
    const [, task] = onlyResource(full, 'AWS::ECS::TaskDefinition');
    expect(task.Properties).toMatchObject({
      Cpu: '256',
      Memory: '512',
      RequiresCompatibilities: ['FARGATE'],
      RuntimePlatform: { CpuArchitecture: 'ARM64', OperatingSystemFamily: 'LINUX' },
    });
    const [, service] = onlyResource(full, 'AWS::ECS::Service');
    expect(service.Properties).toMatchObject({
      DesiredCount: 1,
      LaunchType: 'FARGATE',
      NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'ENABLED' } },
    });
    expect(resourcesOfType(full, 'AWS::EC2::NatGateway')).toHaveLength(0);
    expect(resourcesOfType(full, 'AWS::EC2::EIP')).toHaveLength(0);
    for (const [, subnet] of resourcesOfType(full, 'AWS::EC2::Subnet')) expect(subnet.Properties!.MapPublicIpOnLaunch).toBe(true);
  });

  it('listens on TCP 5269, 5270 and (components) 5347 behind an internet-facing NLB', () => {
    const [, nlb] = onlyResource(full, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
    expect(nlb.Properties).toMatchObject({ Type: 'network', Scheme: 'internet-facing' });
    const listeners = resourcesOfType(full, 'AWS::ElasticLoadBalancingV2::Listener').map(([, l]) => l.Properties!);
    expect(listeners.map((l) => l.Port).sort()).toEqual([5269, 5270, 5347]);
    for (const l of listeners) expect(l.Protocol).toBe('TCP');
    const groups = resourcesOfType(full, 'AWS::ElasticLoadBalancingV2::TargetGroup').map(([, g]) => g.Properties!);
    for (const g of groups) expect(g).toMatchObject({ Protocol: 'TCP', TargetType: 'ip' });
  });

  it('admits the XMPP ports to the task from inside the VPC only', () => {
    const [, task] = resourcesOfType(full, 'AWS::EC2::SecurityGroup').find(([id]) => id.includes('TaskSecurityGroup'))!;
    const ingress = task.Properties!.SecurityGroupIngress;
    expect(ingress.map((r: { FromPort: number }) => r.FromPort).sort()).toEqual([5269, 5270, 5347]);
    for (const r of ingress) {
      expect(r.CidrIp).toEqual({ 'Fn::GetAtt': [logicalId(full, 'AWS::EC2::VPC', 'XmppFederationVpc'), 'CidrBlock'] });
    }
  });

  it('has an outbound s2s queue, a generated dialback secret and a TLS secret, injected into the task', () => {
    const secrets = resourcesOfType(full, 'AWS::SecretsManager::Secret').map(([id, s]) => [id, s.Properties!] as const);
    expect(secrets).toHaveLength(2);
    const dialback = secrets.find(([id]) => id.includes('Dialback'))![1];
    expect(dialback.GenerateSecretString).toMatchObject({ PasswordLength: 64 });
    const tls = secrets.find(([id]) => id.includes('Tls'))![1];
    expect(JSON.parse(tls.SecretString)).toEqual({ cert: '', key: '' });

    const [, task] = onlyResource(full, 'AWS::ECS::TaskDefinition');
    const container = task.Properties!.ContainerDefinitions[0];
    expect(container.Secrets.map((s: { Name: string }) => s.Name).sort()).toEqual(['XMPP_DIALBACK_SECRET', 'XMPP_TLS_SECRET']);
    const env = Object.fromEntries(container.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
    expect(env).toMatchObject({
      XMPP_DOMAIN: 'example.com',
      XMPP_BIND: '0.0.0.0',
      XMPP_S2S_PORT: '5269',
      XMPP_COMPONENT_PORT: '5347',
      // Peers must present a certificate valid for their domain, but for the listed exceptions.
      XMPP_S2S_SECURE_AUTH: 'true',
      XMPP_S2S_INSECURE_DOMAINS: 'legacy.example.net',
      XMPP_S2S_QUEUE_URL: { Ref: logicalId(full, 'AWS::SQS::Queue', 'XmppFederationS2sQueue') },
    });
    expect(container.PortMappings.map((p: { ContainerPort: number }) => p.ContainerPort).sort()).toEqual([5269, 5270, 5347]);
  });

  it('admits server-to-server from anywhere and the plaintext component port only from componentSources, at the load balancer', () => {
    const [, nlb] = onlyResource(full, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
    const sgId = (nlb.Properties!.SecurityGroups as { 'Fn::GetAtt': [string, string] }[])[0]!['Fn::GetAtt'][0];
    const ingress = full.json.Resources[sgId]!.Properties!.SecurityGroupIngress as { CidrIp: string; FromPort: number }[];
    expect(ingress.map((r) => `${r.FromPort} ${r.CidrIp}`).sort()).toEqual(['5269 0.0.0.0/0', '5270 0.0.0.0/0', '5347 203.0.113.7/32']);
  });

  it('gives the task the core permissions and s2s queue consumption, all scoped', () => {
    const [, task] = onlyResource(full, 'AWS::ECS::TaskDefinition');
    const taskRole = task.Properties!.TaskRoleArn['Fn::GetAtt'][0] as string;
    const statements = statementsOfRole(full, taskRole);
    const all = statements.flatMap(actions);
    expect(all).toEqual(expect.arrayContaining([...TABLE_ACTIONS, 'execute-api:ManageConnections', 'sqs:ReceiveMessage', 'sqs:DeleteMessage']));
    // Sending: only room fan-out jobs (a remote occupant's message to a big room).
    const send = statements.filter((st) => actions(st).includes('sqs:SendMessage'));
    expect(send.map((st) => st.Resource)).toEqual([{ 'Fn::GetAtt': [logicalId(full, 'AWS::SQS::Queue', 'XmppJobQueue'), 'Arn'] }]);
    const consume = statements.find((st) => actions(st).includes('sqs:ReceiveMessage'))!;
    expect(consume.Resource).toEqual({ 'Fn::GetAtt': [logicalId(full, 'AWS::SQS::Queue', 'XmppFederationS2sQueue'), 'Arn'] });
    // The execution role reads exactly the two secrets.
    const executionRole = task.Properties!.ExecutionRoleArn['Fn::GetAtt'][0] as string;
    const secretReads = statementsOfRole(full, executionRole).filter((st) => actions(st).includes('secretsmanager:GetSecretValue'));
    expect(secretReads.flatMap(resources).map(text).sort()).toEqual(
      resourcesOfType(full, 'AWS::SecretsManager::Secret').map(([id]) => text({ Ref: id })).sort(),
    );
  });

  it('builds the image from cdk/federation.Dockerfile for linux/arm64 with a reduced context', () => {
    const manifest = JSON.parse(readFileSync(path.join(full.outdir, 'XmppTest.assets.json'), 'utf8'));
    const images = Object.values(manifest.dockerImages ?? {}) as Array<{ source: { directory: string; dockerFile: string; platform: string } }>;
    expect(images).toHaveLength(1);
    expect(images[0]!.source).toMatchObject({ dockerFile: 'cdk/federation.Dockerfile', platform: 'linux/arm64' });
    const context = readdirSync(path.join(full.outdir, images[0]!.source.directory)).sort();
    expect(context).not.toContain('node_modules');
    expect(context).not.toContain('test');
    expect(context).toEqual(expect.arrayContaining(['cdk', 'package-lock.json', 'package.json', 'shared']));
  });
});

describe('operations', () => {
  it('alarms on Lambda errors and throttles, dead letters, API Gateway errors', () => {
    const alarms = resourcesOfType(base, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!);
    const metric = (namespace: string, name: string) => alarms.filter((a) => a.Namespace === namespace && a.MetricName === name);
    expect(metric('AWS/Lambda', 'Errors')).toHaveLength(3); // connect, stream, room fan-out
    expect(metric('AWS/Lambda', 'Throttles')).toHaveLength(3);
    expect(metric('AWS/ApiGateway', 'IntegrationError')).toHaveLength(1);
    expect(metric('AWS/ApiGateway', 'ExecutionError')).toHaveLength(1);
    const dlqs = metric('AWS/SQS', 'ApproximateNumberOfMessagesVisible');
    expect(dlqs).toHaveLength(3); // frames, jobs and timer events
    for (const [dlq, queue] of dlqs.map((d, i) => [d, ['XmppDeadLetterQueue', 'XmppJobDeadLetterQueue', 'XmppTimerDeadLetterQueue'][i]!] as const)) {
      expect(text(dlq.Dimensions)).toContain(logicalId(base, 'AWS::SQS::Queue', queue));
      expect(dlq).toMatchObject({ Threshold: 1, ComparisonOperator: 'GreaterThanOrEqualToThreshold' });
    }
    for (const a of alarms) expect(a.AlarmActions).toHaveLength(1);
  });

  it('counts logins refused by the brute-force limits from the stream log and alarms on a burst', () => {
    const filters = resourcesOfType(base, 'AWS::Logs::MetricFilter').map(([, f]) => f.Properties!);
    const refused = filters.find((f) => text(f.MetricTransformations).includes('RefusedLogins'))!;
    expect(refused.FilterPattern).toBe(`{ $.message = "${LOGIN_REFUSED}" }`);
    const alarms = resourcesOfType(base, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!);
    expect(alarms.filter((a) => a.MetricName === 'RefusedLogins')).toEqual([expect.objectContaining({ Threshold: 20 })]);
  });

  it('adds federation alarms, an e-mail subscription and the dashboard', () => {
    const alarms = resourcesOfType(full, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!);
    expect(alarms.filter((a) => a.MetricName === 'HealthyHostCount')).toHaveLength(1);
    expect(alarms.filter((a) => a.MetricName === 'ApproximateNumberOfMessagesVisible')).toHaveLength(4);
    full.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
    expect(resourcesOfType(base, 'AWS::CloudWatch::Dashboard')).toHaveLength(1);
  });

  it('has the stable outputs xmppctl reads', () => {
    expect(Object.keys(base.json.Outputs!)).toEqual(expect.arrayContaining(['WebSocketUrl', 'TableName', 'ConnectionsEndpoint', 'Domain']));
    expect(Object.keys(full.json.Outputs!)).toEqual(expect.arrayContaining(['WebSocketUrl', 'TableName', 'ConnectionsEndpoint', 'Domain', 'FederationEndpoint']));
    expect(base.json.Outputs!.Domain!.Value).toBe('example.com');
    expect(base.json.Outputs!.TableName!.Value).toEqual({ Ref: logicalId(base, 'AWS::DynamoDB::Table', 'XmppTable') });
    expect(text(base.json.Outputs!.WebSocketUrl!.Value)).toContain('"wss://"');
    expect(full.json.Outputs!.FederationEndpoint!.Value).toEqual({ 'Fn::GetAtt': [logicalId(full, 'AWS::ElasticLoadBalancingV2::LoadBalancer', 'XmppFederationNlb'), 'DNSName'] });
  });
});

describe('template', () => {
  it("passes CDK's built-in CloudFormation validation without findings", () => {
    for (const s of [base, full]) {
      const reportFile = path.join(s.outdir, 'validation-report.json');
      if (!existsSync(reportFile)) continue;
      const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { pluginReports: Array<{ violations: Array<{ description: string }> }> };
      expect(report.pluginReports.flatMap((r) => r.violations.map((v) => v.description))).toEqual([]);
    }
  });
});

describe('input validation', () => {
  it.each([
    ['', /domain is required/],
    ['localhost', /at least two labels/],
    ['exa mple.com', /not a valid DNS domain/],
    ['-bad.example.com', /not a valid DNS domain/],
    ['example.com.', /must not end with a dot/],
    [`${'a'.repeat(64)}.com`, /not a valid DNS domain/],
    ['user@example.com', /not a valid DNS domain/],
    ['192.168.0.1', /IP address/],
    ['bücher.example', /xn--/],
  ])('rejects the domain %j', (domain, message) => {
    expect(() => validateDomain(domain)).toThrow(message);
  });

  it('accepts and lower-cases DNS domains', () => {
    expect(validateDomain('Example.COM')).toBe('example.com');
    expect(validateDomain('xn--bcher-kva.example')).toBe('xn--bcher-kva.example');
    expect(validateDomain('chat-1.corp.example.org')).toBe('chat-1.corp.example.org');
  });

  const construct = (props: Record<string, unknown>) => () =>
    new XmppService(new Stack(new App(), 'S'), 'X', { domain: 'example.com', entries: FIXTURE_ENTRIES, ...props } as never);

  it('fails fast, before bundling, on bad props', () => {
    expect(construct({ domain: undefined })).toThrow(/domain is required/);
    expect(construct({ domain: 'not a domain' })).toThrow(/"not a domain" is not a valid DNS domain/);
    expect(construct({ componentListener: true })).toThrow(/componentListener needs federation/);
    expect(construct({ customDomain: { domainName: 'xmpp.example.com', certificateArn: 'nope' } })).toThrow(/not an ACM certificate ARN/);
    expect(construct({ customDomain: { domainName: 'x', certificateArn: 'arn:aws:acm:us-east-1:123456789012:certificate/x' } })).toThrow(/customDomain.domainName/);
    expect(construct({ stageName: 'has space' })).toThrow(/stageName/);
    expect(construct({ federation: true, federationAzs: 5 })).toThrow(/federationAzs/);
    expect(construct({ federation: true, componentListener: true })).toThrow(/componentListener needs componentSources/);
    expect(construct({ federation: true, componentListener: true, componentSources: ['0.0.0.0/33'] })).toThrow(/"0.0.0.0\/33" is not an IPv4 CIDR block/);
    expect(construct({ smResumeSeconds: 901 })).toThrow(/smResumeSeconds must be an integer from 0 to 900/);
    expect(construct({ mucInlineFanoutMax: 0 })).toThrow(/mucInlineFanoutMax must be a positive integer/);
    expect(construct({ roomFanoutConcurrency: 1 })).toThrow(/roomFanoutConcurrency must be an integer from 2 to 1000/);
  });

  it('says which Lambda entry is missing', () => {
    expect(construct({ entries: { connect: '/nonexistent/connect.ts', stream: FIXTURE_ENTRIES.stream } })).toThrow(/connect\.ts does not exist/);
  });
});
