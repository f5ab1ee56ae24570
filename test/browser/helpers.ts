/**
 * Browser test helpers: Debian's Chromium (never a downloaded browser) driven by playwright-core, and
 * a `ChatUser` that works Converse.js the way a person does: by the labels, buttons and texts on the
 * page. Screenshots of each step go to test-results/browser/ (gitignored; CI keeps them as artifacts).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';

/** Debian's package `chromium` (.ci/run installs it). CHROMIUM_PATH overrides. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const ARTIFACTS_DIR = join('test-results', 'browser');

/**
 * Starts headless Chromium. Without the binary this throws (the browser tests fail, they never skip).
 * The flags keep Chromium off the network: this machine has none but loopback.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is missing: ${CHROMIUM_PATH} does not exist. The browser tests need Debian's chromium ` +
        '(apt-get install chromium; .ci/run installs it when missing). Set CHROMIUM_PATH to use another binary.',
    );
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
}

/** How long a step may take to show on the page (a shared 2-core machine). */
export const UI_TIMEOUT = 20_000;

/** What a page did that a person would not want: script errors, and requests to other origins. */
export interface PageProblems {
  errors: string[];
  foreignRequests: string[];
}

/** One person in one browser context (its own storage), on the web client. */
export class ChatUser {
  readonly problems: PageProblems = { errors: [], foreignRequests: [] };
  private step = 0;

  private constructor(
    readonly name: string,
    readonly context: BrowserContext,
    readonly page: Page,
    private readonly origin: string,
    private readonly prefix: string,
  ) {
    if (process.env.CONVERSE_LOGLEVEL) page.on('console', (m) => console.log(`[${name}] ${m.text()}`));
    page.on('pageerror', (err) => this.problems.errors.push(`${name}: ${err.message}`));
    page.on('request', (req) => {
      const url = new URL(req.url());
      const local = url.origin === origin || url.protocol === 'data:' || url.protocol === 'blob:' || `${url.protocol}//${url.host}` === origin.replace(/^http/, 'ws');
      if (!local) this.problems.foreignRequests.push(req.url());
    });
  }

  static async open(browser: Browser, baseUrl: string, name: string, prefix: string): Promise<ChatUser> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(UI_TIMEOUT);
    const page = await context.newPage();
    const user = new ChatUser(name, context, page, new URL(baseUrl).origin, prefix);
    await page.goto(baseUrl);
    return user;
  }

  /** Saves a screenshot as test-results/browser/<prefix>-<NN>-<user>-<what>.png. */
  async shot(what: string): Promise<string> {
    mkdirSync(ARTIFACTS_DIR, { recursive: true });
    this.step += 1;
    const file = join(ARTIFACTS_DIR, `${this.prefix}-${String(this.step).padStart(2, '0')}-${this.name}-${what}.png`);
    await this.page.screenshot({ path: file, animations: 'disabled' });
    return file;
  }

  // ---- log in / register ------------------------------------------------------------------------

  loginForm(): Locator {
    return this.page.locator('converse-login-form form');
  }

  async login(username: string, password: string): Promise<void> {
    const form = this.loginForm();
    await form.getByPlaceholder('Username').fill(username);
    await form.getByPlaceholder('Password').fill(password);
    await form.getByRole('button', { name: 'Log in' }).click();
  }

  async register(username: string, password: string): Promise<void> {
    await this.page.getByText('Create an account').click();
    const form = this.page.locator('converse-registration-form form');
    await form.locator('input[name="username"]').fill(username);
    await form.locator('input[name="password"]').fill(password);
    await form.getByRole('button', { name: 'Register' }).click();
  }

  /** Logged in: the contacts list is on the page. */
  async expectLoggedIn(): Promise<void> {
    await this.page.locator('converse-roster').waitFor();
  }

  // ---- contacts ---------------------------------------------------------------------------------

  /** The roster entry of a contact (by XMPP address); the first one when it is listed twice (unread). */
  contact(jid: string): Locator {
    return this.page.locator(`converse-roster-contact:has(a.open-chat[data-jid="${jid}"])`).first();
  }

  async addContact(jid: string, name: string): Promise<void> {
    await this.page.locator('converse-roster .dropdown--contacts button.dropdown-toggle').click();
    await this.page.getByRole('button', { name: 'Add a contact' }).click();
    const form = this.page.locator('form.add-xmpp-contact');
    await form.locator('input[name="jid"]').fill(jid);
    await form.locator('input[name="name"]').fill(name);
    await form.getByRole('button', { name: 'Add' }).click();
  }

  async acceptContactRequest(jid: string, name: string): Promise<void> {
    const entry = this.contact(jid);
    await entry.waitFor();
    await entry.locator('button.dropdown-toggle').click();
    await entry.getByText('Accept as contact').click();
    const modal = this.page.locator('converse-accept-contact-request-modal');
    await modal.locator('input[name="name"]').fill(name);
    await modal.getByRole('button', { name: 'Accept' }).click();
  }

  async expectOnline(jid: string): Promise<void> {
    await this.contact(jid).locator('converse-icon[title="This contact is online"]').waitFor();
  }

  // ---- chats ------------------------------------------------------------------------------------

  async openChat(jid: string): Promise<Locator> {
    await this.contact(jid).locator('a.open-chat').click();
    const chat = this.page.locator(`converse-chat[jid="${jid}"]`);
    await chat.locator('textarea.chat-textarea').waitFor();
    return chat;
  }

  async send(chat: Locator, text: string): Promise<void> {
    const box = chat.locator('textarea.chat-textarea');
    await box.fill(text);
    await box.press('Enter');
  }

  async expectMessage(chat: Locator, text: string): Promise<void> {
    await chat.locator('.chat-msg__text', { hasText: text }).first().waitFor();
  }

  // ---- group chat -------------------------------------------------------------------------------

  /** Groupchats ▸ Add groupchat ▸ name + nickname ▸ Join; returns the room's view. */
  async joinRoom(roomJid: string, nickname: string): Promise<Locator> {
    await this.page.locator('converse-rooms-list converse-dropdown button.dropdown-toggle').click();
    await this.page.getByText('Add groupchat').click();
    const form = this.page.locator('form.add-chatroom');
    await form.locator('[name="chatroom"] input, input[name="chatroom"]').first().fill(roomJid);
    await form.locator('input[name="nickname"]').fill(nickname);
    await form.locator('input[name="join"]').click();
    const room = this.page.locator(`converse-muc[jid="${roomJid}"]`);
    await room.locator('textarea.chat-textarea').waitFor();
    return room;
  }

  // ---- what the page says about the connection --------------------------------------------------

  /** The page's banner shown while the connection is lost (web/app.js). */
  connectionBanner(): Locator {
    return this.page.locator('#connection-banner');
  }

  /** The login form's feedback line (wrong password, connection errors). */
  feedback(): Locator {
    return this.page.locator('converse-login-form .conn-feedback');
  }
}

