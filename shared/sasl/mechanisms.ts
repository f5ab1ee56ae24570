/**
 * Server-side SASL mechanisms as the stream negotiation uses them: each mechanism takes the
 * client's message and either asks for another step (challenge), succeeds, or fails with an
 * RFC 6120 §6.5 condition. Multi-step state is returned to the caller, who keeps it in the
 * connection item, because the next frame may be handled by another Lambda instance.
 */
import { createHmac } from 'node:crypto';
import { normalizeLocal, JidError } from '../jid.ts';
import type { Store } from '../storage/store.ts';
import type { Account } from '../core/types.ts';
import { CHANNEL_BINDING_TYPES, type ChannelBindingType, type ChannelBindings } from './channel-binding.ts';
import { parsePlain } from './plain.ts';
import { frameTask, frameUnique } from '../storage/frame-context.ts';
import { serverSecret } from '../storage/server-secret.ts';
import { loginRefusal, startLoginAttempt, type AuthLimits, type LoginAttempt } from './auth-limits.ts';
import {
  SCRAM_MECHANISMS,
  ScramError,
  parseClientFirst,
  saltedPassword,
  serverFirst,
  verifyClientFinal,
  verifyPassword,
  type ScramCredentials,
  type ScramHash,
  type ScramState,
} from './scram.ts';

export type SaslFailure = 'aborted' | 'incorrect-encoding' | 'invalid-authzid' | 'invalid-mechanism' | 'malformed-request' | 'not-authorized' | 'temporary-auth-failure';

export type SaslStep =
  | { kind: 'challenge'; data: string; state: ScramState }
  | { kind: 'success'; user: string; data?: string }
  | { kind: 'failure'; condition: SaslFailure; text?: string };

export const MECHANISMS = ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'] as const;
const PLUS_MECHANISMS = ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS'] as const;

/** The mechanisms a connection is offered, strongest first: -PLUS ones where it has channel binding data. */
export function offeredMechanisms(bindings: ChannelBindings | undefined): string[] {
  return bindingTypes(bindings).length ? [...PLUS_MECHANISMS, ...MECHANISMS] : [...MECHANISMS];
}

/** Channel binding types with data on this connection. */
export function bindingTypes(bindings: ChannelBindings | undefined): ChannelBindingType[] {
  return CHANNEL_BINDING_TYPES.filter((t) => bindings?.[t] !== undefined);
}

export interface SaslContext {
  store: Store;
  domain: string;
  /** PBKDF2 iterations of new credentials: what an unknown user is told too. */
  iterations: number;
  /** Brute-force limits; absent = none (tools that check a password outside a stream). */
  limits?: AuthLimits;
  /** Channel binding data of the client's TLS connection (native clients; none for WebSocket). */
  bindings?: ChannelBindings;
}

/**
 * What an unknown user is told: a salt derived from the server secret and the name (the same on
 * every attempt, as a real account's is) and the iterations new accounts get, so SCRAM's first
 * answer does not tell whether an account exists.
 */
async function madeUpCredentials(ctx: SaslContext, hash: ScramHash, username: string): Promise<Pick<ScramCredentials, 'salt' | 'iterations'>> {
  const secret = await serverSecret(ctx.store);
  // Normalized as account names are, so "Alice" and "alice" get one salt, as they would if real.
  let name = username;
  try {
    name = normalizeLocal(username);
  } catch {}
  const salt = createHmac('sha256', secret).update(`scram-salt\0${hash}\0${name}`).digest().subarray(0, 16);
  return { salt: salt.toString('base64'), iterations: ctx.iterations };
}

async function loadAccount(ctx: SaslContext, username: string): Promise<Account | undefined> {
  try {
    return await ctx.store.getAccount(`${normalizeLocal(username)}@${ctx.domain}`);
  } catch (err) {
    if (err instanceof JidError) return undefined;
    throw err;
  }
}

function fail(err: unknown): SaslStep {
  if (err instanceof ScramError) {
    return { kind: 'failure', condition: err.condition === 'encryption-required' ? 'not-authorized' : err.condition === 'invalid-mechanism' ? 'invalid-mechanism' : err.condition };
  }
  throw err;
}

const temporaryFailure = (text: string): SaslStep => ({ kind: 'failure', condition: 'temporary-auth-failure', text });

/** A password is about to be checked: counted first (auth-limits.ts), alongside the account read. */
async function accountForCheck(ctx: SaslContext, username: string): Promise<{ account?: Account; attempt?: LoginAttempt }> {
  const [account, attempt] = await Promise.all([
    loadAccount(ctx, username),
    ctx.limits ? startLoginAttempt(ctx.store, ctx.limits, username, ctx.domain) : undefined,
  ]);
  return { account, attempt };
}

