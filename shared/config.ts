import { parseContactAddresses, type ContactAddresses } from './contact-addresses.ts';
import { parseJid } from './jid.ts';
import { DEFAULT_AUTH_LIMITS, type AuthLimits } from './sasl/auth-limits.ts';
import { uploadConfigFromEnv, type UploadConfig } from './upload/storage.ts';

/**
 * Runtime configuration, read once from the environment. The same variables drive the
 * Lambdas (set by the CDK construct), the local stack and the CLI.
 */
export interface ServerConfig {
  /** The XMPP domain served (XMPP_DOMAIN). */
  domain: string;
  /** DynamoDB table holding every item (XMPP_TABLE). */
  tableName: string;
  /** DynamoDB endpoint override, e.g. DynamoDB Local (XMPP_DYNAMODB_ENDPOINT). Unset in the cloud. */
  dynamoEndpoint?: string;
  /** Base URL of the @connections management API (XMPP_CONNECTIONS_ENDPOINT). */
  connectionsEndpoint?: string;
  /** XEP-0077 in-band registration (XMPP_REGISTRATION=true|false). */
  registration: boolean;
  /** Largest frame accepted, in bytes (XEP-0478 max-bytes). API Gateway's hard limit is 128 KiB. */
  maxFrameBytes: number;
  /** Idle seconds before the gateway drops a socket (XEP-0478 idle-seconds). */
  idleSeconds: number;
  /** PBKDF2 iterations for new SCRAM credentials (XMPP_SCRAM_ITERATIONS, minimum 4096). */
  scramIterations: number;
  /** Queue URL for stanzas to remote domains (XMPP_S2S_QUEUE_URL); unset = federation off. */
  s2sQueueUrl?: string;
  /** Loopback HTTP intake of a local federation service (XMPP_S2S_ENDPOINT), used when there is no queue. */
  s2sEndpoint?: string;
  /**
   * Native clients in the cloud: each stream-service task's mailbox queue is
   * `<XMPP_C2S_QUEUE_URL_PREFIX><task id>.fifo` (shared/transport/tcp-sessions.ts); unset = local mailboxes only.
   */
  c2sQueueUrlPrefix?: string;
  /**
   * How long an @connections post may wait for its connection, then for its answer, before it is
   * given up and retried (XMPP_POST_TIMEOUT_MS, default 3000); posts take milliseconds when all is well.
   */
  postTimeoutMs: number;
  /** A closing stream waits this long after its session left before posting <close/> (posts of other handlers land first). */
  closeGraceMs: number;
  /** XEP-0045 group chat service domain (XMPP_MUC_DOMAIN); loadConfig defaults it to `conference.<domain>`. */
  mucDomain?: string;
  /** Brute-force limits on logins and registrations (shared/sasl/auth-limits.ts). */
  authLimits: AuthLimits;
  /**
   * XEP-0198 resumption window in seconds (XMPP_SM_RESUME_SECONDS, default 300, at most 900: the
   * longest delay of an SQS message, which is the timer that ends a hibernated session); 0 offers
   * stream management without resumption.
   */
  smResumeSeconds: number;
  /**
   * How long after binding a client may still enable XEP-0198 (XMPP_SM_ENABLE_SECONDS, default 30;
   * clients enable right after bind or right after their initial presence). Until then every post to
   * the session is ordered against its <enabled/>; later, the session's item is trusted as it is
   * (docs/mobile.md, "Enabling: the open window").
   */
  smEnableSeconds: number;
  /**
   * XEP-0357 notifications carry a summary (message count, last sender; never the body) instead of
   * nothing (XMPP_PUSH_SUMMARY, default false: nothing about messages reaches app servers).
   */
  pushSummary: boolean;
  /** Bare JIDs allowed to run the XEP-0133 admin commands (XMPP_ADMINS, comma-separated). */
  admins: string[];
  /** Invitations (XEP-0401): any user may create them with the ad-hoc command, not only admins (XMPP_USER_INVITES, default false). */
  userInvites: boolean;
  /** The web client's address; invitation links open its landing page `<XMPP_INVITE_URL>#invite=<token>` (unset: xmpp: URIs only). */
  inviteUrl?: string;
  /** How long an invitation is valid (XMPP_INVITE_TTL_SECONDS, default 7 days). */
  inviteTtlSeconds: number;
  /** XEP-0215: the STUN/TURN server clients use for calls, with its shared secret (XMPP_TURN_*); absent = not offered. */
  turn?: TurnSettings;
  /** XEP-0157 contact addresses in the server's disco#info (XMPP_CONTACT_ADDRESSES; contact-addresses.ts). */
  contactAddresses: ContactAddresses;
  /** Offer XEP-0388 SASL2, authentication without the stream restart (XMPP_SASL2, default true). */
  sasl2: boolean;
  /** Lifetime of XEP-0484 FAST tokens in days (XMPP_FAST_TOKEN_DAYS, default 14; 0 = not offered). */
  fastTokenDays: number;
  /** Offer XEP-0198 stream management at all (XMPP_SM, default true). */
  streamManagement: boolean;
  /** Queue of delayed events (XMPP_TIMER_QUEUE_URL): the end of resumption windows. */
  timerQueueUrl?: string;
  /** Loopback HTTP intake of the local gateway's timers (XMPP_TIMER_ENDPOINT), used when there is no queue. */
  timerEndpoint?: string;
  /** FIFO queue of background jobs (XMPP_JOB_QUEUE_URL): room fan-out to big rooms (docs/muc-fanout.md). */
  jobQueueUrl?: string;
  /** Loopback HTTP intake of the local gateway's job queue (XMPP_JOB_ENDPOINT), used when there is no queue. */
  jobEndpoint?: string;
  /**
   * A room stanza to more sessions than this goes out through fan-out jobs instead of the sender's
   * own invocation, when there is a job queue (XMPP_MUC_INLINE_FANOUT_MAX, default 200).
   */
  mucInlineFanoutMax: number;
  /** XEP-0363 upload service (XMPP_UPLOAD_*; upload/storage.ts); absent = not offered. */
  upload?: UploadConfig;
}

