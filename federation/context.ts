/** What the server-to-server links share: secrets, credentials, limits, timing, the way back to the core. */
import type { StanzaError } from '../shared/errors.ts';
import type { log } from '../shared/log.ts';
import type { Element } from '../shared/xml/element.ts';
import type { XmlLimits } from '../shared/xml/parse.ts';
import type { Dns, Target } from './resolve.ts';
import type { TlsCredentials } from './tls.ts';

export type Logger = typeof log;

export interface S2sTiming {
  /** One connection attempt to one target: TCP, TLS and authentication (default 30 s). */
  connectTimeoutMs: number;
  /** How long a stanza waits for a link before it bounces with remote-server-timeout (default 60 s). */
  queueTimeoutMs: number;
  /** First retry delay after a failed attempt; doubles up to backoffMaxMs (defaults 1 s, 60 s). */
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Quiet time on an outgoing link before an XEP-0199 ping (default 120 s). */
  pingAfterMs: number;
  /** A ping unanswered this long takes the link down (default 30 s). */
  pingTimeoutMs: number;
  /** An outgoing link with no stanza for this long is closed (default 10 min; incoming: twice that). */
  idleCloseMs: number;
}

export const DEFAULT_TIMING: S2sTiming = {
  connectTimeoutMs: 30_000,
  queueTimeoutMs: 60_000,
  backoffMinMs: 1_000,
  backoffMaxMs: 60_000,
  pingAfterMs: 120_000,
  pingTimeoutMs: 30_000,
  idleCloseMs: 600_000,
};

/** Whether a peer domain must prove itself with a valid certificate (see S2sContext.secureAuth). */
export function secureAuthFor(ctx: Pick<S2sContext, 'secureAuth' | 'insecureDomains'>, domain: string): boolean {
  return ctx.secureAuth && !ctx.insecureDomains.has(domain.toLowerCase());
}

export interface S2sContext {
  /** The main domain served. */
  domain: string;
  /** Domains this service speaks for: the main domain, hosted services (MUC), connected-or-configured components. */
  isOurDomain(domain: string): boolean;
  /** XEP-0185 dialback secret. */
  secret: string;
  /** Our certificate; without one no TLS is offered inbound and SASL EXTERNAL is never used outbound. */
  tls?: TlsCredentials;
  /** Refuse plaintext streams (inbound and outbound). Default: on when there is a certificate. */
  requireTls: boolean;
  /**
   * Authenticate every peer by a certificate valid for its domain (Prosody's s2s_secure_auth):
   * outbound links to a server whose certificate does not verify are not used, and inbound dialback
   * is accepted only over TLS with a certificate valid for the claimed domain. Dialback alone (DNS
   * trust) remains for `insecureDomains`.
   */
  secureAuth: boolean;
  insecureDomains: Set<string>;
  routes: Map<string, Target>;
  dns?: Dns;
  limits: XmlLimits;
  timing: S2sTiming;
  log: Logger;
  /** Sends an error for a stanza back to its sender, through the core. */
  bounce(stanza: Element, error: StanzaError): Promise<void>;
}
