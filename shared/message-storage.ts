/**
 * Which one-to-one messages are kept: in offline storage for a recipient with no available session,
 * and in the users' archives (XEP-0313). One rule for both, so a message a user's phone fetches from
 * the archive is the one it would have found offline.
 *
 * Kept: chat and normal messages with a body or subject, and those that carry content without a
 * body, which end-to-end encrypted clients send all the time: OMEMO (both namespaces, including
 * key-transport and heartbeat messages, which set up sessions), OpenPGP, XEP-0380 encryption
 * markers, reactions (XEP-0444) and retractions (XEP-0424, both versions). Not kept: chat states,
 * receipts and markers on their own (they mean nothing later), group chat (the room archives it),
 * headlines and errors.
 *
 * XEP-0334 hints are honoured both ways: `<store/>` keeps any chat or normal message, `<no-store/>`
 * keeps it nowhere, `<no-permanent-store/>` keeps it offline but not in archives.
 */
import { NS, type Element } from './xml/element.ts';

export const HINTS = NS.HINTS;

/** Payloads that are content even without a body: [element name, namespace]. */
const CONTENT_WITHOUT_BODY: [string, string][] = [
  ['encrypted', 'eu.siacs.conversations.axolotl'],
  ['encrypted', 'urn:xmpp:omemo:2'],
  ['openpgp', 'urn:xmpp:openpgp:0'],
  ['x', 'jabber:x:encrypted'],
  ['encryption', 'urn:xmpp:eme:0'],
  ['reactions', 'urn:xmpp:reactions:0'],
  ['retract', 'urn:xmpp:message-retract:1'],
  ['apply-to', 'urn:xmpp:fasten:0'],
];

function oneToOne(message: Element): boolean {
  const type = message.attrs.type ?? 'normal';
  return type === 'chat' || type === 'normal';
}

function hasContent(message: Element): boolean {
  if (message.getChild('body') || message.getChild('subject')) return true;
  return CONTENT_WITHOUT_BODY.some(([name, ns]) => message.getChild(name, ns) !== undefined);
}

/** Offline storage (XEP-0160) for a recipient with no available session. */
export function keepOffline(message: Element): boolean {
  if (!oneToOne(message) || message.getChild('no-store', HINTS)) return false;
  return message.getChild('store', HINTS) !== undefined || hasContent(message);
}

/** The users' message archives (XEP-0313 §5.1.1, with the hints of XEP-0334). */
export function keepInArchive(message: Element): boolean {
  if (!oneToOne(message) || message.getChild('no-store', HINTS) || message.getChild('no-permanent-store', HINTS)) return false;
  return message.getChild('store', HINTS) !== undefined || hasContent(message);
}
