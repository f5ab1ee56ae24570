/**
 * A random secret of this deployment, made on first use and kept in the table (`pk = server`,
 * `sk = secret`), for answers that must be the same every time without storing anything per
 * request (SCRAM's made-up salt for unknown users). Two instances making it at the same moment: the
 * conditional put lets one win and the other reads the winner's. It never changes, so each instance
 * keeps it in memory.
 */
import { GetCommand, PutCommand } from './commands.ts';
import { randomBytes } from 'node:crypto';
import type { Store, TableAccess } from './store.ts';

const KEY = { pk: 'server', sk: 'secret' };
const cached = new Map<string, Promise<Buffer>>();

async function read(db: TableAccess): Promise<Buffer | undefined> {
  const out = await db.doc.send(new GetCommand({ TableName: db.table, Key: KEY, ConsistentRead: true }));
  return typeof out.Item?.secret === 'string' ? Buffer.from(out.Item.secret, 'base64') : undefined;
}

/** Reads the secret, making it if there is none (uncached; exported for the race test). */
export async function readOrCreateServerSecret(db: TableAccess): Promise<Buffer> {
  const existing = await read(db);
  if (existing) return existing;
  const secret = randomBytes(32);
  try {
    await db.doc.send(
      new PutCommand({ TableName: db.table, Item: { ...KEY, secret: secret.toString('base64') }, ConditionExpression: 'attribute_not_exists(pk)' }),
    );
    return secret;
  } catch (err) {
    if ((err as Error).name !== 'ConditionalCheckFailedException') throw err;
    const winner = await read(db);
    if (!winner) throw new Error('server secret lost after a conditional put failed');
    return winner;
  }
}

export function serverSecret(store: Pick<Store, 'db'>): Promise<Buffer> {
  const db = store.db;
  let secret = cached.get(db.table);
  if (!secret) {
    secret = readOrCreateServerSecret(db);
    cached.set(db.table, secret);
    // A failed read (throttling) is not remembered: the next caller tries again.
    secret.catch(() => cached.delete(db.table));
  }
  return secret;
}
