/**
 * XEP-0363 HTTP File Upload, as a service of its own at upload.<domain> (XMPP_UPLOAD_DOMAIN),
 * hosted by this server through the core's host(): listed in the server's disco#items, it answers
 * disco#info (identity store/file, the max-file-size in a XEP-0128 form) and slot requests from
 * local users. Slots come from the configured UploadStorage (S3 in the cloud, the local stack's
 * HTTP endpoint locally). Without a configured storage the module registers nothing.
 *
 * Why a service JID rather than the server's own: the server's disco#info (and the XEP-0115 hash
 * in every stream's features) stays independent of upload settings, the service can be dropped or
 * moved without touching the server's identity, and it is where clients (Conversations, Converse,
 * Gajim, Dino) look first after the server itself.
 */
import { StanzaError } from '../errors.ts';
import type { IqHandler, XmppModule } from '../core/registry.ts';
import type { UploadConfig } from '../upload/storage.ts';
import { NS, x } from '../xml/element.ts';
import { chargeUpload } from '../upload/quota.ts';
import { log } from '../log.ts';

export const UPLOAD = 'urn:xmpp:http:upload:0';
const MAX_FILENAME_BYTES = 255;
const CONTENT_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

function discoInfo(config: UploadConfig) {
  return x(
    'query',
    { xmlns: NS.DISCO_INFO },
    x('identity', { category: 'store', type: 'file', name: 'HTTP File Upload' }),
    x('feature', { var: NS.DISCO_INFO }),
    x('feature', { var: UPLOAD }),
    // XEP-0363 §2: the size limit in an extended-information form (XEP-0128).
    x(
      'x',
      { xmlns: NS.DATA_FORMS, type: 'result' },
      x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', {}, UPLOAD)),
      x('field', { var: 'max-file-size' }, x('value', {}, String(config.maxFileSize))),
    ),
  );
}

function slotRequest(config: UploadConfig): IqHandler {
  return async ({ server, type, payload, from }) => {
    if (type !== 'get') throw new StanzaError('bad-request', 'slot requests are iq get');
    if (!server.isLocalDomain(from.domain) || !from.local) throw new StanzaError('forbidden', 'uploads are for accounts of this server');
    if (!payload.is('request')) throw new StanzaError('bad-request', 'expected <request/>');
    const filename = payload.attrs.filename ?? '';
    if (
      !filename ||
      Buffer.byteLength(filename) > MAX_FILENAME_BYTES ||
      filename === '.' ||
      filename === '..' ||
      /[/\\\u0000-\u001f\u007f]/.test(filename)
    ) {
      throw new StanzaError('bad-request', 'a file name without path, control characters, at most 255 bytes');
    }
    const sizeText = payload.attrs.size ?? '';
    if (!/^\d{1,16}$/.test(sizeText) || Number(sizeText) === 0) throw new StanzaError('bad-request', 'size must be a positive number of bytes');
    const size = Number(sizeText);
    if (size > config.maxFileSize) {
      throw new StanzaError(
        'not-acceptable',
        `file too large: the maximum is ${config.maxFileSize} bytes`,
        'modify',
        x('file-too-large', { xmlns: UPLOAD }, x('max-file-size', {}, String(config.maxFileSize))),
      );
    }
    const contentType = payload.attrs['content-type'] || undefined;
    if (contentType !== undefined && !CONTENT_TYPE.test(contentType)) throw new StanzaError('bad-request', 'invalid content-type');
    const charge = await chargeUpload(server.store, from.bare, size, config.dailyQuota);
    if (charge.refused) {
      const left = Math.max(0, config.dailyQuota - charge.used);
      throw new StanzaError('resource-constraint', `daily upload quota reached: ${left} of ${config.dailyQuota} bytes left today`, 'wait');
    }
    const slot = await config.storage.createSlot({ uploader: from.bare, filename, size, contentType });
    // The audit trail of uploads (the bucket keeps no access logs: docs/security.md).
    log.info('upload slot granted', { uploader: from.bare, size, contentType: contentType ?? null, get: slot.get.split('?')[0] });
    return x(
      'slot',
      { xmlns: UPLOAD },
      x('put', { url: slot.put }, ...Object.entries(slot.headers ?? {}).map(([name, value]) => x('header', { name }, value))),
      x('get', { url: slot.get }),
    );
  };
}

export const uploadModule: XmppModule = {
  name: 'upload',
  setup(reg) {
    const config = reg.config.upload;
    if (!config) return;
    const request = slotRequest(config);
    reg.host(
      config.domain,
      async (event) => {
        const { server, stanza, from, to, session } = event;
        const type = stanza.attrs.type;
        if (stanza.name !== 'iq') {
          if (stanza.name === 'message' && type !== 'error') await server.bounce(stanza, new StanzaError('service-unavailable'));
          return;
        }
        if (type !== 'get' && type !== 'set') return;
        const payload = stanza.getChildElements()[0]!;
        const handler: IqHandler | undefined = to.local || to.resource
          ? undefined
          : payload.attrs.xmlns === NS.DISCO_INFO
            ? async () => {
                if (type !== 'get') throw new StanzaError('bad-request');
                if (payload.attrs.node) throw new StanzaError('item-not-found');
                return discoInfo(config);
              }
            : payload.attrs.xmlns === NS.DISCO_ITEMS
              ? async () => {
                  if (type !== 'get') throw new StanzaError('bad-request');
                  return x('query', { xmlns: NS.DISCO_ITEMS });
                }
              : payload.attrs.xmlns === UPLOAD
                ? request
                : undefined;
        if (!handler) return server.bounce(stanza, new StanzaError('service-unavailable'));
        await server.answerIq({ server, stanza, payload, type, from, to, session }, handler);
      },
      { name: 'HTTP File Upload', category: 'store', type: 'file' },
    );
  },
};
