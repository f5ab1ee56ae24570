/**
 * `-c tcpClients=true`: native clients on 5222 (STARTTLS) and 5223 (direct TLS) at the federation
 * load balancer and task, and the tasks' own mailbox queues, which only the task creates and
 * deletes and only the stream Lambda (and the tasks) may send to.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { App } from 'aws-cdk-lib';
import { XmppStack } from '../../cdk/lib/xmpp-stack.ts';
import { servicePropsFromContext } from '../../cdk/lib/context.ts';
import {
  FIXTURE_ENTRIES,
  actions,
  logicalId,
  onlyResource,
  resources,
  resourcesOfType,
  roleOfFunction,
  statementsOfRole,
  synth,
  text,
  type Synthesized,
} from './helpers.ts';

let withClients: Synthesized;

beforeAll(() => {
  withClients = synth({
    federation: true,
    tcpClients: true,
    uploads: true,
    turn: { host: 'turn.example.com', secretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf' },
  });
}, 60_000);

const taskDefinition = () => onlyResource(withClients, 'AWS::ECS::TaskDefinition')[1];
const containerEnv = () =>
  Object.fromEntries(taskDefinition().Properties!.ContainerDefinitions[0].Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));

describe('native clients (tcpClients)', () => {
  it('listens on 5222 and 5223 at the load balancer, open to anyone there and to the NLB only at the task', () => {
    const listeners = resourcesOfType(withClients, 'AWS::ElasticLoadBalancingV2::Listener').map(([, l]) => l.Properties!);
    expect(listeners.map((l) => l.Port).sort()).toEqual([5222, 5223, 5269, 5270]);
    const [, nlb] = onlyResource(withClients, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
    const nlbGroup = (nlb.Properties!.SecurityGroups as { 'Fn::GetAtt': [string, string] }[])[0]!['Fn::GetAtt'][0];
    const nlbIngress = withClients.json.Resources[nlbGroup]!.Properties!.SecurityGroupIngress as { CidrIp: string; FromPort: number }[];
    expect(nlbIngress.map((r) => `${r.FromPort} ${r.CidrIp}`).sort()).toEqual(['5222 0.0.0.0/0', '5223 0.0.0.0/0', '5269 0.0.0.0/0', '5270 0.0.0.0/0']);
    const [, taskGroup] = resourcesOfType(withClients, 'AWS::EC2::SecurityGroup').find(([id]) => id.includes('TaskSecurityGroup'))!;
    for (const r of taskGroup.Properties!.SecurityGroupIngress) {
      expect(r.CidrIp).toEqual({ 'Fn::GetAtt': [logicalId(withClients, 'AWS::EC2::VPC', 'XmppFederationVpc'), 'CidrBlock'] });
    }
    expect(taskDefinition().Properties!.ContainerDefinitions[0].PortMappings.map((p: { ContainerPort: number }) => p.ContainerPort).sort()).toEqual([
      5222, 5223, 5269, 5270,
    ]);
  });

  it('passes the client address to the task with PROXY protocol v2 on the client ports only', () => {
    const groups = resourcesOfType(withClients, 'AWS::ElasticLoadBalancingV2::TargetGroup').map(([, g]) => g.Properties!);
    const proxied = (g: Record<string, any>) =>
      (g.TargetGroupAttributes ?? []).some((a: { Key: string; Value: string }) => a.Key === 'proxy_protocol_v2.enabled' && a.Value === 'true');
    expect(groups.filter(proxied).map((g) => g.Port).sort()).toEqual([5222, 5223]);
    expect(containerEnv().XMPP_C2S_PROXY_PROTOCOL).toBe('true');
  });

  it('tells the task its ports and where its mailbox queue goes, and the stream Lambda the same prefix', () => {
    const env = containerEnv();
    expect(env).toMatchObject({ XMPP_C2S_PORT: '5222', XMPP_C2S_TLS_PORT: '5223' });
    const prefix = text(env.XMPP_C2S_QUEUE_URL_PREFIX);
    expect(prefix).toMatch(/https:\/\/sqs\..*\/xmpp-c2s-[a-z0-9-]+-/);
    const [, fn] = resourcesOfType(withClients, 'AWS::Lambda::Function').find(([id]) => id.includes('StreamFunction'))!;
    expect(text(fn.Properties!.Environment.Variables.XMPP_C2S_QUEUE_URL_PREFIX)).toBe(prefix);
  });

  it('lets the task manage only queues under its prefix, and the Lambda only send to them', () => {
    const taskRole = taskDefinition().Properties!.TaskRoleArn['Fn::GetAtt'][0] as string;
    const mailbox = statementsOfRole(withClients, taskRole).find((st) => actions(st).includes('sqs:CreateQueue'))!;
    expect(actions(mailbox).sort()).toEqual(
      ['sqs:CreateQueue', 'sqs:DeleteMessage', 'sqs:DeleteQueue', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage', 'sqs:SendMessage', 'sqs:SetQueueAttributes'].sort(),
    );
    const pattern = resources(mailbox).map(text);
    expect(pattern).toHaveLength(1);
    expect(pattern[0]).toMatch(/:sqs:.*:xmpp-c2s-[a-z0-9-]+-\*/);
    const lambdaRole = roleOfFunction(withClients, logicalId(withClients, 'AWS::Lambda::Function', 'XmppStreamFunction'));
    const sends = statementsOfRole(withClients, lambdaRole).filter((st) => resources(st).map(text).some((r) => r === pattern[0]));
    expect(sends.flatMap(actions)).toEqual(['sqs:SendMessage']);
  });

  it('gives the task what client features need, as the stream Lambda has it: resumption timers, TURN, upload slots', () => {
    const env = containerEnv();
    expect(env.XMPP_TIMER_QUEUE_URL).toEqual({ Ref: logicalId(withClients, 'AWS::SQS::Queue', 'XmppTimerQueue') });
    expect(env).toMatchObject({ XMPP_SM_RESUME_SECONDS: '300', XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf' });
    expect(Object.keys(env).some((k) => k.startsWith('XMPP_UPLOAD_'))).toBe(true);
    const taskRole = taskDefinition().Properties!.TaskRoleArn['Fn::GetAtt'][0] as string;
    const statements = statementsOfRole(withClients, taskRole);
    const timer = statements.find((st) => resources(st).map(text).includes(text({ 'Fn::GetAtt': [logicalId(withClients, 'AWS::SQS::Queue', 'XmppTimerQueue'), 'Arn'] })))!;
    expect(actions(timer)).toEqual(['sqs:SendMessage']);
    const turnRead = statements.find((st) => actions(st).includes('secretsmanager:GetSecretValue'))!;
    expect(resources(turnRead)).toEqual(['arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf']);
    expect(statements.flatMap(actions)).toEqual(expect.arrayContaining(['s3:PutObject', 's3:GetObject']));
  });

  it('is off by default and refused without federation, with a clear error', () => {
    const app = new App();
    expect(() => new XmppStack(app, 'NoFederation', { service: { domain: 'example.com', entries: FIXTURE_ENTRIES, tcpClients: true } })).toThrow(
      /tcpClients needs federation: true/,
    );
    const context = (values: Record<string, string>) => (key: string) => values[key];
    expect(servicePropsFromContext(context({ domain: 'example.com', tcpClients: 'true' })).tcpClients).toBe(true);
    expect(servicePropsFromContext(context({ domain: 'example.com' })).tcpClients).toBeUndefined();
  });
});
