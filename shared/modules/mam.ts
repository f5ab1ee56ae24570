/**
 * XEP-0313 Message Archive Management for user accounts, with XEP-0059 paging, XEP-0359 stanza ids
 * and XEP-0441 archiving preferences.
 *
 * Archiving: a chat or normal message with content (a body, or an encrypted payload, a reaction, a
 * retraction, or a <store/> hint: shared/message-storage.ts) is stored in the sender's archive when
 * a local client sends it ('message/out') and in the recipient's archive when it is delivered to a
 * local account ('message/in'); the delivered copy carries <stanza-id by="recipient"/>. A message to
 * oneself is stored once. Messages with a <no-store/> or <no-permanent-store/> hint are not stored.
 *
 * The query and paging code is shared with the group chat module (room archives).
 */
import { StanzaError, cloneElement } from '../errors.ts';
import { parseJid, type Jid } from '../jid.ts';
import type { StanzaEvent, XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { frameTask } from '../storage/frame-context.ts';
import type { ArchiveDefault, ArchiveEntry, ArchivePrefs } from '../storage/archive-store.ts';
import { Element, x } from '../xml/element.ts';
import { keepInArchive } from '../message-storage.ts';
import { MAM, SID, answerMamQuery, archiveStore, mamQueryForm, parseMamQuery, stripStanzaIds, userArchive } from '../lib/mam-query.ts';

/** XEP-0441: whether `user`'s preferences let a message with `contact` into the archive. */
async function allowedByPrefs(server: ModuleServer, user: string, contact: Jid): Promise<boolean> {
  const prefs = await archiveStore(server).getPrefs(server.store, user);
  if (!prefs) return true;
  const matches = (list: string[]) => list.includes(contact.bare) || list.includes(contact.toString());
  if (matches(prefs.never)) return false;
  if (matches(prefs.always)) return true;
  if (prefs.default === 'always') return true;
  if (prefs.default === 'never') return false;
  const item = await server.store.getRosterItem(user, contact.bare);
  return item !== undefined;
}

/**
 * The sender's copy of a message to a local user, kept until the recipient's copy is made on
 * delivery ('message/in', same frame), so both go to DynamoDB in one request. A message that never
 * reaches delivery (blocked, unknown recipient) was not sent, and its sender's copy is dropped.
 */
const sendersCopy = new WeakMap<Element, ArchiveEntry>();

async function archiveOutgoing({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  if (!keepInArchive(stanza)) return false;
  const contact = to ?? from.toBare();
  // A message to oneself is archived once, on delivery.
  if (contact.bare === from.bare) return false;
  if (!(await allowedByPrefs(server, from.bare, contact))) return false;
  const entry = archiveStore(server).prepare(userArchive(from.bare), { xml: cloneElement(stanza).toString(), with: contact.bare, withFull: contact.toString() });
  if (contact.local && server.isLocalDomain(contact.domain)) sendersCopy.set(stanza, entry);
  else await archiveStore(server).write([entry]);
  return false;
}

async function archiveIncoming({ server, stanza, from, to }: StanzaEvent): Promise<boolean> {
  const owner = to!.bare;
  const entries = [sendersCopy.get(stanza)].filter((e) => e !== undefined);
  sendersCopy.delete(stanza);
  stripStanzaIds(stanza, owner);
  if (keepInArchive(stanza) && (await allowedByPrefs(server, owner, from))) {
    const entry = archiveStore(server).prepare(userArchive(owner), { xml: cloneElement(stanza).toString(), with: from.bare, withFull: from.toString() });
    entries.push(entry);
    stanza.append(x('stanza-id', { xmlns: SID, by: owner, id: entry.item.id }));
  }
  // Written while the message is posted (one round trip on the message's path, not two); the
  // frame, and so the queue's acknowledgement, waits for it.
  if (entries.length) await frameTask(archiveStore(server).write(entries));
  return false;
}

function prefsElement(prefs: ArchivePrefs): Element {
  return x(
    'prefs',
    { xmlns: MAM, default: prefs.default },
    x('always', {}, ...prefs.always.map((j) => x('jid', {}, j))),
    x('never', {}, ...prefs.never.map((j) => x('jid', {}, j))),
  );
}

function readJidList(el: Element | undefined): string[] {
  if (!el) return [];
  return el.getChildren('jid').map((j) => {
    try {
      return parseJid(j.getText().trim()).toString();
    } catch {
      throw new StanzaError('jid-malformed', `"${j.getText()}" is not a JID`);
    }
  });
}

export const mamModule: XmppModule = {
  name: 'mam',
  setup(reg) {
    reg.feature(MAM, 'account');
    reg.feature(SID, 'account');
    // Before carbons (priority 0), so carbon copies carry the stanza-id.
    reg.hook('message/out', archiveOutgoing, 10);
    reg.hook('message/in', archiveIncoming, 10);

    reg.iq('account', MAM, async ({ server, stanza, payload, type, from, to, session }) => {
      if (from.bare !== to.bare) throw new StanzaError('forbidden', 'only the owner may query this archive');
      if (payload.name === 'prefs') {
        const store = archiveStore(server);
        if (type === 'get') return prefsElement((await store.getPrefs(server.store, from.bare)) ?? { default: 'always', always: [], never: [] });
        const value = payload.attrs.default;
        if (value !== 'always' && value !== 'never' && value !== 'roster') throw new StanzaError('bad-request', 'default must be always, never or roster');
        const prefs: ArchivePrefs = { default: value as ArchiveDefault, always: readJidList(payload.getChild('always')), never: readJidList(payload.getChild('never')) };
        await store.putPrefs(from.bare, prefs);
        return prefsElement(prefs);
      }
      if (payload.name !== 'query') throw new StanzaError('feature-not-implemented');
      if (type === 'get') return mamQueryForm();
      const parsed = parseMamQuery(payload);
      const withJid = parsed.with;
      const withAny = withJid ? [{ attribute: withJid.isBare ? ('with' as const) : ('withFull' as const), value: withJid.toString() }] : undefined;
      const requester = stanza.attrs.from!;
      const send = session ? (el: Element) => session.send(el) : (el: Element) => server.sendTo(from, el);
      return answerMamQuery(server, userArchive(from.bare), from.bare, parsed, send, requester, withAny);
    });
  },
};
