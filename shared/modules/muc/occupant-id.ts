/**
 * XEP-0421 anonymous unique occupant identifiers: an id per real bare JID per room that stays the
 * same across joins, nick changes and sessions, without revealing the JID (clients use it to tell
 * a returning participant from an impostor using the same nick, and for reactions and moderation).
 * An HMAC of room and JID under the deployment's secret (storage/server-secret.ts): every handler
 * derives the same id, and nothing has to be stored to keep it stable.
 */
import { createHmac } from 'node:crypto';

export const OCCUPANT_ID = 'urn:xmpp:occupant-id:0';

export function occupantIdFor(secret: Buffer, room: string, bare: string): string {
  return createHmac('sha256', secret).update(`${room}\0${bare}`).digest('base64url').slice(0, 22);
}
