/**
 * The stream Lambda: takes the SQS FIFO batch API Gateway fed (one record per WebSocket frame or
 * disconnect, grouped by connection), runs each through the XMPP core in order, and reports the
 * records it could not process so SQS redelivers them (and everything after them in that group).
 */
import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { loadConfig } from '../shared/config.ts';
import { withTurnSecret } from '../shared/turn-secret.ts';
import { createServer } from '../shared/core/create.ts';
import type { XmppServer } from '../shared/core/server.ts';
import type { ConnectionState } from '../shared/core/types.ts';
import { log } from '../shared/log.ts';
import { EVENT_ATTRIBUTES } from '../shared/transport/events.ts';
import { parseTimerEvent } from '../shared/transport/timers.ts';
import { parseJob } from '../shared/transport/jobs.ts';

let server: XmppServer | undefined;

function connectionOf(record: SQSRecord): string {
  // Timer events come from a standard queue: no connection, no group; each is its own. A job's
  // group is its ordering group (jobs.ts).
  return record.messageAttributes[EVENT_ATTRIBUTES.connectionId]?.stringValue ?? record.attributes.MessageGroupId ?? `timer:${record.messageId}`;
}

/**
 * Runs one record. `state` is what this invocation committed with the connection's previous record
 * (one instance, in order); the result is passed with the next record of the same connection.
 */
async function processRecord(core: XmppServer, record: SQSRecord, state: ConnectionState | undefined): Promise<ConnectionState | undefined> {
  const connectionId = connectionOf(record);
  const attributes = record.messageAttributes;
  const type = attributes[EVENT_ATTRIBUTES.eventType]?.stringValue ?? 'MESSAGE';
  // The message id and API Gateway's receive time are the same on every delivery of the record.
  const receivedAt = Number(attributes[EVENT_ATTRIBUTES.requestTimeEpoch]?.stringValue) || undefined;
  const delivery = { id: record.messageId, receivedAt, sourceIp: attributes[EVENT_ATTRIBUTES.sourceIp]?.stringValue };
  if (type === 'DISCONNECT') {
    await core.handleDisconnect(connectionId, delivery);
    return undefined;
  }
  if (type === 'TIMER') {
    const timer = parseTimerEvent(record.body);
    if (timer) await core.handleTimer(timer, delivery);
    else log.error('unreadable timer event dropped', { body: record.body.slice(0, 200) });
    return undefined;
  }
  if (type === 'JOB') {
    const job = parseJob(record.body);
    if (job) await core.handleJob(job, delivery);
    else log.error('unreadable job dropped', { body: record.body.slice(0, 200) });
    return undefined;
  }
  return core.handleFrame(connectionId, record.body, { ...delivery, state });
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  // Created on first use so the configuration comes from the environment at invocation time.
  const core = (server ??= createServer(loadConfig(await withTurnSecret(process.env))));
  const groups = new Map<string, SQSRecord[]>();
  for (const record of event.Records) {
    const id = connectionOf(record);
    groups.set(id, [...(groups.get(id) ?? []), record]);
  }
  const batchItemFailures: SQSBatchItemFailure[] = [];
  // Connections in parallel, each connection's records strictly in order.
  await Promise.all(
    [...groups.values()].map(async (records) => {
      let state: ConnectionState | undefined;
      for (let i = 0; i < records.length; i++) {
        try {
          state = await processRecord(core, records[i]!, state);
        } catch (err) {
          log.error('frame failed', { connectionId: connectionOf(records[i]!), error: (err as Error).stack ?? String(err) });
          for (const r of records.slice(i)) batchItemFailures.push({ itemIdentifier: r.messageId });
          return;
        }
      }
    }),
  );
  return { batchItemFailures };
}
