/**
 * The web client in a real browser: Converse.js (npm) in Debian's Chromium, two people in two
 * browser contexts, against the whole local stack (gateway + DynamoDB Local + the Lambda code).
 */
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
});
