/**
 * The SQS FIFO stream queue and Lambda's SQS event source mapping: one message group per
 * connection (MessageGroupId = connectionId), batches of up to batchSize records handed to the
 * stream handler in order, ReportBatchItemFailures (a failed record and every later one of its
 * group stay at the head), redelivery after the visibility timeout, dead-lettering after
 * maxReceiveCount deliveries, and the idle signal (nothing queued or running) for idle()/close().
 */
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import type { StreamEventType } from '../../shared/transport/events.ts';
import { newQueuedMessage, toSqsRecord, type QueuedMessage } from '../sqs-event.ts';
import type { GatewayConfig } from './config.ts';
import { newConnectionId } from './connect-event.ts';
import { invokeLambda } from './lambda-runner.ts';
import type { GatewayState, MessageGroup } from './state.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface FifoQueue {
  /** Queues a record after every earlier record of its group (connection) and starts the group. */
  enqueue(connectionId: string, eventType: StreamEventType, body: string | undefined, sourceIp: string): void;
  /** Whether a record is queued or being handled. */
  busy(): boolean;
}

export function createFifoQueue(config: GatewayConfig, state: GatewayState): FifoQueue {
  const { batchSize, maxReceiveCount, redeliveryDelayMs, handlerTimeoutMs, queueArn, region, log, streamHandler, options } = config;
  const { live, groups, idleWaiters } = state;

  function enqueue(connectionId: string, eventType: StreamEventType, body: string | undefined, sourceIp: string): void {
    const message = newQueuedMessage({
      connectionId,
      eventType,
      body,
      requestId: newConnectionId(),
      requestTimeEpoch: Date.now(),
      sourceIp,
    });
    let group = groups.get(connectionId);
    if (!group) {
      group = { connectionId, messages: [], running: false };
      groups.set(connectionId, group);
    }
    group.messages.push(message);
    if (!group.running) void runGroup(group);
  }

  /** Index of the first failed record, or -1 when the whole batch succeeded. */
  function firstFailure(response: unknown, batch: QueuedMessage[]): number {
    if (response === undefined || response === null) return -1;
    const failures = (response as Partial<SQSBatchResponse>).batchItemFailures;
    if (failures === undefined || failures === null) return -1;
    if (!Array.isArray(failures)) return 0; // malformed response: Lambda treats it as a complete failure
    let first = -1;
    for (const failure of failures) {
      const index = batch.findIndex((m) => m.messageId === failure?.itemIdentifier);
      if (index < 0) return 0; // unknown or empty identifier: complete failure
      if (first < 0 || index < first) first = index;
    }
    return first;
  }

  async function runGroup(group: MessageGroup): Promise<void> {
    group.running = true;
    try {
      while (group.messages.length > 0 && !state.shutDown) {
        const batch = group.messages.slice(0, batchSize);
        const now = Date.now();
        for (const message of batch) {
          message.receiveCount += 1;
          message.firstReceiveTimestamp ??= now;
        }
        const event: SQSEvent = { Records: batch.map((m) => toSqsRecord(m, queueArn, region)) };
        let failedFrom: number;
        try {
          const response = await invokeLambda(streamHandler, event, 'xmpp-stream', handlerTimeoutMs);
          failedFrom = firstFailure(response, batch);
        } catch (err) {
          log.error(`stream handler failed for connection ${group.connectionId}: ${(err as Error)?.stack ?? err}`);
          failedFrom = 0;
        }
        if (failedFrom < 0) {
          group.messages.splice(0, batch.length);
          continue;
        }
        // FIFO: the failed record and every later one of this group stay at the head of the queue.
        group.messages.splice(0, failedFrom);
        let dropped = 0;
        while (dropped < group.messages.length && group.messages[dropped]!.receiveCount >= maxReceiveCount) dropped++;
        for (const message of group.messages.splice(0, dropped)) {
          log.error(
            `dead-letter: connection=${message.connectionId} messageId=${message.messageId} eventType=${message.eventType} ` +
              `receiveCount=${message.receiveCount} body=${JSON.stringify(message.body.slice(0, 200))}`,
          );
          options.onDeadLetter?.({
            connectionId: message.connectionId,
            messageId: message.messageId,
            eventType: message.eventType,
            body: message.body,
            receiveCount: message.receiveCount,
          });
        }
        const retrying = batch.length - failedFrom - dropped;
        if (retrying > 0) {
          log.warn(`redelivering ${retrying} record(s) of connection ${group.connectionId} in ${redeliveryDelayMs} ms`);
          await sleep(redeliveryDelayMs);
        }
      }
    } finally {
      group.running = false;
      if (group.messages.length === 0) {
        // A group whose connection is gone is finished once its DISCONNECT has been handled.
        if (!live.has(group.connectionId)) groups.delete(group.connectionId);
        notifyIdle();
      } else if (!state.shutDown) {
        void runGroup(group);
      }
    }
  }

  function busy(): boolean {
    for (const group of groups.values()) if (group.running || group.messages.length > 0) return true;
    return false;
  }

  function notifyIdle(): void {
    if (busy()) return;
    for (const waiter of idleWaiters) waiter();
    idleWaiters.clear();
  }

  return { enqueue, busy };
}
