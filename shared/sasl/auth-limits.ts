/**
 * Brute-force limits (docs/security.md, "Password guessing"). A connection allows three SASL
 * failures (RFC 6120 §6.4.5), but a new socket is free, so failures are also counted per account
 * and per source address in fixed windows (attempt-store.ts). At either limit, logins for that
 * account or from that source are refused with `temporary-auth-failure` before any password is
 * checked, until the window ends. Registrations (XEP-0077, when open) are counted per source.
 *
 * Per-account counting lets anyone lock an account out for a window by guessing badly on purpose;
 * the per-account limit is therefore higher than a person mistyping reaches and a window short,
 * and an operator can raise it (XMPP_LOGIN_FAILURES_PER_ACCOUNT). A distributed guesser with
 * many addresses is held by the per-account limit: 10 guesses per 15 minutes is 960 a day.
 */
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { normalizeLocal } from '../jid.ts';
import { log } from '../log.ts';
import { AttemptStore, type AttemptSubject } from '../storage/attempt-store.ts';
import { currentFrame, frameNow, frameSourceIp, frameUnique } from '../storage/frame-context.ts';
import type { Store } from '../storage/store.ts';

export interface AuthLimits {
  /** Failed logins per account per window (XMPP_LOGIN_FAILURES_PER_ACCOUNT, default 10). */
  failuresPerAccount: number;
  /** Failed logins per source address per window (XMPP_LOGIN_FAILURES_PER_SOURCE, default 30). */
  failuresPerSource: number;
  /** The window, in seconds (XMPP_LOGIN_FAILURE_WINDOW_SECONDS, default 900). */
  windowSeconds: number;
  /** Accounts registered in-band per source address per hour (XMPP_REGISTRATIONS_PER_SOURCE, default 5). */
  registrationsPerSource: number;
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = { failuresPerAccount: 10, failuresPerSource: 30, windowSeconds: 900, registrationsPerSource: 5 };

const REGISTRATION_WINDOW_SECONDS = 3600;

/**
 * A source as limits count it: an IPv4 address, or the /64 an IPv6 address is in (one host or
 * network commonly holds a whole /64, so counting single addresses would let it rotate freely).
 */
export function sourceSubject(ip: string): string {
  if (!ipaddr.isValid(ip)) return ip;
  const address = ipaddr.process(ip); // IPv4-mapped IPv6 becomes IPv4
  if (address.kind() === 'ipv4') return address.toString();
  const parts = (address as ipaddr.IPv6).parts.slice(0, 4).map((p) => p.toString(16));
  return `${parts.join(':')}::/64`;
}

/** Keys stay small whatever a client sends as its user name. */
function bounded(subject: string): string {
  return subject.length <= 200 ? subject : `sha256:${createHash('sha256').update(subject).digest('base64url')}`;
}

function accountSubject(username: string, domain: string): string {
  let local = username.toLowerCase();
  try {
    local = normalizeLocal(username);
  } catch {}
  return bounded(`${local}@${domain}`);
}

function windowStart(seconds: number): number {
  const now = Math.floor(frameNow() / 1000);
  return now - (now % seconds);
}

function loginSubjects(username: string, domain: string): AttemptSubject[] {
  const subjects: AttemptSubject[] = [{ kind: 'login-account', subject: accountSubject(username, domain) }];
  const ip = frameSourceIp();
  if (ip) subjects.push({ kind: 'login-source', subject: bounded(sourceSubject(ip)) });
  return subjects;
}

/** The id an attempt is recorded under: the frame's (so a redelivery counts once), else random. */
function attemptId(): string {
  return currentFrame()?.id ?? frameUnique('attempt', 12);
}

function refusalText(limits: AuthLimits, subject: AttemptSubject, start: number): string {
  const minutes = Math.max(1, Math.ceil((start + limits.windowSeconds - frameNow() / 1000) / 60));
  const which = subject.kind === 'login-account' ? 'this account' : 'your address';
  // One line per refusal: the cloud's metric filter counts them (cdk/lib/monitoring.ts).
  log.warn(LOGIN_REFUSED, { limit: subject.kind, subject: subject.subject });
  return `Too many failed login attempts for ${which}; try again in ${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/** The log message of a refused login (a CloudWatch metric filter matches it). */
export const LOGIN_REFUSED = 'login refused: too many failed attempts';

const limitOf = (limits: AuthLimits, s: AttemptSubject) => (s.kind === 'login-account' ? limits.failuresPerAccount : limits.failuresPerSource);

/**
 * An early look (SCRAM's first message): whether a login for `username` from this frame's source
 * is already over a limit; resolves to the text the client is told, or undefined to go on.
 */
export async function loginRefusal(store: Store, limits: AuthLimits, username: string, domain: string): Promise<string | undefined> {
  const subjects = loginSubjects(username, domain);
  const start = windowStart(limits.windowSeconds);
  const counts = await store.open(AttemptStore).counts(subjects, start);
  const over = subjects.findIndex((s, i) => counts[i]! >= limitOf(limits, s));
  return over < 0 ? undefined : refusalText(limits, subjects[over]!, start);
}

export interface LoginAttempt {
  /** Set when a limit is reached: the text the client is told; the password is not checked. */
  refusal?: string;
  /** The password was right: the attempt is taken back (it does not count as a failure). */
  succeeded(): Promise<void>;
  /** The check failed: it counts against the source too. */
  failed(): Promise<void>;
}

/**
 * Counts a password check against the account before it is made: a failure stays counted, a
 * success is taken back. Counting first (an atomic add that returns the new total) means a
 * thousand guesses at one account sent at once on a thousand sockets are held at the limit too,
 * where a check followed by a later write would let them all through.
 *
 * The source is counted after a failure instead: counted first, every login in flight from one
 * address counts until it succeeds, and a burst of honest logins from one address (an office
 * behind NAT; the bench's storm of 101) was refused after 30, though none of them had failed.
 * Guesses at many accounts at once from one address are held by the source limit from the first
 * wave of failures on.
 */
export async function startLoginAttempt(core: Store, limits: AuthLimits, username: string, domain: string): Promise<LoginAttempt> {
  const store = core.open(AttemptStore);
  const [account, ...sources] = loginSubjects(username, domain);
  const start = windowStart(limits.windowSeconds);
  const id = attemptId();
  const [[accountCount], sourceCounts] = await Promise.all([store.add([account!], start, id, limits.windowSeconds), store.counts(sources, start)]);
  const refused = accountCount! > limitOf(limits, account!) ? account : sources.find((s, i) => sourceCounts[i]! >= limitOf(limits, s));
  return {
    refusal: refused ? refusalText(limits, refused, start) : undefined,
    succeeded: () => store.remove([account!], start, id),
    failed: async () => {
      if (sources.length) await store.add(sources, start, id, limits.windowSeconds);
    },
  };
}

/** Loopback (the machine itself: scripts, the bench, the local stack) is not limited, as in Prosody's mod_register_limits. */
function isLoopback(ip: string): boolean {
  return ipaddr.isValid(ip) && ipaddr.process(ip).range() === 'loopback';
}

function registrationSubjects(): AttemptSubject[] {
  const ip = frameSourceIp();
  return ip && !isLoopback(ip) ? [{ kind: 'register-source', subject: bounded(sourceSubject(ip)) }] : [];
}

/**
 * Counts an account registration against this frame's source before it is made; resolves to
 * whether it may go on, and a way to take it back when the registration then fails (name taken).
 */
export async function startRegistration(core: Store, limits: AuthLimits): Promise<{ allowed: boolean; failed(): Promise<void> }> {
  const store = core.open(AttemptStore);
  const subjects = registrationSubjects();
  const start = windowStart(REGISTRATION_WINDOW_SECONDS);
  const id = attemptId();
  const [count] = await store.add(subjects, start, id, REGISTRATION_WINDOW_SECONDS);
  return { allowed: (count ?? 0) <= limits.registrationsPerSource, failed: () => store.remove(subjects, start, id) };
}
