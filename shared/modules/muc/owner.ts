/**
 * muc#owner (XEP-0045 §10.1, §10.2, §10.9): the configuration form, a submitted configuration
 * (unlocking a new room, telling occupants what changed, removing non-members when the room
 * becomes members-only), and destroying the room.
 */
import { StanzaError, cloneElement } from '../../errors.ts';
import { tryParseJid } from '../../jid.ts';
import type { IqRequest } from '../../core/registry.ts';
import type { Room } from '../../storage/muc-store.ts';
import { readForm } from '../../xml/data-form.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { applyConfigForm, configForm } from './config.ts';
import { broadcast, fanout, targets } from './fanout.ts';
import { forgetJoin, removeOccupant, updateDirectory } from './occupancy.ts';
import { AFFILIATION_RANK, FrameTemplate, MUC_OWNER, MUC_USER, occupantPresence } from './stanzas.ts';
import type { MucService } from './service.ts';

export async function owner(muc: MucService, request: IqRequest): Promise<Element | undefined> {
  const { payload, type, from } = request;
  const room = await muc.existingRoom(request);
  if ((await muc.store.getAffiliation(room.jid, from.bare)) !== 'owner') throw new StanzaError('forbidden', 'only owners may configure the room');
  if (type === 'get') return x('query', { xmlns: MUC_OWNER }, configForm(room.config));
  const destroy = payload.getChild('destroy');
  if (destroy) {
    await destroyRoom(muc, room, destroy);
    return;
  }
  const form = readForm(payload);
  if (!form) throw new StanzaError('bad-request', 'expected a data form or <destroy/>');
  if (form.type === 'cancel') {
    // Cancelling the initial configuration destroys the room (§10.1.3).
    if (room.locked) await destroyRoom(muc, room, x('destroy'));
    return;
  }
  if (form.type !== 'submit') throw new StanzaError('bad-request', 'the form must be submitted or cancelled');
  const before = room.config;
  const wasLocked = room.locked;
  const updated: Room = { ...room, config: applyConfigForm(before, form), locked: false };
  await muc.store.putRoom(updated);
  await updateDirectory(muc, updated);
  if (wasLocked) return;
  const occupants = await muc.store.listOccupants(room.jid);
  const codes = ['104'];
  if (before.whois !== updated.config.whois) codes.push(updated.config.whois === 'anyone' ? '172' : '173');
  await broadcast(muc, room.jid, occupants, x('message', { xmlns: NS.CLIENT, from: room.jid, type: 'groupchat', id: `config-${Date.now()}` }, x('x', { xmlns: MUC_USER }, ...codes.map((code) => x('status', { code })))));
  if (updated.config.membersOnly && !before.membersOnly) {
    let remaining = occupants;
    for (const o of occupants.filter((occ) => AFFILIATION_RANK[occ.affiliation] < AFFILIATION_RANK.member)) {
      await removeOccupant(muc, updated, remaining, o, ['322']);
      remaining = remaining.filter((r) => r.nick !== o.nick);
    }
  }
}

async function destroyRoom(muc: MucService, room: Room, destroy: Element): Promise<void> {
  const occupants = await muc.store.listOccupants(room.jid);
  const alternate = tryParseJid(destroy.attrs.jid);
  const reason = destroy.getChildText('reason');
  const notice = x('destroy', { jid: alternate?.bare }, reason ? x('reason', {}, reason) : undefined);
  await muc.store.deleteRoom(room.jid, muc.domain);
  for (const o of occupants) for (const s of o.sessions) await forgetJoin(muc, room.jid, s);
  // Each occupant is told it was removed, with the reason and where to go (§10.9).
  await fanout(muc, 
    room.jid,
    targets(occupants),
    (t) => new FrameTemplate(occupantPresence(room.jid, t.occupant, { type: 'unavailable', affiliation: 'none', role: 'none', codes: ['110'], destroy: cloneElement(notice) })).for(t.session.jid),
    true,
  );
}
