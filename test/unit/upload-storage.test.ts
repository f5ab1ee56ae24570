/**
 * Upload slot URLs: the S3 pre-signed URLs (computed by the real AWS SDK with static credentials,
 * no network), the local endpoint's signed grants, and the choice of storage from the environment.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { LocalUploadStorage } from '../../shared/upload/local-storage.ts';
import { S3UploadStorage } from '../../shared/upload/s3-storage.ts';
import { DEFAULT_MAX_FILE_SIZE, uploadConfigFromEnv } from '../../shared/upload/storage.ts';
import { verifyGrant } from '../../shared/upload/token.ts';

const client = new S3Client({ region: 'eu-west-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' } });
const request = { uploader: 'a@example.com', filename: 'cat picture.png', size: 1234, contentType: 'image/png' };

describe('S3 upload slots', () => {
  it('signs the PUT for the exact size and content type, for five minutes', async () => {
    const storage = new S3UploadStorage({ bucket: 'uploads-bucket', publicRead: false, getExpirySeconds: 3600, client });
    const slot = await storage.createSlot(request);
    const put = new URL(slot.put);
    expect(put.host).toBe('uploads-bucket.s3.eu-west-1.amazonaws.com');
    expect(put.pathname).toMatch(/^\/[A-Za-z0-9_-]{22}\/cat%20picture\.png$/);
    expect(put.searchParams.get('X-Amz-SignedHeaders')!.split(';')).toEqual(expect.arrayContaining(['content-length', 'content-type', 'host']));
    expect(put.searchParams.get('X-Amz-Expires')).toBe('300');
    const get = new URL(slot.get);
    expect(get.pathname).toBe(put.pathname);
    expect(get.searchParams.get('X-Amz-Expires')).toBe('3600');
  });

  it('serves through the signed GET with the requested type, inline only for media; pages and unknown types as attachments', async () => {
    const storage = new S3UploadStorage({ bucket: 'b', publicRead: false, getExpirySeconds: 60, client });
    const picture = new URL((await storage.createSlot(request)).get);
    expect(picture.searchParams.get('response-content-type')).toBe('image/png');
    expect(picture.searchParams.get('response-content-disposition')).toBe("inline; filename*=UTF-8''cat%20picture.png");
    for (const contentType of ['text/html', 'image/svg+xml', undefined]) {
      const get = new URL((await storage.createSlot({ ...request, filename: 'page.html', contentType })).get);
      expect(get.searchParams.get('response-content-disposition')).toBe("attachment; filename*=UTF-8''page.html");
      expect(get.searchParams.get('response-content-type')).toBe(contentType ?? 'application/octet-stream');
    }
  });

  it('leaves the content type unsigned when the client named none', async () => {
    const storage = new S3UploadStorage({ bucket: 'b', publicRead: false, getExpirySeconds: 60, client });
    const slot = await storage.createSlot({ ...request, contentType: undefined });
    expect(new URL(slot.put).searchParams.get('X-Amz-SignedHeaders')!.split(';')).not.toContain('content-type');
  });

  it('gives plain object URLs for public-read buckets (or under a public base URL)', async () => {
    const plain = await new S3UploadStorage({ bucket: 'pub', publicRead: true, getExpirySeconds: 60, client }).createSlot(request);
    expect(plain.get).toMatch(/^https:\/\/pub\.s3\.eu-west-1\.amazonaws\.com\/[A-Za-z0-9_-]{22}\/cat%20picture\.png$/);
    const cdn = await new S3UploadStorage({ bucket: 'pub', publicRead: true, publicBaseUrl: 'https://files.example.com/', getExpirySeconds: 60, client }).createSlot(request);
    expect(cdn.get).toMatch(/^https:\/\/files\.example\.com\/[A-Za-z0-9_-]{22}\/cat%20picture\.png$/);
  });
});

describe('local upload slots', () => {
  it('carries a grant the endpoint can verify, and nothing else validates', async () => {
    const storage = new LocalUploadStorage({ baseUrl: 'http://127.0.0.1:5280/upload/', secret: 's3cret' });
    const slot = await storage.createSlot(request);
    const put = new URL(slot.put);
    const [id, name] = put.pathname.replace('/upload/', '').split('/');
    const grant = {
      id: id!,
      filename: decodeURIComponent(name!),
      size: Number(put.searchParams.get('size')),
      contentType: put.searchParams.get('type') ?? undefined,
      expires: Number(put.searchParams.get('expires')),
    };
    expect(grant).toMatchObject({ filename: 'cat picture.png', size: 1234, contentType: 'image/png' });
    expect(verifyGrant('s3cret', grant, put.searchParams.get('sig')!)).toBe(true);
    expect(verifyGrant('other', grant, put.searchParams.get('sig')!)).toBe(false);
    expect(verifyGrant('s3cret', { ...grant, size: 1235 }, put.searchParams.get('sig')!)).toBe(false);
    expect(slot.get).toBe(`http://127.0.0.1:5280/upload/${id}/cat%20picture.png`);
  });
});

describe('choosing the storage', () => {
  it('prefers the bucket, then the local endpoint, else no service', () => {
    expect(uploadConfigFromEnv({ XMPP_UPLOAD_BUCKET: 'b', AWS_REGION: 'eu-west-1' }, 'example.com')).toMatchObject({
      domain: 'upload.example.com',
      maxFileSize: DEFAULT_MAX_FILE_SIZE,
      storage: expect.any(S3UploadStorage),
    });
    expect(uploadConfigFromEnv({ XMPP_UPLOAD_URL: 'http://x/upload', XMPP_UPLOAD_SECRET: 's', XMPP_UPLOAD_MAX_BYTES: '10', XMPP_UPLOAD_DOMAIN: 'files.example.com' }, 'example.com')).toMatchObject({
      domain: 'files.example.com',
      maxFileSize: 10,
      storage: expect.any(LocalUploadStorage),
    });
    expect(uploadConfigFromEnv({}, 'example.com')).toBeUndefined();
    expect(() => uploadConfigFromEnv({ XMPP_UPLOAD_BUCKET: 'b', XMPP_UPLOAD_MAX_BYTES: '-1' }, 'example.com')).toThrow(/XMPP_UPLOAD_MAX_BYTES/);
  });
});
