/**
 * XEP-0357 Push Notifications: a mobile client registers its app server (a push service JID and a
 * node, with a publish-options form carrying its secret), and when a message arrives that the
 * client cannot receive now, the server publishes a notification to every registered app server,
 * which wakes the app through Apple's or Google's push service. The app then connects and resumes
 * (XEP-0198) or logs in and finds the message in offline storage.
 *
 * When: a message with a body (or an encrypted payload) is kept for a hibernated session (its
 * socket is gone, XEP-0198), including what the client never acknowledged when its socket died; or
 * it goes to offline storage because no session is available. Group chat, headlines, errors and
 * carbons copies do not notify.
 *
 * What: an empty `<notification/>` by default, so nothing about the message passes through the app
 * server or Apple or Google. With `XMPP_PUSH_SUMMARY=true` a `urn:xmpp:push:summary` form adds the
 * message count and the last sender; never the body (XEP-0357 §11 asks servers to let users limit
 * this; the operator decides it here, out of band, as the XEP recommends).
 *
 * The publish goes out through normal routing (federation or an XEP-0114 component) from the user's
 * bare JID, as Prosody's mod_cloud_notify does, so an app server that answers with an error reaches
 * the account, and the registration is removed (XEP-0357 §7.1).
 */
import { createHash } from 'node:crypto';
import type { XmppModule } from '../core/registry.ts';
import type { ModuleServer } from '../core/registry.ts';
import { StanzaError } from '../errors.ts';
import { JidError, parseJid } from '../jid.ts';
import { frameUnique } from '../storage/frame-context.ts';
import { PushStore, type PushRegistration } from '../storage/push-store.ts';
import { Element, NS, x } from '../xml/element.ts';
import { parseStored } from '../xml/stored.ts';

export const PUSH = 'urn:xmpp:push:0';
const PUBSUB = NS.PUBSUB;
const PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options';
const CARBONS = NS.CARBONS;
/** Registrations per account: one per app and device is a handful; more is abuse. */
export const MAX_PUSH_REGISTRATIONS = 10;
/** The publish-options form is a secret and a few settings. */
const MAX_OPTIONS_BYTES = 4096;

const pushStore = (server: ModuleServer): PushStore => server.store.open(PushStore);

/** The publish id names the node it was for (hashed), so an error answering it disables that registration only. */
const nodeTag = (node: string) => createHash('sha256').update(node).digest('hex').slice(0, 12);

/** Whether a message is one the user should be woken for. */
export function warrantsPush(message: Element): boolean {
  const type = message.attrs.type ?? 'normal';
  if (type !== 'chat' && type !== 'normal') return false;
  if (message.getChild('sent', CARBONS) || message.getChild('received', CARBONS)) return false;
  return message.getChild('body') !== undefined || message.getChildElements().some((c) => c.name === 'encrypted');
}

function summary(count: number, lastSender: string): Element {
  const field = (name: string, value: string) => x('field', { var: name }, x('value', {}, value));
  return x(
    'x',
    { xmlns: NS.DATA_FORMS, type: 'submit' },
    field('FORM_TYPE', 'urn:xmpp:push:summary'),
    field('message-count', String(count)),
    field('last-message-sender', lastSender),
  );
}

/** Publishes one notification about `messages` to every app server the user registered. */
async function notify(server: ModuleServer, bare: string, messages: Element[]): Promise<void> {
  const wake = messages.filter(warrantsPush);
  if (!wake.length) return;
  const registrations = await pushStore(server).list(bare);
  for (const r of registrations) {
    const notification = x('notification', { xmlns: PUSH }, server.config.pushSummary ? summary(wake.length, wake.at(-1)!.attrs.from ?? '') : undefined);
    const options = r.options ? parseStored(r.options, 'push publish options', { bare }) : undefined;
    const publish = x(
      'iq',
      { xmlns: NS.CLIENT, type: 'set', from: bare, to: r.jid, id: `push-${nodeTag(r.node)}-${frameUnique(`push ${r.jid} ${r.node}`)}` },
      x('pubsub', { xmlns: PUBSUB }, x('publish', { node: r.node }, x('item', {}, notification)), options ? x('publish-options', {}, options) : undefined),
    );
    await server.sendTo(parseJid(r.jid), publish);
  }
}

