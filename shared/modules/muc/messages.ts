/**
 * Messages to a room or an occupant (XEP-0045 §7.4–§7.9, §7.13, §8.6): groupchat messages and
 * subject changes (archived, then fanned out), private messages between occupants, mediated
 * invitations and declines, and voice requests.
 */
import { OCCUPANT_ID } from './occupant-id.ts';
import { StanzaError, cloneElement } from '../../errors.ts';
import { parseJid, tryParseJid, type Jid } from '../../jid.ts';
import { frameUnique, frameValue } from '../../storage/frame-context.ts';
import type { Occupant, Room } from '../../storage/muc-store.ts';
import { readForm, buildForm, type SubmittedForm } from '../../xml/data-form.ts';
import { Element, NS, x } from '../../xml/element.ts';
import { SID, archiveStore, stripStanzaIds } from '../../lib/mam-query.ts';
import { applyRole } from './admin.ts';
import { roomArchive } from './archive.ts';
import { broadcast, fanout, mayDeliver, targets } from './fanout.ts';
import { fansOutThroughJobs, queueRoomFanout } from './fanout-jobs.ts';
import { LostRace } from './lost-race.ts';
import { leaveRoom } from './occupancy.ts';
import { AFFILIATION_RANK, FrameTemplate, MUC_USER } from './stanzas.ts';
import type { HostEvent, MucService } from './service.ts';

/** XEP-0045 §7.13: the form of a voice request. */
const MUC_REQUEST = 'http://jabber.org/protocol/muc#request';

export async function onMessage(muc: MucService, event: HostEvent): Promise<void> {
  const { stanza, to } = event;
  const type = stanza.attrs.type ?? 'normal';
  if (type === 'error') {
    if (to.resource) await leaveRoom(muc, to.bare, event.from.toString(), { codes: ['333'], connectionId: event.session?.id });
    return;
  }
  const [room, occupants] = await Promise.all([muc.store.getRoom(to.bare), muc.store.listOccupants(to.bare)]);
  if (!room) throw new StanzaError('item-not-found', 'no such room');
  if (to.resource) return privateMessage(muc, event, room, occupants);
  if (type === 'groupchat') return groupchat(muc, event, room, occupants);
  const mucUser = stanza.getChild('x', MUC_USER);
  if (mucUser?.getChild('invite')) return invite(muc, event, room, occupants, mucUser);
  const form = readForm(stanza);
  if (form?.formType === MUC_REQUEST) return voiceRequest(muc, event, room, occupants, form);
  if (mucUser?.getChild('decline')) return decline(muc, event, room, mucUser.getChild('decline')!);
  throw new StanzaError('bad-request', 'send groupchat messages to the room, or chat messages to an occupant');
}

/**
 * §7.13 / §8.6 voice requests: a visitor's submitted muc#request form goes to the moderators as a
 * form to approve; a moderator's approval (muc#request_allow) makes that occupant a participant.
 */
async function voiceRequest(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[], form: SubmittedForm): Promise<void> {
  const sender = senderIn(occupants, event.from);
  const one = (name: string) => form.fields.get(name)?.[0];
  if (form.type === 'submit' && sender.role === 'moderator' && one('muc#roomnick') !== undefined) {
    if (!/^(1|true)$/.test(one('muc#request_allow') ?? '')) return; // declined: nothing to do
    const nick = one('muc#roomnick')!;
    for (let attempt = 0; ; attempt++) {
      const current = await muc.store.listOccupants(room.jid);
      const target = current.find((o) => o.nick === nick);
      if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
      if (target.role !== 'visitor') return; // another moderator approved already
      try {
        await applyRole(muc, room, current, nick, 'participant', sender.nick);
        return;
      } catch (err) {
        if (!(err instanceof LostRace) || attempt >= 3) throw err;
      }
    }
  }
  if (sender.role !== 'visitor') throw new StanzaError('not-acceptable', 'you have voice already');
  if (one('muc#role') !== 'participant') throw new StanzaError('bad-request', 'only voice (muc#role participant) can be requested');
  const request = buildForm(
    'form',
    MUC_REQUEST,
    [
      { var: 'muc#role', type: 'list-single', label: 'Requested role', values: ['participant'] },
      { var: 'muc#jid', type: 'jid-single', label: 'User ID', values: [event.from.toString()] },
      { var: 'muc#roomnick', type: 'text-single', label: 'Room Nickname', values: [sender.nick] },
      { var: 'muc#request_allow', type: 'boolean', label: 'Grant voice to this person?', values: ['false'] },
    ],
    'Voice request',
  );
  const moderators = occupants.filter((o) => o.role === 'moderator');
  const message = x('message', { xmlns: NS.CLIENT, from: room.jid, id: frameUnique('voice-request') }, request);
  await broadcast(muc, room.jid, moderators, message);
}

