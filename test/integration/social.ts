/**
 * Helpers for the PEP, bookmarks, vCard and blocking suites: mutual presence subscriptions made
 * through the protocol, and StanzaJS presence carrying XEP-0115 caps with chosen +notify features.
 */
import type { Agent } from 'stanza';
import { Inbox } from './helpers.ts';

const bare = (jid: string) => jid.split('/')[0]!;

/** Records every event of interest of a StanzaJS client, so tests can wait for one. */
export function record(c: Agent, kinds: string[]): Inbox<{ kind: string; data: any }> {
  const inbox = new Inbox<{ kind: string; data: any }>();
  for (const kind of kinds) c.on(kind as any, (data: any) => inbox.push({ kind, data }));
  return inbox;
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
      const check = (iq: any) => {
        if (iq.roster?.items?.some((i: any) => i.jid === other && i.subscription === 'both')) {
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
      const on = (p: any) => {
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
export async function presenceWithCaps(c: Agent, notify: string[], extra: Record<string, unknown> = {}): Promise<boolean> {
  for (const node of notify) c.disco.addFeature(`${node}+notify`);
  const caps = c.updateCaps()!;
  let asked = false;
  const on = (iq: any) => {
    if (iq.disco?.node === `${caps[0]!.node}#${caps[0]!.value}`) asked = true;
  };
  c.on('iq:get:disco' as any, on);
  c.sendPresence({ legacyCapabilities: caps, ...extra } as any);
  const domain = c.jid.split('@')[1]!.split('/')[0]!;
  await c.ping(domain); // the query, if any, came before this answer; StanzaJS has answered it
  c.off('iq:get:disco' as any, on);
  if (asked) await c.ping(domain);
  return asked;
}