function readEnable(payload: Element): PushRegistration {
  const jidAttr = payload.attrs.jid;
  if (!jidAttr) throw new StanzaError('bad-request', "<enable/> needs the push service's 'jid'");
  let jid: string;
  try {
    jid = parseJid(jidAttr).toString();
  } catch (err) {
    if (err instanceof JidError) throw new StanzaError('jid-malformed', err.message);
    throw err;
  }
  const node = payload.attrs.node ?? '';
  const form = payload.getChild('x', NS.DATA_FORMS);
  if (!form) return { jid, node };
  const formType = form.getChildElements().find((f) => f.name === 'field' && f.attrs.var === 'FORM_TYPE')?.getChildText('value');
  if (formType !== PUBLISH_OPTIONS) throw new StanzaError('bad-request', `the form must be ${PUBLISH_OPTIONS}`);
  const options = form.toString();
  if (Buffer.byteLength(options) > MAX_OPTIONS_BYTES) throw new StanzaError('not-acceptable', `publish options are limited to ${MAX_OPTIONS_BYTES} bytes`);
  return { jid, node, options };
}

export const pushModule: XmppModule = {
  name: 'push',
  setup(reg) {
    reg.feature(PUSH, 'account');
    reg.iq('account', PUSH, async ({ server, type, payload, from, to, session }) => {
      if (from.bare !== to.bare || !session) throw new StanzaError('forbidden', 'only the account itself enables its push notifications');
      if (type !== 'set') throw new StanzaError('bad-request', 'push notifications are enabled and disabled with iq set');
      const store = pushStore(server);
      const existing = await store.list(to.bare);
      if (payload.name === 'enable') {
        const registration = readEnable(payload);
        const replacing = existing.some((r) => r.jid === registration.jid && r.node === registration.node);
        if (!replacing && existing.length >= MAX_PUSH_REGISTRATIONS) {
          throw new StanzaError('resource-constraint', `at most ${MAX_PUSH_REGISTRATIONS} push registrations per account`);
        }
        await store.put(to.bare, registration);
        return;
      }
      if (payload.name === 'disable') {
        if (!payload.attrs.jid) throw new StanzaError('bad-request', "<disable/> needs the push service's 'jid'");
        const node = payload.attrs.node;
        // Without a node, every registration with that service goes (XEP-0357 §6).
        for (const r of existing) if (r.jid === payload.attrs.jid && (node === undefined || r.node === node)) await store.remove(to.bare, r.jid, r.node);
        return;
      }
      throw new StanzaError('feature-not-implemented', `<${payload.name}/> is not a XEP-0357 request`);
    });

    reg.onHibernatedMessages(({ server, bare, messages }) => notify(server, bare, messages));
    // Before the offline module stores it (it ends the hook chain): the app is woken while the
    // message is being stored, and finds it when it logs in.
    reg.hook(
      'message/offline',
      async ({ server, stanza, to }) => {
        if (to?.local && server.isLocalDomain(to.domain)) await notify(server, to.bare, [stanza]);
        return false;
      },
      10,
    );
    // An app server that answers a publish with an error no longer takes them (XEP-0357 §7.1).
    reg.hook(
      'iq',
      async ({ server, stanza, from, to }) => {
        const id = stanza.attrs.id ?? '';
        if (stanza.attrs.type !== 'error' || !id.startsWith('push-') || !to || to.resource || !to.local || !server.isLocalDomain(to.domain)) return false;
        const store = pushStore(server);
        const tag = id.split('-')[1];
        for (const r of await store.list(to.bare)) if (r.jid === from.toString() && nodeTag(r.node) === tag) await store.remove(to.bare, r.jid, r.node);
        return true;
      },
      50,
    );
  },
};
