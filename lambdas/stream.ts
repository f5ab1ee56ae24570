/**
 * The stream Lambda: takes the SQS FIFO batch API Gateway fed (one record per WebSocket frame or
 * disconnect, grouped by connection), runs each through the XMPP core in order, and reports the
 * records it could not process so SQS redelivers them (and everything after them in that group).
 */
import type { SQSBatchItemFailure, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { loadConfig } from '../shared/config.ts';
import { createServer } from '../shared/core/create.ts';
import type { XmppServer } from '../shared/core/server.ts';
import { log } from '../shared/log.ts';
import { EVENT_ATTRIBUTES } from '../shared/transport/events.ts';

let server: XmppServer | undefined;

function connectionOf(record: SQSRecord): string {
  return record.messageAttributes[EVENT_ATTRIBUTES.connectionId]?.stringValue ?? record.attributes.MessageGroupId!;
}

async function processRecord(core: XmppServer, record: SQSRecord): Promise<void> {
  const connectionId = connectionOf(record);
  const type = record.messageAttributes[EVENT_ATTRIBUTES.eventType]?.stringValue ?? 'MESSAGE';
  if (type === 'DISCONNECT') await core.handleDisconnect(connectionId);
  else await core.handleFrame(connectionId, record.body);
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  // Created on first use so the configuration comes from the environment at invocation time.
  const core = (server ??= createServer(loadConfig()));
  const groups = new Map<string, SQSRecord[]>();
  for (const record of event.Records) {
    const id = connectionOf(record);
    groups.set(id, [...(groups.get(id) ?? []), record]);
  }
  const batchItemFailures: SQSBatchItemFailure[] = [];
  // Connections in parallel, each connection's records strictly in order.
  await Promise.all(
    [...groups.values()].map(async (records) => {
      for (let i = 0; i < records.length; i++) {
        try {
          await processRecord(core, records[i]!);
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
