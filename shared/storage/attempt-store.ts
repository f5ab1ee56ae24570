/**
 * Attempts counted in fixed time windows, per subject (failed logins per account and per source
 * address, registrations per source): one item per subject and window, `pk = attempts#<kind>#<subject>`,
 * `sk = <window start>`, holding a string set of attempt ids and expiring after the window.
 *
 * A set, not a counter: an attempt is the id of the frame that made it, so a frame that runs twice
 * (SQS redelivers at least once) adds the same id and counts once; and two handlers recording at
 * the same moment both land (ADD to a set is atomic), where a read-modify-write would lose one.
 */
import { BatchGetCommand, UpdateCommand, type BatchGetCommandOutput } from './commands.ts';
import type { TableAccess } from './store.ts';
import { TTL_ATTRIBUTE } from './table.ts';
import { conditionally } from './table-ops.ts';
import { attemptsPk } from './keys.ts';

export type AttemptKind = 'login-account' | 'login-source' | 'register-source' | 'upload-bytes';

export interface AttemptSubject {
  kind: AttemptKind;
  subject: string;
}

export class AttemptStore {
  constructor(private readonly db: TableAccess) {}

  private key(s: AttemptSubject, windowStart: number) {
    return { pk: attemptsPk(s.kind, s.subject), sk: String(windowStart) };
  }

  /** How many attempts each subject has in the window starting at `windowStart` (epoch seconds). */
  async counts(subjects: AttemptSubject[], windowStart: number): Promise<number[]> {
    if (subjects.length === 0) return [];
    const keys = subjects.map((s) => this.key(s, windowStart));
    const found = new Map<string, number>();
    let request: Record<string, { Keys: Record<string, unknown>[]; ConsistentRead: boolean }> | undefined = {
      [this.db.table]: { Keys: keys, ConsistentRead: true },
    };
    // BatchGet may hand back unprocessed keys under load: ask again for those.
    for (let round = 0; request && round < 5; round++) {
      const out: BatchGetCommandOutput = await this.db.doc.send(new BatchGetCommand({ RequestItems: request }));
      for (const item of out.Responses?.[this.db.table] ?? []) {
        found.set(`${item.pk}\0${item.sk}`, (item.attempts as Set<string> | undefined)?.size ?? 0);
      }
      const rest: Record<string, unknown>[] | undefined = out.UnprocessedKeys?.[this.db.table]?.Keys;
      request = rest?.length ? { [this.db.table]: { Keys: rest, ConsistentRead: true } } : undefined;
    }
    if (request) throw new Error('attempt counts: keys left unprocessed');
    return keys.map((k) => found.get(`${k.pk}\0${k.sk}`) ?? 0);
  }

  /**
   * Records one attempt (by its id) for each subject and resolves to each subject's count with it:
   * one atomic write per subject, so attempts racing on many handlers are all counted and each sees
   * a distinct total. The items expire `keepSeconds` after the window starts.
   */
  async add(subjects: AttemptSubject[], windowStart: number, attemptId: string, keepSeconds: number): Promise<number[]> {
    return Promise.all(subjects.map(async (s) => (await this.addAndList(s, windowStart, attemptId, keepSeconds)).length));
  }

  /** Records one attempt for one subject and resolves to every attempt id in its window (the id may carry data, e.g. a size). */
  async addAndList(subject: AttemptSubject, windowStart: number, attemptId: string, keepSeconds: number): Promise<string[]> {
    const out = await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: this.key(subject, windowStart),
        UpdateExpression: 'ADD attempts :id SET #ttl = :ttl',
        ExpressionAttributeNames: { '#ttl': TTL_ATTRIBUTE },
        ExpressionAttributeValues: { ':id': new Set([attemptId]), ':ttl': windowStart + keepSeconds },
        ReturnValues: 'UPDATED_NEW',
      }),
    );
    return [...((out.Attributes?.attempts as Set<string> | undefined) ?? [attemptId])];
  }

  /** Takes an attempt back (it succeeded, so it is not a failure). */
  async remove(subjects: AttemptSubject[], windowStart: number, attemptId: string): Promise<void> {
    await Promise.all(
      subjects.map((s) =>
        conditionally(
          this.db.doc.send(
            new UpdateCommand({
              TableName: this.db.table,
              Key: this.key(s, windowStart),
              UpdateExpression: 'DELETE attempts :id',
              ConditionExpression: 'attribute_exists(pk)',
              ExpressionAttributeValues: { ':id': new Set([attemptId]) },
            }),
          ),
        ),
      ),
    );
  }
}
