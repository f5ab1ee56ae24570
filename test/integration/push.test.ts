/**
 * XEP-0357 through the local stack, federation service included: an XEP-0114 component
 * (@xmpp/component) plays the app server and records what it is sent; @xmpp/client users enable
 * push, go offline or lose their socket (hibernated, XEP-0198), and get messages. Default settings:
 * the notification says nothing about the message.
 */
import { component as xmppComponent } from '@xmpp/component';
import type { Element as XmlElement } from '@xmpp/xml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, Inbox, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const PUSH = 'urn:xmpp:push:0';
const APP = 'push.localhost';
const APP_SECRET = 'app-server-secret';
const WAIT = 15_000;

const publishOptions = (secret: string) =>
  xml(
    'x',
    { xmlns: 'jabber:x:data', type: 'submit' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')),
    xml('field', { var: 'secret' }, xml('value', {}, secret)),
  );

describe('XEP-0357 push notifications to an app server component', () => {
  let stack: Stack;
  const published = new Inbox<XmlElement>();
  let app: ReturnType<typeof xmppComponent>;

  beforeAll(async () => {
    stack = await startTestStack({ federation: { s2sPort: 0, componentPort: 0, components: new Map([[APP, APP_SECRET]]) } });
    for (const user of ['kim', 'leo', 'max', 'pat']) await addUser(stack.store, `${user}@localhost`, 'pw');
    app = xmppComponent({ service: `xmpp://127.0.0.1:${stack.federation!.componentPort}`, domain: APP, password: APP_SECRET });
    app.on('error', () => {});
    app.on('stanza', async (s: XmlElement) => {
      if (!s.is('iq') || s.attrs.type !== 'set') return;
      published.push(s);
      await app.send(xml('iq', { type: 'result', id: s.attrs.id, from: s.attrs.to, to: s.attrs.from }));
    });
    await app.start();
  });
  afterAll(async () => {
    await app?.stop().catch(() => {});
    await stack?.stop();
  });

  /** Logs in, enables push with this app server and a node of the user's; returns the client. */
  async function withPush(user: string, node: string) {
    const c = await connectXmppJs(stack.wsUrl, user, 'pw', 'phone');
    await c.client.iqCaller.request(xml('iq', { type: 'set' }, xml('enable', { xmlns: PUSH, jid: APP, node }, publishOptions(`${user}-device-secret`))));
    return c;
  }

  /** The node, the notification and the publish options of a publish the app server got. */
  function read(iq: XmlElement) {
    const pubsub = iq.getChild('pubsub', 'http://jabber.org/protocol/pubsub')!;
    const publish = pubsub.getChild('publish')!;
    const secret = pubsub
      .getChild('publish-options')
      ?.getChild('x', 'jabber:x:data')
      ?.getChildren('field')
      .find((f) => f.attrs.var === 'secret')
      ?.getChildText('value');
    return { from: iq.attrs.from as string, node: publish.attrs.node as string, notification: publish.getChild('item')!.getChild('notification', PUSH)!, secret };
  }

  it('publishes to the app server when a message arrives for a user who is offline, without the message', async () => {
    const kim = await withPush('kim', 'kim-node');
    await kim.client.stop();
    const leo = await connectXmppJs(stack.wsUrl, 'leo', 'pw', 'desk');
    try {
      await leo.client.send(xml('message', { to: 'kim@localhost', type: 'chat' }, xml('body', {}, 'are you there?')));
      const publish = read(await published.wait((iq) => read(iq).node === 'kim-node', 'the publish for kim', WAIT));
      expect(publish.from).toBe('kim@localhost');
      expect(publish.secret).toBe('kim-device-secret');
      expect(publish.notification.children).toEqual([]); // nothing about the message by default
      // Published while the message is being stored (the app takes seconds to wake): stored all the same.
      await expect.poll(async () => (await stack.store.listOffline('kim@localhost')).length).toBe(1);
    } finally {
      await leo.client.stop();
    }
  });

  it('publishes when a message is kept for a hibernated session whose socket died, and the client resumes and gets it', async () => {
    const max = await withPush('max', 'max-node');
    const sm = (max.client as unknown as { streamManagement: { enabled: boolean; on(e: 'resumed', f: () => void): void } }).streamManagement;
    await expect.poll(() => sm.enabled).toBe(true);
    // Keep the client from coming back on its own until the message is kept: a phone asleep.
    const reconnect = (max.client as unknown as { reconnect: { stop(): void; reconnect(): Promise<void> } }).reconnect;
    reconnect.stop();
    const resumed = new Promise<void>((resolve) => sm.on('resumed', resolve));
    const socket = (max.client as unknown as { socket: { socket: { terminate?: () => void; close: () => void } } }).socket.socket;
    (socket.terminate ?? socket.close).call(socket); // no stream close: the session hibernates
    const leo = await connectXmppJs(stack.wsUrl, 'leo', 'pw', 'laptop');
    try {
      // $disconnect and this message race; either way exactly the hibernated session's message is published.
      await leo.client.send(xml('message', { to: 'max@localhost/phone', type: 'chat' }, xml('body', {}, 'wake up')));
      const publish = read(await published.wait((iq) => read(iq).node === 'max-node', 'the publish for max', WAIT));
      expect(publish.notification.toString()).not.toContain('wake up');
      expect(await stack.store.listOffline('max@localhost')).toEqual([]); // kept for the session, not offline

      // Woken, the app resumes and finds the message.
      await reconnect.reconnect();
      await resumed;
      const got = await max.inbox.wait((s) => s.getChildText('body') === 'wake up', 'the message after resumption', WAIT);
      expect(got.attrs.from).toBe('leo@localhost/laptop');
    } finally {
      await leo.client.stop();
      await max.client.stop().catch(() => {});
    }
  });

  it('drops the registration when the app server cannot be reached (the publish bounces)', async () => {
    const pat = await withPush('pat', 'pat-node');
    await pat.client.stop();
    const registrations = async () => [...(await stack.store.getUserRoute('pat@localhost')).items.keys()].filter((k) => k.startsWith('account#push#'));
    expect(await registrations()).toHaveLength(1);
    await app.stop(); // the app server's component is gone: the federation service bounces what is sent to it
    const leo = await connectXmppJs(stack.wsUrl, 'leo', 'pw', 'phone2');
    try {
      await leo.client.send(xml('message', { to: 'pat@localhost', type: 'chat' }, xml('body', {}, 'hello?')));
      await expect.poll(registrations, { timeout: WAIT }).toEqual([]);
      expect(await stack.store.listOffline('pat@localhost')).toHaveLength(1); // the message itself is kept
    } finally {
      await leo.client.stop();
    }
  });
});
