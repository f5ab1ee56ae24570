/**
 * SCRAM over TCP with channel binding (RFC 5802 -PLUS, RFC 5929, RFC 9266), from a real native
 * client library: Debian's slixmpp (python3-slixmpp, installed by .ci/run), run as a child process.
 * Stock slixmpp knows only tls-unique, which TLS 1.3 does not have: it must still log in (plain
 * SCRAM). With tls-server-end-point given to it, it logs in with SCRAM-SHA-256-PLUS and -SHA-1-PLUS;
 * with the binding data of another certificate (what a client behind a TLS-terminating man in the
 * middle computes) it is refused. tls-exporter, which Python's ssl module cannot export, is tested
 * with a raw TLS socket from Node.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, connectXmppJs, startTestStack, type LocalStack } from './helpers.ts';
import { RawTcp, trustCertificate } from './native-helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { generateCertificate } from '../../federation/tls.ts';
import { scramClientFinal } from '../scram-client.ts';

const SCRIPT = fileURLToPath(new URL('./slixmpp/login.py', import.meta.url));
let stack: LocalStack & { store: DynamoStore };
let caFile: string;

beforeAll(async () => {
  const tls = await generateCertificate('localhost');
  trustCertificate(tls.cert);
  caFile = join(mkdtempSync(join(tmpdir(), 'scram-plus-')), 'ca.pem');
  writeFileSync(caFile, tls.cert);
  stack = await startTestStack({ federation: { s2sPort: 0, tls, c2s: { port: 0 } } });
  for (const user of ['alice', 'bob']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  await stack?.stop();
});

function slixmpp(mode: string): Promise<{ code: number; output: string }> {
  const args = [SCRIPT, String(stack.federation!.c2sPort), caFile, 'alice@localhost', 'alice-pass', 'bob@localhost/watch', mode];
  return new Promise((resolve) => {
    execFile('/usr/bin/python3', args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      if (typeof code !== 'number' && /ENOENT/.test(String(err))) throw new Error('/usr/bin/python3 with python3-slixmpp is needed (.ci/run installs it)');
      resolve({ code: typeof code === 'number' ? code : 1, output: `${stdout}${stderr}` });
    });
  });
}

describe('slixmpp over STARTTLS', () => {
  it.each([
    ['stock', /^mechanism: SCRAM-SHA-256$/m],
    ['end-point', /^mechanism: SCRAM-SHA-256-PLUS$/m],
    ['sha1-end-point', /^mechanism: SCRAM-SHA-1-PLUS$/m],
  ])('logs in (%s) and its message arrives', async (mode, mechanism) => {
    const bob = await connectXmppJs(stack.wsUrl, 'bob', 'bob-pass', 'watch');
    const run = await slixmpp(mode);
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(mechanism);
    const got = await bob.inbox.wait((s) => s.getChildText('body')?.startsWith('slixmpp logged in with') === true, 'the message from slixmpp');
    expect(got.attrs.from).toMatch(/^alice@localhost\//);
    await bob.client.stop();
  });

  it('is refused when its binding data is not this connection\'s (a man in the middle)', async () => {
    const run = await slixmpp('wrong-binding');
    expect(run.code, run.output).toBe(1);
    expect(run.output).toContain('failure: SCRAM-SHA-256-PLUS not-authorized');
  });
});

describe('tls-exporter (RFC 9266) from a raw TLS 1.3 client', () => {
  async function plusLogin(cbData: (socket: TLSSocket) => Buffer): Promise<string> {
    const raw = await RawTcp.open(stack.federation!.c2sPort!);
    const features = await raw.secureStream();
    expect(features).toContain('<mechanism>SCRAM-SHA-256-PLUS</mechanism>');
    expect(features).toContain('<sasl-channel-binding xmlns="urn:xmpp:sasl-cb:0"><channel-binding type="tls-exporter"/><channel-binding type="tls-server-end-point"/></sasl-channel-binding>');
    const gs2 = 'p=tls-exporter,,';
    const bare = `n=alice,r=${randomBytes(12).toString('base64')}`;
    raw.send(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="SCRAM-SHA-256-PLUS">${Buffer.from(gs2 + bare).toString('base64')}</auth>`);
    const challenge = /<challenge[^>]*>([^<]+)<\/challenge>/.exec(await raw.until(/<challenge[^>]*>[^<]+<\/challenge>/))![1]!;
    const final = scramClientFinal('alice-pass', Buffer.from(challenge, 'base64').toString(), bare, gs2, cbData(raw.socket as TLSSocket));
    raw.send(`<response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">${Buffer.from(final).toString('base64')}</response>`);
    const answer = await raw.until(/<(success|failure)[\s\S]*?<\/(success|failure)>/);
    raw.close();
    return answer;
  }

  it('logs in with the keying material of its own connection, and not with another', async () => {
    const ok = await plusLogin((socket) => {
      expect(socket.getProtocol()).toBe('TLSv1.3');
      return socket.exportKeyingMaterial(32, 'EXPORTER-Channel-Binding', Buffer.alloc(0));
    });
    expect(ok).toContain('<success');
    const refused = await plusLogin(() => randomBytes(32));
    expect(refused).toContain('<not-authorized/>');
  });
});
