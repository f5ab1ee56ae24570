/**
 * A real Prosody (Debian package) as the federation peer, started from a config under a temp dir
 * (see ../shared/peers/README.md): STARTTLS with a self-signed certificate, dialback, WebSocket on
 * loopback for its own clients, and an SRV record (through its libunbound resolver) that points
 * our domain at our federation port. Fails loudly when prosody is not installed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findFreePort } from '../../local/dynamodb.ts';
import type { Target } from '../../federation/resolve.ts';
import { generateCertificate, type TlsCredentials } from '../../federation/tls.ts';
import { addUser, startTestStack } from './helpers.ts';

export interface ProsodyOptions {
  domain: string;
  /** Our domain and federation port, published to Prosody as an SRV record. */
  homeDomain: string;
  homePort: number;
  /** More of our domains (e.g. a component's) published with the same SRV target. */
  extraDomains?: string[];
  /** Certificate for Prosody (default: self-signed); `trust` = CA certificates Prosody accepts. */
  certificate?: TlsCredentials;
  trust?: string;
  /** Prosody's s2s_secure_auth (certificate required, no dialback). */
  secureAuth?: boolean;
}

export interface Prosody {
  domain: string;
  s2sPort: number;
  wsUrl: string;
  dir: string;
  register(user: string, password: string): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  log(): string;
}

export function requireProsody(): void {
  const found = spawnSync('sh', ['-c', 'command -v prosody && command -v prosodyctl'], { encoding: 'utf8' });
  if (found.status !== 0) {
    throw new Error('prosody is not installed: the federation tests need it (apt-get install prosody lua-unbound; .ci/run does this)');
  }
  if (spawnSync('dpkg', ['-s', 'lua-unbound'], { encoding: 'utf8' }).status !== 0) {
    throw new Error('lua-unbound is not installed: Prosody needs it to find our test domain (apt-get install lua-unbound; .ci/run does this)');
  }
}

function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`prosody did not listen on ${port}`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** libunbound takes one value per option key; "local-data:" and "local-data" are two keys (two records at most). */
function srvRecords(domains: string[], port: number): string {
  const keys = ['local-data:', 'local-data'];
  if (domains.length > keys.length) throw new Error('at most two SRV records');
  return domains.map((d, i) => `["${keys[i]}"] = "_xmpp-server._tcp.${d}. 60 IN SRV 0 0 ${port} localhost."`).join('; ');
}

export async function createProsody(options: ProsodyOptions): Promise<Prosody> {
  requireProsody();
  const dir = mkdtempSync(join(tmpdir(), 'prosody-peer-'));
  const [c2sPort, s2sPort, httpPort] = [await findFreePort(), await findFreePort(), await findFreePort()];
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  mkdirSync(join(dir, 'data'));
  const cert = options.certificate ?? (await generateCertificate(options.domain));
  writeFileSync(join(certs, `${options.domain}.crt`), cert.cert);
  writeFileSync(join(certs, `${options.domain}.key`), cert.key, { mode: 0o600 });
  if (options.trust) writeFileSync(join(dir, 'trust.pem'), options.trust);
  const config = join(dir, 'prosody.cfg.lua');
  writeFileSync(
    config,
    `run_as_root = true
daemonize = false
data_path = "${dir}/data"; pidfile = "${dir}/prosody.pid"
log = { debug = "${dir}/prosody.log" }
interfaces = { "127.0.0.1" }; http_interfaces = { "127.0.0.1" }
c2s_ports = { ${c2sPort} }; s2s_ports = { ${s2sPort} }; http_ports = { ${httpPort} }
https_ports = {}; c2s_direct_tls_ports = {}; s2s_direct_tls_ports = {}
modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "register"; "websocket"; "offline"; "smacks" }
authentication = "internal_plain"; allow_registration = true
c2s_require_encryption = false; allow_unencrypted_plain_auth = true; consider_websocket_secure = true
s2s_require_encryption = true
s2s_secure_auth = ${options.secureAuth ? 'true' : 'false'}
s2s_timeout = 20
certificates = "${certs}"
${options.trust ? `ssl = { cafile = "${dir}/trust.pem" }` : ''}
http_default_host = "${options.domain}"
unbound = { options = { ${srvRecords([options.homeDomain, ...(options.extraDomains ?? [])], options.homePort)} } }
VirtualHost "${options.domain}"
`,
  );
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const prosody: Prosody = {
    domain: options.domain,
    s2sPort,
    wsUrl: `ws://127.0.0.1:${httpPort}/xmpp-websocket`,
    dir,
    register(user, password) {
      const r = spawnSync('prosodyctl', ['--config', config, 'register', user, options.domain, password], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`prosodyctl register failed: ${r.stderr}${r.stdout}`);
    },
    async start() {
      const proc = spawn('prosody', ['--config', config, '-F'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr!.on('data', (d) => (stderr += d));
      exited = new Promise((resolve) => proc.once('exit', () => resolve()));
      child = proc;
      const died = exited.then(() => {
        throw new Error(`prosody exited: ${stderr}\n${prosody.log().slice(-3000)}`);
      });
      await Promise.race([Promise.all([waitForPort(s2sPort, 15_000), waitForPort(httpPort, 15_000)]), died]);
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child?.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
    log() {
      try {
        return readFileSync(join(dir, 'prosody.log'), 'utf8');
      } catch {
        return '';
      }
    },
  };
  return prosody;
}

export function removeProsodyDir(prosody: Prosody | undefined): void {
  // KEEP_PROSODY_DIR=1 keeps the config and log for a look after a failure.
  if (prosody && !process.env.KEEP_PROSODY_DIR) rmSync(prosody.dir, { recursive: true, force: true });
}

type StackOptions = NonNullable<Parameters<typeof startTestStack>[0]>;
type FederationOptions = Exclude<NonNullable<StackOptions['federation']>, boolean>;

/**
 * Our local stack (federation on a free port) and a Prosody that knows where it is, with one
 * account on each side (password `homepass` here, `peerpass` there). `stop()` stops both.
 */
export async function startFederatedPair(options: {
  home: string;
  peer: string;
  federation?: Omit<FederationOptions, 'routes' | 's2sPort'>;
  prosody?: Omit<ProsodyOptions, 'domain' | 'homeDomain' | 'homePort'>;
  homeUser: string;
  peerUser: string;
}) {
  const routes = new Map<string, Target>();
  const stack = await startTestStack({ domain: options.home, federation: { ...options.federation, s2sPort: 0, routes } });
  let prosody: Prosody | undefined;
  try {
    prosody = await createProsody({ ...options.prosody, domain: options.peer, homeDomain: options.home, homePort: stack.federation!.s2sPort });
    routes.set(options.peer, { host: '127.0.0.1', port: prosody.s2sPort, directTls: false });
    prosody.register(options.peerUser, 'peerpass');
    await prosody.start();
    await addUser(stack.store, `${options.homeUser}@${options.home}`, 'homepass');
  } catch (err) {
    await stack.stop();
    await prosody?.stop();
    removeProsodyDir(prosody);
    throw err;
  }
  const peer = prosody;
  return {
    stack,
    prosody: peer,
    routes,
    async stop() {
      await stack.stop();
      await peer.stop();
      removeProsodyDir(peer);
    },
  };
}
