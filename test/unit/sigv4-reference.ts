/**
 * The AWS SDK's own SigV4 signer (@smithy/signature-v4), for tests that check a lean client's
 * signature against it: no local stand-in checks signatures, so this is what stands for AWS.
 */
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';

type Data = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: Data) => (typeof d === 'string' ? d : ArrayBuffer.isView(d) ? new Uint8Array(d.buffer, d.byteOffset, d.byteLength) : new Uint8Array(d));

/** The hash constructor the signer wants: node:crypto's, as the SDK's Node build uses. */
class Sha256 {
  private readonly hash;
  constructor(secret?: Data) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(data: Data) {
    this.hash.update(bytes(data));
  }
  async digest() {
    return new Uint8Array(this.hash.digest());
  }
}

export interface ReferenceRequest {
  method: string;
  url: URL;
  /** As sent on the wire (percent-encoded). */
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
}

/** The headers the SDK's signer gives the request (lower-case names). */
export async function sdkSignature(
  request: ReferenceRequest,
  service: string,
  region: string,
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string },
  date: Date,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({ credentials, region, service, sha256: Sha256, applyChecksum: false });
  const signed = await signer.sign(
    {
      method: request.method,
      protocol: request.url.protocol,
      hostname: request.url.hostname,
      path: request.path,
      headers: { host: request.url.host, ...request.headers },
      body: request.body,
    },
    { signingDate: date },
  );
  return signed.headers;
}
