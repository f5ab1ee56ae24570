/**
 * XEP-0280 Message Carbons: sessions that enable carbons get a <sent/> copy of what the user's
 * other sessions send and a <received/> copy of what is delivered to another session of the user.
 *
 * Eligible (§6.1): chat messages; normal messages with a body; messages with receipts, chat states
 * or chat markers; direct (XEP-0249) and mediated invitations. Not: groupchat, error, headline,
 * private messages from a MUC occupant (the room reflects those to every joined session), and
 * messages marked <private xmlns="urn:xmpp:carbons:2"/> or <no-copy xmlns="urn:xmpp:hints"/>.
 */
import { StanzaError, cloneElement } from '../errors.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import { forEachBounded } from '../core/bounded.ts';
import type { ModuleServer } from '../core/registry.ts';
import { CarbonsStore, type CarbonsSession } from '../storage/carbons-store.ts';
import type { SessionRecord } from '../core/types.ts';
import { Element, NS, x } from '../xml/element.ts';
import { bareJidTargets } from '../core/bare-jid-targets.ts';

export const CARBONS = NS.CARBONS;
const FORWARD = NS.FORWARD;
const HINTS = NS.HINTS;
const MUC_USER = 'http://jabber.org/protocol/muc#user';
/** Payloads that make a message part of an IM conversation even without a body. */
const IM_PAYLOADS: [string, string | undefined][] = [
  ['request', 'urn:xmpp:receipts'],
  ['received', 'urn:xmpp:receipts'],
  ['x', 'jabber:x:conference'],
];
const IM_NAMESPACES = [NS.CHAT_STATES, 'urn:xmpp:chat-markers:0'];

const carbonsStore = (server: ModuleServer): CarbonsStore => server.store.open(CarbonsStore);

function eligible(stanza: Element): boolean {
  const type = stanza.attrs.type ?? 'normal';
  if (type !== 'chat' && type !== 'normal') return false;
  if (stanza.getChild('private', CARBONS) || stanza.getChild('no-copy', HINTS)) return false;
  // Never copy carbons themselves.
  if (stanza.getChild('sent', CARBONS) || stanza.getChild('received', CARBONS)) return false;
  if (type === 'chat') return true;
  if (stanza.getChild('body')) return true;
  const mucUser = stanza.getChild('x', MUC_USER);
  if (mucUser?.getChild('invite')) return true;
  if (IM_PAYLOADS.some(([name, ns]) => stanza.getChild(name, ns))) return true;
  return stanza.getChildElements().some((c) => IM_NAMESPACES.includes(c.attrs.xmlns));
}

function copy(kind: 'sent' | 'received', bare: string, resource: string, stanza: Element): Element {
  const inner = cloneElement(stanza);
  inner.attrs.xmlns = NS.CLIENT;
  return x(
    'message',
    { xmlns: NS.CLIENT, from: bare, to: `${bare}/${resource}`, type: stanza.attrs.type ?? 'normal' },
    x(kind, { xmlns: CARBONS }, x('forwarded', { xmlns: FORWARD }, inner)),
  );
}

/**
 * Through delivery like any stanza: counted by XEP-0198 on sessions that enabled it, and seen by
 * the delivery filters. A gone socket is cleaned up by its $disconnect; nothing to bounce for a
 * copy (§11.3).
 */
async function post(server: ModuleServer, bare: string, sessions: SessionRecord[], kind: 'sent' | 'received', stanza: Element): Promise<void> {
  await forEachBounded(sessions, 16, async (s) => {
    await server.deliver(s, copy(kind, bare, s.resource, stanza));
  });
}

/** The live sessions (with what delivery needs) of those that enabled carbons. */
function withCarbons(sessions: SessionRecord[], enabled: CarbonsSession[]): SessionRecord[] {
  const on = new Set(enabled.map((e) => e.connectionId));
  return sessions.filter((s) => on.has(s.connectionId));
}

async function sentCopies({ server, stanza, from }: StanzaEvent): Promise<boolean> {
  if (!eligible(stanza)) return false;
  const enabled = (await carbonsStore(server).list(from.bare)).filter((s) => s.resource !== from.resource);
  if (!enabled.length) return false;
  const { sessions } = await server.store.getUserRoute(from.bare);
  await post(server, from.bare, withCarbons(sessions, enabled), 'sent', stanza);
  return false;
}

async function receivedCopies({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  if (!eligible(stanza) || !to) return false;
  // A private message from an occupant of a group chat is already sent to every joined session.
  if (from.resource && stanza.getChild('x', MUC_USER) && !stanza.getChild('x', MUC_USER)!.getChild('invite')) return false;
  const enabled = await carbonsStore(server).list(to.bare);
  if (!enabled.length) return false;
  // Who gets the original under RFC 6121 §8.5 (the message module's rules): they get no copy.
  const { sessions } = await server.store.getUserRoute(to.bare);
  const addressed = to.resource ? sessions.filter((s) => s.resource === to.resource) : [];
  const primary = addressed.length ? addressed : bareJidTargets(sessions);
  if (!primary.length) return false; // stored offline: delivered to the next session anyway
  const skip = new Set(primary.map((s) => s.connectionId));
  const targets = withCarbons(sessions, enabled).filter((s) => !skip.has(s.connectionId));
  if (targets.length) await post(server, to.bare, targets, 'received', stanza);
  return false;
}

export const carbonsModule: XmppModule = {
  name: 'carbons',
  setup(reg) {
    reg.feature(CARBONS);
    reg.iq('account', CARBONS, async ({ server, payload, type, from, to, session }) => {
      if (type !== 'set') throw new StanzaError('bad-request');
      // Only a local client may switch its own carbons (§4.1).
      if (!session || from.bare !== to.bare) throw new StanzaError('not-allowed');
      const record = { resource: session.state.resource!, connectionId: session.id };
      if (payload.name === 'enable') await carbonsStore(server).enable(from.bare, record);
      else if (payload.name === 'disable') await carbonsStore(server).disable(from.bare, record);
      else throw new StanzaError('bad-request', 'expected <enable/> or <disable/>');
    });
    // XEP-0386: asked for inside the SASL2 bind, on from the first stanza the client gets.
    reg.bindInline(CARBONS, async (session, el) => {
      if (el.name === 'enable') await carbonsStore(session.server).enable(session.bare, { resource: session.state.resource!, connectionId: session.id });
    });
    reg.hook('message/out', sentCopies);
    reg.hook('message/in', receivedCopies);
    reg.onSession('session/ended', async ({ server, session }) => {
      await carbonsStore(server).disable(session.bare, { resource: session.state.resource!, connectionId: session.id });
    });
  },
};
