import { describe, expect, it } from 'vitest';
import { DomainNotFoundError, orderSrv, parseRoutes, resolveTargets, type Dns, type SrvRecord } from '../../federation/resolve.ts';

const srv = (name: string, priority: number, weight: number, port = 5269): SrvRecord => ({ name, port, priority, weight });

/** A sequence of "random" numbers for the weighted draw. */
function draws(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

function dns(records: Record<string, SrvRecord[]>, addresses: string[] = []): Dns {
  return {
    resolveSrv: async (name) => {
      if (records[name]) return records[name]!;
      throw Object.assign(new Error(`no ${name}`), { code: 'ENOTFOUND' });
    },
    lookup: async (name) => {
      if (addresses.includes(name)) return [{ address: '192.0.2.1', family: 4 }];
      throw Object.assign(new Error(`no ${name}`), { code: 'ENOTFOUND' });
    },
  };
}

describe('SRV order (RFC 2782)', () => {
  it('takes lower priority values first, whatever the weights', () => {
    const ordered = orderSrv([srv('c', 20, 100), srv('a', 0, 0), srv('b', 10, 1)], draws(0.99));
    expect(ordered.map((r) => r.name)).toEqual(['a', 'b', 'c']);
  });

  it('draws by weight within a priority: running sums against a number in [0, total]', () => {
    // Weights 10 and 30 (total 40): a draw of 0.3 → 12 > 10, so "heavy" comes first; 0.1 → 4 → "light".
    const records = [srv('light', 5, 10), srv('heavy', 5, 30)];
    expect(orderSrv(records, draws(0.3, 0)).map((r) => r.name)).toEqual(['heavy', 'light']);
    expect(orderSrv(records, draws(0.1, 0)).map((r) => r.name)).toEqual(['light', 'heavy']);
  });

  it('puts weight-0 records first in the pool, so they win a draw of 0 only', () => {
    const records = [srv('weighted', 1, 50), srv('zero', 1, 0)];
    expect(orderSrv(records, draws(0)).map((r) => r.name)).toEqual(['zero', 'weighted']);
    expect(orderSrv(records, draws(0.5)).map((r) => r.name)).toEqual(['weighted', 'zero']);
  });

  it('follows the weights over many draws (3:1)', () => {
    let first = 0;
    for (let i = 0; i < 4000; i++) if (orderSrv([srv('a', 0, 75), srv('b', 0, 25)])[0]!.name === 'a') first++;
    expect(first / 4000).toBeGreaterThan(0.7);
    expect(first / 4000).toBeLessThan(0.8);
  });
});

describe('target resolution', () => {
  it('uses XMPP_S2S_ROUTES first', async () => {
    const routes = parseRoutes('peer.test=127.0.0.1:15269, other.test=tls://[::1]:5270,plain.test=host.example');
    expect(await resolveTargets('peer.test', routes, dns({}))).toEqual([{ host: '127.0.0.1', port: 15269, directTls: false }]);
    expect(routes.get('other.test')).toEqual({ host: '::1', port: 5270, directTls: true });
    expect(routes.get('plain.test')).toEqual({ host: 'host.example', port: 5269, directTls: false });
    expect(() => parseRoutes('nonsense')).toThrow(/XMPP_S2S_ROUTES/);
  });

  it('tries _xmpps-server (direct TLS) records, then _xmpp-server, each in RFC 2782 order', async () => {
    const targets = await resolveTargets(
      'example.net',
      new Map(),
      dns({
        '_xmpps-server._tcp.example.net': [srv('tls2.example.net', 10, 0, 5270), srv('tls1.example.net', 5, 0, 5270)],
        '_xmpp-server._tcp.example.net': [srv('xmpp.example.net', 0, 0)],
      }),
    );
    expect(targets).toEqual([
      { host: 'tls1.example.net', port: 5270, directTls: true },
      { host: 'tls2.example.net', port: 5270, directTls: true },
      { host: 'xmpp.example.net', port: 5269, directTls: false },
    ]);
  });

  it('falls back to the domain itself on 5269 when there is no SRV record', async () => {
    expect(await resolveTargets('plain.example', new Map(), dns({}, ['plain.example']))).toEqual([{ host: 'plain.example', port: 5269, directTls: false }]);
  });

  it('reports a domain with no records, or whose SRV says "no service" (.), as not found', async () => {
    await expect(resolveTargets('nowhere.example', new Map(), dns({}))).rejects.toBeInstanceOf(DomainNotFoundError);
    const refuses = dns({ '_xmpp-server._tcp.noxmpp.example': [srv('.', 0, 0, 0)] }, ['noxmpp.example']);
    await expect(resolveTargets('noxmpp.example', new Map(), refuses)).rejects.toBeInstanceOf(DomainNotFoundError);
  });
});
