/**
 * The benchmark's users and their online sessions: who exists and who is whose contact
 * (buildUsers: the chat ring, the presence broadcaster, the probe users), and where everything the
 * online clients receive lands (Router: chat deliveries, presence seen, broadcasts; iq requests
 * answered), with the error tally each phase keeps (Errors).
 */
import { performance } from 'node:perf_hooks';
import type { Element } from 'ltx';
import { esc, type XmppWsClient } from './client.ts';
import type { BenchOptions } from './options.ts';
import type { ErrorCounts } from './results.ts';
import type { RosterContact } from './targets.ts';

export interface UserSpec {
  name: string;
  bare: string;
  contacts: string[];
}

export function buildUsers(o: BenchOptions, domain: string): { users: UserSpec[]; broadcaster: UserSpec; probes: UserSpec[]; rosters: Map<string, RosterContact[]> } {
  const bare = (n: string) => `${n}@${domain}`;
  const n = o.users;
  const users: UserSpec[] = Array.from({ length: n }, (_, i) => ({ name: `u${i}`, bare: bare(`u${i}`), contacts: [] }));
  const half = Math.max(1, Math.floor(o.rosterSize / 2));
  for (let i = 0; i < n; i++) {
    const set = new Set<string>();
    for (let k = 1; k <= half && set.size < n - 1; k++) {
      set.add(users[(i + k) % n]!.bare);
      if (set.size < n - 1) set.add(users[(i - k + n) % n]!.bare);
    }
    set.delete(users[i]!.bare);
    users[i]!.contacts = [...set];
  }
  const presenceRoster = Math.min(o.presenceRoster, n);
  const broadcaster: UserSpec = { name: 'pres', bare: bare('pres'), contacts: users.slice(0, presenceRoster).map((u) => u.bare) };
  for (const u of users.slice(0, presenceRoster)) u.contacts.push(broadcaster.bare);
  // Probe users: probea talks to probeb (online) and probec (never online); its other contacts are chat users.
  const probea: UserSpec = { name: 'probea', bare: bare('probea'), contacts: [bare('probeb'), bare('probec')] };
  const probeContacts = users.slice(0, Math.max(0, Math.min(n, o.rosterSize - 2)));
  for (const u of probeContacts) {
    probea.contacts.push(u.bare);
    u.contacts.push(probea.bare);
  }
  const probes = [probea, { name: 'probeb', bare: bare('probeb'), contacts: [probea.bare] }, { name: 'probec', bare: bare('probec'), contacts: [probea.bare] }];
  const rosters = new Map<string, RosterContact[]>();
  for (const u of [...users, broadcaster, ...probes]) rosters.set(u.bare, u.contacts.map((jid) => ({ jid, name: jid.slice(0, jid.indexOf('@')) })));
  return { users, broadcaster, probes, rosters };
}

export class Errors {
  readonly byKind: Record<string, number> = {};
  add(kind: string, n = 1): void {
    this.byKind[kind] = (this.byKind[kind] ?? 0) + n;
  }
  get total(): number {
    return Object.values(this.byKind).reduce((a, b) => a + b, 0);
  }
  toJSON(): ErrorCounts {
    return { total: this.total, byKind: { ...this.byKind } };
  }
}

interface Inflight {
  t0: number;
  resolve?: (ok: boolean) => void;
  latencies: number[];
}

/** Everything the online clients receive lands here. */
export class Router {
  readonly chat = new Map<string, Inflight>();
  messageErrors = new Errors();
  /** presence tracking per receiving user: available contacts seen */
  readonly seen = new Map<string, Set<string>>();
  readonly presenceWaiters = new Map<string, { need: Set<string>; resolve: () => void }>();
  presencesReceived = 0;
  /** broadcast tracking: status text → state */
  broadcast?: { status: string; t0: number; pending: Set<string>; latencies: number[]; resolve: () => void };

  attach(user: UserSpec, client: XmppWsClient): void {
    this.seen.set(user.bare, new Set());
    client.onStanza = (el) => this.onStanza(user, client, el);
  }

  private onStanza(user: UserSpec, client: XmppWsClient, el: Element): void {
    const now = performance.now();
    if (el.name === 'message') {
      const id = el.attrs.id as string | undefined;
      if (el.attrs.type === 'error') {
        const condition = el.getChild('error')?.children.find((c): c is Element => typeof c !== 'string')?.name ?? 'unknown';
        this.messageErrors.add(`message error: ${condition}`);
        const f = id ? this.chat.get(id) : undefined;
        if (f) {
          this.chat.delete(id!);
          f.resolve?.(false);
        }
        return;
      }
      const f = id ? this.chat.get(id) : undefined;
      if (f) {
        this.chat.delete(id!);
        f.latencies.push(now - f.t0);
        f.resolve?.(true);
      }
      return;
    }
    if (el.name === 'presence') {
      const from = (el.attrs.from as string | undefined) ?? '';
      const bareFrom = from.split('/')[0]!;
      if (bareFrom === user.bare) return; // own presence reflected
      const type = el.attrs.type as string | undefined;
      if (type === undefined) {
        this.presencesReceived++;
        const seen = this.seen.get(user.bare)!;
        seen.add(bareFrom);
        const w = this.presenceWaiters.get(user.bare);
        if (w && w.need.delete(bareFrom) && w.need.size === 0) {
          this.presenceWaiters.delete(user.bare);
          w.resolve();
        }
        const b = this.broadcast;
        if (b && el.getChildText('status') === b.status && b.pending.delete(user.bare)) {
          b.latencies.push(now - b.t0);
          if (b.pending.size === 0) b.resolve();
        }
      }
      return;
    }
    if (el.name === 'iq' && (el.attrs.type === 'get' || el.attrs.type === 'set')) {
      // Roster pushes and server pings: answer as a client must.
      try {
        client.send(`<iq xmlns="jabber:client" type="result" id="${esc(String(el.attrs.id ?? ''))}"${el.attrs.from ? ` to="${esc(String(el.attrs.from))}"` : ''}/>`);
      } catch {
        // closing
      }
    }
  }
}
