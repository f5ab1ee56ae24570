/**
 * XEP-0357 at the handleFrame level on three handler instances sharing one DynamoDB Local table:
 * registration, notifications for offline users and for hibernated XEP-0198 sessions (posts from
 * several instances, what was in flight when the socket died), an app server's error, and a frame
 * that publishes, crashes and runs again. The recording sender stands in for @connections and the
 * recording remote for the federation queue (AWS's edge and the federation service's own).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { parseJid } from '../../shared/jid.ts';
import { parseFrame } from '../../shared/xml/parse.ts';
import type { Element } from '../../shared/xml/element.ts';
import { authenticated, befriend, Connection, freshUsers, kill, onlineWithSm, startHarness, type Harness } from './handler-harness.ts';

let h: Harness;

beforeEach(async () => {
  h ??= await startHarness(3, { XMPP_SM_RESUME_SECONDS: '60', XMPP_PUSH_SUMMARY: 'true' }, { remote: true });
  h.sender.beforePost = undefined;
});

const PUSH = 'urn:xmpp:push:0';
const SM = 'urn:xmpp:sm:3';
const APP = 'push.example';
const OPTIONS =
  '<x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE"><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var="secret"><value>s3cr3t</value></field></x>';
const enable = (node: string, form = OPTIONS) => `<iq xmlns="jabber:client" type="set" id="en-${node}"><enable xmlns="${PUSH}" jid="${APP}" node="${node}">${form}</enable></iq>`;
const chat = (to: string, body: string) => `<message xmlns="jabber:client" to="${to}" type="chat"><body>${body}</body></message>`;

/** Publishes sent to the app server since `from`, with what a test looks at. */
function publishes(from = 0) {
  return h.remote!.sent.slice(from).filter((s) => s.attrs.to === APP).map((iq) => {
    const pubsub = iq.getChild('pubsub', 'http://jabber.org/protocol/pubsub')!;
    const publish = pubsub.getChild('publish')!;
    const fields = new Map(
      (publish.getChild('item')!.getChild('notification', PUSH)!.getChild('x', 'jabber:x:data')?.getChildElements() ?? []).map((f: Element) => [f.attrs.var, f.getChildText('value')]),
    );
    return { iq, from: iq.attrs.from, id: iq.attrs.id, node: publish.attrs.node, fields, text: iq.toString(), options: pubsub.getChild('publish-options')?.toString() };
  });
}

/** Alice with push enabled on node `phone-node`; Bob online on his desk. */
async function aliceWithPush() {
  const [alice, bob] = await freshUsers(h, 'alice', 'bob');
  await befriend(h, alice!, bob!);
  const b = new Connection(h);
  await b.online(bob!, 'secret', 'desk');
  return { alice: alice!, bob: bob!, b };
}

