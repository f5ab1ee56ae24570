/**
 * The whole backend on one machine, no AWS account: DynamoDB Local + the local gateway feeding the
 * SAME Lambda handlers (lambdas/connect.ts, lambdas/stream.ts) that run in the cloud.
 *
 * Order matters: the environment the handlers read (XMPP_* and AWS_*) is set before the handler
 * modules are imported, and XMPP_CONNECTIONS_ENDPOINT is only known once the gateway listens, so
 * the gateway starts with handlers that wait for the modules to load.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../shared/config.ts';
import { faultsFromEnv } from '../shared/faults.ts';
import { ensureTable } from '../shared/storage/table.ts';
import { startFederation, type FederationOptions, type FederationService } from '../federation/service.ts';
import { federationSettingsFromEnv } from '../federation/settings.ts';
import { generateCertificate, selfSignedCertificate } from '../federation/tls.ts';
import { isPortFree, localDynamoClient, startDynamoDbLocal, type DynamoDbLocal } from './dynamodb.ts';
import { LocalStackError } from './errors.ts';
import { chainHttpHandlers, type LocalHttpHandler } from './http-handlers.ts';
import { UPLOAD_PATH, uploadHttpHandler } from './upload-http.ts';
import {
  callHandler,
  startGateway,
  WS_PATH,
  type ConnectHandler,
  type Gateway,
  type GatewayLogger,
  type GatewayOptions,
  type StreamHandler,
} from './gateway.ts';

export interface LocalStackOptions {
  /** WebSocket port (XMPP_WS_PORT, default 5280; 0 = ephemeral). */
  wsPort?: number;
  /** Listen address of the WebSocket server (XMPP_BIND, default 127.0.0.1). */
  bind?: string;
  /** Data directory (XMPP_DATA_DIR, default .data); DynamoDB Local keeps its files in `<dataDir>/dynamodb`. */
  dataDir?: string;
  /** DynamoDB Local in memory: nothing written to disk (tests). */
  inMemory?: boolean;
  /** XMPP_DOMAIN, default localhost. */
  domain?: string;
  /** XMPP_TABLE, default xmpp. */
  tableName?: string;
  /** XMPP_IDLE_SECONDS, default 600. */
  idleSeconds?: number;
  /** XMPP_MAX_LIFETIME_SECONDS, default 7200. */
  maxLifetimeSeconds?: number;
  /** XMPP_REGISTRATION (XEP-0077), default true locally. */
  registration?: boolean;
  /**
   * Use a DynamoDB (Local) that is already running instead of starting one; stop() leaves it
   * running. The test run shares one this way (test/global-setup.ts), each stack with its own table.
   */
  dynamoEndpoint?: string;
  /** DynamoDB Local port (XMPP_DYNAMODB_PORT); default a free port. */
  dynamoPort?: number;
  /** @connections API port on 127.0.0.1; default a free port. */
  connectionsPort?: number;
  /** Extra environment for the handler code, applied first (undefined deletes a variable). */
  env?: Record<string, string | undefined>;
  /** Use these instead of importing lambdas/stream.ts and lambdas/connect.ts. */
  streamHandler?: StreamHandler;
  connectHandler?: ConnectHandler;
  /** Plain HTTP on the WebSocket port (e.g. the web client at /). Ignored when httpHandlers is given. */
  httpHandler?: GatewayOptions['httpHandler'];
  /**
   * Plain HTTP on the WebSocket port, tried in order (local/http-handlers.ts): the first that returns
   * true answered; 404 when none does. npm start passes the web client (local/web-http.ts) here.
   */
  httpHandlers?: LocalHttpHandler[];
  /**
   * XEP-0363 uploads served by the stack itself under /upload/ on the WebSocket port, files in
   * `<dataDir>/uploads` (local/upload-http.ts); the slot service is upload.<domain>. Default true.
   */
  uploads?: boolean;
  /**
   * How many stream handler instances run (XMPP_HANDLER_INSTANCES, default 1): each is a separate
   * copy of lambdas/stream.ts with its own module state, like Lambda's execution environments, and
   * every invocation goes to one picked at random, so one connection's records are spread across
   * them the way Lambda may spread them (SQS FIFO pins a message group to no instance).
   */
  handlerInstances?: number;
  /** Further gateway settings (redelivery, batch size, …). */
  gateway?: Partial<Omit<GatewayOptions, 'streamHandler' | 'connectHandler'>>;
  logger?: GatewayLogger;
  /** DynamoDB Local's own output lines. */
  onDynamoOutput?: (line: string) => void;
  /**
   * The federation service (server-to-server, XEP-0114 components) in this process, on
   * 127.0.0.1:XMPP_S2S_PORT (default 5269; `{ s2sPort: 0 }` = any free port). Off by default (npm
   * start turns it on). Settings not given here come from the environment (XMPP_S2S_ROUTES,
   * XMPP_COMPONENTS, …); the certificate is a self-signed one for the domain, kept in
   * `<dataDir>/federation/` (generated in memory with `inMemory`).
   */
  federation?: boolean | Partial<Omit<FederationOptions, 'config' | 'httpIntake' | 'queueUrl'>>;
  /** Write `<dataDir>/local-stack.json` so xmppctl finds the running stack. Default: !inMemory. */
  writeInfoFile?: boolean;
}

