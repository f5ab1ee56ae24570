/**
 * Building blocks of the group chat service: namespaces, the role and affiliation order, the
 * nickname limit, the muc#user presence a room sends, and frame templates that fan one stanza out
 * to many recipients without serializing it once per recipient.
 */
import { OCCUPANT_ID } from './occupant-id.ts';
import { escapeXML } from 'ltx';
import { cloneElement } from '../../errors.ts';
import type { Affiliation, Occupant, Role, RoomConfig } from '../../storage/muc-store.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { parseStored } from '../../xml/stored.ts';

export const MUC = 'http://jabber.org/protocol/muc';
export const MUC_USER = `${MUC}#user`;
export const MUC_ADMIN = `${MUC}#admin`;
export const MUC_OWNER = `${MUC}#owner`;
export const ROOMINFO = `${MUC}#roominfo`;
export const STABLE_ID = `${MUC}#stable_id`;
export const SELF_PING = `${MUC}#self-ping-optimization`;

export const AFFILIATION_RANK: Record<Affiliation, number> = { outcast: -1, none: 0, member: 1, admin: 2, owner: 3 };
export const AFFILIATIONS: Affiliation[] = ['owner', 'admin', 'member', 'outcast', 'none'];
export const ROLES: Role[] = ['moderator', 'participant', 'visitor', 'none'];
/** The longest nickname a room accepts, on entering and in registration (§7.10). */
export const MAX_NICK_BYTES = 256;

/** XEP-0045 §5.1.2: the role an occupant gets on entering. */
export function defaultRole(affiliation: Affiliation, config: RoomConfig): Role {
  if (affiliation === 'owner' || affiliation === 'admin') return 'moderator';
  if (affiliation === 'member') return 'participant';
  return config.moderated ? 'visitor' : 'participant';
}

/** The occupant's presence payload as stored: the client's children, minus MUC elements. */
export function storedPresence(stanza: Element): string {
  const p = x('presence');
  for (const child of stanza.getChildElements()) {
    if (child.is('x', MUC) || child.is('x', MUC_USER)) continue;
    p.append(cloneElement(child));
  }
  return p.toString();
}

export interface PresenceOptions {
  type?: 'unavailable';
  id?: string;
  /** Include the real JID in the item (non-anonymous room or moderator recipient). */
  realJid?: string;
  codes?: string[];
  /** New nick (status 303). */
  nick?: string;
  actor?: string;
  reason?: string;
  /** The presence payload to carry (defaults to the occupant's stored one for available presence). */
  payload?: string;
  destroy?: Element;
  /** For role/affiliation shown: overrides (e.g. none/none when leaving). */
  role?: Role;
  affiliation?: Affiliation;
}

/** A presence from an occupant JID with its muc#user item, `to` left for the template. */
export function occupantPresence(room: string, occupant: Occupant, o: PresenceOptions = {}): Element {
  const payload = o.payload ?? (o.type ? undefined : occupant.presence);
  const base = payload ? parseStored(payload, 'occupant presence') : undefined;
  const el = x('presence', { xmlns: NS.CLIENT, from: `${room}/${occupant.nick}`, type: o.type, id: o.id });
  for (const child of base?.getChildElements() ?? []) if (!child.is('occupant-id', OCCUPANT_ID)) el.append(cloneElement(child));
  const item = x(
    'item',
    { affiliation: o.affiliation ?? occupant.affiliation, role: o.role ?? occupant.role, jid: o.realJid, nick: o.nick },
    o.actor ? x('actor', { nick: o.actor }) : undefined,
    o.reason ? x('reason', {}, o.reason) : undefined,
  );
  el.append(x('x', { xmlns: MUC_USER }, item, ...(o.codes ?? []).map((code) => x('status', { code })), o.destroy));
  if (occupant.occupantId) el.append(x('occupant-id', { xmlns: OCCUPANT_ID, id: occupant.occupantId }));
  return el;
}

const MARK = 'x-muc-recipient';

/**
 * One stanza serialized once, with its `to` filled in per recipient: `to` is made the first
 * attribute, so the text before and after its value never changes.
 */
export class FrameTemplate {
  private readonly head: string;
  private readonly tail: string;

  /** From the stanza, or from the parts of a template made elsewhere (a fan-out job carries them). */
  constructor(source: Element | { head: string; tail: string }) {
    if (!('name' in source)) {
      this.head = source.head;
      this.tail = source.tail;
      return;
    }
    const el = source;
    const attrs = { ...el.attrs };
    delete attrs.to;
    el.attrs = { to: MARK, ...attrs };
    const text = el.toString();
    this.head = `<${el.name} to="`;
    if (!text.startsWith(this.head + MARK + '"')) throw new Error('frame template: unexpected serialization');
    this.tail = text.slice(this.head.length + MARK.length);
    el.attrs = attrs;
  }

  parts(): { head: string; tail: string } {
    return { head: this.head, tail: this.tail };
  }

  for(to: string): string {
    return this.head + escapeXML(to) + this.tail;
  }
}
