/**
 * Wires a server from configuration: the DynamoDB store, the sender to client connections
 * (@connections for WebSocket clients, task mailboxes for native TCP clients), and the way to other
 * domains (the federation service's queue or local intake, when configured).
 */
import type { ServerConfig } from '../config.ts';
import { defaultModules } from '../modules/index.ts';
import { DynamoStore } from '../storage/dynamo-store.ts';
import { remoteRouterFromConfig } from '../transport/s2s-queue.ts';
import { timerSchedulerFromConfig } from '../transport/timers.ts';
import { jobQueueFromConfig } from '../transport/jobs.ts';
import { ApiGatewayConnectionSender, type ConnectionSender } from '../transport/connections.ts';
import { ClientConnectionSender, type Mailbox } from '../transport/tcp-sessions.ts';
import { XmppServer, type RemoteRouter } from './server.ts';

export interface ServerOverrides {
  /** Posts to WebSocket connections (default: @connections at XMPP_CONNECTIONS_ENDPOINT). */
  sender?: ConnectionSender;
  remote?: RemoteRouter;
  /** This process's own native client sessions (the stream service's listener). */
  ownTcp?: { address: string; mailbox: Mailbox };
}

export function createServer(config: ServerConfig, overrides: ServerOverrides = {}): XmppServer {
  if (!overrides.sender && !config.connectionsEndpoint) throw new Error('XMPP_CONNECTIONS_ENDPOINT is not set');
  const websocket = overrides.sender ?? new ApiGatewayConnectionSender(config.connectionsEndpoint!, undefined, config.postTimeoutMs);
  return new XmppServer({
    config,
    store: new DynamoStore({ tableName: config.tableName, endpoint: config.dynamoEndpoint }),
    sender: new ClientConnectionSender(websocket, overrides.ownTcp, { queueUrlPrefix: config.c2sQueueUrlPrefix }),
    remote: overrides.remote ?? remoteRouterFromConfig(config),
    timers: timerSchedulerFromConfig(config),
    jobs: jobQueueFromConfig(config),
    modules: defaultModules,
  });
}
