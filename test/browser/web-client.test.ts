/**
 * The web client in a real browser: Converse.js (npm) in Debian's Chromium, two people in two
 * browser contexts, against the whole local stack (gateway + DynamoDB Local + the Lambda code).
 * The tests run in order and build on each other, like one person's afternoon. Screenshots of every
 * step: test-results/browser/. `UPDATE_DOCS_SCREENSHOT=1` also refreshes docs/screenshot.png.
 */
import { copyFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { webClientHandler } from '../../local/web-http.ts';
import { startTestStack, type LocalStack } from '../integration/helpers.ts';
import { ChatUser, launchChromium } from './helpers.ts';

describe('web client (Converse.js in Chromium)', () => {
  let stack: LocalStack;
  let browser: Browser;
  let baseUrl: string;
  let alice: ChatUser;
  let bob: ChatUser;
  const domain = 'localhost';
  const aliceJid = `alice@${domain}`;
  const bobJid = `bob@${domain}`;

  beforeAll(async () => {
    browser = await launchChromium();
    stack = await startTestStack({ httpHandlers: [webClientHandler({ loglevel: process.env.CONVERSE_LOGLEVEL })] });
    baseUrl = stack.wsUrl.replace(/^ws:/, 'http:').replace(/\/xmpp-websocket$/, '/');
  });

  afterEach(async (ctx) => {
    // What the two people saw when a step failed.
    if (ctx.task.result?.state === 'fail') {
      for (const user of [alice, bob]) await user?.shot('FAILED').catch(() => {});
    }
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('two people register in-band from the page', async () => {
    alice = await ChatUser.open(browser, baseUrl, 'alice', 'chat');
    bob = await ChatUser.open(browser, baseUrl, 'bob', 'chat');
    await alice.shot('login-page');
    await alice.register('alice', 'alice-secret-1');
    await bob.register('bob', 'bob-secret-1');
    await alice.expectLoggedIn();
    await bob.expectLoggedIn();
    await alice.shot('registered');
  }, 60_000);

  it('they add each other as contacts and see each other online', async () => {
    await alice.addContact(bobJid, 'Bob');
    await alice.shot('added-bob');
    await bob.acceptContactRequest(aliceJid, 'Alice');
    await bob.shot('accepted-alice');
    await alice.expectOnline(bobJid);
    await bob.expectOnline(aliceJid);
    await alice.shot('bob-online');
    await bob.shot('alice-online');
  }, 60_000);

  it('they exchange messages both ways', async () => {
    const aliceChat = await alice.openChat(bobJid);
    await alice.send(aliceChat, 'Hi Bob, this is Alice in Chromium');
    const bobChat = await bob.openChat(aliceJid);
    await bob.expectMessage(bobChat, 'Hi Bob, this is Alice in Chromium');
    await bob.send(bobChat, 'Hello Alice! Bob here.');
    await alice.expectMessage(aliceChat, 'Hello Alice! Bob here.');
    await alice.shot('conversation');
    await bob.shot('conversation');
    expect(alice.problems).toEqual({ errors: [], foreignRequests: [] });
  }, 60_000);

  it('they meet in a group chat room on the MUC service', async () => {
    const roomJid = `team@conference.${domain}`;
    const aliceRoom = await alice.joinRoom(roomJid, 'alice');
    await alice.shot('room-joined');
    const bobRoom = await bob.joinRoom(roomJid, 'bob');
    await alice.send(aliceRoom, 'Welcome to the team room, Bob');
    await bob.expectMessage(bobRoom, 'Welcome to the team room, Bob');
    await bob.send(bobRoom, 'Glad to be here');
    await alice.expectMessage(aliceRoom, 'Glad to be here');
    await alice.shot('room-chat');
    await bob.shot('room-chat');

    // The picture in the README: Alice's page with the room in her list and her chat with Bob.
    await alice.openChat(bobJid);
    const file = await alice.shot('conversation-and-room');
    if (process.env.UPDATE_DOCS_SCREENSHOT) copyFileSync(file, 'docs/screenshot.png');
  }, 60_000);

  it('after a reload the conversation is still there; a trusted browser logs in by itself', async () => {
    // Converse keeps SCRAM keys (never the password) of a login made on a trusted device; an account
    // just registered in-band has none yet, so the first reload asks for the password once.
    await alice.page.reload();
    await alice.loginForm().waitFor();
    await alice.login('alice', 'alice-secret-1');
    await alice.expectLoggedIn();
    let chat = await alice.openChat(bobJid);
    await alice.expectMessage(chat, 'Hi Bob, this is Alice in Chromium');
    await alice.expectMessage(chat, 'Hello Alice! Bob here.');

    await alice.page.reload();
    await alice.expectLoggedIn();
    chat = await alice.openChat(bobJid);
    await alice.expectMessage(chat, 'Hi Bob, this is Alice in Chromium');
    await alice.expectMessage(chat, 'Hello Alice! Bob here.');
    await alice.shot('reloaded-history');
  }, 60_000);

  it('on a new device the history comes from the server archive (MAM)', async () => {
    const device = await ChatUser.open(browser, baseUrl, 'bob-new-device', 'chat');
    try {
      await device.login('bob', 'bob-secret-1');
      await device.expectLoggedIn();
      const chat = await device.openChat(aliceJid);
      await device.expectMessage(chat, 'Hi Bob, this is Alice in Chromium');
      await device.expectMessage(chat, 'Hello Alice! Bob here.');
      await device.shot('history-from-archive');
      expect(device.problems).toEqual({ errors: [], foreignRequests: [] });
    } finally {
      await device.context.close();
    }
  }, 60_000);

  it('a wrong password is refused with a message and the form stays', async () => {
    const stranger = await ChatUser.open(browser, baseUrl, 'wrong-password', 'chat');
    try {
      await stranger.login('alice', 'not-her-password');
      await stranger.feedback().filter({ hasText: 'Your XMPP address and/or password is incorrect' }).waitFor();
      await stranger.loginForm().getByRole('button', { name: 'Log in' }).waitFor();
      await stranger.shot('refused');
      expect(await stranger.page.locator('converse-roster').count()).toBe(0);
    } finally {
      await stranger.context.close();
    }
  }, 60_000);

  it('when the connection drops, the page reconnects by itself and chat goes on', async () => {
    const aliceChat = await alice.openChat(bobJid);
    const bobChat = await bob.openChat(aliceJid);
    const before = stack.gateway.connectionIds();
    expect(before.length).toBeGreaterThanOrEqual(2);
    // What API Gateway does to a socket it drops: @connections DELETE (the gateway closes it).
    for (const id of before) {
      const res = await fetch(`${stack.connectionsEndpoint}/@connections/${encodeURIComponent(id)}`, { method: 'DELETE' });
      expect(res.status).toBe(204);
    }
    await alice.shot('connection-dropped');
    await expect.poll(() => stack.gateway.connectionIds().filter((id) => !before.includes(id)).length, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    await alice.expectOnline(bobJid);
    await bob.expectOnline(aliceJid);
    await alice.send(aliceChat, 'Still there after the drop?');
    await bob.expectMessage(bobChat, 'Still there after the drop?');
    await bob.send(bobChat, 'Yes, back again');
    await alice.expectMessage(aliceChat, 'Yes, back again');
    await alice.shot('reconnected');
  }, 90_000);

  it('when the server goes down the page says so, and it comes back when the server does', async () => {
    const port = stack.gateway.port;
    const tableName = stack.tableName;
    const aliceChat = await alice.openChat(bobJid);
    await stack.stop();
    await alice.connectionBanner().filter({ hasText: 'The connection to the chat server was lost' }).waitFor();
    await bob.connectionBanner().waitFor();
    // A message typed meanwhile is not silently lost: the page says it was not sent.
    await alice.send(aliceChat, 'Is anybody there?');
    await alice.page.getByText('Sorry, the connection has been lost, and your message could not be sent').waitFor();
    await alice.shot('server-down');
    await alice.page.locator('.modal.show button.btn-secondary', { hasText: 'Close' }).click();
    // Same port and same table: the server restarted, with its data.
    stack = await startTestStack({ wsPort: port, tableName, httpHandlers: [webClientHandler()] });
    await alice.expectOnline(bobJid);
    await bob.expectOnline(aliceJid);
    await alice.connectionBanner().waitFor({ state: 'hidden' });
    const bobChat = await bob.openChat(aliceJid);
    await bob.send(bobChat, 'The server is back');
    await alice.expectMessage(await alice.openChat(bobJid), 'The server is back');
    await alice.shot('server-back');
    expect(alice.problems).toEqual({ errors: [], foreignRequests: [] });
    expect(bob.problems).toEqual({ errors: [], foreignRequests: [] });
  }, 120_000);
});

describe('web client with in-band registration off (XMPP_REGISTRATION=false)', () => {
  let stack: LocalStack;
  let browser: Browser;

  beforeAll(async () => {
    browser = await launchChromium();
    stack = await startTestStack({ registration: false, httpHandlers: [webClientHandler()] });
  });

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it('offers log in only, no sign-up', async () => {
    const baseUrl = stack.wsUrl.replace(/^ws:/, 'http:').replace(/\/xmpp-websocket$/, '/');
    const visitor = await ChatUser.open(browser, baseUrl, 'visitor', 'no-registration');
    try {
      await visitor.loginForm().getByRole('button', { name: 'Log in' }).waitFor();
      await visitor.shot('login-only');
      expect(await visitor.page.getByText('Create an account').count()).toBe(0);
      expect(visitor.problems).toEqual({ errors: [], foreignRequests: [] });
    } finally {
      await visitor.context.close();
    }
  }, 60_000);
});
