/**
 * The two @connections clients (shared/transport/connections-api.ts) behind the sender
 * (ApiGatewayConnectionSender), side by side on a scripted HTTP server that stands in for API
 * Gateway's management API (AWS itself is the edge we cannot reach): the lean client sends what
 * the SDK's sends and signs as the SDK's signer does, and through the sender both read 410 as
 * "gone", retry throttling and 5xx answers by the same rules, post a `once` frame only once
 * when its answer never comes, and time out only on the socket.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiGatewayConnectionSender } from '../../shared/transport/connections.ts';
import { connectionPath, connectionsApiFor, LeanConnectionsApi, SdkConnectionsApi, type ConnectionsApi } from '../../shared/transport/connections-api.ts';
import { signRequest } from '../../shared/aws/signed-http.ts';
import { sdkSignature } from './sigv4-reference.ts';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}
type Answer = { status: number; type?: string; body?: string } | 'hang';

const seen: Seen[] = [];
let script: (n: number) => Answer = () => ({ status: 200 });
const held = new Set<http.ServerResponse>();
const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
    const answer = script(seen.length);
    if (answer === 'hang') {
      held.add(res);
      return;
    }
    res.writeHead(answer.status, { 'content-type': 'application/json', ...(answer.type ? { 'x-amzn-ErrorType': answer.type } : {}) });
    res.end(answer.body ?? (answer.status >= 300 ? JSON.stringify({ message: answer.type ?? 'error' }) : ''));
  });
});

const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
let endpoint = '';
const apis: ConnectionsApi[] = [];
const savedEnv = { ...process.env };

/** Each client, as the sender uses it. */
const clients: Array<[string, (timeoutMs?: number) => ConnectionsApi]> = [
  ['lean', (timeoutMs = 3000) => new LeanConnectionsApi(endpoint, 'eu-west-1', credentials, timeoutMs)],
  ['sdk', (timeoutMs = 3000) => new SdkConnectionsApi(endpoint, timeoutMs)],
];
const senderOf = (make: (timeoutMs?: number) => ConnectionsApi, timeoutMs?: number) => {
  const api = make(timeoutMs);
  apis.push(api);
  return new ApiGatewayConnectionSender(endpoint, api);
};

