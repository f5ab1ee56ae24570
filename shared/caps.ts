/**
 * XEP-0115 entity capabilities: the verification string and its hash (§5.1, §5.4), used both to
 * advertise the server's own capabilities and to check what clients claim before their feature
 * lists are cached.
 */
import { createHash } from 'node:crypto';
import { Element, NS } from './xml/element.ts';

export const CAPS_NS = 'http://jabber.org/protocol/caps';

/** IANA hash names (XEP-0115 §5.4) we compute, mapped to Node's names. MD5 is not accepted. */
const HASHES: Record<string, string> = { 'sha-1': 'sha1', 'sha-224': 'sha224', 'sha-256': 'sha256', 'sha-384': 'sha384', 'sha-512': 'sha512' };

export function isSupportedCapsHash(hash: string | undefined): hash is string {
  return hash !== undefined && Object.hasOwn(HASHES, hash);
}

export interface Caps {
  hash: string;
  node: string;
  ver: string;
}

/** The <c/> element of a presence, when it uses a hash we can verify (legacy caps without 'hash' are ignored). */
export function capsOf(presence: Element): Caps | undefined {
  const c = presence.getChild('c', CAPS_NS);
  const { hash, node, ver } = c?.attrs ?? {};
  if (!isSupportedCapsHash(hash) || !node || !ver) return undefined;
  return { hash, node, ver };
}

const byteCompare = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return Buffer.compare(x, y);
};

/**
 * The verification string of a disco#info <query/> (XEP-0115 §5.1): identities, features, then
 * extended forms (XEP-0128), each sorted by octets. Returns undefined for results the XEP says to
 * refuse (§5.4: duplicate identities, features or FORM_TYPEs).
 */
export function verificationString(query: Element): string | undefined {
  const identities = query.getChildren('identity').map(
    (i) => `${i.attrs.category ?? ''}/${i.attrs.type ?? ''}/${i.attrs['xml:lang'] ?? ''}/${i.attrs.name ?? ''}`,
  );
  const features = query.getChildren('feature').map((f) => f.attrs.var ?? '');
  if (new Set(identities).size !== identities.length || new Set(features).size !== features.length) return undefined;
  let s = '';
  for (const identity of identities.sort(byteCompare)) s += `${identity}<`;
  for (const feature of features.sort(byteCompare)) s += `${feature}<`;
  const forms: { type: string; text: string }[] = [];
  for (const form of query.getChildren('x', NS.DATA_FORMS)) {
    const fields = form.getChildren('field');
    const formType = fields.find((f) => f.attrs.var === 'FORM_TYPE');
    // Forms without a hidden FORM_TYPE are left out (§5.4 step 3.6).
    if (!formType || formType.attrs.type !== 'hidden') continue;
    const values = new Set(formType.getChildren('value').map((v) => v.getText()));
    if (values.size > 1) return undefined;
    const type = [...values][0] ?? '';
    let text = `${type}<`;
    const others = fields.filter((f) => f !== formType && f.attrs.var);
    for (const field of others.sort((a, b) => byteCompare(a.attrs.var!, b.attrs.var!))) {
      text += `${field.attrs.var}<`;
      for (const value of field.getChildren('value').map((v) => v.getText()).sort(byteCompare)) text += `${value}<`;
    }
    forms.push({ type, text });
  }
  if (new Set(forms.map((f) => f.type)).size !== forms.length) return undefined;
  for (const form of forms.sort((a, b) => byteCompare(a.type, b.type))) s += form.text;
  return s;
}

/** The 'ver' of a disco#info result under `hash`, or undefined when the result is not hashable. */
export function capsVer(query: Element, hash = 'sha-1'): string | undefined {
  const algorithm = HASHES[hash];
  const s = verificationString(query);
  if (!algorithm || s === undefined) return undefined;
  return createHash(algorithm).update(s, 'utf8').digest('base64');
}