export interface LocalStack {
  wsUrl: string;
  connectionsEndpoint: string;
  dynamoEndpoint: string;
  tableName: string;
  domain: string;
  /** Absolute data directory (also when in memory: where the info file would go). */
  dataDir: string;
  gateway: Gateway;
  /** The federation service, when started. */
  federation?: FederationService;
  /**
   * Closes every socket, lets the handlers see the DISCONNECTs, stops DynamoDB Local, and puts back
   * the environment variables the stack set. Idempotent.
   */
  stop(): Promise<void>;
}

/** What a running stack writes to `<dataDir>/local-stack.json` (read by cli/targets.ts). */
export interface LocalStackInfo {
  pid: number;
  domain: string;
  tableName: string;
  dynamoEndpoint: string;
  wsUrl: string;
  connectionsEndpoint: string;
}

export const LOCAL_STACK_INFO_FILE = 'local-stack.json';

function positive(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${value}"`);
  return n;
}

function positiveInteger(value: string | undefined, name: string): number | undefined {
  const n = positive(value, name);
  if (n !== undefined && !Number.isInteger(n)) throw new Error(`${name} must be a whole number, got "${value}"`);
  return n;
}

function port(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number, got "${value}"`);
  return n;
}

/** Each stack after the first in one process imports fresh handler modules (they cache their config). */
let lambdaInstances = 0;

async function importLambdas(streamInstances: number): Promise<{ streams: StreamHandler[]; connect: ConnectHandler }> {
  const url = (file: string) => {
    lambdaInstances += 1;
    return new URL(file, import.meta.url).href + (lambdaInstances > 1 ? `?instance=${lambdaInstances}` : '');
  };
  const connectModule = await import(url('../lambdas/connect.ts'));
  const streamModules = await Promise.all(Array.from({ length: streamInstances }, () => import(url('../lambdas/stream.ts'))));
  if (streamModules.some((m) => typeof m.handler !== 'function')) throw new Error('lambdas/stream.ts does not export a handler');
  if (typeof connectModule.handler !== 'function') throw new Error('lambdas/connect.ts does not export a handler');
  return { streams: streamModules.map((m) => m.handler as StreamHandler), connect: connectModule.handler as ConnectHandler };
}

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  const env = process.env;
  // Everything this stack changes in process.env is put back by stop() (or a failed start), so
  // stacks started one after the other in one process do not inherit each other's settings.
  const saved = new Map<string, string | undefined>();
  const setEnv = (name: string, value: string | undefined) => {
    if (!saved.has(name)) saved.set(name, env[name]);
    if (value === undefined) delete env[name];
    else env[name] = value;
  };
  const restoreEnv = () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete env[name];
      else env[name] = value;
    }
    saved.clear();
  };
  try {
    for (const [name, value] of Object.entries(options.env ?? {})) setEnv(name, value);
    return await start(options, setEnv, restoreEnv);
  } catch (err) {
    restoreEnv();
    throw err;
  }
}

async function start(
  options: LocalStackOptions,
  setEnv: (name: string, value: string | undefined) => void,
  restoreEnv: () => void,
): Promise<LocalStack> {
  const env = process.env;
  const inMemory = options.inMemory ?? false;
  const dataDir = resolve(options.dataDir ?? (env.XMPP_DATA_DIR || '.data'));
  const domain = (options.domain ?? (env.XMPP_DOMAIN || 'localhost')).toLowerCase();
  const tableName = options.tableName ?? (env.XMPP_TABLE || 'xmpp');
  const idleSeconds = options.idleSeconds ?? positive(env.XMPP_IDLE_SECONDS, 'XMPP_IDLE_SECONDS') ?? 600;
  const maxLifetimeSeconds =
    options.maxLifetimeSeconds ?? positive(env.XMPP_MAX_LIFETIME_SECONDS, 'XMPP_MAX_LIFETIME_SECONDS') ?? 7200;
  const registration = options.registration ?? (env.XMPP_REGISTRATION ? /^(1|true|yes|on)$/i.test(env.XMPP_REGISTRATION) : true);
  const wsPort = options.wsPort ?? port(env.XMPP_WS_PORT, 'XMPP_WS_PORT') ?? 5280;
  const bind = options.bind ?? (env.XMPP_BIND || '127.0.0.1');
  const dynamoPort = options.dynamoPort ?? port(env.XMPP_DYNAMODB_PORT, 'XMPP_DYNAMODB_PORT');
  const writeInfoFile = options.writeInfoFile ?? !inMemory;

  // Fail fast, before DynamoDB Local takes its few seconds to start.
  if (wsPort !== 0 && !(await isPortFree(wsPort, bind))) {
    throw new LocalStackError(
      'PORT_IN_USE',
      `WebSocket (XMPP_WS_PORT): port ${wsPort} on ${bind} is already in use. Stop the other process or choose another port.`,
    );
  }

  const dynamo: Pick<DynamoDbLocal, 'endpoint' | 'stop'> = options.dynamoEndpoint
    ? { endpoint: options.dynamoEndpoint, stop: async () => {} }
    : await startDynamoDbLocal({ inMemory, dataDir, port: dynamoPort, onOutput: options.onDynamoOutput });
  let gateway: Gateway | undefined;
  let federation: FederationService | undefined;
  try {
    const client = localDynamoClient(dynamo.endpoint);
    try {
      await ensureTable(client, tableName);
    } finally {
      client.destroy();
    }

    // The environment the handler code reads (shared/config.ts), set before it is imported.
    setEnv('XMPP_DOMAIN', domain);
    setEnv('XMPP_TABLE', tableName);
    setEnv('XMPP_DYNAMODB_ENDPOINT', dynamo.endpoint);
    setEnv('XMPP_REGISTRATION', registration ? 'true' : 'false');
    setEnv('XMPP_IDLE_SECONDS', String(Math.max(1, Math.ceil(idleSeconds)))); // advertised (XEP-0478): whole seconds
    setEnv('XMPP_MAX_LIFETIME_SECONDS', String(Math.max(1, Math.ceil(maxLifetimeSeconds))));
    setEnv('XMPP_DATA_DIR', dataDir);
    setEnv('AWS_REGION', 'local');
    if (!env.AWS_ACCESS_KEY_ID) setEnv('AWS_ACCESS_KEY_ID', 'local');
    if (!env.AWS_SECRET_ACCESS_KEY) setEnv('AWS_SECRET_ACCESS_KEY', 'local');

    const handlerInstances = options.handlerInstances ?? positiveInteger(env.XMPP_HANDLER_INSTANCES, 'XMPP_HANDLER_INSTANCES') ?? 1;
    const faults = faultsFromEnv(env); // fails the start on a malformed XMPP_FAULTS
    let lambdas: Promise<{ streams: StreamHandler[]; connect: ConnectHandler }> | undefined;
    const loaded = () => (lambdas ??= importLambdas(handlerInstances));
    const pick = <T>(list: T[]) => list[Math.floor(Math.random() * list.length)]!;
    const streamHandler: StreamHandler =
      options.streamHandler ?? (async (event, context) => callHandler(pick((await loaded()).streams), event, context));
    const connectHandler: ConnectHandler =
      options.connectHandler ?? (async (event, context) => callHandler((await loaded()).connect, event, context));

    // Plain HTTP on the WebSocket port: the stack's own handlers (uploads) first, then the caller's.
    const uploads = options.uploads ?? true;
    const uploadSecret = randomBytes(32).toString('base64url');
    const httpHandlers: LocalHttpHandler[] = uploads ? [uploadHttpHandler({ dir: join(dataDir, 'uploads'), secret: uploadSecret })] : [];
    const legacyHttpHandler = options.httpHandler ?? options.gateway?.httpHandler;
    if (options.httpHandlers) httpHandlers.push(...options.httpHandlers);
    else if (legacyHttpHandler) httpHandlers.push((req, res) => (legacyHttpHandler(req, res), true));
    gateway = await startGateway({
      faults: faults && { gone: faults.gone, timeout: faults.timeout },
      ...options.gateway,
      streamHandler,
      connectHandler,
      httpHandler: httpHandlers.length
        ? chainHttpHandlers(httpHandlers, { domain, registration, wsPath: options.gateway?.path ?? WS_PATH }, (m) =>
            (options.logger ?? console).error(m),
          )
        : undefined,
      bind,
      port: wsPort,
      connectionsPort: options.connectionsPort ?? options.gateway?.connectionsPort,
      idleSeconds,
      maxLifetimeSeconds,
      logger: options.logger ?? options.gateway?.logger,
    });
    setEnv('XMPP_CONNECTIONS_ENDPOINT', gateway.connectionsEndpoint);
    setEnv('XMPP_TIMER_ENDPOINT', gateway.timerEndpoint);
    setEnv('XMPP_JOB_ENDPOINT', gateway.jobEndpoint);
    // Slots point at this same port (shared/upload/local-storage.ts signs them with the secret).
    setEnv('XMPP_UPLOAD_URL', uploads ? new URL(UPLOAD_PATH, gateway.wsUrl.replace(/^ws/, 'http')).href.replace(/\/$/, '') : undefined);
    setEnv('XMPP_UPLOAD_SECRET', uploads ? uploadSecret : undefined);
    // Invitation links open the web client's landing page on this same port (web/app.js).
    if (!env.XMPP_INVITE_URL) setEnv('XMPP_INVITE_URL', new URL('/', gateway.wsUrl.replace(/^ws/, 'http')).href);
    if (options.federation) {
      federation = await startLocalFederation(options.federation === true ? {} : options.federation, { domain, dataDir, inMemory, bind });
      // The stream handler hands stanzas for other domains to the service's loopback intake.
      setEnv('XMPP_S2S_ENDPOINT', federation.intakeUrl);
    } else {
      setEnv('XMPP_S2S_ENDPOINT', undefined);
    }
    if (!options.streamHandler || !options.connectHandler) await loaded();
  } catch (err) {
    await federation?.stop().catch(() => {});
    await gateway?.close().catch(() => {});
    await dynamo.stop();
    throw err;
  }

  const infoPath = join(dataDir, LOCAL_STACK_INFO_FILE);
  if (writeInfoFile) {
    const info: LocalStackInfo = {
      pid: process.pid,
      domain,
      tableName,
      dynamoEndpoint: dynamo.endpoint,
      wsUrl: gateway.wsUrl,
      connectionsEndpoint: gateway.connectionsEndpoint,
    };
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(infoPath, `${JSON.stringify(info, null, 2)}\n`);
  }

  const runningGateway = gateway;
  const runningFederation = federation;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      try {
        // Clients first: their unavailable presence still reaches remote contacts (and native
        // clients' sessions reach WebSocket contacts and the gateway's timers).
        await runningFederation?.stopClients();
        await runningGateway.close();
        await runningFederation?.stop();
      } finally {
        await dynamo.stop();
        if (writeInfoFile) removeInfoFile(infoPath);
        restoreEnv();
      }
    })());

  return {
    wsUrl: gateway.wsUrl,
    connectionsEndpoint: gateway.connectionsEndpoint,
    dynamoEndpoint: dynamo.endpoint,
    tableName,
    domain,
    dataDir,
    gateway,
    federation,
    stop,
  };
}

/** Starts the federation service for the local stack, after the gateway (its core posts to @connections). */
async function startLocalFederation(
  options: Partial<Omit<FederationOptions, 'config' | 'httpIntake' | 'queueUrl'>>,
  stack: { domain: string; dataDir: string; inMemory: boolean; bind: string },
): Promise<FederationService> {
  const settings = federationSettingsFromEnv(process.env);
  const tls =
    options.tls ??
    settings.tls ??
    (stack.inMemory ? await generateCertificate(stack.domain) : await selfSignedCertificate(stack.domain, join(stack.dataDir, 'federation')));
  try {
    return await startFederation({
      ...settings,
      bind: stack.bind,
      dialbackSecret: process.env.XMPP_DIALBACK_SECRET || randomBytes(32).toString('hex'),
      ...options,
      timing: { ...settings.timing, ...options.timing },
      tls,
      config: loadConfig(process.env),
      httpIntake: {},
    });
  } catch (err) {
    if ((err as { code?: string }).code === 'EADDRINUSE') {
      throw new LocalStackError('PORT_IN_USE', `federation or native client port (XMPP_S2S_PORT, XMPP_C2S_PORT, XMPP_C2S_TLS_PORT): ${(err as Error).message}. Stop the other process, choose other ports, or set XMPP_C2S=false / XMPP_FEDERATION=false.`);
    }
    throw err;
  }
}

function removeInfoFile(path: string): void {
  try {
    if (!existsSync(path)) return;
    const info = JSON.parse(readFileSync(path, 'utf8')) as Partial<LocalStackInfo>;
    if (info.pid === process.pid) rmSync(path, { force: true });
  } catch {
    // a broken file is not ours to worry about
  }
}
