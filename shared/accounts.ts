/** Account credentials: only SCRAM keys are ever stored (SHA-1 and SHA-256), never the password. */
import type { ScramCredentials, ScramHash } from './sasl/scram.ts';
import { deriveCredentials } from './sasl/scram.ts';

export function makeCredentials(password: string, iterations: number): Record<ScramHash, ScramCredentials> {
  if (password.length === 0) throw new Error('password must not be empty');
  return { sha1: deriveCredentials('sha1', password, iterations), sha256: deriveCredentials('sha256', password, iterations) };
}
