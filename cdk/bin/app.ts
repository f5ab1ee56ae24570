#!/usr/bin/env -S npx tsx
// The CDK app: reads context (-c key=value, see docs/deploy.md), passes props, nothing else.
// Environment-agnostic on purpose: `npx cdk synth` works offline with no credentials; `cdk deploy`
// uses the account and region of the current AWS profile.
import { App } from 'aws-cdk-lib';
import { servicePropsFromContext, stackNameFromContext } from '../lib/context.ts';
import { XmppStack } from '../lib/xmpp-stack.ts';

const app = new App();
const read = (key: string): unknown => app.node.tryGetContext(key);
new XmppStack(app, stackNameFromContext(read), {
  description: 'Serverless XMPP server (API Gateway WebSocket, SQS FIFO, Lambda, DynamoDB)',
  service: servicePropsFromContext(read),
});
app.synth();