/** The longest DelaySeconds of an SQS message: the resumption window's upper bound. */
export const MAX_SM_RESUME_SECONDS = 900;

function flag(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === '') return fallback;
  return /^(1|true|yes|on)$/i.test(value);
}

function integer(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${value}"`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const iterations = integer(env.XMPP_SCRAM_ITERATIONS, 4096, 'XMPP_SCRAM_ITERATIONS');
  if (iterations < 4096) throw new Error('XMPP_SCRAM_ITERATIONS must be at least 4096 (RFC 7677)');
  const domain = (env.XMPP_DOMAIN || 'localhost').toLowerCase();
  return {
    domain,
    tableName: env.XMPP_TABLE || 'xmpp',
    dynamoEndpoint: env.XMPP_DYNAMODB_ENDPOINT || undefined,
    connectionsEndpoint: env.XMPP_CONNECTIONS_ENDPOINT || undefined,
    registration: flag(env.XMPP_REGISTRATION, false),
    maxFrameBytes: integer(env.XMPP_MAX_FRAME_BYTES, 131072, 'XMPP_MAX_FRAME_BYTES'),
    idleSeconds: integer(env.XMPP_IDLE_SECONDS, 600, 'XMPP_IDLE_SECONDS'),
    scramIterations: iterations,
    s2sQueueUrl: env.XMPP_S2S_QUEUE_URL || undefined,
    s2sEndpoint: env.XMPP_S2S_ENDPOINT || undefined,
    c2sQueueUrlPrefix: env.XMPP_C2S_QUEUE_URL_PREFIX || undefined,
    postTimeoutMs: integer(env.XMPP_POST_TIMEOUT_MS, 3000, 'XMPP_POST_TIMEOUT_MS'),
    closeGraceMs: integer(env.XMPP_CLOSE_GRACE_MS, 250, 'XMPP_CLOSE_GRACE_MS'),
    mucDomain: (env.XMPP_MUC_DOMAIN || `conference.${domain}`).toLowerCase(),
    authLimits: {
      failuresPerAccount: integer(env.XMPP_LOGIN_FAILURES_PER_ACCOUNT, DEFAULT_AUTH_LIMITS.failuresPerAccount, 'XMPP_LOGIN_FAILURES_PER_ACCOUNT'),
      failuresPerSource: integer(env.XMPP_LOGIN_FAILURES_PER_SOURCE, DEFAULT_AUTH_LIMITS.failuresPerSource, 'XMPP_LOGIN_FAILURES_PER_SOURCE'),
      windowSeconds: integer(env.XMPP_LOGIN_FAILURE_WINDOW_SECONDS, DEFAULT_AUTH_LIMITS.windowSeconds, 'XMPP_LOGIN_FAILURE_WINDOW_SECONDS'),
      registrationsPerSource: integer(env.XMPP_REGISTRATIONS_PER_SOURCE, DEFAULT_AUTH_LIMITS.registrationsPerSource, 'XMPP_REGISTRATIONS_PER_SOURCE'),
    },
    smResumeSeconds: resumeSeconds(env.XMPP_SM_RESUME_SECONDS),
    smEnableSeconds: integer(env.XMPP_SM_ENABLE_SECONDS, 30, 'XMPP_SM_ENABLE_SECONDS'),
    streamManagement: flag(env.XMPP_SM, true),
    sasl2: flag(env.XMPP_SASL2, true),
    fastTokenDays: integer(env.XMPP_FAST_TOKEN_DAYS, 14, 'XMPP_FAST_TOKEN_DAYS'),
    pushSummary: flag(env.XMPP_PUSH_SUMMARY, false),
    contactAddresses: parseContactAddresses(env.XMPP_CONTACT_ADDRESSES),
    turn: turnSettings(env),
    admins: admins(env.XMPP_ADMINS),
    userInvites: flag(env.XMPP_USER_INVITES, false),
    inviteUrl: env.XMPP_INVITE_URL || undefined,
    inviteTtlSeconds: integer(env.XMPP_INVITE_TTL_SECONDS, 7 * 86_400, 'XMPP_INVITE_TTL_SECONDS'),
    timerQueueUrl: env.XMPP_TIMER_QUEUE_URL || undefined,
    timerEndpoint: env.XMPP_TIMER_ENDPOINT || undefined,
    jobQueueUrl: env.XMPP_JOB_QUEUE_URL || undefined,
    jobEndpoint: env.XMPP_JOB_ENDPOINT || undefined,
    mucInlineFanoutMax: integer(env.XMPP_MUC_INLINE_FANOUT_MAX, 200, 'XMPP_MUC_INLINE_FANOUT_MAX'),
    upload: uploadConfigFromEnv(env, domain),
  };
}

