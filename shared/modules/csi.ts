/**
 * XEP-0352 Client State Indication: a client in the background says `<inactive/>`, and until it
 * says `<active/>` the server holds what it need not see at once: presence updates (available and
 * unavailable, the latest per sender's full JID) and chat-state-only messages (the latest per
 * sender). Messages with a body, subscription requests, iqs and everything else go through at once;
 * a message with a body also drops its sender's held chat state, which it supersedes. On `<active/>`
 * the held stanzas are posted oldest first, before anything newer (storage/csi-store.ts says how
 * that holds with several handlers delivering at the same moment).
 *
 * It saves posts (each one is paid for, and wakes a phone's radio): a contact who changes presence
 * five times while the client is in the background costs one post instead of five.
 *
 * Room (XEP-0045) traffic is posted by the room service to its occupants directly and is not held.
 */
import type { XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import type { ClientSession } from '../core/session.ts';
import { StreamError } from '../errors.ts';
import { CsiStore, type HeldStanza } from '../storage/csi-store.ts';
import { Element, NS, x } from '../xml/element.ts';

export const CSI = 'urn:xmpp:csi:0';
const CHAT_STATES = NS.CHAT_STATES;
/** What may ride along a chat state without making the message worth a post of its own. */
const CHAT_STATE_COMPANIONS = new Set<string>([NS.HINTS, NS.SID, CHAT_STATES]);

const csiStore = (server: ModuleServer): CsiStore => server.store.open(CsiStore);

/** The key a stanza is held under (the latest per key is kept), or undefined when it goes through. */
export function holdKey(stanza: Element): string | undefined {
  const from = stanza.attrs.from;
  if (!from) return undefined;
  if (stanza.name === 'presence') {
    const type = stanza.attrs.type;
    return type === undefined || type === 'unavailable' ? `presence ${from}` : undefined;
  }
  if (stanza.name !== 'message' || stanza.attrs.type === 'error') return undefined;
  const children = stanza.getChildElements();
  const chatStateOnly =
    children.some((c) => c.attrs.xmlns === CHAT_STATES) &&
    children.every((c) => c.name === 'thread' || CHAT_STATE_COMPANIONS.has(c.attrs.xmlns ?? ''));
  return chatStateOnly ? `chatstate ${from}` : undefined;
}

async function inactive(session: ClientSession): Promise<void> {
  // The csi item first: once the session item says inactive, deliverers try to hold.
  await csiStore(session.server).setInactive(session.id);
  await session.updateSession({ inactive: true });
}

async function active(session: ClientSession): Promise<void> {
  const store = csiStore(session.server);
  const posted = new Map<string, HeldStanza>();
  let held: Map<string, HeldStanza> | undefined = await store.startFlush(session.id);
  while (held) {
    for (const [key, stanza] of held) {
      if (posted.get(key)?.at === stanza.at) continue;
      await session.send(stanza.xml);
      posted.set(key, stanza);
    }
    // Held meanwhile by another handler: post that too, then try again.
    held = await store.finishFlush(session.id, held);
  }
  await session.updateSession({ inactive: null });
}

export const csiModule: XmppModule = {
  name: 'csi',
  setup(reg) {
    reg.streamFeature('post-auth', () => x('csi', { xmlns: CSI }));
    reg.streamElement(CSI, async (session, el) => {
      if (el.name === 'inactive') return inactive(session);
      if (el.name === 'active') return active(session);
      throw new StreamError('unsupported-stanza-type', `<${el.name}/> is not a XEP-0352 element`);
    });
    // XEP-0386: a client binding from the background starts inactive (active is where a session starts).
    reg.bindInline(CSI, async (session, el) => {
      if (el.name === 'inactive') await inactive(session);
    });
    reg.deliveryFilter(async ({ server, session, stanza }) => {
      if (!session.inactive) return false;
      const key = holdKey(stanza);
      if (key) return csiStore(server).hold(session.connectionId, key, stanza.toString());
      if (stanza.name === 'message' && stanza.getChild('body') && stanza.attrs.from) {
        await csiStore(server).release(session.connectionId, `chatstate ${stanza.attrs.from}`);
      }
      return false;
    });
    reg.onSession('session/ended', async ({ server, session }) => {
      if (session.state.inactive) await csiStore(server).remove(session.id);
    });
  },
};
