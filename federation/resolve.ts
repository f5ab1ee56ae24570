/**
 * Where a remote domain's XMPP server is (RFC 6120 §3.2, XEP-0368): XMPP_S2S_ROUTES overrides
 * first, then the SRV records `_xmpps-server._tcp` (direct TLS) and `_xmpp-server._tcp` (STARTTLS),
 * each ordered by RFC 2782 priority and weight, then the domain's own A/AAAA records on port 5269.
 */
import { promises as dns } from 'node:dns';

export interface Target {
  host: string;
  port: number;
  /** XEP-0368: TLS from the first byte (ALPN `xmpp-server`) instead of STARTTLS. */
  directTls: boolean;
}

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/** The DNS look-ups resolution needs (node:dns by default; tests give their own answers). */
export interface Dns {
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** Throws an error with code ENOTFOUND / ENODATA when the name has no address. */
  lookup(name: string): Promise<unknown>;
}

/** The domain has no XMPP server we can find: bounce with remote-server-not-found. */
export class DomainNotFoundError extends Error {}

export const DEFAULT_S2S_PORT = 5269;

/** Parses `XMPP_S2S_ROUTES`: `domain=host:port[,domain=host:port…]`; `tls://host:port` means direct TLS. */
export function parseRoutes(spec: string | undefined): Map<string, Target> {
  const routes = new Map<string, Target>();
  for (const entry of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const match = /^([^=\s]+)=(tls:\/\/)?(\[[0-9a-fA-F:.]+\]|[^:\s]+)(?::(\d+))?$/.exec(entry);
    if (!match) throw new Error(`XMPP_S2S_ROUTES: cannot read "${entry}" (expected domain=host:port)`);
    const port = match[4] ? Number(match[4]) : DEFAULT_S2S_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`XMPP_S2S_ROUTES: bad port in "${entry}"`);
    routes.set(match[1]!.toLowerCase(), { host: match[3]!.replace(/^\[|\]$/g, ''), port, directTls: Boolean(match[2]) });
  }
  return routes;
}

/**
 * RFC 2782 order: ascending priority; within one priority, a weighted random draw repeated
 * until every record is placed (records of weight 0 have a small chance, placed first in the list
 * before the draw as the RFC says). `random` returns a number in [0, 1).
 */
export function orderSrv<T extends SrvRecord>(records: T[], random: () => number = Math.random): T[] {
  const byPriority = new Map<number, T[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const ordered: T[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const group = byPriority.get(priority)!;
    const pool = [...group.filter((r) => r.weight === 0), ...group.filter((r) => r.weight !== 0)];
    while (pool.length > 0) {
      const total = pool.reduce((sum, r) => sum + r.weight, 0);
      const pick = Math.floor(random() * (total + 1));
      let running = 0;
      let index = pool.findIndex((r) => (running += r.weight) >= pick);
      if (index === -1) index = pool.length - 1;
      ordered.push(pool.splice(index, 1)[0]!);
    }
  }
  return ordered;
}

const systemDns: Dns = { resolveSrv: (name) => dns.resolveSrv(name), lookup: (name) => dns.lookup(name, { all: true }) };

function noRecords(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA' || code === 'NXDOMAIN';
}

async function srv(resolver: Dns, name: string): Promise<SrvRecord[]> {
  try {
    return await resolver.resolveSrv(name);
  } catch {
    // No record, or a DNS server that does not answer: fall back as if there were none.
    return [];
  }
}

/**
 * The connection targets for a domain, best first. Throws DomainNotFoundError when the domain
 * has neither SRV records nor an address, or its SRV record says "no service" (target ".").
 */
export async function resolveTargets(domain: string, routes: Map<string, Target>, resolver: Dns = systemDns, random?: () => number): Promise<Target[]> {
  const route = routes.get(domain);
  if (route) return [route];
  const [direct, starttls] = await Promise.all([srv(resolver, `_xmpps-server._tcp.${domain}`), srv(resolver, `_xmpp-server._tcp.${domain}`)]);
  const noService = (records: SrvRecord[]) => records.length === 1 && (records[0]!.name === '' || records[0]!.name === '.');
  if (noService(starttls) && (direct.length === 0 || noService(direct))) throw new DomainNotFoundError(`${domain} offers no XMPP server-to-server service`);
  const targets = [
    ...orderSrv(noService(direct) ? [] : direct, random).map((r) => ({ host: r.name, port: r.port, directTls: true })),
    ...orderSrv(noService(starttls) ? [] : starttls, random).map((r) => ({ host: r.name, port: r.port, directTls: false })),
  ];
  if (targets.length > 0) return targets;
  try {
    await resolver.lookup(domain);
  } catch (err) {
    if (noRecords(err)) throw new DomainNotFoundError(`${domain} has no DNS records`);
    throw err;
  }
  return [{ host: domain, port: DEFAULT_S2S_PORT, directTls: false }];
}
