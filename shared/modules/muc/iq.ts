/**
 * IQs to a room or an occupant: the room's iqs are routed by namespace to disco.ts, owner.ts,
 * admin.ts, archive.ts (MAM, moderation) and register.ts; an iq to an occupant is answered here
 * (XEP-0410 self-ping) or forwarded to one of its sessions, and the answer is relayed back.
 */
import { StanzaError, cloneElement } from '../../errors.ts';
import { tryParseJid } from '../../jid.ts';
import { NS, x } from '../../xml/element.ts';
import { MAM } from '../../lib/mam-query.ts';
import { MODERATE } from './moderation.ts';
import { admin } from './admin.ts';
import { moderate, roomArchiveQuery } from './archive.ts';
import { roomInfo } from './disco.ts';
import { fanout } from './fanout.ts';
import { owner } from './owner.ts';
import { registerNick } from './register.ts';
import { MUC_ADMIN, MUC_OWNER } from './stanzas.ts';
import type { HostEvent, MucService } from './service.ts';

const PING = 'urn:xmpp:ping';
const FORWARDED_IQ = 'mucfwd';

export async function onIq(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, to } = event;
  const type = stanza.attrs.type;
  if (type === 'result' || type === 'error') {
    if (to.resource) await forwardIqResponse(muc, event);
    return;
  }
  if (type !== 'get' && type !== 'set') return;
  if (to.resource) return occupantIq(muc, event);
  await muc.answer(event, async (request) => {
    const ns = request.payload.attrs.xmlns;
    if (request.payload.is('query', NS.DISCO_INFO)) return roomInfo(muc, request);
    if (request.payload.is('query', NS.DISCO_ITEMS)) {
      if (request.type !== 'get') throw new StanzaError('bad-request');
      await muc.existingRoom(request);
      return x('query', { xmlns: NS.DISCO_ITEMS });
    }
    if (ns === MUC_OWNER) return owner(muc, request);
    if (ns === MUC_ADMIN) return admin(muc, request);
    if (ns === MAM) return roomArchiveQuery(muc, request, event);
    if (ns === MODERATE) return moderate(muc, request, event);
    if (ns === NS.REGISTER) return registerNick(muc, request);
    throw new StanzaError('service-unavailable');
  });
}

/** XEP-0410 self-ping is answered here; other iqs to an occupant go to one of its sessions. */
async function occupantIq(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, from, to } = event;
  const occupants = await muc.store.listOccupants(to.bare);
  const sender = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
  if (!sender) throw new StanzaError('not-acceptable', 'you are not in this room');
  const payload = stanza.getChildElements()[0]!;
  if (sender.nick === to.resource && payload.is('ping', PING)) {
    await muc.send(event, x('iq', { xmlns: NS.CLIENT, type: 'result', id: stanza.attrs.id, from: to.toString(), to: from.toString() }));
    return;
  }
  const target = occupants.find((o) => o.nick === to.resource);
  if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
  const session = target.sessions[0]!;
  // The id carries the requester, so the answer finds its way back without any state here.
  const id = `${FORWARDED_IQ}:${Buffer.from(from.toString()).toString('base64url')}:${stanza.attrs.id}`;
  const forwarded = x('iq', { xmlns: NS.CLIENT, type: stanza.attrs.type, id, from: `${to.bare}/${sender.nick}`, to: session.jid }, cloneElement(payload));
  await fanout(muc, to.bare, [{ occupant: target, session }], () => forwarded.toString());
}

async function forwardIqResponse(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, from, to } = event;
  const [tag, requester, ...rest] = (stanza.attrs.id ?? '').split(':');
  if (tag !== FORWARDED_IQ || !requester || !rest.length) return;
  const requesterJid = tryParseJid(Buffer.from(requester, 'base64url').toString());
  if (!requesterJid) return;
  const occupants = await muc.store.listOccupants(to.bare);
  const responder = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
  const asker = occupants.find((o) => o.nick === to.resource && o.sessions.some((s) => s.jid === requesterJid.toString()));
  if (!responder || !asker) return;
  const reply = x('iq', { xmlns: NS.CLIENT, type: stanza.attrs.type, id: rest.join(':'), from: `${to.bare}/${responder.nick}`, to: requesterJid.toString() });
  for (const child of stanza.getChildElements()) reply.append(cloneElement(child));
  const session = asker.sessions.find((s) => s.jid === requesterJid.toString())!;
  await fanout(muc, to.bare, [{ occupant: asker, session }], () => reply.toString(), true);
}
