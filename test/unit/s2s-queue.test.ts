/**
 * The SQS boundary between the stream Lambda and the federation service, with the real AWS SDK
 * client (requests answered in-process by a middleware, no network): what the Lambda enqueues, and
 * that the service deletes a message only once its stanza was delivered or bounced.
 */
import { SQSClient } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { ComponentRegistry } from '../../federation/component.ts';
import { DEFAULT_TIMING, type S2sContext } from '../../federation/context.ts';
import { S2sRouter } from '../../federation/service.ts';
import { SqsIntake } from '../../federation/sqs-intake.ts';
import { SqsRemoteRouter, remoteRouterFromConfig, HttpRemoteRouter } from '../../shared/transport/s2s-queue.ts';
import type { StanzaError } from '../../shared/errors.ts';
import { NS, x, type Element } from '../../shared/xml/element.ts';
import { DEFAULT_XML_LIMITS } from '../../shared/xml/parse.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/s2s';

/** An SQS client whose requests are answered by `answer` (the SDK's own serialization is skipped). */
function fakeSqs(answer: (command: string, input: Record<string, unknown>) => Promise<Record<string, unknown>>) {
  const calls: { command: string; input: Record<string, unknown> }[] = [];
  const client = new SQSClient({ region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
  client.middlewareStack.add(
    (_next, context) => async (args) => {
      const command = context.commandName as string;
      const input = args.input as Record<string, unknown>;
      calls.push({ command, input });
      return { output: { $metadata: {}, ...(await answer(command, input)) }, response: {} } as never;
    },
    { step: 'initialize', name: 'answer' },
  );
  return { client, calls };
}

describe('stream Lambda → s2s queue', () => {
  it('sends each stanza as one message to the configured queue', async () => {
    const { client, calls } = fakeSqs(async () => ({ MessageId: '1' }));
    const stanza = x('message', { xmlns: NS.CLIENT, from: 'a@home.test/r', to: 'b@peer.test', type: 'chat' }, x('body', {}, 'hi & bye'));
    await new SqsRemoteRouter(QUEUE, client).send(stanza);
    expect(calls).toEqual([{ command: 'SendMessageCommand', input: { QueueUrl: QUEUE, MessageBody: stanza.toString() } }]);
  });

  it('picks SQS in the cloud, the loopback intake locally, nothing when federation is off', () => {
    expect(remoteRouterFromConfig({ s2sQueueUrl: QUEUE })).toBeInstanceOf(SqsRemoteRouter);
    expect(remoteRouterFromConfig({ s2sEndpoint: 'http://127.0.0.1:1/t/stanzas' })).toBeInstanceOf(HttpRemoteRouter);
    expect(remoteRouterFromConfig({})).toBeUndefined();
  });
});

describe('federation service ← s2s queue', () => {
  it('deletes a message once its stanza is bounced (here: no such domain), and drops unreadable ones', async () => {
    const bounced: { stanza: Element; error: StanzaError }[] = [];
    const ctx: S2sContext = {
      domain: 'home.test',
      isOurDomain: (d) => d === 'home.test',
      secret: 's',
      requireTls: false,
    secureAuth: false,
    insecureDomains: new Set(),
      routes: new Map(),
      dns: {
        resolveSrv: async () => Promise.reject(Object.assign(new Error('none'), { code: 'ENOTFOUND' })),
        lookup: async () => Promise.reject(Object.assign(new Error('none'), { code: 'ENOTFOUND' })),
      },
      limits: DEFAULT_XML_LIMITS,
      timing: DEFAULT_TIMING,
      log: quiet,
      bounce: async (stanza, error) => void bounced.push({ stanza, error }),
    };
    const router = new S2sRouter(ctx, new ComponentRegistry(new Map(), quiet, async () => {}));
    let handedOut = false;
    const deleted: string[] = [];
    const { client } = fakeSqs(async (command, input) => {
      if (command === 'DeleteMessageCommand') {
        deleted.push(input.ReceiptHandle as string);
        return {};
      }
      if (handedOut) {
        await new Promise((r) => setTimeout(r, 50));
        return { Messages: [] };
      }
      handedOut = true;
      return {
        Messages: [
          { ReceiptHandle: 'r1', Body: `<message xmlns="jabber:client" from="a@home.test/r" to="b@nowhere.test" id="m1" type="chat"><body>x</body></message>` },
          { ReceiptHandle: 'r2', Body: '<not xml' },
        ],
      };
    });
    const intake = new SqsIntake(QUEUE, router, quiet, client);
    intake.start();
    try {
      const deadline = Date.now() + 5000;
      while (deleted.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    } finally {
      await intake.stop();
      router.stop();
    }
    expect(deleted.sort()).toEqual(['r1', 'r2']);
    expect(bounced.map((b) => [b.stanza.attrs.id, b.error.condition])).toEqual([['m1', 'remote-server-not-found']]);
  });
});
