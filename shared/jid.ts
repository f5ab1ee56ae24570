/**
 * JIDs per RFC 7622: parsing, validation and normalization.
 *
 * Hand-written because no maintained npm package implements the PRECIS profiles (@xmpp/jid only
 * lower-cases). This covers what matters for a server: NFKC width mapping and case folding of the
 * localpart (UsernameCaseMapped), NFC of the resourcepart (OpaqueString), IDNA validation of the
 * domainpart, the forbidden characters, and the 1023-byte limits.
 */
import { domainToASCII } from 'node:url';

export class JidError extends Error {}

const LOCAL_FORBIDDEN = /["&'/:<>@\s\p{Cc}]/u;
const CONTROL = /\p{Cc}/u;
const MAX_PART_BYTES = 1023;

function checkLength(part: string, what: string): void {
  if (part.length === 0) throw new JidError(`empty ${what}`);
  if (Buffer.byteLength(part, 'utf8') > MAX_PART_BYTES) throw new JidError(`${what} longer than 1023 bytes`);
}

export function normalizeLocal(local: string): string {
  const mapped = local.normalize('NFKC').toLowerCase().normalize('NFC');
  checkLength(mapped, 'localpart');
  if (LOCAL_FORBIDDEN.test(mapped)) throw new JidError(`localpart "${local}" has a forbidden character`);
  return mapped;
}

export function normalizeDomain(domain: string): string {
  let d = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  d = d.normalize('NFC').toLowerCase();
  checkLength(d, 'domainpart');
  if (/^\[[0-9a-f:.]+\]$/.test(d)) return d; // IPv6 literal
  if (/[\s@/\\\p{Cc}]/u.test(d) || domainToASCII(d) === '') throw new JidError(`invalid domainpart "${domain}"`);
  for (const label of domainToASCII(d).split('.')) {
    if (label.length === 0 || label.length > 63) throw new JidError(`invalid domainpart "${domain}"`);
  }
  return d;
}

export function normalizeResource(resource: string): string {
  const mapped = resource.replace(/\p{Zs}/gu, ' ').normalize('NFC');
  checkLength(mapped, 'resourcepart');
  if (CONTROL.test(mapped)) throw new JidError('resourcepart has a control character');
  return mapped;
}

export class Jid {
  readonly local: string;
  readonly domain: string;
  readonly resource: string;

  /** Parts are normalized; use parseJid() for strings. */
  constructor(local: string, domain: string, resource = '') {
    this.local = local ? normalizeLocal(local) : '';
    this.domain = normalizeDomain(domain);
    this.resource = resource ? normalizeResource(resource) : '';
  }

  get bare(): string {
    return this.local ? `${this.local}@${this.domain}` : this.domain;
  }

  get isBare(): boolean {
    return this.resource === '';
  }

  toBare(): Jid {
    return this.resource ? new Jid(this.local, this.domain) : this;
  }

  withResource(resource: string): Jid {
    return new Jid(this.local, this.domain, resource);
  }

  toString(): string {
    return this.resource ? `${this.bare}/${this.resource}` : this.bare;
  }

  equals(other: Jid): boolean {
    return this.toString() === other.toString();
  }
}

/** Parses and normalizes a JID string; throws JidError (map it to jid-malformed). */
export function parseJid(text: string): Jid {
  const slash = text.indexOf('/');
  const head = slash === -1 ? text : text.slice(0, slash);
  const resource = slash === -1 ? '' : text.slice(slash + 1);
  if (slash !== -1 && resource === '') throw new JidError('empty resourcepart');
  const at = head.indexOf('@');
  const local = at === -1 ? '' : head.slice(0, at);
  const domain = at === -1 ? head : head.slice(at + 1);
  if (at !== -1 && local === '') throw new JidError('empty localpart');
  return new Jid(local, domain, resource);
}

export function tryParseJid(text: string | undefined | null): Jid | undefined {
  if (!text) return undefined;
  try {
    return parseJid(text);
  } catch {
    return undefined;
  }
}
