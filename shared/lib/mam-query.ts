/**
 * XEP-0313 queries with XEP-0059 paging over an archive partition: parsing the query and its form,
 * running it, and sending the results. Shared by user archives (modules/mam.ts) and room archives
 * (modules/muc), which differ only in the partition and in how a stored item is presented.
 */
import { StanzaError } from '../errors.ts';
import { parseJid, type Jid } from '../jid.ts';
import type { ModuleServer } from '../core/registry.ts';
import { ArchiveStore, isArchiveId, type ArchivePage, type ArchiveQuery, type ArchivedMessage } from '../storage/archive-store.ts';
import { readForm, buildForm } from '../xml/data-form.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored, tooLargeToPost } from '../xml/stored.ts';
import { userPk } from '../storage/keys.ts';

export const MAM = 'urn:xmpp:mam:2';
export const SID = NS.SID;
export const RSM = 'http://jabber.org/protocol/rsm';
export const FORWARD = NS.FORWARD;

/** Largest page a query gets, whatever <max/> asks (XEP-0059 lets the server limit it). */
export const MAX_PAGE = 100;
const DEFAULT_PAGE = 50;

export const archiveStore = (server: ModuleServer): ArchiveStore => server.store.open(ArchiveStore);

/** A user's archive is kept under the account's partition. */
export const userArchive = userPk;

/** XEP-0359 rule 2: stanza-ids claiming to be from `by` are removed (only `by` may set them). */
export function stripStanzaIds(stanza: Element, by: string): void {
  stanza.children = stanza.children.filter((c) => typeof c === 'string' || !(c.is('stanza-id', SID) && c.attrs.by === by));
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
  server: ModuleServer,
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

