import type { ScramCredentials, ScramHash, ScramState } from '../sasl/scram.ts';

export interface Account {
  bare: string;
  credentials: Partial<Record<ScramHash, ScramCredentials>>;
  createdAt: number;
  /** Roster version counter (RFC 6121 §2.6), bumped on every roster change. */
  rosterVersion: number;
  /** Its live sessions, where the account was read or written with them (a session update's result). */
  sessions?: SessionRecord[];
}

/** A bound resource: where to reach one of a user's sessions. */
export interface SessionRecord {
  bare: string;
  resource: string;
  connectionId: string;
  /** Sent initial presence and not yet unavailable. */
  available: boolean;
  /** Requested the roster, so gets roster pushes (RFC 6121 §2.1.6). */
  interested: boolean;
  priority: number;
  /** Last broadcast presence (XML), to answer probes. */
  presence?: string;
  /** Epoch ms of the bind. */
  boundAt: number;
  /** Epoch ms when it sent initial presence (stream-management.ts: a session available only after a stanza to the bare JID was routed did not get it). */
  availableAt?: number;
  /** XEP-0198 is on: posts to it are numbered and kept (transport/sm-sender.ts). */
  sm?: boolean;
  /**
   * Epoch ms until which its client may be enabling XEP-0198 (clients do right after bind or right
   * after initial presence): a router's copy of this item may predate the enable, so a post to it
   * asks the numbering and, unnumbered, is ordered before the <enabled/> (sm-sender.ts, `enabling`).
   * Cleared when it enables; after it, `sm` is trusted (a later <enable/> is refused).
   */
  smOpenUntil?: number;
  /** XEP-0352: the client said it is inactive (presence and chat states are held for it, modules/csi.ts). */
  inactive?: boolean;
}

export type Subscription = 'none' | 'to' | 'from' | 'both';

export interface RosterItem {
  jid: string;
  name?: string;
  groups: string[];
  subscription: Subscription;
  /** Outbound subscription request pending (ask="subscribe"). */
  ask?: boolean;
  /** Subscription pre-approved (RFC 6121 §3.4). */
  approved?: boolean;
}

export type StreamStage =
  /** socket open, no <open/> yet */
  | 'connected'
  /** stream open, not authenticated */
  | 'open'
  /** SASL succeeded, waiting for the stream restart */
  | 'authenticated'
  /** restarted after SASL, resource not bound yet */
  | 'auth-open'
  /** resource bound: stanzas flow */
  | 'bound'
  /**
   * a newer session took the resource and this socket was closed; messages the client sent before
   * it saw the close are still queued and are routed (docs/architecture.md, "Replaced streams")
   */
  | 'replaced'
  /**
   * XEP-0198: the socket is gone but the session waits for a resumption (it stays available and
   * routable; what is posted to it is kept); ended by the resumption window's timer
   */
  | 'hibernated'
  /** XEP-0198: the session moved on to another connection; frames still queued here are dropped */
  | 'resumed'
  | 'closed';

/** XEP-0198 state kept with the connection (the outbound side lives in sm-store.ts). */
export interface StreamManagementState {
  /** The session's SM id, which a client resumes with (previd). */
  id: string;
  /** Stanzas handled from the client (its 'h'). */
  inbound: number;
  /** Resumption window agreed for this session, in seconds; 0 = not resumable. */
  max: number;
}

/** A XEP-0388 exchange between its frames. */
export interface Sasl2Exchange {
  mechanism: string;
  /** The `<authenticate/>` without its initial response: its inline requests are answered at the end. */
  request: string;
  /** No initial response came: the first `<response/>` starts the mechanism. */
  awaitingInitial?: boolean;
  /** The `<success/>`'s additional data, kept while an inline resumption commits (sasl2.ts, runAgain). */
  additionalData?: string;
}

/** Per-connection stream state, persisted between frames (the connection item). */
export interface ConnectionState {
  id: string;
  stage: StreamStage;
  streamId: string;
  connectedAt: number;
  /** Bare JID after SASL success. */
  user?: string;
  resource?: string;
  sasl?: ScramState & { mechanism: string };
  /** XEP-0388: an exchange under way (sasl2.ts). */
  sasl2?: Sasl2Exchange;
  /** XEP-0445: an invitation token this stream presented before registering (invites.ts). */
  invite?: string;
  authFailures: number;
  /** Mirrors of the session record, so the hot path needs no read. */
  available?: boolean;
  interested?: boolean;
  priority?: number;
  /** XEP-0352: the client said <inactive/> (mirror of the session item). */
  inactive?: boolean;
  /** Full or bare JIDs that got directed available presence (RFC 6121 §4.6). */
  directed?: string[];
  /**
   * The session's id when it is not this connection's (a resumed XEP-0198 session keeps the id of
   * the connection it began on: session items, room occupancy and carbons name it, and posts to it
   * reach whichever connection carries the session now).
   */
  session?: string;
  /** XEP-0198, once enabled. */
  sm?: StreamManagementState;
  /** Epoch ms until which routers treat the session as possibly enabling XEP-0198 (SessionRecord.smOpenUntil). */
  smOpenUntil?: number;
  /** Optimistic-locking counter (see docs/architecture.md). */
  version: number;
  /** Queue message id of the last frame that committed (a redelivery of it is skipped). */
  lastFrame?: string;
  /**
   * The frame whose <resume/> committed this connection as the session's before moving the
   * session to it (stream-management.ts): a run of that frame again goes on with the resumption.
   */
  resumingFrame?: string;
  /** The connection that resumption took the session from. */
  resumingFrom?: string;
}
