/**
 * Prosody as a server under test: Debian's Prosody with mod_websocket on loopback, a temporary
 * config and data directory, started in the foreground as a child process; rosters written straight
 * into its storage files. The same Target face as our stack (bench/targets.ts).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep } from './stats.ts';
import { freePort, type RosterContact, type Target } from './targets.ts';

/** Prosody's datamanager file-name encoding (util/datamanager.lua: every non-alphanumeric as %xx). */
function prosodyEncode(s: string): string {
  return s.replace(/[^a-zA-Z0-9]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function luaString(s: string): string {
  return JSON.stringify(s); // a JSON string literal of printable ASCII is a valid Lua string literal
}

/** Modules of Debian's default prosody.cfg.lua, minus what would distort or cannot work here (see docs/performance.md). */
export const PROSODY_MODULES = [
  'disco', 'roster', 'saslauth', 'blocklist', 'bookmarks', 'carbons', 'pep', 'private', 'vcard4', 'vcard_legacy',
  'csi_simple', 'ping', 'register', 'time', 'uptime', 'version', 'websocket',
];

export function prosodyVersion(): string | undefined {
  const out = spawnSync('prosodyctl', ['about'], { encoding: 'utf8', timeout: 30_000 });
  if (out.error) return undefined;
  return /Prosody\s+(\d+\.\d+\.\d+)/.exec(`${out.stdout}${out.stderr}`)?.[1];
}

export function prosodyAvailable(): boolean {
  return !spawnSync('prosody', ['--help'], { timeout: 10_000 }).error || !spawnSync('which', ['prosody']).status;
}

export class ProsodyTarget implements Target {
  readonly kind = 'prosody' as const;
  private child?: ChildProcess;
  private logTail = '';

  private constructor(
    readonly dir: string,
    readonly domain: string,
    readonly httpPort: number,
    private readonly version: string | undefined,
  ) {}

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.httpPort}/xmpp-websocket`;
  }

  get dataPath(): string {
    return join(this.dir, 'data');
  }

  static async start(options: { domain?: string } = {}): Promise<ProsodyTarget> {
    const domain = options.domain ?? 'localhost';
    const dir = mkdtempSync(join(tmpdir(), 'xmpp-bench-prosody-'));
    mkdirSync(join(dir, 'data'), { recursive: true });
    mkdirSync(join(dir, 'certs'), { recursive: true });
    const [httpPort, c2sPort, s2sPort] = [await freePort(), await freePort(), await freePort()];
    const config = `-- written by bench/prosody-target.ts for one benchmark run
run_as_root = true
daemonize = false
data_path = ${luaString(join(dir, 'data'))}
pidfile = ${luaString(join(dir, 'prosody.pid'))}
certificates = ${luaString(join(dir, 'certs'))}
log = { warn = ${luaString(join(dir, 'prosody.log'))} }
interfaces = { "127.0.0.1" }
http_interfaces = { "127.0.0.1" }
c2s_ports = { ${c2sPort} }
s2s_ports = { ${s2sPort} }
http_ports = { ${httpPort} }
https_ports = {}
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
modules_enabled = { ${PROSODY_MODULES.map(luaString).join('; ')} }
modules_disabled = { "s2s"; "dialback"; "tls"; "posix" }
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
c2s_require_encryption = false
allow_unencrypted_plain_auth = false
consider_websocket_secure = true
http_default_host = ${luaString(domain)}
VirtualHost ${luaString(domain)}
-- Group chat, for the room fan-out phase (bench/muc-fanout.ts) side by side with ours.
Component ${luaString(`conference.${domain}`)} "muc"
`;
    writeFileSync(join(dir, 'prosody.cfg.lua'), config);
    const target = new ProsodyTarget(dir, domain, httpPort, prosodyVersion());
    await target.launch();
    return target;
  }

  private async launch(): Promise<void> {
    const child = spawn('prosody', ['--config', join(this.dir, 'prosody.cfg.lua'), '-F'], {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const keep = (chunk: Buffer) => {
      this.logTail = (this.logTail + chunk.toString()).slice(-8000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    // Ready once the WebSocket endpoint answers over HTTP (426 or similar from mod_websocket).
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`prosody exited (${child.exitCode}):\n${this.logTail}${this.log()}`);
      try {
        const res = await fetch(`http://127.0.0.1:${this.httpPort}/xmpp-websocket`, { signal: AbortSignal.timeout(1000) });
        await res.text();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`prosody did not come up on port ${this.httpPort}:\n${this.logTail}${this.log()}`);
        await sleep(100);
      }
    }
  }

  private log(): string {
    try {
      return readFileSync(join(this.dir, 'prosody.log'), 'utf8').slice(-4000);
    } catch {
      return '';
    }
  }

  /**
   * Rosters go straight into Prosody's own storage (mod_storage_internal's roster files, the format
   * core/rostermanager.lua reads), written before any of these users has logged in.
   */
  async writeRosters(rosters: Map<string, RosterContact[]>): Promise<void> {
    const hostDir = join(this.dataPath, prosodyEncode(this.domain), 'roster');
    mkdirSync(hostDir, { recursive: true });
    for (const [bare, contacts] of rosters) {
      const user = bare.slice(0, bare.indexOf('@'));
      const lines = ['return {', '\t[false] = { ["version"] = 1; ["pending"] = {}; };'];
      for (const c of contacts) {
        lines.push(`\t[${luaString(c.jid)}] = { ["subscription"] = "both"; ["groups"] = { ["bench"] = true; };${c.name ? ` ["name"] = ${luaString(c.name)};` : ''} };`);
      }
      lines.push('};', '');
      writeFileSync(join(hostDir, `${prosodyEncode(user)}.dat`), lines.join('\n'));
    }
  }

  pids(): number[] {
    return this.child?.pid ? [this.child.pid] : [];
  }

  describe(): Record<string, unknown> {
    return {
      server: `Prosody ${this.version ?? '(unknown version)'} from Debian, mod_websocket, internal storage, internal_hashed (SCRAM-SHA-1)`,
      modules: PROSODY_MODULES,
    };
  }

  warnings(): string {
    return this.log();
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
