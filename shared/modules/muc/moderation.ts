/**
 * XEP-0425 (0.3.0) moderated message retraction: what a moderator's request looks like, the
 * tombstone that replaces the message in the room's archive (so history and MAM no longer carry
 * it), and the announcement every occupant gets. The service (archive.ts) checks the role and
 * does the writes.
 */
import { StanzaError } from '../../errors.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { OCCUPANT_ID } from './occupant-id.ts';

export const MODERATE = 'urn:xmpp:message-moderate:1';
export const RETRACT = 'urn:xmpp:message-retract:1';
const MAX_REASON = 1024;

export interface ModerationRequest {
  /** The room's stanza-id (archive id) of the message to retract. */
  id: string;
  reason?: string;
}

export interface Moderator {
  /** The moderator's occupant JID (room@service/nick). */
  by: string;
  occupantId?: string;
}

/** `<moderate id='…' xmlns='urn:xmpp:message-moderate:1'><retract xmlns='urn:xmpp:message-retract:1'/><reason/></moderate>` */
export function parseModeration(payload: Element): ModerationRequest {
  const id = payload.attrs.id;
  if (!id) throw new StanzaError('bad-request', 'which message? (the moderate element needs an id)');
  if (!payload.getChild('retract', RETRACT)) throw new StanzaError('bad-request', 'only retraction is supported');
  const reason = payload.getChildText('reason')?.trim();
  if (reason && Buffer.byteLength(reason) > MAX_REASON) throw new StanzaError('not-acceptable', 'the reason is too long');
  return { id, reason: reason || undefined };
}

function moderated(moderator: Moderator): Element {
  return x('moderated', { xmlns: MODERATE, by: moderator.by }, moderator.occupantId ? x('occupant-id', { xmlns: OCCUPANT_ID, id: moderator.occupantId }) : undefined);
}

/** Whether an archived message is already a tombstone. */
export function isRetracted(message: Element): boolean {
  return message.getChild('retracted', RETRACT) !== undefined;
}

/**
 * The archived message without its content: the same envelope (sender, type, id), the author's
 * occupant id, and `<retracted/>` saying when and by whom. Everything else (body, encrypted
 * payloads, attachments, corrections) goes.
 */
export function tombstone(original: Element, moderator: Moderator, reason: string | undefined, stamp: string): Element {
  const kept = original.getChild('occupant-id', OCCUPANT_ID);
  return x(
    original.name,
    { ...original.attrs },
    x('retracted', { xmlns: RETRACT, stamp }, moderated(moderator), reason ? x('reason', {}, reason) : undefined),
    kept ? x('occupant-id', { xmlns: OCCUPANT_ID, id: kept.attrs.id }) : undefined,
  );
}

/** What every occupant gets: a groupchat message from the room itself (only those count, §4). */
export function announcement(room: string, id: string, messageId: string, moderator: Moderator, reason: string | undefined): Element {
  return x(
    'message',
    { xmlns: NS.CLIENT, from: room, type: 'groupchat', id: messageId },
    x('retract', { xmlns: RETRACT, id }, moderated(moderator), reason ? x('reason', {}, reason) : undefined),
  );
}
