/**
 * Sending to SQS from code that seldom does (the end of a resumption window, the hand-off to
 * federation, TCP sessions' mailboxes). The SDK's SQS client is imported on the first send, not
 * when the stream Lambda starts: most invocations never send to a queue, and every module loaded
 * at init is paid by every cold start (docs/performance.md, "Cold start").
 */
import type { SendMessageBatchCommandInput, SendMessageCommandInput, SQSClient } from '@aws-sdk/client-sqs';

let sdk: Promise<typeof import('@aws-sdk/client-sqs')> | undefined;
const loadSdk = () => (sdk ??= import('@aws-sdk/client-sqs'));

export class QueueSender {
  private client?: Promise<SQSClient>;

  /** `client`: a ready client (tests, or a process that has one already); else one is made on first use. */
  constructor(client?: SQSClient) {
    if (client) this.client = Promise.resolve(client);
  }

  async send(input: SendMessageCommandInput): Promise<void> {
    const { SQSClient, SendMessageCommand } = await loadSdk();
    const client = await (this.client ??= Promise.resolve(new SQSClient({ maxAttempts: 4 })));
    await client.send(new SendMessageCommand(input));
  }

  /** Up to 10 entries; an entry SQS refuses fails the whole call (the caller's frame is redelivered). */
  async sendBatch(input: SendMessageBatchCommandInput): Promise<void> {
    const { SQSClient, SendMessageBatchCommand } = await loadSdk();
    const client = await (this.client ??= Promise.resolve(new SQSClient({ maxAttempts: 4 })));
    const out = await client.send(new SendMessageBatchCommand(input));
    if (out.Failed?.length) throw new Error(`SQS refused ${out.Failed.length} of ${input.Entries?.length} messages: ${out.Failed[0]!.Code} ${out.Failed[0]!.Message ?? ''}`);
  }
}
