/**
 * The stream Lambda's side of federation: stanzas for other domains are handed to the federation
 * service, which owns every server-to-server stream. In the cloud through the outbound SQS queue
 * (XMPP_S2S_QUEUE_URL, one message per stanza, the body is the stanza's XML); in the local stack
 * through the federation service's loopback HTTP intake (XMPP_S2S_ENDPOINT). Both only enqueue:
 * the service delivers, or bounces the stanza back to its sender through the core.
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { ServerConfig } from '../config.ts';
import type { RemoteRouter } from '../core/server.ts';
import type { Element } from '../xml/element.ts';
import { QueueSender } from './queue-sender.ts';

export class SqsRemoteRouter implements RemoteRouter {
  private readonly queue: QueueSender;

  constructor(
    private readonly queueUrl: string,
    client?: SQSClient,
  ) {
    this.queue = new QueueSender(client);
  }

  async send(stanza: Element): Promise<void> {
    await this.queue.send({ QueueUrl: this.queueUrl, MessageBody: stanza.toString() });
  }
}

/** POSTs each stanza to the local federation service (loopback only; the URL carries a random token). */
export class HttpRemoteRouter implements RemoteRouter {
  constructor(private readonly endpoint: string) {}

  async send(stanza: Element): Promise<void> {
    const response = await fetch(this.endpoint, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: stanza.toString() });
    if (!response.ok) throw new Error(`federation intake answered ${response.status}`);
  }
}

/** The router the configuration asks for; undefined = federation off (the core bounces remote stanzas). */
export function remoteRouterFromConfig(config: Pick<ServerConfig, 's2sQueueUrl' | 's2sEndpoint'>): RemoteRouter | undefined {
  if (config.s2sQueueUrl) return new SqsRemoteRouter(config.s2sQueueUrl);
  if (config.s2sEndpoint) return new HttpRemoteRouter(config.s2sEndpoint);
  return undefined;
}
