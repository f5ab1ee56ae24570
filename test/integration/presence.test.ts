/**
 * RFC 6121 details beyond the happy path: pending subscription requests kept until answered,
 * pre-approval, directed presence and its unavailable, iq between clients' full JIDs, probes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  stack = await startTestStack();
  for (const user of ['romeo', 'juliet', 'nurse', 'tybalt', 'paris']) await addUser(stack.store, `${user}@localhost`, 'pw');
});

afterAll(async () => {
  await stack?.stop();
});

const rosterGet = () => xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' }));

describe('subscriptions', () => {
  it('keeps a subscription request for an offline user and delivers it at the next login', async () => {
    const romeo = await connectXmppJs(stack.wsUrl, 'romeo', 'pw', 'r');
    await romeo.client.iqCaller.request(rosterGet());
    await romeo.client.send(xml('presence'));
    await romeo.client.send(xml('presence', { to: 'juliet@localhost', type: 'subscribe' }));
    await romeo.client.iqCaller.request(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));

    const juliet = await connectXmppJs(stack.wsUrl, 'juliet', 'pw', 'j');
    await juliet.client.iqCaller.request(rosterGet());
    await juliet.client.send(xml('presence'));
    const request = await juliet.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribe', 'stored subscribe');
    expect(request.attrs.from).toBe('romeo@localhost');

    // still pending at the next login if unanswered
    await juliet.client.stop();
    const again = await connectXmppJs(stack.wsUrl, 'juliet', 'pw', 'j2');
    await again.client.send(xml('presence'));
    await again.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribe' && s.attrs.from === 'romeo@localhost', 'subscribe again');

    // answering removes it and romeo's roster shows subscription "to"
    await again.client.send(xml('presence', { to: 'romeo@localhost', type: 'subscribed' }));
    await romeo.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.subscription === 'to', 'romeo push to');
    await romeo.inbox.wait((s) => s.is('presence') && s.attrs.from === 'juliet@localhost/j2' && !s.attrs.type, 'juliet presence at romeo');
    expect(await stack.store.listPendingSubscriptions('juliet@localhost')).toEqual([]);
    await again.client.stop();
    await romeo.client.stop();
  });

  it('honours a pre-approval: the later request is approved without asking the user', async () => {
    const nurse = await connectXmppJs(stack.wsUrl, 'nurse', 'pw', 'n');
    await nurse.client.iqCaller.request(rosterGet());
    await nurse.client.send(xml('presence'));
    await nurse.client.send(xml('presence', { to: 'tybalt@localhost', type: 'subscribed' }));
    await nurse.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.approved === 'true', 'approved push');

    const tybalt = await connectXmppJs(stack.wsUrl, 'tybalt', 'pw', 't');
    await tybalt.client.iqCaller.request(rosterGet());
    await tybalt.client.send(xml('presence'));
    await tybalt.client.send(xml('presence', { to: 'nurse@localhost', type: 'subscribe' }));
    await tybalt.inbox.wait((s) => s.is('presence') && s.attrs.type === 'subscribed' && s.attrs.from === 'nurse@localhost', 'auto subscribed');
    await tybalt.inbox.wait((s) => s.is('presence') && s.attrs.from === 'nurse@localhost/n' && !s.attrs.type, 'nurse presence');
    expect((await stack.store.getRosterItem('tybalt@localhost', 'nurse@localhost'))?.subscription).toBe('to');
    expect(nurse.inbox.seen((s) => s.is('presence') && s.attrs.type === 'subscribe')).toEqual([]);
    expect((await stack.store.getRosterItem('nurse@localhost', 'tybalt@localhost'))?.subscription).toBe('from');
    await tybalt.client.stop();
    await nurse.client.stop();
  });

  it('answers a subscription request to an unknown user with unsubscribed', async () => {
    const paris = await connectXmppJs(stack.wsUrl, 'paris', 'pw', 'p');
    await paris.client.iqCaller.request(rosterGet());
    await paris.client.send(xml('presence'));
    await paris.client.send(xml('presence', { to: 'ghost@localhost', type: 'subscribe' }));
    await paris.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.ask === 'subscribe', 'ask push');
    const answer = await paris.inbox.wait((s) => s.is('presence') && s.attrs.type === 'unsubscribed', 'unsubscribed');
    expect(answer.attrs.from).toBe('ghost@localhost');
    // the pending request is cancelled in the roster
    const push = await paris.inbox.wait((s) => s.is('iq') && s.getChild('query')?.getChild('item')?.attrs.jid === 'ghost@localhost', 'cancel push');
    expect(push.getChild('query')!.getChild('item')!.attrs.ask).toBeUndefined();
    await paris.client.stop();
  });
});

describe('directed presence and iq between clients', () => {
  it('sends unavailable to directed-presence recipients when the sender logs out', async () => {
    const paris = await connectXmppJs(stack.wsUrl, 'paris', 'pw', 'dp');
    const juliet = await connectXmppJs(stack.wsUrl, 'juliet', 'pw', 'dj');
    await juliet.client.send(xml('presence'));
    await paris.client.send(xml('presence'));
    await paris.client.send(xml('presence', { to: 'juliet@localhost/dj' }, xml('status', {}, 'hello there')));
    const directed = await juliet.inbox.wait((s) => s.is('presence') && s.attrs.from === 'paris@localhost/dp', 'directed presence');
    expect(directed.getChildText('status')).toBe('hello there');
    await paris.client.stop();
    await juliet.inbox.wait((s) => s.is('presence') && s.attrs.from === 'paris@localhost/dp' && s.attrs.type === 'unavailable', 'directed unavailable');
    await juliet.client.stop();
  });

  it('routes an iq to another client full JID and its answer back', async () => {
    const asker = await connectXmppJs(stack.wsUrl, 'romeo', 'pw', 'asker');
    const answerer = await connectStanza(stack.wsUrl, 'tybalt@localhost', 'pw', 'answerer');
    const info = await asker.client.iqCaller.request(
      xml('iq', { type: 'get', to: 'tybalt@localhost/answerer' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })),
    );
    expect(info.attrs.from).toBe('tybalt@localhost/answerer');
    expect(info.getChild('query')!.getChildren('feature').length).toBeGreaterThan(0);
    await expect(
      asker.client.iqCaller.request(xml('iq', { type: 'get', to: 'tybalt@localhost/nobody' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' }))),
    ).rejects.toThrow(/service-unavailable/);
    answerer.disconnect();
    await asker.client.stop();
  });

  it('tells a contact about each resource and its priority change', async () => {
    const romeo = await connectXmppJs(stack.wsUrl, 'romeo', 'pw', 'watch');
    await romeo.client.iqCaller.request(rosterGet());
    await romeo.client.send(xml('presence'));
    const juliet = await connectXmppJs(stack.wsUrl, 'juliet', 'pw', 'balcony');
    await juliet.client.send(xml('presence', {}, xml('show', {}, 'away')));
    const away = await romeo.inbox.wait((s) => s.is('presence') && s.attrs.from === 'juliet@localhost/balcony', 'away');
    expect(away.getChildText('show')).toBe('away');
    await juliet.client.send(xml('presence', {}, xml('show', {}, 'chat')));
    const chat = await romeo.inbox.wait((s) => s.is('presence') && s.attrs.from === 'juliet@localhost/balcony', 'chat');
    expect(chat.getChildText('show')).toBe('chat');
    await juliet.client.stop();
    await romeo.client.stop();
  });
});
