/**
 * The partition keys of the one table (docs/data-model.md), built here and nowhere else, so that
 * what a key holds and how a user-supplied part is written is decided once.
 *
 * A user-supplied value (a JID, a nick, a node, a token) is written as it is when it is the last
 * part of a key: nothing follows it, so a `#` inside it cannot be mistaken for a separator, and the
 * keys of data already stored stay what they were. A user-supplied part followed by another part
 * goes through `keyPart`, which makes `#` and `%` unambiguous.
 */

/** Encodes a user-supplied value that another part follows (`#` is the separator). */
export function keyPart(value: string): string {
  return value.replace(/[%#]/g, (c) => (c === '%' ? '%25' : '%23'));
}

/** An account and everything kept under it (roster, sessions, archive, PEP, push…). */
export const userPk = (bare: string): string => `user#${bare}`;
/** A WebSocket or TCP connection: stream state, XEP-0198 and XEP-0352 items. */
export const connectionPk = (connectionId: string): string => `conn#${connectionId}`;
/** A group chat room (XEP-0045): configuration, affiliations, occupants, archive. */
export const roomPk = (roomJid: string): string => `room#${roomJid}`;
/** The public room list of one MUC service. */
export const roomDirectoryPk = (service: string): string => `mucdir#${service}`;
/** An invitation (XEP-0401) by its token. */
export const invitePk = (token: string): string => `invite#${token}`;
/** The features behind an XEP-0115 verification string (a cache shared by all users). */
export const capsPk = (hash: string, ver: string): string => `caps#${keyPart(hash)}#${ver}`;
/** Rate-limit counters of one subject (an IP, an account, an uploader). */
export const attemptsPk = (kind: string, subject: string): string => `attempts#${kind}#${encodeURIComponent(subject)}`;

/** A roster item of a user (under userPk), by the contact's bare JID. */
export const rosterSk = (contact: string): string => `roster#${contact}`;