function senderIn(occupants: Occupant[], from: Jid): Occupant {
  const occupant = occupants.find((o) => o.sessions.some((s) => s.jid === from.toString()));
  if (!occupant) throw new StanzaError('not-acceptable', 'you are not in this room');
  return occupant;
}

async function groupchat(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[]): Promise<void> {
  const { stanza, from } = event;
  const sender = senderIn(occupants, from);
  if (sender.role === 'visitor') throw new StanzaError('forbidden', 'visitors may not speak in a moderated room');
  const occupantJid = `${room.jid}/${sender.nick}`;
  const body = stanza.getChild('body');
  const subject = stanza.getChild('subject');
  let out: Element;
  if (subject && !body) {
    if (!(sender.role === 'moderator' || (room.config.changeSubject && sender.role === 'participant'))) {
      throw new StanzaError('forbidden', 'only moderators may change the subject');
    }
    room.subject = { text: subject.getText(), nick: sender.nick, stamp: new Date().toISOString() };
    await muc.store.putRoom(room);
    out = x('message', { xmlns: NS.CLIENT, from: occupantJid, type: 'groupchat', id: stanza.attrs.id }, x('subject', {}, room.subject.text));
  } else {
    out = x('message', { xmlns: NS.CLIENT, from: occupantJid, type: 'groupchat', id: stanza.attrs.id });
    for (const child of stanza.getChildElements()) {
      // The room's own stanza-id and occupant data are the room's to set (XEP-0359, XEP-0313 §8.4, XEP-0421 §4).
      if (child.is('x', MUC_USER) || child.is('occupant-id', OCCUPANT_ID)) continue;
      out.append(cloneElement(child));
    }
    stripStanzaIds(out, room.jid);
  }
  if (sender.occupantId) out.append(x('occupant-id', { xmlns: OCCUPANT_ID, id: sender.occupantId }));
  if (!body && !subject) return toEveryone(muc, room.jid, occupants, out);
  // Archived before it goes out, so every copy carries the same stanza-id; and the occupants are
  // read again after that write, so a session joining meanwhile finds the message in the
  // archive as history, or is found here (docs/architecture.md, "room message vs join").
  const item = await archiveStore(muc.server).append(roomArchive(room.jid), {
    xml: out.toString(),
    with: sender.bare,
    withFull: occupantJid,
    kind: body ? undefined : 'subject',
  });
  out.append(x('stanza-id', { xmlns: SID, by: room.jid, id: item.id }));
  const current = await muc.store.listOccupants(room.jid);
  const at = Date.parse(item.stamp);
  await toEveryone(muc, room.jid, current, out, body ? { id: item.id, at } : undefined);
}

/**
 * A groupchat stanza to every occupant: posted from this frame, or, in a room with more sessions
 * than the inline limit, through fan-out jobs (fanout-jobs.ts). `admit`: the archived message's id
 * and time, for sessions that joined about then (fanout.ts, mayDeliver).
 */
