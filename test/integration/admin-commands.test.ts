/**
 * XEP-0050 ad-hoc commands with the XEP-0133 basics, through the local stack with StanzaJS (its
 * command discovery and its XEP-0050/XEP-0004 elements): an admin from XMPP_ADMINS lists and runs
 * them in two steps (form, then submit); anyone else sees none and is refused.
 */
import type { Agent, Stanzas } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectStanza, Inbox, RawClient, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';

type Stack = LocalStack & { store: DynamoStore };
const ADMIN = 'http://jabber.org/protocol/admin';

/** Runs a command the way an admin client does: execute (get the form), then complete with the values. */
async function run(client: Agent, node: string, values: Record<string, string | string[]>): Promise<{ form: Stanzas.AdHocCommand; done: Stanzas.AdHocCommand }> {
  const first = await client.sendIQ({ type: 'set', to: 'localhost', command: { node, action: 'execute' } });
  const form = first.command!;
  const fields = Object.entries(values).map(([name, value]) => ({ name, value }));
  const done = await client.sendIQ({
    type: 'set',
    to: 'localhost',
    command: { node, sid: form.sid, action: 'complete', form: { type: 'submit', fields: [{ name: 'FORM_TYPE', type: 'hidden', value: ADMIN }, ...fields] } },
  });
  return { form, done: done.command! };
}

async function canLogIn(stack: Stack, user: string, password: string): Promise<boolean> {
  const raw = await RawClient.open(stack.wsUrl);
  try {
    raw.open();
    await raw.next('</stream:features>');
    raw.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    const answer = await raw.next(/<success|<failure/);
    return answer.includes('<success');
  } finally {
    raw.close();
  }
}

describe('admin commands (XEP-0050, XEP-0133)', () => {
  let stack: Stack;
  let boss: Agent;
  let user: Agent;

  beforeAll(async () => {
    stack = await startTestStack({ env: { XMPP_ADMINS: 'boss@localhost' } });
    for (const name of ['boss', 'user']) await addUser(stack.store, `${name}@localhost`, 'pw');
    boss = await connectStanza(stack.wsUrl, 'boss@localhost', 'pw', 'desk');
    user = await connectStanza(stack.wsUrl, 'user@localhost', 'pw', 'phone');
    await Promise.all([boss.sendPresence(), user.sendPresence()]);
  });
  afterAll(async () => {
    boss?.disconnect();
    user?.disconnect();
    await stack?.stop();
  });

  it('lists the commands to admins only, and refuses them to others', async () => {
    const listed = await boss.getCommands('localhost');
    expect(listed.items!.map((i) => i.node).sort()).toEqual([
      ...['add-user', 'announce', 'change-user-password', 'delete-user', 'get-online-users-list'].map((c) => `${ADMIN}#${c}`),
      // XEP-0401 invitations (test/integration/invites.test.ts); users get the first only where XMPP_USER_INVITES allows.
      'urn:xmpp:invite#create-account',
      'urn:xmpp:invite#invite',
    ]);
    expect((await user.getCommands('localhost')).items ?? []).toEqual([]);
    await expect(user.sendIQ({ type: 'set', to: 'localhost', command: { node: `${ADMIN}#add-user`, action: 'execute' } })).rejects.toMatchObject({
      error: { condition: 'forbidden' },
    });
  });

  it('adds a user, changes its password, lists who is online, announces, deletes users', async () => {
    const added = await run(boss, `${ADMIN}#add-user`, { accountjid: 'newbie@localhost', password: 'first', 'password-verify': 'first' });
    expect(added.form.status).toBe('executing');
    expect(added.form.form!.fields!.map((f) => f.name)).toEqual(['FORM_TYPE', 'accountjid', 'password', 'password-verify']);
    expect(added.done.status).toBe('completed');
    expect(await canLogIn(stack, 'newbie', 'first')).toBe(true);
    await expect(run(boss, `${ADMIN}#add-user`, { accountjid: 'newbie@localhost', password: 'x', 'password-verify': 'x' })).rejects.toMatchObject({
      error: { condition: 'conflict' },
    });

    await run(boss, `${ADMIN}#change-user-password`, { accountjid: 'newbie@localhost', password: 'second' });
    expect(await canLogIn(stack, 'newbie', 'first')).toBe(false);
    expect(await canLogIn(stack, 'newbie', 'second')).toBe(true);

    const online = await run(boss, `${ADMIN}#get-online-users-list`, {});
    const list = online.done.form!.fields!.find((f) => f.name === 'onlineuserjids')!.value;
    expect(list).toEqual(expect.arrayContaining(['boss@localhost', 'user@localhost']));

    const got = new Inbox<{ subject?: string; body?: string }>();
    user.on('message', (m) => got.push({ subject: m.subject, body: m.body }));
    await run(boss, `${ADMIN}#announce`, { subject: 'Maintenance', announcement: ['Back at 6.', 'Thanks!'] });
    expect(await got.wait((m) => m.subject === 'Maintenance', 'the announcement')).toEqual({ subject: 'Maintenance', body: 'Back at 6.\nThanks!' });

    const deleted = await run(boss, `${ADMIN}#delete-user`, { accountjids: ['newbie@localhost'] });
    expect(deleted.done.notes?.[0]?.value).toContain('newbie@localhost');
    expect(await stack.store.getAccount('newbie@localhost')).toBeUndefined();
    await expect(run(boss, `${ADMIN}#delete-user`, { accountjids: ['someone@elsewhere.example'] })).rejects.toMatchObject({ error: { condition: 'bad-request' } });
  });
});
