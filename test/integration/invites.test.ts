/**
 * Invitations with registration off: a user makes a link with the XEP-0401 ad-hoc command
 * (@xmpp/client), the invitee's client presents the token (XEP-0445) and registers (XEP-0077) over
 * a raw WebSocket (no npm client library speaks XEP-0445), logs in with @xmpp/client and finds the
 * inviter in its roster, and the inviter gets the roster push. A token works once, also when two
 * registrations race for it through two handler instances; `xmppctl invite create` makes one too.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectXmppJs, startTestStack, xml, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

const COMMANDS = 'http://jabber.org/protocol/commands';
let stack: LocalStack & { store: DynamoStore };

beforeAll(async () => {
  // The info file lets xmppctl find this stack (its table, its web address), as it finds `npm start`.
  stack = await startTestStack({
    registration: false,
    handlerInstances: 2,
    dataDir: mkdtempSync(join(tmpdir(), 'invites-')),
    writeInfoFile: true,
    env: { XMPP_ADMINS: 'admin@localhost', XMPP_USER_INVITES: 'true' },
  });
  for (const user of ['admin', 'alice', 'bob']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

/** Runs an ad-hoc command (submitting its form empty, if it has one); resolves with the result form's fields. */
async function command(c: Awaited<ReturnType<typeof connectXmppJs>>, node: string): Promise<Record<string, string>> {
  let answer = await c.client.iqCaller.request(xml('iq', { type: 'set', to: 'localhost' }, xml('command', { xmlns: COMMANDS, node, action: 'execute' })));
  const started = answer.getChild('command', COMMANDS)!;
  if (started.attrs.status === 'executing') {
    answer = await c.client.iqCaller.request(
      xml('iq', { type: 'set', to: 'localhost' }, xml('command', { xmlns: COMMANDS, node, sessionid: started.attrs.sessionid, action: 'complete' }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))),
    );
  }
  const form = answer.getChild('command', COMMANDS)!.getChild('x', 'jabber:x:data')!;
  return Object.fromEntries(form.getChildren('field').map((f: ReturnType<typeof xml>) => [f.attrs.var, f.getChildText('value')]));
}

const tokenOf = (uri: string) => /preauth=([^;&]+)/.exec(uri)![1]!;

/** Opens a stream; presents `token` (if any); tries to register `user`. Resolves with each answer. */
async function register(token: string | undefined, user: string, password = 'new-pass'): Promise<{ features: string; preauth?: string; registered: string; raw: RawClient }> {
  const raw = await RawClient.open(stack.wsUrl);
  raw.open();
  const features = await raw.next('</stream:features>');
  let preauth: string | undefined;
  if (token !== undefined) {
    raw.send(`<iq type="set" id="pa1" xmlns="jabber:client"><preauth xmlns="urn:xmpp:pars:0" token="${token}"/></iq>`);
    preauth = await raw.next('id="pa1"');
  }
  raw.send(`<iq type="set" id="reg1" xmlns="jabber:client"><query xmlns="jabber:iq:register"><username>${user}</username><password>${password}</password></query></iq>`);
  const registered = await raw.next('id="reg1"');
  return { features, preauth, registered, raw };
}