/** The password was right: the counted attempt is taken back, alongside the rest of the frame. */
function succeeded(attempt: LoginAttempt | undefined): void {
  if (attempt) void frameTask(attempt.succeeded());
}

/** The check failed (wrong password, unknown user, a bad proof): it counts against the source too. */
function failedCheck<T>(attempt: LoginAttempt | undefined, step: T): T {
  if (attempt) void frameTask(attempt.failed());
  return step;
}

export async function startMechanism(ctx: SaslContext, mechanism: string, message: Buffer): Promise<SaslStep> {
  if (mechanism === 'PLAIN') {
    const plain = parsePlain(message);
    if (!plain) return { kind: 'failure', condition: 'malformed-request' };
    const { account, attempt } = await accountForCheck(ctx, plain.authcid);
    if (attempt?.refusal) return temporaryFailure(attempt.refusal);
    const creds = account?.credentials.sha256 ?? account?.credentials.sha1;
    const hash = account?.credentials.sha256 ? 'sha256' : 'sha1';
    if (!account || !creds) {
      // The same PBKDF2 work as a wrong password, so the time taken does not tell either.
      const fake = await madeUpCredentials(ctx, 'sha256', plain.authcid);
      await saltedPassword('sha256', plain.password, Buffer.from(fake.salt, 'base64'), fake.iterations);
      return failedCheck(attempt, { kind: 'failure', condition: 'not-authorized' });
    }
    if (!(await verifyPassword(hash, plain.password, creds))) return failedCheck(attempt, { kind: 'failure', condition: 'not-authorized' });
    succeeded(attempt);
    if (plain.authzid && plain.authzid !== account.bare) return { kind: 'failure', condition: 'invalid-authzid' };
    return { kind: 'success', user: account.bare };
  }
  const plus = mechanism.endsWith('-PLUS');
  const hash = SCRAM_MECHANISMS[plus ? mechanism.slice(0, -'-PLUS'.length) : mechanism];
  if (!hash || !offeredMechanisms(ctx.bindings).includes(mechanism)) return { kind: 'failure', condition: 'invalid-mechanism' };
  try {
    const parsed = parseClientFirst(message.toString('utf8'), { plus, available: bindingTypes(ctx.bindings) });
    // An early refusal when a limit is already reached; the attempt is counted at the proof.
    const [account, refusal] = await Promise.all([
      loadAccount(ctx, parsed.username),
      ctx.limits ? loginRefusal(ctx.store, ctx.limits, parsed.username, ctx.domain) : undefined,
    ]);
    if (refusal) return temporaryFailure(refusal);
    // Unknown users get a made-up salt and fail only at the proof, so accounts can't be probed.
    const creds = account?.credentials[hash] ?? (await madeUpCredentials(ctx, hash, parsed.username));
    // The server nonce comes from the frame: a redelivered <auth> sends the same challenge (the
    // journal then skips it) instead of a new one the client would answer with a stale nonce.
    const { message: data, state } = serverFirst(hash, parsed, creds, frameUnique('scram-nonce', 18));
    return { kind: 'challenge', data, state };
  } catch (err) {
    return fail(err);
  }
}

export async function continueMechanism(ctx: SaslContext, state: ScramState, message: Buffer): Promise<SaslStep> {
  let attempt: LoginAttempt | undefined;
  try {
    const checked = await accountForCheck(ctx, state.username);
    attempt = checked.attempt;
    const { account } = checked;
    if (attempt?.refusal) return temporaryFailure(attempt.refusal);
    const creds = account?.credentials[state.hash];
    if (!account || !creds) return failedCheck(attempt, { kind: 'failure', condition: 'not-authorized' });
    const bindingData = state.channelBinding ? ctx.bindings?.[state.channelBinding as ChannelBindingType] : undefined;
    const data = verifyClientFinal(state, message.toString('utf8'), creds, bindingData);
    succeeded(attempt);
    return { kind: 'success', user: account.bare, data };
  } catch (err) {
    return failedCheck(attempt, fail(err));
  }
}

/** Decodes a SASL payload; "=" is the empty response (RFC 6120 §6.4.2). */
export function decodeSaslPayload(text: string): Buffer | undefined {
  const t = text.trim();
  if (t === '' || t === '=') return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(t) || t.length % 4 !== 0) return undefined;
  return Buffer.from(t, 'base64');
}