beforeAll(async () => {
  // The SDK's client takes its region and credentials from the environment, as in a Lambda.
  Object.assign(process.env, { AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}/prod`;
});
afterEach(() => {
  seen.length = 0;
  script = () => ({ status: 200 });
  for (const res of held) res.destroy();
  held.clear();
});
afterAll(async () => {
  for (const api of apis) api.destroy();
  process.env = savedEnv;
  await new Promise((r) => server.close(r));
});

describe('the lean @connections client', () => {
  it("sends the SDK client's method, path, content type and body for a post and a delete", async () => {
    const id = 'Ab/c=+ d!*(x)';
    const frame = '<message to="a@b">é ✓</message>';
    const requests: Record<string, Seen[]> = {};
    for (const [name, make] of clients) {
      const sender = senderOf(make);
      expect(await sender.send(id, frame)).toBe(true);
      await sender.close(id);
      requests[name] = seen.splice(0);
    }
    const shape = (r: Seen) => ({ method: r.method, url: r.url, type: r.headers['content-type'], length: r.headers['content-length'], body: r.body });
    expect(requests.lean!.map(shape)).toEqual(requests.sdk!.map(shape));
    expect(requests.lean![0]).toMatchObject({ method: 'POST', url: '/prod/@connections/Ab%2Fc%3D%2B%20d%21%2A%28x%29', body: frame });
    for (const r of requests.lean!) {
      expect(r.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/execute-api\/aws4_request, /);
      expect(r.headers['amz-sdk-invocation-id']).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("signs a post as the SDK's own signer does, the encoded connection id included (no local stand-in checks signatures)", async () => {
    const url = new URL('https://abc123.execute-api.eu-west-1.amazonaws.com/prod');
    const path = connectionPath(url.pathname, 'Lv3zMeYgIAMCLfA=');
    expect(path).toBe('/prod/@connections/Lv3zMeYgIAMCLfA%3D');
    const body = '<message/>';
    const date = new Date('2026-12-08T01:00:00Z');
    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(body.length) };
    const withToken = { ...credentials, sessionToken: 'FwoGZXIvYXdzEXAMPLE' };
    const ours = signRequest({ url, service: 'execute-api', region: 'eu-west-1', credentials: withToken }, { method: 'POST', path, headers, body, date });
    const reference = await sdkSignature({ method: 'POST', url, path, headers, body }, 'execute-api', 'eu-west-1', withToken, date);
    expect(ours.Authorization).toBe(reference.authorization);
    expect(ours['X-Amz-Security-Token']).toBe(withToken.sessionToken);
  });

  it('is chosen where credentials are in the environment, unless XMPP_AWS_CLIENT=sdk; the SDK otherwise (Fargate)', () => {
    const env = { AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'AKIA', AWS_SECRET_ACCESS_KEY: 's' };
    expect(connectionsApiFor(endpoint, 3000, env)).toBeInstanceOf(LeanConnectionsApi);
    expect(connectionsApiFor(endpoint, 3000, { ...env, XMPP_AWS_CLIENT: 'sdk' })).toBeInstanceOf(SdkConnectionsApi);
    expect(connectionsApiFor(endpoint, 3000, { AWS_REGION: 'eu-west-1' })).toBeInstanceOf(SdkConnectionsApi);
  });
});

describe.each(clients)('the sender on the %s client', (_name, make) => {
  it('reads 410 GoneException as a connection gone: a post is not delivered, a close is done', async () => {
    script = () => ({ status: 410, type: 'GoneException' });
    const sender = senderOf(make);
    expect(await sender.send('gone=', '<message/>')).toBe(false);
    await expect(sender.close('gone=')).resolves.toBeUndefined();
    expect(seen).toHaveLength(2);
  });

  it('retries throttling and 5xx answers as one call (one invocation id) and delivers', async () => {
    script = (n) => (n === 1 ? { status: 429, type: 'LimitExceededException' } : n === 2 ? { status: 503, type: 'ServiceUnavailableException' } : { status: 200 });
    const sender = senderOf(make);
    expect(await sender.send('c=', '<message/>')).toBe(true);
    expect(seen).toHaveLength(3);
    expect(new Set(seen.map((r) => r.headers['amz-sdk-invocation-id'])).size).toBe(1);
  });

  it("gives up a post after its four attempts with the SDK's error name", async () => {
    script = () => ({ status: 500, type: 'InternalServerErrorException' });
    const sender = senderOf(make);
    await expect(sender.send('c=', '<message/>')).rejects.toMatchObject({ name: 'InternalServerErrorException', $metadata: { httpStatusCode: 500, attempts: 4 } });
    expect(seen).toHaveLength(4);
  });

  it('does not retry a client error (403, a bad signature)', async () => {
    script = () => ({ status: 403, type: 'ForbiddenException' });
    const sender = senderOf(make);
    await expect(sender.send('c=', '<message/>')).rejects.toMatchObject({ name: 'ForbiddenException', $metadata: { httpStatusCode: 403 } });
    expect(seen).toHaveLength(1);
  });

  it('posts a `once` frame left unanswered only once, and fails it with TimeoutError; a throttled one is posted again', async () => {
    script = () => 'hang';
    const sender = senderOf(make, 300);
    await expect(sender.send('c=', '<message/>', { once: true })).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(seen).toHaveLength(1);

    seen.length = 0;
    script = (n) => (n === 1 ? { status: 429, type: 'LimitExceededException' } : { status: 200 });
    expect(await sender.send('c=', '<message/>', { once: true })).toBe(true);
    expect(seen).toHaveLength(2);
  });

  it('posts an ordinary frame left unanswered again, up to four attempts', async () => {
    script = () => 'hang';
    const sender = senderOf(make, 200);
    await expect(sender.send('c=', '<message/>')).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(seen).toHaveLength(4);
  });
});
