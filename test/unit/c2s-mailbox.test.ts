/**
 * The cloud mailbox of native client sessions: each stream-service task's own SQS FIFO queue.
 * SQS itself cannot be reached from here, so this is the one place a fake stands in for an AWS
 * service: it records the requests and answers as SQS documents (FIFO order within a message group,
 * QueueDoesNotExist for a deleted queue). The local HTTP mailbox is tested end to end in
 * test/integration/native-instances.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { CreateQueueCommandInput, DeleteMessageBatchCommandInput, DeleteQueueCommandInput, ReceiveMessageCommandInput, SendMessageCommandInput, SQSClient } from '@aws-sdk/client-sqs';
import { ClientConnectionSender, mailboxQueueUrl, type Mailbox } from '../../shared/transport/tcp-sessions.ts';
import { QueueIntake, queueName } from '../../federation/c2s/queue-intake.ts';

const PREFIX = 'https://sqs.eu-west-1.amazonaws.com/123456789012/xmpp-c2s-';
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** What the commands the fake answers carry (each uses its own fields). */
type SqsInput = Partial<CreateQueueCommandInput & SendMessageCommandInput & ReceiveMessageCommandInput & DeleteMessageBatchCommandInput & DeleteQueueCommandInput>;

/** A stand-in for SQS: queues by URL, FIFO messages, long polls that wait for messages. */
class FakeSqs {
  readonly queues = new Map<string, { body: string; group: string; handle: string }[]>();
  readonly requests: { name: string; input: SqsInput }[] = [];
  private handles = 0;

  async send(command: { constructor: { name: string }; input: SqsInput }, options?: { abortSignal?: AbortSignal }): Promise<object> {
    const { name } = command.constructor;
    const input = command.input;
    this.requests.push({ name, input });
    const queue = this.queues.get(input.QueueUrl ?? '');
    const gone = () => Object.assign(new Error('The specified queue does not exist.'), { name: 'QueueDoesNotExist' });
    switch (name) {
      case 'CreateQueueCommand': {
        const url = `${PREFIX.slice(0, PREFIX.lastIndexOf('/') + 1)}${input.QueueName}`;
        this.queues.set(url, []);
        return { QueueUrl: url };
      }
      case 'SendMessageCommand':
        if (!queue) throw gone();
        queue.push({ body: input.MessageBody ?? '', group: input.MessageGroupId ?? '', handle: `h${++this.handles}` });
        return {};
      case 'ReceiveMessageCommand': {
        for (let waited = 0; queue && queue.length === 0 && waited < 2000 && !options?.abortSignal?.aborted; waited += 10) await new Promise((r) => setTimeout(r, 10));
        if (options?.abortSignal?.aborted) throw Object.assign(new Error('aborted'), { name: 'AbortError' });
        if (!queue) throw gone();
        return { Messages: queue.slice(0, input.MaxNumberOfMessages).map((m) => ({ Body: m.body, ReceiptHandle: m.handle })) };
      }
      case 'DeleteMessageBatchCommand': {
        if (!queue) throw gone();
        const handles = new Set((input.Entries ?? []).map((e) => e.ReceiptHandle));
        this.queues.set(input.QueueUrl!, queue.filter((m) => !handles.has(m.handle)));
        return {};
      }
      case 'DeleteQueueCommand':
        if (!queue) throw gone();
        this.queues.delete(input.QueueUrl!);
        return {};
      default:
        throw new Error(`unexpected ${name}`);
    }
  }
}

/** Records what reaches the task's sockets. */
function recordingMailbox(): Mailbox & { got: string[] } {
  const got: string[] = [];
  return {
    got,
    post: async (connection, frame) => (got.push(`${connection} ${frame}`), true),
    close: async (connection) => void got.push(`${connection} closed`),
  };
}

describe('the task mailbox queue', () => {
  it('carries frames from any sender to the task that owns the connection, in order per connection, then is deleted', async () => {
    const sqs = new FakeSqs();
    const sockets = recordingMailbox();
    const intake = await QueueIntake.create(PREFIX, '0123456789abcdef', sockets, quiet, sqs as unknown as SQSClient);
    expect(intake.queueUrl).toBe(`${PREFIX}0123456789abcdef.fifo`);
    expect(queueName(PREFIX, '0123456789abcdef')).toBe('xmpp-c2s-0123456789abcdef.fifo');
    expect(sqs.requests[0]!.input.Attributes?.FifoQueue).toBe('true');

    // A stream Lambda's sender: it reads the connection id from a session item, nothing else.
    const lambda = new ClientConnectionSender(undefined, undefined, { queueUrlPrefix: PREFIX, sqs: sqs as unknown as SQSClient });
    const a = 'tcp~q.0123456789abcdef~conn-a';
    const b = 'tcp~q.0123456789abcdef~conn-b';
    expect(await lambda.send(a, '<message id="1"/>')).toBe(true);
    expect(await lambda.send(b, '<message id="x"/>')).toBe(true);
    expect(await lambda.send(a, '<message id="2"/>')).toBe(true);
    await lambda.close(a);
    const sends = sqs.requests.filter((r) => r.name === 'SendMessageCommand');
    expect(sends.map((r) => r.input.MessageGroupId)).toEqual([a, b, a, a]);
    expect(new Set(sends.map((r) => r.input.MessageDeduplicationId)).size).toBe(4); // a repeated frame is not a duplicate

    await expect.poll(() => sockets.got.length).toBe(4);
    expect(sockets.got.filter((g) => g.startsWith(a))).toEqual([`${a} <message id="1"/>`, `${a} <message id="2"/>`, `${a} closed`]);
    await expect.poll(() => sqs.queues.get(intake.queueUrl)?.length).toBe(0); // deleted once handed to the sockets

    await intake.stop();
    expect(sqs.queues.has(intake.queueUrl)).toBe(false);
    // The task is gone: its queue too, and a post says so, as API Gateway's 410 does.
    expect(await lambda.send(a, '<message id="3"/>')).toBe(false);
  });

  it('only addresses of task queues become queue URLs', () => {
    expect(mailboxQueueUrl(PREFIX, 'q.0123456789abcdef')).toBe(`${PREFIX}0123456789abcdef.fifo`);
    for (const bad of ['q.', 'q.../../x', 'q.ABC', 'h.1234.tokentokentokentoken', 'q.0123456789abcdef/../../other']) expect(mailboxQueueUrl(PREFIX, bad)).toBeUndefined();
  });

  it('an address the sender cannot reach is a connection that is gone, never a crash', async () => {
    const lambda = new ClientConnectionSender(undefined, undefined, {});
    expect(await lambda.send('tcp~q.0123456789abcdef~c', '<message/>')).toBe(false);
    expect(await lambda.send('tcp~zz.unknown~c', '<message/>')).toBe(false);
  });
});
