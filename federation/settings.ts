/** The federation service's settings from the environment (shared by federation/main.ts and the local stack). */
import { parseComponents } from './component.ts';
import type { S2sTiming } from './context.ts';
import { parseRoutes, DEFAULT_S2S_PORT } from './resolve.ts';
import { tlsFromFiles, tlsFromSecret, type TlsCredentials } from './tls.ts';
import type { Target } from './resolve.ts';

export interface FederationSettings {
  bind: string;
  s2sPort: number;
  directTlsPort?: number;
  componentPort?: number;
  components: Map<string, string>;
  routes: Map<string, Target>;
  tls?: TlsCredentials;
  requireTls?: boolean;
  secureAuth?: boolean;
  insecureDomains?: string[];
  timing: Partial<S2sTiming>;
  /** Native client ports (XMPP_C2S_PORT, XMPP_C2S_TLS_PORT): only those set are opened. */
  c2s?: { port?: number; tlsPort?: number; proxyProtocol?: boolean };
}

/** The default native client ports `npm start` opens (RFC 6120 §14.7, XEP-0368). */
export const DEFAULT_C2S_PORTS = { port: 5222, tlsPort: 5223 };

function port(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number, got "${value}"`);
  return n;
}

function seconds(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number of seconds, got "${value}"`);
  return n * 1000;
}

export function federationSettingsFromEnv(env: NodeJS.ProcessEnv): FederationSettings {
  const timing: Partial<S2sTiming> = {};
  const queue = seconds(env.XMPP_S2S_TIMEOUT_SECONDS, 'XMPP_S2S_TIMEOUT_SECONDS');
  const ping = seconds(env.XMPP_S2S_PING_SECONDS, 'XMPP_S2S_PING_SECONDS');
  const idle = seconds(env.XMPP_S2S_IDLE_SECONDS, 'XMPP_S2S_IDLE_SECONDS');
  if (queue) timing.queueTimeoutMs = queue;
  if (ping) timing.pingAfterMs = ping;
  if (idle) timing.idleCloseMs = idle;
  const requireTls = env.XMPP_S2S_REQUIRE_TLS ? /^(1|true|yes|on)$/i.test(env.XMPP_S2S_REQUIRE_TLS) : undefined;
  return {
    bind: env.XMPP_BIND || '127.0.0.1',
    s2sPort: port(env.XMPP_S2S_PORT, 'XMPP_S2S_PORT') ?? DEFAULT_S2S_PORT,
    directTlsPort: port(env.XMPP_S2S_DIRECT_TLS_PORT, 'XMPP_S2S_DIRECT_TLS_PORT'),
    componentPort: port(env.XMPP_COMPONENT_PORT, 'XMPP_COMPONENT_PORT'),
    components: parseComponents(env.XMPP_COMPONENTS),
    routes: parseRoutes(env.XMPP_S2S_ROUTES),
    tls: tlsFromSecret(env.XMPP_TLS_SECRET) ?? tlsFromFiles(env.XMPP_TLS_CERT_FILE, env.XMPP_TLS_KEY_FILE),
    requireTls,
    secureAuth: env.XMPP_S2S_SECURE_AUTH ? /^(1|true|yes|on)$/i.test(env.XMPP_S2S_SECURE_AUTH) : undefined,
    insecureDomains: env.XMPP_S2S_INSECURE_DOMAINS ? env.XMPP_S2S_INSECURE_DOMAINS.split(',').map((d) => d.trim()).filter(Boolean) : undefined,
    timing,
    c2s: c2sPortsFromEnv(env),
  };
}

/** XMPP_C2S_PORT / XMPP_C2S_TLS_PORT as given (`defaults` for those unset); undefined when neither is. */
export function c2sPortsFromEnv(
  env: NodeJS.ProcessEnv,
  defaults?: { port?: number; tlsPort?: number },
): { port?: number; tlsPort?: number; proxyProtocol?: boolean } | undefined {
  const c2s = {
    port: port(env.XMPP_C2S_PORT, 'XMPP_C2S_PORT') ?? defaults?.port,
    tlsPort: port(env.XMPP_C2S_TLS_PORT, 'XMPP_C2S_TLS_PORT') ?? defaults?.tlsPort,
    // Behind the NLB (CDK sets it): each connection starts with a PROXY v2 header (proxy-header.ts).
    ...(/^(1|true|yes|on)$/i.test(env.XMPP_C2S_PROXY_PROTOCOL ?? '') ? { proxyProtocol: true } : {}),
  };
  return c2s.port === undefined && c2s.tlsPort === undefined ? undefined : c2s;
}
