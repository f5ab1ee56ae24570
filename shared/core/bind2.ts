/**
 * XEP-0386 Bind 2: the resource bound inside the SASL2 `<authenticate/>` (sasl2.ts), with the
 * session features the client asks for inline (XEP-0198 enable, XEP-0280 carbons, XEP-0352 state),
 * answered in the `<success/>`: a login (to initial presence) of five frames, four with a XEP-0484
 * token, where RFC 6120's takes seven.
 *
 * The resource is `<tag>/<part of ours>` (§5, RECOMMENDED format). With the SASL2 user agent's
 * id, our part is a hash of it (stable, §5.1, and the id is not exposed): the same installation
 * binding again replaces its earlier session as an RFC 6120 bind of the same resource does
 * (§4: "SHOULD terminate any earlier sessions from the same client"), and what that session kept
 * unacknowledged is handed over at once, not when its resumption window ends (measured in a chaos
 * run with random parts: a client whose resumption was refused bound anew beside its hibernated
 * session, and nine messages waited out the window there). Without an id, the part is random.
 *
 * Order, for a client that must see nothing but `<success/>` first (XEP-0388 §2.4):
 * - the session is not available yet, so bare-JID messages do not choose it;
 * - XEP-0198 is enabled before `<success/>` (its `<enabled/>` is part of the answer) under the
 *   record's lease, which holds numbered posts until the answer is out (a stanza to the full JID
 *   of a session bound without XEP-0198 can come first: only a contact who learned the stable
 *   resource from an earlier session can send one, in the milliseconds between the session item
 *   and the post of `<success/>`);
 * - what modules enable (carbons, CSI) runs after `<success/>` is posted, within the same frame:
 *   a carbon copy posted earlier would reach the client in the middle of its authentication.
 *   The client's next frame comes after this one (one FIFO group), so it sees them all on.
 *
 * Not done, deliberately: offline messages are not dropped at bind (§6 says to, expecting the
 * client to read them from its archive; a user whose archiving is off would lose them), so they
 * come at initial presence as after an RFC 6120 bind; no `<metadata/>` of the archive yet.
 */
import { createHash } from 'node:crypto';
import { JidError, normalizeResource } from '../jid.ts';
import { frameUnique } from '../storage/frame-context.ts';
import { Element, NS, x } from '../xml/element.ts';
import { bindResource } from './resource-binding.ts';
import type { XmppServer } from './server.ts';
import type { ClientSession } from './session.ts';
import { enableStreamManagement, type SmAnswer } from './stream-management.ts';

/** The `<bind/>` of SASL2's `<inline/>`, with the session features that can be asked for inside it. */
export function bind2Feature(server: XmppServer): Element {
  const features = [...(server.config.streamManagement ? [NS.SM] : []), ...server.bindInlineHandlers.keys()];
  return x('bind', { xmlns: NS.BIND2 }, x('inline', {}, ...features.map((v) => x('feature', { var: v }))));
}

export interface Bound {
  /** The `<bound/>` for the `<success/>`. */
  bound: Element;
  /** What runs once `<success/>` is posted (the SM lease let go, the modules' inline features). */
  afterSuccess: () => Promise<void>;
}

/** Binds a resource for the authenticated stream as the `<bind/>` of its `<authenticate/>` asks. */
export async function bindInline(session: ClientSession, request: Element, userAgentId: string | undefined): Promise<Bound> {
  const { server } = session;
  await bindResource(session, resourceFor(session.bare, request.getChildText('tag'), userAgentId));
  const bound = x('bound', { xmlns: NS.BIND2 });
  const after: (() => Promise<void>)[] = [];
  for (const child of request.getChildElements()) {
    const ns = child.attrs.xmlns;
    if (ns === NS.SM && child.name === 'enable' && server.config.streamManagement) {
      const sm: SmAnswer = await enableStreamManagement(session, child);
      if (sm.answer) bound.append(sm.answer);
      if (sm.afterAnswer) after.push(sm.afterAnswer);
      continue;
    }
    const handler = ns === undefined ? undefined : server.bindInlineHandlers.get(ns);
    if (handler) after.push(() => handler(session, child));
  }
  return {
    bound,
    afterSuccess: async () => {
      for (const step of after) await step();
    },
  };
}

/** `<tag>/<ours>`; a tag that is no valid resource (or none) leaves only our part. */
function resourceFor(bare: string, tag: string | null, userAgentId: string | undefined): string {
  const ours = userAgentId ? createHash('sha256').update(`${bare}\0${userAgentId}\0${tag ?? ''}`).digest().subarray(0, 9).toString('base64url') : frameUnique('resource', 9);
  if (!tag?.trim()) return ours;
  try {
    return normalizeResource(`${Array.from(tag.trim()).slice(0, 64).join('')}/${ours}`);
  } catch (err) {
    if (err instanceof JidError) return ours;
    throw err;
  }
}
