/** Account credentials: only SCRAM keys are ever stored (SHA-1 and SHA-256), never the password. */
import type { ScramCredentials, ScramHash } from './sasl/scram.ts';
import { deriveCredentials, preparePassword } from './sasl/scram.ts';

/** Rejects with PasswordError (from SASLprep) for a password that cannot be set. */
export async function makeCredentials(password: string, iterations: number): Promise<Record<ScramHash, ScramCredentials>> {
  if (password.length === 0) throw new Error('password must not be empty');
  if ((await preparePassword(password, true)).length === 0) throw new Error('password must not be empty after SASLprep');
  return { sha1: await deriveCredentials('sha1', password, iterations), sha256: await deriveCredentials('sha256', password, iterations) };
}
