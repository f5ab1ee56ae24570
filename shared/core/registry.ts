/**
 * What feature modules register with the core: iq handlers by namespace, stanza hooks with a
 * priority, disco features and stream features. The core knows no feature; a module is one file
 * that calls these (Prosody's module pattern).
 */
import type { ServerConfig } from '../config.ts';
import type { Jid } from '../jid.ts';
import type { Element } from '../xml/element.ts';
import type { ClientSession } from './session.ts';
import type { XmppServer } from './server.ts';
import type { SessionRecord } from './types.ts';
import type { Job } from '../transport/jobs.ts';

/**
 * What a module may use of the server, at setup (registration is the Registry's) and in every
 * event it gets: storage, configuration, routing and delivery, disco's registered lists. Not the
 * adapters' entry points (frames, disconnects, timers) nor the session manager's internals.
 */
export type ModuleServer = Pick<
  XmppServer,
  | 'store' | 'sm' | 'config' | 'isLocalDomain' | 'domainJid' | 'hostedDomains'
  | 'route' | 'routeRemote' | 'runHooks' | 'answerIq' | 'bounce' | 'sendTo' | 'deliver' | 'deliverToFullJid' | 'deliverToSessions'
  | 'sender' | 'closeOther' | 'removeAccount' | 'sessionAvailable' | 'jobs'
  | 'serverFeatures' | 'accountFeatures' | 'discoIdentities' | 'serverItemNodes' | 'accountItemProviders'
>;

/** An iq of type get or set, addressed to the server domain or to a bare JID served here. */
export interface IqRequest {
  server: ModuleServer;
  stanza: Element;
  payload: Element;
  type: 'get' | 'set';
  from: Jid;
  to: Jid;
  /** The sender's session when it is a local client (undefined for federated senders). */
  session?: ClientSession;
}

/** Returns the result payload (or nothing for an empty result); throws StanzaError to fail. */
export type IqHandler = (request: IqRequest) => Promise<Element | void | undefined>;

/** A message or presence on its way from `from` to `to` (`to` absent for presence broadcasts). */
export interface StanzaEvent {
  server: ModuleServer;
  stanza: Element;
  from: Jid;
  to?: Jid;
  session?: ClientSession;
  /**
   * message/offline: where it goes among messages stored in the same millisecond (default: the
   * sending connection's frame count); stanzas handed over from a session's log pass their number.
   */
  order?: number;
  /**
   * message/offline: a name for the stored copy, the same in every run of the frame (default: the
   * frame's count of messages it stored). Given where one frame stores several and a run again may
   * store fewer of them (a session's hand-over: some go live on the second run).
   */
  storedAs?: string;
}

/** Returns true when it fully handled the stanza (later hooks are skipped). */
export type StanzaHook = (event: StanzaEvent) => Promise<boolean | void>;

export interface SessionEvent {
  server: ModuleServer;
  session: ClientSession;
  /**
   * session/ended only: a new session took over the same full JID (a resource conflict), and the
   * old stream's queued frames may still come; what the full JID holds (room occupancy) may wait
   * for 'session/released'.
   */
  replaced?: boolean;
}

export type HookName =
  /** every message (local or federated sender), to route it */
  | 'message'
  /** a message a local client sent, before it is routed (carbons, archiving, blocking); return true to stop it */
  | 'message/out'
  /**
   * a chat/normal/headline message about to be delivered to an existing local account (archiving,
   * stanza ids, carbons, blocking); return true to stop delivery
   */
  | 'message/in'
  /** every presence */
  | 'presence'
  /**
   * a presence broadcast reaching one contact: a user's own presence on its way to a contact, or, at
   * login, a contact's current presence shown to the user (`from` sender, `to` recipient); return
   * true to skip that recipient (blocking)
   */
  | 'presence/broadcast'
  /**
   * a client's own available presence about to be broadcast (`stanza`, a copy the hook may add to:
   * the avatar hash); it runs alongside the broadcast's first writes and reads, and what it adds is
   * stored with the presence just after
   */
  | 'presence/decorate'
  /**
   * every iq (from a local client or another server) before it is routed, whatever its type or
   * destination (blocking, answers to requests the server sent); return true when it was handled
   */
  | 'iq'
  /** a message for a user with no session to take it: store it (offline module) */
  | 'message/offline';

/** Session hooks run side by side (XmppServer.runSessionHooks): none may rely on another's effect. */
export type SessionHookName =
  /** the session sent its initial presence */
  | 'session/available'
  /** the session ended (close, socket gone, kicked) */
  | 'session/ended'
  /** the connection of a replaced session closed (its $disconnect): release what it kept */
  | 'session/released';

