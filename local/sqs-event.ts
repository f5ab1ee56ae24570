/**
 * Builds SQS FIFO records shaped exactly like the ones Lambda receives from the stream queue in the
 * cloud (API Gateway `$default`/`$disconnect` → SQS FIFO → Lambda). See shared/transport/events.ts.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { SQSMessageAttribute, SQSMessageAttributes, SQSRecord } from 'aws-lambda';
import { DISCONNECT_BODY, EVENT_ATTRIBUTES, type StreamEventType } from '../shared/transport/events.ts';

export const LOCAL_REGION = 'local';
export const LOCAL_ACCOUNT = '000000000000';
export const LOCAL_QUEUE_ARN = `arn:aws:sqs:${LOCAL_REGION}:${LOCAL_ACCOUNT}:xmpp-stream.fifo`;
/** The role API Gateway assumes to call SQS shows up as the sender. */
export const LOCAL_SENDER_ID = 'AROA000000000000LOCAL:local-gateway';

/** One message waiting in the local FIFO queue. */
export interface QueuedMessage {
  messageId: string;
  connectionId: string;
  eventType: StreamEventType;
  body: string;
  requestId: string;
  requestTimeEpoch: number;
  /** The client's address ($context.identity.sourceIp). */
  sourceIp?: string;
  sentTimestamp: number;
  sequenceNumber: string;
  receiveCount: number;
  firstReceiveTimestamp?: number;
}

const sequenceBase = 10n ** 19n + BigInt(Date.now()) * 1_000_000n;
let sequence = 0n;
/** FIFO sequence numbers are 20-digit, strictly increasing strings. */
function nextSequenceNumber(): string {
  sequence += 1n;
  return (sequenceBase + sequence).toString();
}

export function newQueuedMessage(args: {
  connectionId: string;
  eventType: StreamEventType;
  body?: string;
  requestId: string;
  requestTimeEpoch: number;
  sourceIp?: string;
}): QueuedMessage {
  const body = args.eventType === 'DISCONNECT' ? DISCONNECT_BODY : (args.body ?? '');
  return {
    messageId: randomUUID(),
    connectionId: args.connectionId,
    eventType: args.eventType,
    body,
    requestId: args.requestId,
    requestTimeEpoch: args.requestTimeEpoch,
    sourceIp: args.sourceIp,
    sentTimestamp: Date.now(),
    sequenceNumber: nextSequenceNumber(),
    receiveCount: 0,
  };
}

function stringAttribute(value: string): SQSMessageAttribute {
  return { stringValue: value, stringListValues: [], binaryListValues: [], dataType: 'String' };
}

/**
 * MD5 of message attributes as SQS computes it: attributes sorted by name, each encoded as
 * length-prefixed name, length-prefixed data type, transport byte (1 = String/Number), length-prefixed
 * value (lengths are 4-byte big-endian).
 */
export function md5OfMessageAttributes(attributes: SQSMessageAttributes): string {
  const hash = createHash('md5');
  const put = (bytes: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    hash.update(length);
    hash.update(bytes);
  };
  for (const name of Object.keys(attributes).sort()) {
    const attribute = attributes[name]!;
    put(Buffer.from(name, 'utf8'));
    put(Buffer.from(attribute.dataType, 'utf8'));
    if (attribute.dataType.startsWith('Binary')) {
      hash.update(Buffer.from([2]));
      put(Buffer.from(attribute.binaryValue ?? '', 'base64'));
    } else {
      hash.update(Buffer.from([1]));
      put(Buffer.from(attribute.stringValue ?? '', 'utf8'));
    }
  }
  return hash.digest('hex');
}

/** The Lambda event record for one delivery of a queued message. */
export function toSqsRecord(message: QueuedMessage, queueArn = LOCAL_QUEUE_ARN, region = LOCAL_REGION): SQSRecord {
  const messageAttributes: SQSMessageAttributes = {
    [EVENT_ATTRIBUTES.connectionId]: stringAttribute(message.connectionId),
    [EVENT_ATTRIBUTES.eventType]: stringAttribute(message.eventType),
    [EVENT_ATTRIBUTES.requestTimeEpoch]: stringAttribute(String(message.requestTimeEpoch)),
    ...(message.sourceIp === undefined ? {} : { [EVENT_ATTRIBUTES.sourceIp]: stringAttribute(message.sourceIp) }),
  };
  return {
    messageId: message.messageId,
    receiptHandle: Buffer.from(`${message.messageId}#${message.receiveCount}#${randomUUID()}`).toString('base64'),
    body: message.body,
    attributes: {
      ApproximateReceiveCount: String(message.receiveCount),
      SentTimestamp: String(message.sentTimestamp),
      SequenceNumber: message.sequenceNumber,
      MessageGroupId: message.connectionId,
      SenderId: LOCAL_SENDER_ID,
      MessageDeduplicationId: message.requestId,
      ApproximateFirstReceiveTimestamp: String(message.firstReceiveTimestamp ?? Date.now()),
    },
    messageAttributes,
    md5OfMessageAttributes: md5OfMessageAttributes(messageAttributes),
    md5OfBody: createHash('md5').update(message.body, 'utf8').digest('hex'),
    eventSource: 'aws:sqs',
    eventSourceARN: queueArn,
    awsRegion: region,
  };
}
