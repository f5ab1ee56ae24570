/**
 * XEP-0363 HTTP File Upload through the local stack: StanzaJS discovers upload.localhost and asks
 * for slots; the file goes up with a real HTTP PUT to the stack's endpoint and comes back
 * byte-identical; the XEP's errors for oversized or malformed requests; the endpoint's checks.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent } from 'stanza';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, addUser, connectStanza, startTestStack, type LocalStack } from './helpers.ts';
import type { DynamoStore } from '../../shared/storage/dynamo-store.ts';
import { parseFrame } from '../../shared/xml/parse.ts';

const MAX = 256 * 1024;
/** Daily quota per user: two files of the maximum size and a little more. */
const QUOTA = 2 * MAX + 100_000;
let stack: LocalStack & { store: DynamoStore };
let dataDir: string;
const agents: Agent[] = [];

async function login(user: string, resource: string): Promise<Agent> {
  const c = await connectStanza(stack.wsUrl, `${user}@localhost`, `${user}-pass`, resource);
  agents.push(c);
  return c;
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'xmpp-upload-'));
  stack = await startTestStack({ dataDir, env: { XMPP_UPLOAD_MAX_BYTES: String(MAX), XMPP_UPLOAD_QUOTA_BYTES: String(QUOTA) } });
  for (const user of ['uma', 'ulf', 'quinn']) await addUser(stack.store, `${user}@localhost`, `${user}-pass`);
});

afterAll(async () => {
  for (const c of agents) c.disconnect();
  await stack?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('HTTP File Upload', () => {
  it('is discovered at upload.localhost with its size limit', async () => {
    const uma = await login('uma', 'disco');
    const service = await uma.getUploadService();
    expect(service).toEqual({ jid: 'upload.localhost', maxSize: MAX });
    const info = await uma.getDiscoInfo('upload.localhost');
    expect(info.identities).toEqual([expect.objectContaining({ category: 'store', type: 'file' })]);
  });

  it('uploads a file through a slot (HTTP PUT) and fetches it back byte-identical', async () => {
    const uma = await login('uma', 'up');
    const content = randomBytes(100_000);
    const slot = await uma.getUploadSlot('upload.localhost', { name: 'holiday photo.jpg', size: content.length, mediaType: 'image/jpeg' });
    expect(slot.upload.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/upload\//);
    const put = await fetch(slot.upload.url, { method: 'PUT', body: content, headers: { 'Content-Type': 'image/jpeg' } });
    expect(put.status).toBe(201);

    // someone else, with the GET URL from a message, gets the same bytes
    const got = await fetch(slot.download);
    expect(got.status).toBe(200);
    expect(got.headers.get('content-type')).toBe('image/jpeg');
    expect(Buffer.from(await got.arrayBuffer()).equals(content)).toBe(true);
    expect(slot.download).toContain('holiday%20photo.jpg');

    // a slot is used once
    const again = await fetch(slot.upload.url, { method: 'PUT', body: content, headers: { 'Content-Type': 'image/jpeg' } });
    expect(again.status).toBe(409);
  });

  it('refuses a file over the limit with <file-too-large/> and the maximum', async () => {
    const uma = await login('uma', 'big');
    await expect(uma.getUploadSlot('upload.localhost', { name: 'big.bin', size: MAX + 1 })).rejects.toMatchObject({
      error: { condition: 'not-acceptable', type: 'modify' },
    });
    const raw = await RawClient.open(stack.wsUrl);
    await raw.login('ulf', 'ulf-pass', 'raw');
    raw.send(`<iq type='get' id='u1' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' filename='big.bin' size='${MAX + 1}'/></iq>`);
    const error = parseFrame(await raw.next(/id=["']u1["']/)).getChild('error')!;
    expect(error.getChild('not-acceptable', 'urn:ietf:params:xml:ns:xmpp-stanzas')).toBeDefined();
    expect(error.getChild('file-too-large', 'urn:xmpp:http:upload:0')!.getChildText('max-file-size')).toBe(String(MAX));
    raw.close();
  });

  it('grants slots up to the daily quota per user, then refuses with resource-constraint (wait) and what is left', async () => {
    const quinn = await login('quinn', 'quota');
    for (const name of ['one.bin', 'two.bin']) await quinn.getUploadSlot('upload.localhost', { name, size: MAX });
    await expect(quinn.getUploadSlot('upload.localhost', { name: 'three.bin', size: MAX })).rejects.toMatchObject({
      error: { condition: 'resource-constraint', type: 'wait', text: `daily upload quota reached: 100000 of ${QUOTA} bytes left today` },
    });
    // The refused request did not count: a file that fits what is left is still granted.
    await expect(quinn.getUploadSlot('upload.localhost', { name: 'small.bin', size: 100_000 })).resolves.toMatchObject({ download: expect.stringContaining('small.bin') });
    // Others have their own quota.
    const ulf = await login('ulf', 'quota');
    await expect(ulf.getUploadSlot('upload.localhost', { name: 'fine.bin', size: MAX })).resolves.toBeDefined();
  });

  it('serves uploaded pages and unknown types as attachments, in a sandbox', async () => {
    const uma = await login('uma', 'page');
    const page = Buffer.from('<script>alert(document.cookie)</script>');
    const slot = await uma.getUploadSlot('upload.localhost', { name: 'page.html', size: page.length, mediaType: 'text/html' });
    expect((await fetch(slot.upload.url, { method: 'PUT', body: page, headers: { 'Content-Type': 'text/html' } })).status).toBe(201);
    const got = await fetch(slot.download);
    expect(got.headers.get('content-disposition')).toBe("attachment; filename*=UTF-8''page.html");
    expect(got.headers.get('content-security-policy')).toContain('sandbox');
    expect(got.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('refuses malformed slot requests with bad-request', async () => {
    const ulf = await login('ulf', 'bad');
    for (const request of [
      { name: '../etc/passwd', size: 10 },
      { name: '', size: 10 },
      { name: 'ok.txt', size: 0 },
      { name: 'ok.txt', size: 10, mediaType: 'not a type' },
    ]) {
      await expect(ulf.getUploadSlot('upload.localhost', request)).rejects.toMatchObject({ error: { condition: 'bad-request' } });
    }
  });

  it('checks the PUT against the slot: size, content type, signature', async () => {
    const ulf = await login('ulf', 'put');
    const slot = await ulf.getUploadSlot('upload.localhost', { name: 'notes.txt', size: 5, mediaType: 'text/plain' });
    const wrongSize = await fetch(slot.upload.url, { method: 'PUT', body: 'hello world', headers: { 'Content-Type': 'text/plain' } });
    expect(wrongSize.status).toBe(413);
    const wrongType = await fetch(slot.upload.url, { method: 'PUT', body: 'hello', headers: { 'Content-Type': 'text/html' } });
    expect(wrongType.status).toBe(415);
    const forged = slot.upload.url.replace(/size=5/, 'size=6');
    const tampered = await fetch(forged, { method: 'PUT', body: 'hello!', headers: { 'Content-Type': 'text/plain' } });
    expect(tampered.status).toBe(403);
    expect((await fetch(slot.download)).status).toBe(404); // nothing stored yet
    const ok = await fetch(slot.upload.url, { method: 'PUT', body: 'hello', headers: { 'Content-Type': 'text/plain' } });
    expect(ok.status).toBe(201);
    const got = await fetch(slot.download);
    expect(await got.text()).toBe('hello');
    expect(got.headers.get('content-security-policy')).toContain('sandbox');
  });
});
