/**
 * Wires a server from configuration: the DynamoDB store, the @connections sender, and the way to
 * other domains (the federation service's queue or local intake, when configured).
 */
import type { ServerConfig } from '../config.ts';
import { defaultModules } from '../modules/index.ts';
import { DynamoStore } from '../storage/dynamo-store.ts';
import { remoteRouterFromConfig } from '../transport/s2s-queue.ts';
import { timerSchedulerFromConfig } from '../transport/timers.ts';
import { ApiGatewayConnectionSender, type ConnectionSender } from '../transport/connections.ts';
import { XmppServer, type RemoteRouter } from './server.ts';

export function createServer(config: ServerConfig, overrides: { sender?: ConnectionSender; remote?: RemoteRouter } = {}): XmppServer {
  if (!overrides.sender && !config.connectionsEndpoint) throw new Error('XMPP_CONNECTIONS_ENDPOINT is not set');
  return new XmppServer({
    config,
    store: new DynamoStore({ tableName: config.tableName, endpoint: config.dynamoEndpoint }),
    sender: overrides.sender ?? new ApiGatewayConnectionSender(config.connectionsEndpoint!, undefined, config.postTimeoutMs),
    remote: overrides.remote ?? remoteRouterFromConfig(config),
    timers: timerSchedulerFromConfig(config),
    modules: defaultModules,
  });
}
