/**
 * XEP-0484 Fast Authentication Streamlining Tokens, inside SASL2 (sasl2.ts): a client that logged
 * in once with its password asks for a token, and logs in with it next time in one frame with
 * HT-SHA-256-NONE (draft-schmaus-kitten-sasl-ht: `authcid NUL HMAC-SHA-256(token, "Initiator")`,
 * the server proving itself with `HMAC-SHA-256(token, "Responder")`). A resumption is then two
 * frames (open, authenticate) instead of three, with no PBKDF2 on the phone.
 *
 * Tokens are per installation (the SASL2 user agent's id, which FAST requires), bound to the
 * mechanism they were issued for, kept in two slots (storage/fast-store.ts), expire after
 * `XMPP_FAST_TOKEN_DAYS`, and all go when the password changes (dynamo-store.ts, setCredentials).
 * Failed token checks count against the stream's three attempts like any failed authentication;
 * a token is 256 random bits, so guessing one is not the threat the login limits are for.
 * TLS 0-RTT is not offered, so the replay counter (`count`) has nothing to protect here.
 *
 * Only -NONE for now: the channel-binding variants (-ENDP, -UNIQ, -EXPR) need TLS data that only
 * the native TCP port has (XEP-0484 asks for at least one of them: not done yet).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { JidError, normalizeLocal } from '../jid.ts';
import { frameNow, frameValue } from '../storage/frame-context.ts';
import { FastStore, type FastToken } from '../storage/fast-store.ts';
import { Element, x } from '../xml/element.ts';
import type { XmppServer } from './server.ts';
import type { ClientSession } from './session.ts';

export const NS_FAST = 'urn:xmpp:fast:0';
export const FAST_MECHANISMS = ['HT-SHA-256-NONE'] as const;

const hmac = (token: string, label: string) => createHmac('sha256', Buffer.from(token, 'utf8')).update(label).digest();

/** Whether tokens are offered at all (XMPP_FAST_TOKEN_DAYS > 0). */
export const fastOffered = (server: XmppServer): boolean => server.config.fastTokenDays > 0;

/** The `<fast/>` of SASL2's `<inline/>`: the mechanisms a token can be used with. */
export function fastFeature(): Element {
  return x('fast', { xmlns: NS_FAST }, ...FAST_MECHANISMS.map((m) => x('mechanism', {}, m)));
}

export type TokenCheck = { ok: true; user: string; additionalData: string; token: FastToken } | { ok: false; condition: 'not-authorized' | 'credentials-expired' | 'malformed-request'; text: string };

/** Checks a token login: the `<authenticate/>` with its `<fast/>`, and the decoded initial response. */
export async function checkToken(session: ClientSession, mechanism: string, request: Element, response: Buffer): Promise<TokenCheck> {
  const { server } = session;
  const userAgentId = request.getChild('user-agent')?.attrs.id;
  if (!userAgentId) return { ok: false, condition: 'not-authorized', text: 'a token login needs the <user-agent/> id it was issued to' };
  const separator = response.indexOf(0);
  if (separator <= 0) return { ok: false, condition: 'malformed-request', text: 'expected authcid NUL HMAC' };
  let local: string;
  try {
    local = normalizeLocal(response.subarray(0, separator).toString('utf8').split('@')[0]!);
  } catch (err) {
    if (err instanceof JidError) return { ok: false, condition: 'not-authorized', text: 'unknown token' };
    throw err;
  }
  const proof = response.subarray(separator + 1);
  const bare = `${local}@${server.config.domain}`;
  const store = server.store.open(FastStore);
  const slots = await store.get(bare, userAgentId);
  const now = Date.now();
  // The newer slot first: using it retires the older token (§6).
  for (const [slot, token] of [['next', slots.next], ['current', slots.current]] as const) {
    if (!token || token.mechanism !== mechanism) continue;
    const expected = hmac(token.token, 'Initiator');
    if (proof.length !== expected.length || !timingSafeEqual(proof, expected)) continue;
    if (token.expiry <= now) return { ok: false, condition: 'credentials-expired', text: 'the token expired: log in with the password' };
    if (slot === 'next') await store.promote(bare, userAgentId, token);
    return { ok: true, user: bare, additionalData: hmac(token.token, 'Responder').toString('base64'), token };
  }
  return { ok: false, condition: 'not-authorized', text: 'unknown token' };
}

/**
 * What the `<success/>` says about tokens: a new one when the client asked (`<request-token/>`),
 * none after an `invalidate` (§5, which removes the installation's tokens first). The token is
 * chosen once per frame (journaled), so a frame run again issues the same one.
 */
export async function tokenAnswer(session: ClientSession, request: Element): Promise<Element | undefined> {
  const { server } = session;
  const userAgentId = request.getChild('user-agent')?.attrs.id;
  if (!fastOffered(server) || !userAgentId) return undefined;
  const store = server.store.open(FastStore);
  if (/^(1|true)$/.test(request.getChild('fast', NS_FAST)?.attrs.invalidate ?? '')) await store.invalidate(session.bare, userAgentId);
  const wanted = request.getChild('request-token', NS_FAST)?.attrs.mechanism;
  if (!wanted || !(FAST_MECHANISMS as readonly string[]).includes(wanted)) return undefined;
  const token: FastToken = {
    token: frameValue('fast-token', () => randomBytes(32).toString('base64url')),
    mechanism: wanted,
    expiry: frameNow() + server.config.fastTokenDays * 86_400_000,
  };
  await store.issue(session.bare, userAgentId, token);
  return x('token', { xmlns: NS_FAST, token: token.token, expiry: new Date(token.expiry).toISOString() });
}
