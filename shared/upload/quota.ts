/**
 * A daily upload quota per user (XMPP_UPLOAD_QUOTA_BYTES, default 1 GiB a day): each slot counts its
 * declared size when it is granted (S3 refuses a PUT of any other size), in a set of
 * `<frame id>:<size>` entries per user and UTC day (attempt-store.ts), so a slot request that runs
 * twice counts once and two granted at the same moment are both counted. Over the quota the request
 * is refused and not counted.
 */
import { AttemptStore } from '../storage/attempt-store.ts';
import { currentFrame, frameNow, frameUnique } from '../storage/frame-context.ts';
import type { Store } from '../storage/store.ts';

const DAY_SECONDS = 24 * 3600;

/** Counts `size` bytes for `uploader` today; resolves to the bytes left before it, or undefined when it fits. */
export async function chargeUpload(core: Store, uploader: string, size: number, quota: number): Promise<{ refused: boolean; used: number }> {
  const store = core.open(AttemptStore);
  const now = Math.floor(frameNow() / 1000);
  const day = now - (now % DAY_SECONDS);
  const subject = { kind: 'upload-bytes' as const, subject: uploader };
  const entry = `${currentFrame()?.id ?? frameUnique('upload', 12)}:${size}`;
  const entries = await store.addAndList(subject, day, entry, DAY_SECONDS);
  const used = entries.reduce((sum, e) => sum + Number(e.slice(e.lastIndexOf(':') + 1) || 0), 0);
  if (used <= quota) return { refused: false, used };
  await store.remove([subject], day, entry);
  return { refused: true, used: used - size };
}