export type IqTarget = 'server' | 'account';

/** A XEP-0030 identity. */
export interface DiscoIdentity {
  category: string;
  type: string;
  name?: string;
}

/**
 * An account is being removed (its sessions have ended, the account item still exists): a module
 * takes the user out of other users' data it keeps (subscriptions, room affiliations, node
 * affiliations), so whoever registers the same name later inherits none of it.
 */
export type AccountRemovalHook = (event: { server: ModuleServer; bare: string }) => Promise<void>;

/**
 * Sees a stanza about to be posted to a local session; returns true when it took it instead (held
 * for later: XEP-0352). The stanza counts as delivered.
 */
export type DeliveryFilter = (event: { server: ModuleServer; session: SessionRecord; stanza: Element }) => Promise<boolean>;

/**
 * Messages were kept for a session whose socket is gone (XEP-0198 hibernation): posted to it while
 * it hibernates, one per event, or, when it begins to hibernate, those its client never
 * acknowledged. They wait for a resumption; the client may need waking (XEP-0357).
 */
export type HibernatedMessagesHook = (event: { server: ModuleServer; bare: string; resource: string; messages: Element[] }) => Promise<void>;

/**
 * Runs a background job a frame queued (server.jobs, transport/jobs.ts). Jobs of one group run in
 * order; a job may run more than once (its posts are journaled like a frame's, so a rerun skips
 * those that went out).
 */
export type JobHandler = (event: { server: ModuleServer; job: Job }) => Promise<void>;

/** Handles a non-stanza element a bound client sends in the namespace it was registered for (e.g. XEP-0352's <active/>). */
export type StreamElementHandler = (session: ClientSession, el: Element) => Promise<void>;

/** Receives every stanza addressed to a hosted domain (`from` is stamped). */
export type HostHandler = (event: StanzaEvent & { to: Jid }) => Promise<void>;

export interface Registry {
  /** The server's configuration, for modules whose registrations depend on it (e.g. a hosted domain's name). */
  readonly config: ServerConfig;
  /** Handles iq get/set with this payload namespace addressed to the domain ('server') or a user's bare JID ('account'). */
  iq(target: IqTarget, namespace: string, handler: IqHandler): void;
  /** Handles an iq before authentication (e.g. in-band registration). */
  preAuthIq(namespace: string, handler: IqHandler): void;
  hook(name: HookName, hook: StanzaHook, priority?: number): void;
  onSession(name: SessionHookName, hook: (event: SessionEvent) => Promise<void>): void;
  /** Runs when an account is removed (see AccountRemovalHook). */
  onAccountRemoval(hook: AccountRemovalHook): void;
  /**
   * Serves a whole domain, e.g. `conference.<domain>` for group chat: every stanza addressed to it
   * (or to a JID at it) goes to `handler` instead of federation.
   */
  host(domain: string, handler: HostHandler, disco?: { name: string; category: string; type: string }): void;
  /** A disco#info feature of the server or of accounts. */
  feature(namespace: string, target?: IqTarget): void;
  /** A disco#info identity of the server or of accounts (e.g. pubsub/pep on accounts). */
  identity(identity: DiscoIdentity, target?: IqTarget): void;
  /** Contributes disco#items (without a node) of an account as the requester may see them (e.g. PEP nodes). */
  accountItems(items: (request: IqRequest) => Promise<Element[]>): void;
  /** Answers disco#items of the server for one node (e.g. XEP-0050's command list), as the requester may see them. */
  serverItems(node: string, items: (request: IqRequest) => Promise<Element[]>): void;
  /** Runs before each post to a local session (see DeliveryFilter). */
  deliveryFilter(filter: DeliveryFilter): void;
  /** Runs the background jobs of a type (see JobHandler). */
  job(type: string, handler: JobHandler): void;
  /** Runs when messages are kept for a hibernated session (see HibernatedMessagesHook). */
  onHibernatedMessages(hook: HibernatedMessagesHook): void;
  /** Takes the top-level elements of a namespace from bound clients (see StreamElementHandler). */
  streamElement(namespace: string, handler: StreamElementHandler): void;
  /**
   * A feature a client may ask for inside its XEP-0386 `<bind/>` (listed there by namespace): the
   * handler gets the request once the session is bound and the client has its `<success/>`.
   */
  bindInline(namespace: string, handler: StreamElementHandler): void;
  /** An element for the stream features, before or after authentication. */
  streamFeature(stage: 'pre-auth' | 'post-auth', build: (server: ModuleServer) => Element | undefined): void;
}

export interface XmppModule {
  name: string;
  setup(registry: Registry): void;
}
