/**
 * The two calls of API Gateway's `@connections` management API a sender makes (post a frame,
 * delete a connection), by one of two clients with the same answers and errors:
 *
 * - lean (the default where credentials are in the environment: the stream Lambda, the local
 *   stack): one SigV4-signed HTTP request per attempt (aws/signed-http.ts), so the AWS SDK is not
 *   loaded at all on the message path (its middleware cost 0.3 ms of CPU per post; its modules,
 *   most of the stream handler's cold start: docs/performance.md);
 * - the SDK's ApiGatewayManagementApiClient, loaded on first use, where credentials come from
 *   elsewhere (the Fargate service's container endpoint) or with XMPP_AWS_CLIENT=sdk.
 *
 * Errors keep the SDK's shape (`name` such as GoneException, `$metadata.httpStatusCode`), and
 * retries follow its standard rules, so connections.ts reads them the same from either.
 */
import { randomUUID } from 'node:crypto';
import { awsFromEnv, serviceError, SignedHttp, withRetries, type AwsCredentials } from '../aws/signed-http.ts';

export interface ConnectionsApi {
  /** Posts one frame, with up to `maxAttempts` attempts; resolves with the attempts it took. */
  post(connectionId: string, frame: string, maxAttempts: number): Promise<{ attempts: number }>;
  /** Deletes (closes) a connection, with up to `maxAttempts` attempts. */
  delete(connectionId: string, maxAttempts: number): Promise<void>;
  destroy(): void;
}

/**
 * The connection id as a path segment, encoded as the SDK encodes it (encodeURIComponent and
 * then !'()*, smithy's extendedEncodeURIComponent).
 */
export const connectionPath = (basePath: string, connectionId: string) =>
  `${basePath.replace(/\/$/, '')}/@connections/${encodeURIComponent(connectionId).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;

export class LeanConnectionsApi implements ConnectionsApi {
  private readonly http: SignedHttp;
  private readonly basePath: string;

  constructor(endpoint: string, region: string, credentials: AwsCredentials, timeoutMs: number) {
    const url = new URL(endpoint);
    this.basePath = url.pathname;
    this.http = new SignedHttp({ url, service: 'execute-api', region, credentials, timeoutMs });
  }

  async post(connectionId: string, frame: string, maxAttempts: number): Promise<{ attempts: number }> {
    const body = Buffer.from(frame, 'utf8');
    const request = {
      method: 'POST' as const,
      path: connectionPath(this.basePath, connectionId),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length },
      body,
    };
    const out = await this.call(maxAttempts, request);
    return { attempts: out.$metadata.attempts };
  }

  async delete(connectionId: string, maxAttempts: number): Promise<void> {
    await this.call(maxAttempts, { method: 'DELETE', path: connectionPath(this.basePath, connectionId), headers: {} });
  }

  destroy(): void {
    this.http.destroy();
  }

  private call(maxAttempts: number, request: Parameters<SignedHttp['request']>[0]) {
    // One id for all attempts of a call, as the SDK sends it: the local gateway tells a retry
    // delivered after its first attempt by it (the chaos test's late deliveries).
    const invocation = { 'amz-sdk-invocation-id': randomUUID() };
    return withRetries(maxAttempts, async () => {
      const answer = await this.http.request(request, invocation);
      if (answer.status < 300) return {};
      let body: Record<string, unknown> = {};
      try {
        body = answer.body.length ? (JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>) : {};
      } catch {
        // An error page that is not JSON (a proxy's): the status says enough.
      }
      const type = answer.headers['x-amzn-errortype'];
      throw serviceError(answer.status, body, typeof type === 'string' ? type : undefined);
    });
  }
}

/** The SDK's client, loaded on first use: it is not in the stream handler's cold start. */
export class SdkConnectionsApi implements ConnectionsApi {
  private sdk?: Promise<{ mod: typeof import('@aws-sdk/client-apigatewaymanagementapi'); clients: Map<number, import('@aws-sdk/client-apigatewaymanagementapi').ApiGatewayManagementApiClient> }>;

  constructor(
    private readonly endpoint: string,
    private readonly timeoutMs: number,
  ) {}

  private load() {
    return (this.sdk ??= import('@aws-sdk/client-apigatewaymanagementapi').then((mod) => ({ mod, clients: new Map() })));
  }

  private async client(maxAttempts: number) {
    const { mod, clients } = await this.load();
    let client = clients.get(maxAttempts);
    if (!client) {
      // The clock runs only while the request is on its socket (connectionTimeout, then idle
      // socketTimeout), never while it waits for one: see connections.ts.
      client = new mod.ApiGatewayManagementApiClient({
        endpoint: this.endpoint,
        maxAttempts,
        requestHandler: {
          connectionTimeout: this.timeoutMs,
          socketTimeout: this.timeoutMs,
          httpAgent: { keepAlive: true, maxSockets: 256 },
          httpsAgent: { keepAlive: true, maxSockets: 256 },
        },
      });
      clients.set(maxAttempts, client);
    }
    return { mod, client };
  }

  async post(connectionId: string, frame: string, maxAttempts: number): Promise<{ attempts: number }> {
    const { mod, client } = await this.client(maxAttempts);
    const out = await client.send(new mod.PostToConnectionCommand({ ConnectionId: connectionId, Data: new TextEncoder().encode(frame) }));
    return { attempts: out.$metadata.attempts ?? 1 };
  }

  async delete(connectionId: string, maxAttempts: number): Promise<void> {
    const { mod, client } = await this.client(maxAttempts);
    await client.send(new mod.DeleteConnectionCommand({ ConnectionId: connectionId }));
  }

  destroy(): void {
    void this.sdk?.then(({ clients }) => clients.forEach((c) => c.destroy()));
  }
}

/** The lean client where credentials are in the environment (unless XMPP_AWS_CLIENT=sdk); the SDK's otherwise. */
export function connectionsApiFor(endpoint: string, timeoutMs: number, env: NodeJS.ProcessEnv = process.env): ConnectionsApi {
  const aws = env.XMPP_AWS_CLIENT === 'sdk' ? undefined : awsFromEnv(env);
  return aws ? new LeanConnectionsApi(endpoint, aws.region, aws.credentials, timeoutMs) : new SdkConnectionsApi(endpoint, timeoutMs);
}
