import { Aws } from 'aws-cdk-lib';
import { PassthroughBehavior } from 'aws-cdk-lib/aws-apigatewayv2';
import type { WebSocketAwsIntegrationProps } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { DISCONNECT_BODY, EVENT_ATTRIBUTES, type StreamEventType } from '../../shared/transport/events.ts';

/**
 * The API Gateway → SQS FIFO integration used by the `$default` and `$disconnect` routes.
 *
 * API Gateway calls the SQS query API (`Action=SendMessage`, form-encoded) with the caller's
 * credentials role. One message per WebSocket event:
 * - MessageGroupId = the connection id, so one connection's events are processed in order and a
 *   `$disconnect` comes after every frame of its connection;
 * - MessageDeduplicationId = the request id (unique per event), so content-based dedup stays off and
 *   two identical frames are both delivered;
 * - the body is the frame, URL-encoded; `$disconnect` has no frame and SQS refuses empty bodies, so
 *   its body is the literal DISCONNECT_BODY;
 * - four String message attributes named as in shared/transport/events.ts.
 */
export function sqsSendMessageTemplate(eventType: StreamEventType): string {
  const body = eventType === 'MESSAGE' ? '$util.urlEncode($input.body)' : encodeURIComponent(DISCONNECT_BODY);
  const attributes: Array<[string, string]> = [
    [EVENT_ATTRIBUTES.connectionId, '$util.urlEncode($context.connectionId)'],
    [EVENT_ATTRIBUTES.eventType, eventType],
    [EVENT_ATTRIBUTES.requestTimeEpoch, '$context.requestTimeEpoch'],
    // IPv6 addresses hold ':', which the form encoding must escape.
    [EVENT_ATTRIBUTES.sourceIp, '$util.urlEncode($context.identity.sourceIp)'],
  ];
  const fields: Array<[string, string]> = [
    ['Action', 'SendMessage'],
    // Connection and request ids are base64-like ("L0SM9cOFvHcCIhw="): encode the '=' and '+'.
    ['MessageGroupId', '$util.urlEncode($context.connectionId)'],
    ['MessageDeduplicationId', '$util.urlEncode($context.requestId)'],
    ['MessageBody', body],
  ];
  attributes.forEach(([name, value], i) => {
    const n = i + 1;
    fields.push(
      [`MessageAttribute.${n}.Name`, name],
      [`MessageAttribute.${n}.Value.DataType`, 'String'],
      [`MessageAttribute.${n}.Value.StringValue`, value],
    );
  });
  return fields.map(([k, v]) => `${k}=${v}`).join('&');
}

/** The `WebSocketAwsIntegration` props that send one route's events to the FIFO queue. */
export function sqsIntegrationProps(
  queue: sqs.IQueue,
  credentialsRole: iam.IRole,
  eventType: StreamEventType,
): WebSocketAwsIntegrationProps {
  return {
    integrationUri: `arn:${Aws.PARTITION}:apigateway:${Aws.REGION}:sqs:path/${Aws.ACCOUNT_ID}/${queue.queueName}`,
    integrationMethod: 'POST',
    credentialsRole,
    requestParameters: {
      'integration.request.header.Content-Type': "'application/x-www-form-urlencoded'",
    },
    // A literal key: every event uses the one template below, whatever the frame looks like.
    templateSelectionExpression: '\\$default',
    requestTemplates: { $default: sqsSendMessageTemplate(eventType) },
    // Never forward a raw frame to SQS unencoded.
    passthroughBehavior: PassthroughBehavior.NEVER,
  };
}
