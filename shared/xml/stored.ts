/**
 * XML the server stored itself (offline messages, archives, room history, PEP items, presence,
 * vCards, private XML, queued outbound stanzas) is read back with trusted limits, not the client
 * input limits: the stored copy of a stanza that fitted them can be larger (escaping turns a raw
 * `>` into `&gt;`, stamping adds `from`, `xmlns` and namespace declarations, storage adds a delay
 * or stanza-id). The restricted-XML rules stay the same. An item that still does not parse is
 * logged (what and why, not its content) and reported as undefined: the caller skips it (or
 * deletes it) instead of failing the frame on every retry.
 */
import { log } from '../log.ts';
import type { Element } from './element.ts';
import { DEFAULT_XML_LIMITS, XmlFrameError, parseFrame, type XmlLimits } from './parse.ts';

/**
 * 4× the client byte limit covers escaping growth of a stanza stored before input was checked
 * after stamping (512 KiB, more than a DynamoDB item can hold); more depth and attributes leave
 * room for what stamping and storage add.
 */
export const STORED_XML_LIMITS: XmlLimits = {
  maxBytes: 4 * DEFAULT_XML_LIMITS.maxBytes,
  maxDepth: DEFAULT_XML_LIMITS.maxDepth + 16,
  maxAttributes: 4 * DEFAULT_XML_LIMITS.maxAttributes,
};

/** Parses stored XML; undefined (and one warning) when it cannot be read. */
export function parseStored(xml: string, what = 'stored item', extra?: Record<string, unknown>): Element | undefined {
  try {
    return parseFrame(xml, STORED_XML_LIMITS);
  } catch (err) {
    const reason = err instanceof XmlFrameError ? `${err.condition}: ${err.message}` : String(err);
    log.warn(`unreadable ${what} skipped`, { ...extra, what, reason, bytes: Buffer.byteLength(xml, 'utf8') });
    return undefined;
  }
}

/**
 * Whether a frame built from stored XML is larger than a client frame may be (`maxBytes`, the
 * server's frame limit: API Gateway and the local gateway refuse larger posts with 413, which would
 * fail the frame on every retry); logs it (what and why) when so, and the caller skips it.
 */
export function tooLargeToPost(frame: string, maxBytes: number, what: string, extra?: Record<string, unknown>): boolean {
  const bytes = Buffer.byteLength(frame, 'utf8');
  if (bytes <= maxBytes) return false;
  log.warn(`undeliverable ${what} skipped`, { ...extra, what, reason: `larger than the ${maxBytes}-byte frame limit`, bytes });
  return true;
}
