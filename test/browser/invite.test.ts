/**
 * An invitation link in Chromium (XEP-0401): the stack runs with registration off; alice makes a
 * link with `xmppctl invite create --from alice@localhost`; the invitee opens it, creates the
 * account on the page, lands in the chat logged in, and finds alice already in the contacts,
 * online. The same link does not work twice.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { webClientHandler } from '../../local/web-http.ts';
import { addUser, connectXmppJs, startTestStack, xml, type LocalStack } from '../integration/helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { ChatUser, launchChromium } from './helpers.ts';

describe('invitation link in the web client', () => {
  let stack: LocalStack & { store: DynamoStore };
  let browser: Browser;
  let invitee: ChatUser | undefined;

  beforeAll(async () => {
    browser = await launchChromium();
    stack = await startTestStack({
      registration: false,
      dataDir: mkdtempSync(join(tmpdir(), 'invite-browser-')),
      writeInfoFile: true, // xmppctl finds this stack through it
      httpHandlers: [webClientHandler({ loglevel: process.env.CONVERSE_LOGLEVEL })],
    });
    await addUser(stack.store, 'alice@localhost', 'alice-pass');
  });

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') await invitee?.shot('FAILED').catch(() => {});
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('creates the account on the landing page and finds the inviter in the contacts', async () => {
    const alice = await connectXmppJs(stack.wsUrl, 'alice', 'alice-pass', 'desk');
    await alice.client.send(xml('presence'));
    const link = await new Promise<string>((resolve, reject) =>
      execFile('npx', ['tsx', 'cli/xmppctl.ts', 'invite', 'create', '--from', 'alice@localhost'], { env: { ...process.env, XMPP_DATA_DIR: stack.dataDir } }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout.split('\n')[1]!.trim()),
      ),
    );
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/#invite=/);

    invitee = await ChatUser.open(browser, link, 'juliet', 'invite');
    const form = invitee.page.locator('#invite-form');
    await expect.poll(() => form.isVisible()).toBe(true);
    expect(await invitee.page.locator('#invite-intro').textContent()).toContain('alice@localhost invited you');
    await invitee.shot('landing-page');
    await form.locator('input[name="username"]').fill('juliet');
    await form.locator('input[name="password"]').fill('juliet-secret-1');
    await form.getByRole('button', { name: 'Create my account' }).click();

    await invitee.expectLoggedIn();
    await invitee.expectOnline('alice@localhost');
    await invitee.shot('logged-in-with-alice');
    expect(new URL(invitee.page.url()).hash).toBe(''); // the used token is gone from the address
    expect(invitee.problems.errors).toEqual([]);
    expect(invitee.problems.foreignRequests).toEqual([]);
    expect(await stack.store.getRosterItem('alice@localhost', 'juliet@localhost')).toMatchObject({ subscription: 'both' });

    // The link again, in a fresh browser: the page says it no longer works.
    const again = await ChatUser.open(browser, link, 'romeo', 'invite');
    const againForm = again.page.locator('#invite-form');
    await expect.poll(() => againForm.isVisible()).toBe(true);
    await againForm.locator('input[name="username"]').fill('romeo');
    await againForm.locator('input[name="password"]').fill('romeo-secret-1');
    await againForm.getByRole('button', { name: 'Create my account' }).click();
    await expect.poll(() => again.page.locator('#invite-error').textContent()).toContain('invalid or has expired');
    await again.shot('used-link');
    expect(await stack.store.getAccount('romeo@localhost')).toBeUndefined();
    await again.context.close();
    await alice.client.stop();
  }, 90_000);
});
