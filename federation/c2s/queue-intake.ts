/**
 * A task's mailbox in the cloud: its own SQS FIFO queue, created when the task starts and deleted
 * when it stops (or by the sweep of another task when it died), long-polled for the frames that the
 * stream Lambdas and other tasks post to its native client sessions (shared/transport/tcp-sessions.ts).
 * Lambdas run outside the VPC and cannot reach a task's address; a queue per task costs nothing
 * while idle but its long polls (about 130,000 requests a month, $0.07) and adds about 20 ms.
 */
import { CreateQueueCommand, DeleteMessageBatchCommand, DeleteQueueCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Logger } from '../context.ts';
import type { Mailbox, MailboxMessage } from '../../shared/transport/tcp-sessions.ts';

/** The queue's name for a task: the prefix URL's last segment, the task id, `.fifo`. */
export function queueName(prefixUrl: string, taskId: string): string {
  return `${prefixUrl.slice(prefixUrl.lastIndexOf('/') + 1)}${taskId}.fifo`;
}

export class QueueIntake {
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();

  private constructor(
    readonly queueUrl: string,
    private readonly mailbox: Mailbox,
    private readonly log: Logger,
    private readonly client: SQSClient,
  ) {}

  /** Creates the task's queue (FIFO: one message group per connection keeps its order). */
  static async create(prefixUrl: string, taskId: string, mailbox: Mailbox, log: Logger, client = new SQSClient({ maxAttempts: 4 })): Promise<QueueIntake> {
    const { QueueUrl } = await client.send(
      new CreateQueueCommand({
        QueueName: queueName(prefixUrl, taskId),
        Attributes: {
          FifoQueue: 'true',
          // Frames are for live sockets: an hour is far longer than any of them is useful.
          MessageRetentionPeriod: '3600',
          VisibilityTimeout: '30',
          ReceiveMessageWaitTimeSeconds: '20',
          SqsManagedSseEnabled: 'true',
        },
      }),
    );
    const intake = new QueueIntake(QueueUrl!, mailbox, log, client);
    intake.running = true;
    intake.loop = intake.poll();
    return intake;
  }

  /** Stops polling and deletes the queue (frames still in it were for sockets that are closing). */
  async stop(): Promise<void> {
    this.running = false;
    this.abort.abort();
    await this.loop?.catch(() => {});
    await deleteQueue(this.client, this.queueUrl, this.log);
  }

  private async poll(): Promise<void> {
    let failures = 0;
    while (this.running) {
      try {
        const { Messages = [] } = await this.client.send(
          new ReceiveMessageCommand({ QueueUrl: this.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 20 }),
          { abortSignal: this.abort.signal },
        );
        failures = 0;
        // In order: a FIFO batch holds each group's messages in the order they were sent.
        for (const message of Messages) await this.handle(message.Body ?? '');
        if (Messages.length) {
          await this.client.send(
            new DeleteMessageBatchCommand({
              QueueUrl: this.queueUrl,
              Entries: Messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
            }),
          );
        }
      } catch (err) {
        if (!this.running) return;
        failures++;
        this.log.error('c2s mailbox: receive failed', { error: String(err) });
        await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** failures)));
      }
    }
  }

  private async handle(body: string): Promise<void> {
    let message: MailboxMessage;
    try {
      message = JSON.parse(body) as MailboxMessage;
    } catch {
      this.log.error('c2s mailbox: unreadable message dropped', { body: body.slice(0, 200) });
      return;
    }
    if (message.close) return this.mailbox.close(message.connection);
    // A socket already gone: its session ends with its $disconnect (or its instance's sweep); a
    // stanza of a session with stream management waits in that session's log.
    if (message.frame !== undefined) await this.mailbox.post(message.connection, message.frame);
  }
}

/** Deletes a task's queue; one already gone is fine. */
export async function deleteQueue(client: SQSClient, queueUrl: string, log: Logger): Promise<void> {
  try {
    await client.send(new DeleteQueueCommand({ QueueUrl: queueUrl }));
  } catch (err) {
    const name = (err as { name?: string }).name ?? '';
    if (name !== 'QueueDoesNotExist' && name !== 'AWS.SimpleQueueService.NonExistentQueue') log.warn('c2s mailbox: deleting a queue failed', { queueUrl, error: String(err) });
  }
}