async function toEveryone(muc: MucService, room: string, occupants: Occupant[], out: Element, admit?: { id: string; at: number }): Promise<void> {
  const sessions = occupants.reduce((n, o) => n + o.sessions.length, 0);
  // The way chosen stays the frame's: a run again after a failure half-way, in a room that crossed
  // the limit meanwhile, would otherwise post through jobs what the first run had posted (twice), and
  // jobs cannot take over the first run's join-race claims (lost). Traced in a chaos run of CI.
  const way = frameValue('muc-fanout-way', () => (fansOutThroughJobs(muc.server, sessions) ? 'jobs' : 'inline'));
  if (way === 'jobs') return queueRoomFanout(muc.server, room, occupants, new FrameTemplate(out), admit);
  await broadcast(muc, room, occupants, out, false, admit ? (t) => mayDeliver(muc, room, admit.id, admit.at, t.session) : undefined);
}

async function privateMessage(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[]): Promise<void> {
  const { stanza, from, to } = event;
  if (stanza.attrs.type === 'groupchat') throw new StanzaError('bad-request', 'groupchat messages go to the room');
  const sender = senderIn(occupants, from);
  const policy = room.config.allowPm;
  if (policy === 'none' || (policy === 'moderators' && sender.role !== 'moderator') || (policy === 'participants' && sender.role === 'visitor')) {
    throw new StanzaError('forbidden', 'private messages are not allowed here');
  }
  const target = occupants.find((o) => o.nick === to.resource);
  if (!target) throw new StanzaError('item-not-found', 'no occupant with that nickname');
  const out = x('message', { xmlns: NS.CLIENT, from: `${room.jid}/${sender.nick}`, type: stanza.attrs.type, id: stanza.attrs.id });
  for (const child of stanza.getChildElements()) if (!child.is('x', MUC_USER)) out.append(cloneElement(child));
  out.append(x('x', { xmlns: MUC_USER }));
  const template = new FrameTemplate(out);
  await fanout(muc, room.jid, targets([target]), (t) => template.for(t.session.jid));
}

async function invite(muc: MucService, event: HostEvent, room: Room, occupants: Occupant[], mucUser: Element): Promise<void> {
  const { from } = event;
  const inviter = senderIn(occupants, from);
  const affiliation = inviter.affiliation;
  const privileged = AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin || inviter.role === 'moderator';
  if (!room.config.allowInvites && !privileged) throw new StanzaError('forbidden', 'only moderators may invite to this room');
  for (const invite of mucUser.getChildren('invite')) {
    const invitee = tryParseJid(invite.attrs.to);
    if (!invitee) throw new StanzaError('jid-malformed', 'the invitation needs a valid "to"');
    // In a members-only room an invitation by an admin makes the invitee a member (§7.8.2).
    if (room.config.membersOnly && AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK.admin) {
      if ((await muc.store.getAffiliation(room.jid, invitee.bare)) === 'none') await muc.setAffiliation(room.jid, invitee.bare, 'member');
    }
    const reason = invite.getChildText('reason');
    const message = x(
      'message',
      { xmlns: NS.CLIENT, from: room.jid, to: invitee.toString(), id: event.stanza.attrs.id },
      x(
        'x',
        { xmlns: MUC_USER },
        x('invite', { from: from.toString() }, reason ? x('reason', {}, reason) : undefined),
        room.config.passwordProtected ? x('password', {}, room.config.password) : undefined,
      ),
    );
    await muc.server.route(message, parseJid(room.jid));
  }
}

async function decline(muc: MucService, event: HostEvent, room: Room, decline: Element): Promise<void> {
  const inviter = tryParseJid(decline.attrs.to);
  if (!inviter) throw new StanzaError('jid-malformed', 'the decline needs a valid "to"');
  const reason = decline.getChildText('reason');
  const message = x(
    'message',
    { xmlns: NS.CLIENT, from: room.jid, to: inviter.toString() },
    x('x', { xmlns: MUC_USER }, x('decline', { from: event.from.bare }, reason ? x('reason', {}, reason) : undefined)),
  );
  await muc.server.route(message, parseJid(room.jid));
}