describe('invitations (XEP-0401, XEP-0445, XEP-0379)', () => {
  it('a user invites; the invitee registers with the token though registration is off, and they are contacts', async () => {
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'inviter');
    await alice.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    const form = await command(alice, 'urn:xmpp:invite#invite');
    expect(form.uri).toMatch(/^xmpp:alice@localhost\?roster;preauth=[A-Za-z0-9_-]{24};ibr=y$/);
    expect(form['landing-url']).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/#invite=${tokenOf(form.uri!)}&from=alice%40localhost$`));

    // Without the token there is no registration here.
    const refused = await register(undefined, 'intruder');
    expect(refused.features).toContain('<register xmlns="urn:xmpp:ibr-token:0"/>');
    expect(refused.features).not.toContain('http://jabber.org/features/iq-register');
    expect(refused.registered).toContain('<service-unavailable');
    const forged = await register('AAAAAAAAAAAAAAAAAAAAAAAA', 'intruder');
    expect(forged.preauth).toContain('<item-not-found');

    const pushed = alice.inbox.wait((s) => s.getChild('query', 'jabber:iq:roster')?.getChild('item')?.attrs.jid === 'newbie@localhost', 'the roster push');
    const invited = await register(tokenOf(form.uri!), 'newbie');
    expect(invited.preauth).toContain('type="result"');
    expect(invited.registered).toContain('type="result"');
    expect((await pushed).getChild('query', 'jabber:iq:roster')!.getChild('item')!.attrs.subscription).toBe('both');

    const newbie = await connectXmppJs(stack.wsUrl, 'newbie', 'new-pass', 'phone');
    const roster = await newbie.client.iqCaller.request(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    expect(roster.getChild('query')!.getChildren('item').map((i: ReturnType<typeof xml>) => `${i.attrs.jid} ${i.attrs.subscription}`)).toEqual(['alice@localhost both']);

    // Used up.
    const again = await register(tokenOf(form.uri!), 'second');
    expect(again.preauth).toContain('<item-not-found');
    for (const c of [alice, newbie]) await c.client.stop();
    for (const r of [refused, forged, invited, again]) r.raw.close();
  });

  it('an existing user who opens the link subscribes with the token and is approved at once (XEP-0379), once', async () => {
    for (const user of ['erin', 'frank']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'pars');
    const token = tokenOf((await command(alice, 'urn:xmpp:invite#invite')).uri!);
    const erin = await connectXmppJs(stack.wsUrl, 'erin', 'erin-pass', 'pars');
    await erin.client.send(xml('presence'));
    await erin.client.send(xml('presence', { to: 'alice@localhost', type: 'subscribe' }, xml('preauth', { xmlns: 'urn:xmpp:pars:0', token })));
    await erin.inbox.wait((s) => s.is('presence') && s.attrs.from === 'alice@localhost' && s.attrs.type === 'subscribed', 'approved at once');
    expect(await stack.store.getRosterItem('alice@localhost', 'erin@localhost')).toMatchObject({ subscription: 'from' });
    // The token is used up: the next one to try it asks alice like anyone else.
    const frank = await connectXmppJs(stack.wsUrl, 'frank', 'frank-pass', 'pars');
    await frank.client.send(xml('presence', { to: 'alice@localhost', type: 'subscribe' }, xml('preauth', { xmlns: 'urn:xmpp:pars:0', token })));
    await alice.client.send(xml('presence'));
    await alice.inbox.wait((s) => s.is('presence') && s.attrs.from === 'frank@localhost' && s.attrs.type === 'subscribe', "frank's request, to be answered");
    expect(frank.inbox.seen((s) => s.attrs.type === 'subscribed')).toEqual([]);
    for (const c of [alice, erin, frank]) await c.client.stop();
  });

  it('two registrations racing with one token: one account', async () => {
    const bob = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'inviter');
    const token = tokenOf((await command(bob, 'urn:xmpp:invite#invite')).uri!);
    const [a, b] = await Promise.all([register(token, 'racer1'), register(token, 'racer2')]);
    const won = [a, b].filter((r) => r.registered.includes('type="result"'));
    expect(won).toHaveLength(1);
    expect([a, b].find((r) => r !== won[0])!.registered).toContain('<not-authorized');
    const accounts = await Promise.all(['racer1@localhost', 'racer2@localhost'].map((j) => stack.store.getAccount(j)));
    expect(accounts.filter(Boolean)).toHaveLength(1);
    await bob.client.stop();
    a.raw.close();
    b.raw.close();
  });

  it('account invitations are for admins; a taken name gives the token back; xmppctl makes them too', async () => {
    const bob = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'not-admin');
    await expect(command(bob, 'urn:xmpp:invite#create-account')).rejects.toMatchObject({ condition: 'forbidden' });
    const admin = await connectXmppJs(stack.wsUrl, 'admin', 'admin-pass', 'ops');
    const made = await command(admin, 'urn:xmpp:invite#create-account');
    expect(made.uri).toMatch(/^xmpp:localhost\?register;preauth=/);
    const taken = await register(tokenOf(made.uri!), 'alice');
    expect(taken.registered).toContain('<conflict');
    const retried = await register(tokenOf(made.uri!), 'carol');
    expect(retried.registered).toContain('type="result"');

    const output = await new Promise<string>((resolve, reject) =>
      execFile('npx', ['tsx', 'cli/xmppctl.ts', 'invite', 'create', '--from', 'bob@localhost'], { env: { ...process.env, XMPP_DATA_DIR: stack.dataDir } }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    const [uri, landing] = output.trim().split('\n');
    expect(uri).toMatch(/^xmpp:bob@localhost\?roster;preauth=/);
    expect(landing).toContain(`#invite=${tokenOf(uri!)}`);
    const cli = await register(tokenOf(uri!), 'dave');
    expect(cli.registered).toContain('type="result"');
    expect(await stack.store.getRosterItem('dave@localhost', 'bob@localhost')).toMatchObject({ subscription: 'both' });
    cli.raw.close();
    for (const c of [bob, admin]) await c.client.stop();
    for (const r of [taken, retried]) r.raw.close();
  });
});
