/**
 * XEP-0157 contact addresses: whom to reach about abuse, security or the service, published in the
 * server's disco#info as the `http://jabber.org/network/serverinfo` form. Configured as one string,
 * the same in `XMPP_CONTACT_ADDRESSES` and in the CDK context `contactAddresses`:
 *
 *   abuse=mailto:abuse@example.com,xmpp:abuse@example.com;security=https://example.com/security
 */
export const CONTACT_KINDS = ['abuse', 'admin', 'feedback', 'sales', 'security', 'status', 'support'] as const;
export type ContactKind = (typeof CONTACT_KINDS)[number];
export type ContactAddresses = Partial<Record<ContactKind, string[]>>;

/** Parses the setting; throws with a message naming what is wrong. */
export function parseContactAddresses(value: string | undefined, name = 'XMPP_CONTACT_ADDRESSES'): ContactAddresses {
  const addresses: ContactAddresses = {};
  for (const part of (value ?? '').split(';').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const kind = part.slice(0, eq).trim() as ContactKind;
    if (eq < 0 || !CONTACT_KINDS.includes(kind)) throw new Error(`${name}: "${part}" must be <kind>=<uri>,… with kind one of ${CONTACT_KINDS.join(', ')}`);
    const uris = part.slice(eq + 1).split(',').map((u) => u.trim()).filter(Boolean);
    const bad = uris.find((u) => !/^[a-z][a-z0-9+.-]*:\S+$/i.test(u));
    if (bad !== undefined || !uris.length) throw new Error(`${name}: ${kind} needs URIs such as mailto:… or xmpp:…, got "${bad ?? ''}"`);
    addresses[kind] = [...(addresses[kind] ?? []), ...uris];
  }
  return addresses;
}