export interface TurnSettings {
  host: string;
  /** STUN and TURN over UDP and TCP (XMPP_TURN_PORT, default 3478). */
  port: number;
  /** TURN over TLS (XMPP_TURN_TLS_PORT), when the TURN server offers it. */
  tlsPort?: number;
  /** The TURN REST API secret shared with the TURN server (XMPP_TURN_SECRET). */
  secret: string;
  /** How long handed-out credentials work (XMPP_TURN_TTL_SECONDS, default 86400). */
  ttlSeconds: number;
}

function turnSettings(env: NodeJS.ProcessEnv): TurnSettings | undefined {
  const host = env.XMPP_TURN_HOST || undefined;
  const secret = env.XMPP_TURN_SECRET || undefined;
  if (!host && !secret) return undefined;
  if (!host || !secret) throw new Error('XMPP_TURN_HOST and XMPP_TURN_SECRET go together (XEP-0215 TURN credentials)');
  if (!/^[a-z0-9.-]+$/i.test(host) && !/^\[?[0-9a-f:.]+\]?$/i.test(host)) throw new Error(`XMPP_TURN_HOST must be a host name or address, got "${host}"`);
  const tls = env.XMPP_TURN_TLS_PORT ? integer(env.XMPP_TURN_TLS_PORT, 5349, 'XMPP_TURN_TLS_PORT') : undefined;
  return {
    host,
    port: integer(env.XMPP_TURN_PORT, 3478, 'XMPP_TURN_PORT'),
    ...(tls ? { tlsPort: tls } : {}),
    secret,
    ttlSeconds: integer(env.XMPP_TURN_TTL_SECONDS, 86400, 'XMPP_TURN_TTL_SECONDS'),
  };
}

function admins(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean)
    .map((a) => {
      const jid = parseJid(a);
      if (!jid.local || jid.resource) throw new Error(`XMPP_ADMINS takes bare JIDs (user@domain), got "${a}"`);
      return jid.bare;
    });
}

function resumeSeconds(value: string | undefined): number {
  if (value === undefined || value === '') return 300;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > MAX_SM_RESUME_SECONDS) {
    throw new Error(`XMPP_SM_RESUME_SECONDS must be an integer from 0 to ${MAX_SM_RESUME_SECONDS}, got "${value}"`);
  }
  return n;
}
