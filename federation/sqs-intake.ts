/**
 * Drains the outbound SQS queue the stream Lambda fills: long polling, one message per stanza,
 * deleted once the stanza is written to a server-to-server stream or bounced to its sender. A
 * message that keeps failing returns to the queue after its visibility timeout and, after five
 * receives, lands in the dead-letter queue (alarmed): nothing is dropped silently.
 */
import { DeleteMessageCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { parseFrame } from '../shared/xml/parse.ts';
import { STORED_XML_LIMITS } from '../shared/xml/stored.ts';
import type { Element } from '../shared/xml/element.ts';
import type { Logger } from './context.ts';
import type { Delivery } from './outbound.ts';

/** Messages in flight at once (each waits at most the queue timeout for its link). */
const MAX_IN_FLIGHT = 200;

export class SqsIntake {
  private running = false;
  private loop: Promise<void> | undefined;
  private inFlight = 0;
  private readonly abort = new AbortController();

  constructor(
    private readonly queueUrl: string,
    private readonly router: { deliver(stanza: Element): Promise<Delivery> },
    private readonly log: Logger,
    private readonly client: SQSClient = new SQSClient({ maxAttempts: 4 }),
  ) {}

  start(): void {
    this.running = true;
    this.loop = this.poll();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort();
    await this.loop?.catch(() => {});
  }

  private async poll(): Promise<void> {
    let failures = 0;
    while (this.running) {
      if (this.inFlight >= MAX_IN_FLIGHT) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      try {
        const { Messages = [] } = await this.client.send(
          new ReceiveMessageCommand({ QueueUrl: this.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 }),
          { abortSignal: this.abort.signal },
        );
        failures = 0;
        for (const message of Messages) void this.handle(message.Body ?? '', message.ReceiptHandle!);
      } catch (err) {
        if (!this.running) return;
        failures++;
        this.log.error('s2s queue: receive failed', { error: String(err) });
        await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** failures)));
      }
    }
  }

  private async handle(body: string, receiptHandle: string): Promise<void> {
    this.inFlight++;
    try {
      let stanza: Element | undefined;
      try {
        // Written by the core: read with the trusted limits of stored XML (shared/xml/stored.ts).
        stanza = parseFrame(body, STORED_XML_LIMITS);
      } catch (err) {
        this.log.error('s2s queue: unreadable message dropped', { error: String(err) });
      }
      if (stanza) await this.router.deliver(stanza);
      await this.client.send(new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receiptHandle }));
    } catch (err) {
      // Left in the queue: SQS hands it out again after the visibility timeout.
      this.log.error('s2s queue: message not handled', { error: String(err) });
    } finally {
      this.inFlight--;
    }
  }
}
