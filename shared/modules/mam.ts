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
import type { XmppServer } from '../core/server.ts';
import { frameTask } from '../storage/frame-context.ts';
import { ArchiveStore, isArchiveId, type ArchiveDefault, type ArchiveEntry, type ArchivePage, type ArchivePrefs, type ArchiveQuery, type ArchivedMessage } from '../storage/archive-store.ts';
import { readForm, buildForm } from '../xml/data-form.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored, tooLargeToPost } from '../xml/stored.ts';
import { keepInArchive } from '../message-storage.ts';

export const MAM = 'urn:xmpp:mam:2';
export const SID = 'urn:xmpp:sid:0';
export const RSM = 'http://jabber.org/protocol/rsm';
export const FORWARD = 'urn:xmpp:forward:0';

/** Largest page a query gets, whatever <max/> asks (XEP-0059 lets the server limit it). */
export const MAX_PAGE = 100;
const DEFAULT_PAGE = 50;

const archives = new WeakMap<XmppServer, ArchiveStore>();

export function archiveStore(server: XmppServer): ArchiveStore {
  let store = archives.get(server);
  if (!store) archives.set(server, (store = new ArchiveStore(server.store.db)));
  return store;
}

export const userArchive = (bare: string) => `user#${bare}`;

/** XEP-0359 rule 2: stanza-ids claiming to be from `by` are removed (only `by` may set them). */
export function stripStanzaIds(stanza: Element, by: string): void {
  stanza.children = stanza.children.filter((c) => typeof c === 'string' || !(c.is('stanza-id', SID) && c.attrs.by === by));
}

/** XEP-0441: whether `user`'s preferences let a message with `contact` into the archive. */
async function allowedByPrefs(server: XmppServer, user: string, contact: Jid): Promise<boolean> {
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

/** A parsed MAM query: the archive filter plus the client's query id and page flags. */
export interface ParsedQuery {
  queryId?: string;
  with?: Jid;
  query: ArchiveQuery;
  flip: boolean;
}

function parseTime(value: string | undefined, field: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  // XEP-0082 DateTime: a date, 'T', a time and a zone.
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(value)) throw new StanzaError('bad-request', `${field} is not a XEP-0082 date-time`);
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new StanzaError('bad-request', `${field} is not a valid date-time`);
  return ms;
}

const KNOWN_FIELDS = new Set(['FORM_TYPE', 'with', 'start', 'end']);

/** Reads a <query xmlns="urn:xmpp:mam:2"/>; throws the XEP's errors for bad input. */
export function parseMamQuery(payload: Element): ParsedQuery {
  const result: ParsedQuery = { queryId: payload.attrs.queryid, query: { max: DEFAULT_PAGE }, flip: false };
  const form = readForm(payload);
  if (form) {
    if (form.type !== 'submit') throw new StanzaError('bad-request', 'the query form must be of type submit');
    if (form.formType !== undefined && form.formType !== MAM) throw new StanzaError('bad-request', `FORM_TYPE must be ${MAM}`);
    for (const name of form.fields.keys()) {
      if (!KNOWN_FIELDS.has(name)) throw new StanzaError('feature-not-implemented', `unsupported query field "${name}"`);
    }
    const withValue = form.fields.get('with')?.[0];
    if (withValue) {
      try {
        result.with = parseJid(withValue);
      } catch {
        throw new StanzaError('jid-malformed', `"${withValue}" is not a JID`);
      }
    }
    result.query.start = parseTime(form.fields.get('start')?.[0], 'start');
    result.query.end = parseTime(form.fields.get('end')?.[0], 'end');
  }
  const set = payload.getChild('set', RSM);
  if (set) {
    const max = set.getChildText('max');
    if (max !== null) {
      if (!/^\d+$/.test(max.trim())) throw new StanzaError('bad-request', '<max/> must be a non-negative integer');
      result.query.max = Math.min(Number(max.trim()), MAX_PAGE);
    }
    if (set.getChild('index')) throw new StanzaError('feature-not-implemented', 'paging by index is not supported');
    const after = set.getChild('after');
    const before = set.getChild('before');
    if (after && before) throw new StanzaError('bad-request', 'use <after/> or <before/>, not both');
    if (after) {
      const id = after.getText().trim();
      if (!id) throw new StanzaError('bad-request', '<after/> needs an id');
      result.query.after = id;
    }
    if (before) result.query.before = before.getText().trim();
  }
  if (payload.getChild('flip-page')) throw new StanzaError('feature-not-implemented', 'flipped pages are not supported');
  return result;
}

/** The query form (iq get), XEP-0313 §4.1.6. */
export function mamQueryForm(): Element {
  return x(
    'query',
    { xmlns: MAM },
    buildForm('form', MAM, [
      { var: 'with', type: 'jid-single' },
      { var: 'start', type: 'text-single' },
      { var: 'end', type: 'text-single' },
    ]),
  );
}

/**
 * Runs a parsed query against an archive partition and sends the results to the requester, in
 * order, before returning the <fin/> for the iq result. `present` turns a stored item into the
 * forwarded message (null or undefined skips it). An item that cannot be parsed, or whose result
 * is larger than a frame may be, is skipped with a log line: it must not fail the query.
 */
export async function answerMamQuery(
  server: XmppServer,
  archivePk: string,
  archiveJid: string,
  parsed: ParsedQuery,
  send: (el: Element) => Promise<unknown>,
  to: string,
  withAny: ArchiveQuery['withAny'],
  present: (item: ArchivedMessage) => Element | null | undefined = (item) => parseStored(item.xml, 'archived message', { archive: archivePk, id: item.id }),
): Promise<Element> {
  const store = archiveStore(server);
  for (const id of [parsed.query.after, parsed.query.before]) {
    if (id && !(isArchiveId(id) && (await store.exists(archivePk, id)))) throw new StanzaError('item-not-found', `no archived message with id "${id}"`);
  }
  // <max>0</max> asks only for a count (XEP-0059 §2.7), which is not kept: an empty page, not claimed complete.
  let page: ArchivePage = { items: [], complete: false };
  if (parsed.query.max > 0) page = await store.query(archivePk, { ...parsed.query, withAny });
  for (const item of page.items) {
    const message = present(item);
    if (!message) continue;
    message.attrs.xmlns = NS.CLIENT;
    const result = x(
      'message',
      { xmlns: NS.CLIENT, from: archiveJid, to },
      x(
        'result',
        { xmlns: MAM, queryid: parsed.queryId, id: item.id },
        x('forwarded', { xmlns: FORWARD }, x('delay', { xmlns: NS.DELAY, stamp: item.stamp }), message),
      ),
    );
    if (tooLargeToPost(result.toString(), server.config.maxFrameBytes, 'archived message', { archive: archivePk, id: item.id })) continue;
    await send(result);
  }
  const first = page.items[0];
  const last = page.items[page.items.length - 1];
  return x(
    'fin',
    { xmlns: MAM, complete: page.complete ? 'true' : undefined },
    x('set', { xmlns: RSM }, first ? x('first', {}, first.id) : undefined, last ? x('last', {}, last.id) : undefined),
  );
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
