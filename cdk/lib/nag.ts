import { Stack, Validations } from 'aws-cdk-lib';
import type { CfnElement } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';

/**
 * cdk-nag findings this stack keeps on purpose, each acknowledged where the resource is made and
 * with the reason (test/cdk/nag.test.ts runs the AwsSolutions and Serverless packs and fails on
 * any finding that is neither fixed nor acknowledged). cdk-nag v3 reads acknowledgements through
 * CDK's own Validations API; each finding id must be named exactly (no prefix matching).
 */
export function acknowledge(scope: IConstruct, reason: string, ...ids: string[]): void {
  for (const id of ids) Validations.of(scope).acknowledge({ id, reason });
}

/** How cdk-nag names a resource's logical id inside a finding id, e.g. `<XmppWebSocketApi8335A6D1>`. */
export function nagRef(element: IConstruct): string {
  const stack = Stack.of(element);
  return `<${stack.resolve(stack.getLogicalId(element as CfnElement)) as string}>`;
}

/**
 * The Lambda that CDK itself provides for s3deploy.BucketDeployment (one per stack, outside our
 * constructs): its runtime, role and policies are CDK's, not ours to change.
 */
export function acknowledgeBucketDeploymentHandler(scope: IConstruct, destinationBuckets: IConstruct[]): void {
  const handler = Stack.of(scope).node.children.find((child) => child.node.id.startsWith('Custom::CDKBucketDeployment'));
  if (!handler) return;
  const reason = 'CDK\'s own BucketDeployment handler (runtime, role and policies chosen by aws-cdk-lib); it runs only during deployment';
  acknowledge(
    handler,
    reason,
    'AwsSolutions-L1',
    'Serverless-LambdaLatestVersion',
    'Serverless-LambdaDLQ',
    'Serverless-LambdaTracing',
    'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
    'AwsSolutions-IAM5[Resource::*]',
    // CDK's bootstrap assets bucket (default qualifier) and the buckets it deploys into.
    'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]',
    ...destinationBuckets.map((bucket) => `AwsSolutions-IAM5[Resource::${nagRef(bucket).slice(0, -1)}.Arn>/*]`),
    ...['Abort*', 'DeleteObject*', 'GetBucket*', 'GetObject*', 'List*'].map((action) => `AwsSolutions-IAM5[Action::s3:${action}]`),
  );
}
