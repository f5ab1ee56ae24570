/**
 * Helpers for the PEP, bookmarks, vCard and blocking suites: mutual presence subscriptions made
 * through the protocol, and StanzaJS presence carrying XEP-0115 caps with chosen +notify features.
 */
import type { Agent, AgentEvents, Stanzas } from 'stanza';
import { Inbox } from './helpers.ts';

const bare = (jid: string) => jid.split('/')[0]!;

/** The StanzaJS events that carry one value (a stanza or a plugin's event object), by name. */
export type DataEventName = {
  [K in keyof AgentEvents]-?: AgentEvents[K] extends ((...args: never[]) => unknown) | void | undefined ? never : K;
}[keyof AgentEvents];

/** One recorded event: its name, and its value typed by that name. */
export type StanzaEvent<K extends DataEventName = DataEventName> = { [P in K]: { kind: P; data: AgentEvents[P] } }[K];

/** The events of a StanzaJS client: wait for one of a kind, or check that none came. */
export class EventLog<K extends DataEventName> extends Inbox<StanzaEvent<K>> {
  /** The first event of `kind` (already received or future) that matches. */
  waitFor<P extends K>(kind: P, match: (e: StanzaEvent<P>) => boolean = () => true, what: string = kind, timeoutMs?: number): Promise<StanzaEvent<P>> {
    return this.wait((e) => e.kind === kind && match(e as StanzaEvent<P>), what, timeoutMs) as Promise<StanzaEvent<P>>;
  }

  /** The events of `kind` received so far that match (for asserting something did NOT arrive). */
  seenOf<P extends K>(kind: P, match: (e: StanzaEvent<P>) => boolean = () => true): StanzaEvent<P>[] {
    return this.seen((e) => e.kind === kind && match(e as StanzaEvent<P>)) as StanzaEvent<P>[];
  }
}

/** Records every event of interest of a StanzaJS client, so tests can wait for one. */
export function record<K extends DataEventName>(c: Agent, kinds: K[]): EventLog<K> {
  const log = new EventLog<K>();
  for (const kind of kinds) {
    const listener = (data: AgentEvents[K]) => log.push({ kind, data } as StanzaEvent<K>);
    // StanzaJS types a listener by its event's name; `kind` is one of several here, each with one value.
    c.on(kind, listener as (...args: unknown[]) => void);
  }
  return log;
}

/**
 * Makes `a` and `b` available (plain presence) and subscribed to each other's presence (RFC 6121 §3);
 * resolves once both rosters say both.
 */
export async function befriend(a: Agent, b: Agent): Promise<void> {
  const aJid = bare(a.jid);
  const bJid = bare(b.jid);
  const both = (c: Agent, other: string) =>
    new Promise<void>((resolve) => {
      const check = (iq: AgentEvents['roster:update']) => {
        if (iq.roster?.items?.some((i) => i.jid === other && i.subscription === 'both')) {
          c.off('roster:update', check);
          resolve();
        }
      };
      c.on('roster:update', check);
    });
  await a.getRoster();
  await b.getRoster();
  // Subscription requests reach available resources only (RFC 6121 §3.1.3).
  a.sendPresence();
  b.sendPresence();
  await a.ping(a.jid.split('@')[1]!.split('/')[0]!);
  await b.ping(b.jid.split('@')[1]!.split('/')[0]!);
  const done = Promise.all([both(a, bJid), both(b, aJid)]);
  const asked = (c: Agent, from: string) =>
    new Promise<void>((resolve) => {
      const on = (p: Stanzas.ReceivedPresence) => {
        if (p.from === from) {
          c.off('subscribe', on);
          resolve();
        }
      };
      c.on('subscribe', on);
    });
  const bAsked = asked(b, aJid);
  a.subscribe(bJid);
  await bAsked;
  b.acceptSubscription(aJid);
  const aAsked = asked(a, bJid);
  b.subscribe(aJid);
  await aAsked;
  a.acceptSubscription(bJid);
  await done;
}

/**
 * Sends available presence with XEP-0115 caps listing `notify` as `<node>+notify` features, and
 * resolves once the server has processed it and, if it asked for the hash with disco#info, the
 * client's answer (frames of one connection are processed in order, so a ping sent after the
 * answer comes back only then). Resolves whether the server asked.
 */
export async function presenceWithCaps(c: Agent, notify: string[], extra: Stanzas.Presence = {}): Promise<boolean> {
  for (const node of notify) c.disco.addFeature(`${node}+notify`);
  const caps = c.updateCaps()!;
  let asked = false;
  const on = (iq: AgentEvents['iq:get:disco']) => {
    if (iq.disco?.node === `${caps[0]!.node}#${caps[0]!.value}`) asked = true;
  };
  c.on('iq:get:disco', on);
  c.sendPresence({ legacyCapabilities: caps, ...extra });
  const domain = c.jid.split('@')[1]!.split('/')[0]!;
  await c.ping(domain); // the query, if any, came before this answer; StanzaJS has answered it
  c.off('iq:get:disco', on);
  if (asked) await c.ping(domain);
  return asked;
}
