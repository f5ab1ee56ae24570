import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { XmppService, type XmppServiceProps } from './xmpp-service.ts';

export interface XmppStackProps extends StackProps {
  readonly service: XmppServiceProps;
}

/**
 * The deployable stack: one XmppService and its outputs. The output keys are an interface:
 * `xmppctl --stack NAME` reads WebSocketUrl, TableName, ConnectionsEndpoint, FederationEndpoint and
 * Domain; do not rename them.
 */
export class XmppStack extends Stack {
  readonly service: XmppService;

  constructor(scope: Construct, id: string, props: XmppStackProps) {
    super(scope, id, props);
    const service = (this.service = new XmppService(this, 'Xmpp', props.service));

    new CfnOutput(this, 'Domain', { value: service.domain, description: 'XMPP domain served' });
    new CfnOutput(this, 'WebSocketUrl', { value: service.webSocketUrl, description: 'XMPP over WebSocket (RFC 7395) endpoint for clients' });
    new CfnOutput(this, 'TableName', { value: service.table.tableName, description: 'DynamoDB table (accounts, rosters, archives)' });
    new CfnOutput(this, 'ConnectionsEndpoint', { value: service.connectionsEndpoint, description: 'API Gateway @connections management endpoint' });
    new CfnOutput(this, 'AlarmTopicArn', { value: service.monitoring.topic.topicArn, description: 'SNS topic of the alarms (subscribe to it)' });
    if (service.customDomainName) {
      new CfnOutput(this, 'CustomDomainTarget', {
        value: service.customDomainName.regionalDomainName,
        description: 'Point a CNAME (or Route 53 alias) for the custom domain at this name',
      });
    }
    if (service.webClient) {
      new CfnOutput(this, 'WebClientUrl', { value: service.webClient.url, description: 'The web client (Converse.js) and XEP-0156 host-meta' });
    }
    const federation = service.federation;
    if (federation) {
      new CfnOutput(this, 'FederationEndpoint', {
        value: federation.loadBalancer.loadBalancerDnsName,
        description: 'Server-to-server endpoint (NLB): target of the _xmpp-server._tcp / _xmpps-server._tcp SRV records',
      });
      new CfnOutput(this, 'S2sQueueUrl', { value: federation.s2sQueue.queueUrl, description: 'Outbound server-to-server queue' });
      new CfnOutput(this, 'TlsSecretArn', { value: federation.tlsSecret.secretArn, description: 'Put the federation TLS certificate here: {"cert": "<PEM chain>", "key": "<PEM key>"}' });
      new CfnOutput(this, 'DialbackSecretArn', { value: federation.dialbackSecret.secretArn, description: 'Server Dialback secret (generated)' });
      new CfnOutput(this, 'FederationCluster', { value: federation.cluster.clusterName, description: 'ECS cluster of the federation service' });
      new CfnOutput(this, 'FederationService', { value: federation.service.serviceName, description: 'ECS service (aws ecs update-service --force-new-deployment after a certificate change)' });
    }
  }
}