describe('push notifications on several handler instances', () => {
  it('enables and disables registrations, advertises the feature on the account, refuses what is not the owner’s or not well-formed', async () => {
    const [amy, ben] = await freshUsers(h, 'amy', 'ben');
    const a = new Connection(h);
    await a.online(amy!, 'secret', 'phone');
    await a.frame(`<iq xmlns="jabber:client" type="get" id="d" to="${amy}"><query xmlns="http://jabber.org/protocol/disco#info"/></iq>`);
    expect(a.posts('id="d"')[0]).toContain(`var="${PUSH}"`);

    await a.frame(enable('n1'));
    expect(a.posts('id="en-n1"')[0]).toContain('type="result"');
    await a.frame(enable('n1')); // again: replaces, not an error
    await a.frame(enable('n2', ''));
    await a.frame(`<iq xmlns="jabber:client" type="set" id="bad"><enable xmlns="${PUSH}" jid="${APP}" node="n3"><x xmlns="jabber:x:data" type="submit"><field var="FORM_TYPE"><value>urn:other</value></field></x></enable></iq>`);
    expect(a.posts('id="bad"')[0]).toContain('<bad-request');
    await a.frame(`<iq xmlns="jabber:client" type="set" id="nojid"><enable xmlns="${PUSH}" node="n4"/></iq>`);
    expect(a.posts('id="nojid"')[0]).toContain('<bad-request');
    await a.frame(`<iq xmlns="jabber:client" type="set" id="other" to="${ben}"><enable xmlns="${PUSH}" jid="${APP}" node="x"/></iq>`);
    expect(a.posts('id="other"')[0]).toContain('<forbidden');
    for (let i = 0; i < 9; i++) await a.frame(enable(`extra${i}`, ''));
    expect(a.posts('id="en-extra7"')[0]).toContain('type="result"'); // the 10th
    expect(a.posts('id="en-extra8"')[0]).toContain('<resource-constraint'); // the 11th

    // Disable one node, then every node of the service.
    await a.frame(`<iq xmlns="jabber:client" type="set" id="dis1"><disable xmlns="${PUSH}" jid="${APP}" node="n1"/></iq>`);
    expect(a.posts('id="dis1"')[0]).toContain('type="result"');
    const sent = h.remote!.sent.length;
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    const b = new Connection(h);
    await b.online(ben!, 'secret', 'desk');
    await b.frame(chat(amy!, 'one'));
    expect(publishes(sent).map((p) => p.node).sort()).toEqual(['extra0', 'extra1', 'extra2', 'extra3', 'extra4', 'extra5', 'extra6', 'extra7', 'n2']);

    const a2 = new Connection(h);
    await a2.online(amy!, 'secret', 'phone2');
    await a2.frame(`<iq xmlns="jabber:client" type="set" id="dis-all"><disable xmlns="${PUSH}" jid="${APP}"/></iq>`);
    await a2.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    const after = h.remote!.sent.length;
    await b.frame(chat(amy!, 'two'));
    expect(publishes(after)).toEqual([]);
  });

  it('notifies for a message stored offline: summary with count and sender, the publish options, never the body', async () => {
    const { alice, bob, b } = await aliceWithPush();
    const a = new Connection(h);
    await a.online(alice, 'secret', 'phone');
    await a.frame(enable('phone-node'));
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');

    const sent = h.remote!.sent.length;
    await b.frame(chat(alice, 'the secret plan'));
    await b.frame(`<message xmlns="jabber:client" to="${alice}" type="chat"><composing xmlns="http://jabber.org/protocol/chatstates"/></message>`);
    await b.frame(`<message xmlns="jabber:client" to="${alice}" type="headline"><body>news</body></message>`);
    const [p, ...more] = publishes(sent);
    expect(more).toEqual([]);
    expect(p!.from).toBe(alice);
    expect(p!.node).toBe('phone-node');
    expect(Object.fromEntries(p!.fields)).toEqual({ FORM_TYPE: 'urn:xmpp:push:summary', 'message-count': '1', 'last-message-sender': `${bob}/desk` });
    expect(p!.options).toContain('<value>s3cr3t</value>');
    expect(p!.text).not.toContain('secret plan');
    expect((await h.store.listOffline(alice)).map((m) => /<body>([^<]*)/.exec(m.xml)?.[1])).toEqual(['the secret plan']);
  });

  it('notifies for a hibernated session: what was unacknowledged when the socket died, then each message posted by any instance; not after the resumption', async () => {
    const { alice, bob, b } = await aliceWithPush();
    const a = new Connection(h);
    const smId = await onlineWithSm(a, alice, 'phone');
    await a.frame(enable('phone-node'));
    // Posted while the socket was silently dead: accepted, never acknowledged.
    await b.frame(chat(`${alice}/phone`, 'in flight'), 0);
    const sent = h.remote!.sent.length;
    await kill(a);
    const atDeath = publishes(sent);
    expect(atDeath.map((p) => p.fields.get('message-count'))).toEqual(['1']);

    const more = new Connection(h);
    await more.online(bob, 'secret', 'laptop');
    await Promise.all([b.frame(chat(`${alice}/phone`, 'one'), 1), more.frame(chat(`${alice}/phone`, 'two'), 2)]);
    const whileHibernated = publishes(sent + atDeath.length);
    expect(whileHibernated.map((p) => p.fields.get('last-message-sender')).sort()).toEqual([`${bob}/desk`, `${bob}/laptop`]);
    expect(new Set([...atDeath, ...whileHibernated].map((p) => p.id)).size).toBe(3);

    const a2 = await authenticated(h, alice);
    await a2.frame(`<resume xmlns="${SM}" previd="${smId}" h="0"/>`);
    expect(a2.posts('<resumed')).toHaveLength(1);
    const resumed = h.remote!.sent.length;
    await b.frame(chat(`${alice}/phone`, 'awake now'));
    expect(a2.posts('awake now')).toHaveLength(1);
    expect(publishes(resumed)).toEqual([]);
  });

  it('an app server that answers with an error loses its registration; other registrations stay', async () => {
    const { alice, b } = await aliceWithPush();
    const a = new Connection(h);
    await a.online(alice, 'secret', 'phone');
    await a.frame(enable('gone-node'));
    await a.frame(enable('kept-node'));
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    const sent = h.remote!.sent.length;
    await b.frame(chat(alice, 'first'));
    const failed = publishes(sent).find((p) => p.node === 'gone-node')!;
    // The app server's answer arrives over federation (on another instance).
    const error = parseFrame(
      `<iq xmlns="jabber:client" type="error" id="${failed.id}" from="${APP}" to="${alice}"><error type="cancel"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`,
    );
    await h.servers[2]!.route(error, parseJid(APP));
    const after = h.remote!.sent.length;
    await b.frame(chat(alice, 'second'));
    expect(publishes(after).map((p) => p.node)).toEqual(['kept-node']);
  });

  it('a frame that publishes and then crashes runs again: the message is stored once, a repeated publish carries the same id', async () => {
    const { alice, b } = await aliceWithPush();
    const a = new Connection(h);
    await a.online(alice, 'secret', 'phone');
    await a.frame(enable('phone-node'));
    await a.frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>');
    const sent = h.remote!.sent.length;
    // The instance dies right after the offline message was written.
    h.crash.crashAfter('PutItemCommand');
    await expect(b.frame(chat(alice, 'once'), 0)).rejects.toThrow(/crash after PutItemCommand/);
    await b.redeliver(1);
    const ids = publishes(sent).map((p) => p.id);
    expect(ids.length).toBeGreaterThanOrEqual(1);
    expect(new Set(ids).size).toBe(1);
    expect((await h.store.listOffline(alice)).filter((m) => m.xml.includes('<body>once</body>'))).toHaveLength(1);
  });
});
