/**
 * The routing core: entry points for the adapters (a frame arrived, a socket closed), the module
 * registry, and the primitives modules use to route and deliver stanzas. Storage and transport come
 * in through interfaces, so this runs unchanged in the stream Lambda, the local stack and the
 * federation service.
 *
 * Long because: the module registry's side (what modules register, looked up by the core) and the
 * routing primitives share the one server object modules are handed; they part when the code is
 * restructured (issue "A codebase the next engineer can change safely").
 */
import type { ServerConfig } from '../config.ts';
import { StanzaError, errorReply, type StreamError } from '../errors.ts';
import { Jid, JidError, parseJid } from '../jid.ts';
import type { Store } from '../storage/store.ts';
import { faultsFromEnv } from '../faults.ts';
import { inFrame, type FrameInput } from '../storage/frame-context.ts';
import { journaledSender } from '../transport/journaled-sender.ts';
import { sessionHint, streamManagementSender } from '../transport/sm-sender.ts';
import type { TimerEvent, TimerScheduler } from '../transport/timers.ts';
import type { Job, JobQueue } from '../transport/jobs.ts';
import { SmStore } from '../storage/sm-store.ts';
import { parseStored } from '../xml/stored.ts';
import { longestPostMs, type ConnectionSender } from '../transport/connections.ts';
import { Element, NS, x } from '../xml/element.ts';
import type { AccountRemovalHook, DeliveryFilter, DiscoIdentity, HibernatedMessagesHook, HookName, HostHandler, IqHandler, IqRequest, IqTarget } from './registry.ts';
import type { JobHandler, Registry, SessionEvent, SessionHookName, StanzaEvent, StanzaHook, StreamElementHandler, XmppModule } from './registry.ts';
import type { ClientSession } from './session.ts';
import { SessionManager, type FrameDelivery } from './session-manager.ts';
import type { ConnectionState, SessionRecord } from './types.ts';
import { forEachBounded } from './bounded.ts';
import { removeAccount } from './account-removal.ts';
import { gatedJobs, gatedRemote, gatedTimers } from '../transport/gated.ts';

/** Where stanzas for other domains go (the federation service); absent = federation off. */
export interface RemoteRouter {
  send(stanza: Element): Promise<void>;
}

export interface ServerDependencies {
  config: ServerConfig;
  store: Store;
  sender: ConnectionSender;
  remote?: RemoteRouter;
  /** Delayed events (the end of XEP-0198 resumption windows); without it sessions are not resumable. */
  timers?: TimerScheduler;
  /** Background jobs (room fan-out to big rooms); without it everything runs in the frame's invocation. */
  jobs?: JobQueue;
  modules: XmppModule[];
}

export class XmppServer implements Registry {
  readonly config: ServerConfig;
  readonly store: Store;
  /** Posts to sessions: stanzas are numbered and kept for sessions with XEP-0198 (sm-sender.ts). */
  readonly sender: ConnectionSender;
  /** Posts to a socket as they are (stream-level frames, XEP-0198 resends): journaled, not counted. */
  readonly socketSender: ConnectionSender;
  readonly remote?: RemoteRouter;
  readonly timers?: TimerScheduler;
  readonly jobs?: JobQueue;
  readonly jobHandlers = new Map<string, JobHandler>();
  /** XEP-0198 outbound state of sessions. */
  readonly sm: SmStore;
  readonly serverFeatures = new Set<string>();
  readonly accountFeatures = new Set<string>();
  readonly discoIdentities: Record<IqTarget, DiscoIdentity[]> = { server: [], account: [] };
  readonly accountItemProviders: ((request: IqRequest) => Promise<Element[]>)[] = [];
  readonly serverItemNodes = new Map<string, (request: IqRequest) => Promise<Element[]>>();
  readonly streamFeatures: Record<'pre-auth' | 'post-auth', ((s: XmppServer) => Element | undefined)[]> = {
    'pre-auth': [],
    'post-auth': [],
  };
  private readonly iqHandlers = new Map<string, IqHandler>();
  private readonly preAuthIqHandlers = new Map<string, IqHandler>();
  private readonly hooks = new Map<HookName, { hook: StanzaHook; priority: number }[]>();
  private readonly sessionHooks = new Map<SessionHookName, ((e: SessionEvent) => Promise<void>)[]>();
  private readonly accountRemovalHooks: AccountRemovalHook[] = [];
  private readonly deliveryFilters: DeliveryFilter[] = [];
  private readonly hibernatedMessageHooks: HibernatedMessagesHook[] = [];
  private readonly streamElements = new Map<string, StreamElementHandler>();
  /** XEP-0386 inline features by namespace (registry.ts, bindInline). */
  readonly bindInlineHandlers = new Map<string, StreamElementHandler>();
  readonly sessions: SessionManager;
  /** Domains served by modules (e.g. conference.<domain>), with their disco#items identity. */
  readonly hostedDomains = new Map<string, { handler: HostHandler; disco?: { name: string; category: string; type: string } }>();

  constructor(deps: ServerDependencies) {
    this.config = deps.config;
    this.store = deps.store;
    // Every post goes through the frame's journal, so a redelivered frame skips what it already posted.
    const faults = faultsFromEnv();
    this.sm = deps.store.open(SmStore);
    this.sender = journaledSender(
      streamManagementSender(
        deps.sender,
        this.sm,
        (record, frame) => this.runHibernatedMessageHooks(record.bare, record.resource, [frame]),
        longestPostMs(deps.config.postTimeoutMs),
      ),
      faults,
    );
    this.socketSender = journaledSender(deps.sender, faults);
    this.timers = deps.timers && gatedTimers(deps.timers);
    this.jobs = deps.jobs && gatedJobs(deps.jobs);
    this.sessions = new SessionManager(this);
    this.remote = deps.remote && gatedRemote(deps.remote);
    for (const module of deps.modules) module.setup(this);
  }

  // Registry

  iq(target: IqTarget, namespace: string, handler: IqHandler): void {
    this.iqHandlers.set(`${target} ${namespace}`, handler);
  }

  preAuthIq(namespace: string, handler: IqHandler): void {
    this.preAuthIqHandlers.set(namespace, handler);
  }

  hook(name: HookName, hook: StanzaHook, priority = 0): void {
    const list = this.hooks.get(name) ?? [];
    list.push({ hook, priority });
    list.sort((a, b) => b.priority - a.priority);
    this.hooks.set(name, list);
  }

  onAccountRemoval(hook: AccountRemovalHook): void {
    this.accountRemovalHooks.push(hook);
  }

  async runAccountRemovalHooks(bare: string): Promise<void> {
    for (const hook of this.accountRemovalHooks) await hook({ server: this, bare });
  }

  onSession(name: SessionHookName, hook: (event: SessionEvent) => Promise<void>): void {
    this.sessionHooks.set(name, [...(this.sessionHooks.get(name) ?? []), hook]);
  }

  host(domain: string, handler: HostHandler, disco?: { name: string; category: string; type: string }): void {
    this.hostedDomains.set(domain, { handler, disco });
  }

  feature(namespace: string, target: IqTarget = 'server'): void {
    (target === 'server' ? this.serverFeatures : this.accountFeatures).add(namespace);
  }

  identity(identity: DiscoIdentity, target: IqTarget = 'server'): void {
    this.discoIdentities[target].push(identity);
  }

  accountItems(items: (request: IqRequest) => Promise<Element[]>): void {
    this.accountItemProviders.push(items);
  }

  streamFeature(stage: 'pre-auth' | 'post-auth', build: (server: XmppServer) => Element | undefined): void {
    this.streamFeatures[stage].push(build);
  }

  serverItems(node: string, items: (request: IqRequest) => Promise<Element[]>): void {
    this.serverItemNodes.set(node, items);
  }

  deliveryFilter(filter: DeliveryFilter): void {
    this.deliveryFilters.push(filter);
  }

  job(type: string, handler: JobHandler): void {
    this.jobHandlers.set(type, handler);
  }

  onHibernatedMessages(hook: HibernatedMessagesHook): void {
    this.hibernatedMessageHooks.push(hook);
  }

  /** Messages (as posted) were kept for a hibernated session: runs the hooks with those that parse. */
  async runHibernatedMessageHooks(bare: string, resource: string, frames: string[]): Promise<void> {
    if (!this.hibernatedMessageHooks.length) return;
    const messages = frames.map((f) => parseStored(f, 'kept message', { bare })).filter((m): m is Element => m?.name === 'message');
    if (!messages.length) return;
    for (const hook of this.hibernatedMessageHooks) await hook({ server: this, bare, resource, messages });
  }

  streamElement(namespace: string, handler: StreamElementHandler): void {
    this.streamElements.set(namespace, handler);
  }

  bindInline(namespace: string, handler: StreamElementHandler): void {
    this.bindInlineHandlers.set(namespace, handler);
  }

  streamElementHandler(namespace: string | undefined): StreamElementHandler | undefined {
    return namespace === undefined ? undefined : this.streamElements.get(namespace);
  }

  preAuthIqHandler(namespace: string): IqHandler | undefined {
    return this.preAuthIqHandlers.get(namespace);
  }

  // Adapter entry points (the session manager owns connection and session state)

  /** Processes one frame of a connection (see SessionManager.handleFrame). */
  handleFrame(connectionId: string, frame: string, delivery?: FrameDelivery): Promise<ConnectionState | undefined> {
    return this.sessions.handleFrame(connectionId, frame, delivery);
  }

  /** The socket closed (client, timeout or server). Ends the XMPP session if one was bound. */
  handleDisconnect(connectionId: string, delivery?: FrameInput): Promise<void> {
    return this.sessions.handleDisconnect(connectionId, delivery);
  }

  /** A delayed event came due (timers.ts). */
  handleTimer(event: TimerEvent, delivery?: FrameInput): Promise<void> {
    return this.sessions.handleTimer(event, delivery);
  }

  /** A background job's turn came (jobs.ts). */
  handleJob(job: Job, delivery?: FrameInput): Promise<void> {
    return this.sessions.handleJob(job, delivery);
  }

  /** Ends another session's stream from this frame (its account changed: password, removal). */
  closeOther(sessionId: string, error: StreamError): Promise<void> {
    return this.sessions.closeOther(sessionId, error);
  }

  /** Removes an account, its sessions first (core/account-removal.ts). */
  removeAccount(bare: string, current?: ClientSession): Promise<boolean> {
    return removeAccount(this, bare, current);
  }

  /**
   * A session's hooks run side by side: each reads and posts its own things (stored messages and
   * pending requests when it comes online; contacts, rooms, carbons and held stanzas when it ends),
   * none waits for another (RFC 6121 orders none of them), and every hook finishes before a failure
   * is thrown (the frame's journal must see all their posts).
   */
  runSessionHooks(name: SessionHookName, session: ClientSession, details: Pick<SessionEvent, 'replaced'> = {}): Promise<void> {
    const hooks = this.sessionHooks.get(name) ?? [];
    return forEachBounded(hooks, hooks.length, (hook) => hook({ server: this, session, ...details }));
  }

  sessionAvailable(session: ClientSession): Promise<void> {
    return this.runSessionHooks('session/available', session);
  }

  // Routing primitives for modules

  isLocalDomain(domain: string): boolean {
    return domain === this.config.domain;
  }

  get domainJid(): Jid {
    return new Jid('', this.config.domain);
  }

  async runHooks(name: HookName, event: StanzaEvent): Promise<boolean> {
    for (const { hook } of this.hooks.get(name) ?? []) if (await hook(event)) return true;
    return false;
  }

  /**
   * Routes a stanza whose `from` is already stamped. Used for stanzas from local clients and, with
   * the same rules, for stanzas arriving from other servers.
   */
  route(stanza: Element, from: Jid, session?: ClientSession): Promise<void> {
    return inFrame(() => this.routeStanza(stanza, from, session));
  }

  private async routeStanza(stanza: Element, from: Jid, session?: ClientSession): Promise<void> {
    let to: Jid | undefined;
    if (stanza.attrs.to) {
      try {
        to = parseJid(stanza.attrs.to);
      } catch (err) {
        if (err instanceof JidError) return this.bounce(stanza, new StanzaError('jid-malformed', err.message));
        throw err;
      }
      stanza.attrs.to = to.toString();
    }
    if (stanza.name === 'message') this.prefetchRoutes(from, to);
    // Outbound hooks see every message a local client sends, whether to this domain, a hosted service or a remote server.
    if (stanza.name === 'message' && session && (await this.runHooks('message/out', { server: this, stanza, from, to, session }))) return;
    if (stanza.name === 'iq' && (await this.runHooks('iq', { server: this, stanza, from, to, session }))) return;
    if (to && !this.isLocalDomain(to.domain)) {
      const hosted = this.hostedDomains.get(to.domain);
      if (hosted) return hosted.handler({ server: this, stanza, from, to, session });
      // A local client's presence to another server still goes through the presence hooks (roster
      // state of subscriptions, directed presence); they send it out.
      if (stanza.name === 'presence' && session && (await this.runHooks('presence', { server: this, stanza, from, to, session }))) return;
      return this.routeRemote(stanza);
    }
    if (stanza.name === 'iq') return this.routeIq(stanza, from, to ?? from.toBare(), session);
    const handled = await this.runHooks(stanza.name as HookName, { server: this, stanza, from, to, session });
    if (!handled && stanza.name === 'message') await this.bounce(stanza, new StanzaError('service-unavailable'));
  }

  /**
   * A message between two local users needs both users' routes (blocking, carbons and archive
   * preferences of each side, the recipient's sessions): start both reads at once, so the frame
   * waits for one round trip instead of two. The per-frame memo hands them to the modules.
   */
  private prefetchRoutes(from: Jid, to: Jid | undefined): void {
    for (const jid of [from, to]) {
      if (jid?.local && this.isLocalDomain(jid.domain)) this.store.getUserRoute(jid.bare).catch(() => {});
    }
  }

  async routeRemote(stanza: Element): Promise<void> {
    if (!this.remote) return this.bounce(stanza, new StanzaError('remote-server-not-found', 'federation is not enabled on this server'));
    await this.remote.send(stanza);
  }

  private async routeIq(stanza: Element, from: Jid, to: Jid, session?: ClientSession): Promise<void> {
    const type = stanza.attrs.type;
    if (to.resource) {
      // Full JID: hand it to that session, whatever the type (RFC 6120 §10.5.3.1).
      if (await this.deliverToFullJid(to, stanza)) return;
      if (type === 'get' || type === 'set') await this.bounce(stanza, new StanzaError('service-unavailable'));
      return;
    }
    if (type !== 'get' && type !== 'set') return; // results and errors to a bare JID or the domain end here
    const payload = stanza.getChildElements()[0]!;
    const target: IqTarget = to.local ? 'account' : 'server';
    const handler = this.iqHandlers.get(`${target} ${payload.attrs.xmlns}`);
    if (!handler) return this.bounce(stanza, new StanzaError('service-unavailable'));
    await this.answerIq({ server: this, stanza, payload, type, from, to, session }, handler);
  }

  /** Runs an iq handler and sends its result or error back to the requester. */
  async answerIq(request: IqRequest, handler: IqHandler, reply: (el: Element) => Promise<unknown> = (el) => this.replyTo(request, el)): Promise<void> {
    const { stanza } = request;
    let result: Element;
    try {
      const payload = await handler(request);
      result = x('iq', { xmlns: NS.CLIENT, type: 'result', id: stanza.attrs.id, from: stanza.attrs.to, to: stanza.attrs.from }, payload ?? undefined);
    } catch (err) {
      if (!(err instanceof StanzaError)) throw err;
      result = errorReply(stanza, err)!;
    }
    await reply(result);
  }

  /** An answer goes straight to the session that asked (no read of its account: a ping is one request). */
  private replyTo({ session, from }: IqRequest, el: Element): Promise<unknown> {
    if (session?.bound && !session.ended && from.toString() === session.jid.toString()) return this.deliver(session.toRecord(), el);
    return this.sendTo(from, el);
  }

  /** Answers a stanza with an error, to its sender (local or remote). Errors are never answered. */
  async bounce(stanza: Element, error: StanzaError): Promise<void> {
    const reply = errorReply(stanza, error);
    if (!reply || !stanza.attrs.from) return;
    if (!reply.attrs.from) reply.attrs.from = this.config.domain;
    const to = parseJid(stanza.attrs.from);
    // A request from a local bare JID was sent by the server on the account's behalf (a XEP-0357
    // publish): its error goes to the modules that wait for answers, like an error arriving from
    // elsewhere, and never to the account's sessions (they sent no such request).
    if (reply.name === 'iq' && to.local && !to.resource && this.isLocalDomain(to.domain)) {
      await this.runHooks('iq', { server: this, stanza: reply, from: parseJid(reply.attrs.from), to });
      return;
    }
    await this.sendTo(to, reply);
  }

  /**
   * Sends a server-generated stanza (result, error, push) to a JID: to the session for a local full
   * JID, to every session for a local bare JID, or out through federation.
   */
  async sendTo(to: Jid, el: Element): Promise<void> {
    if (!this.isLocalDomain(to.domain)) {
      if (this.hostedDomains.has(to.domain)) return; // hosted services take no replies
      return this.routeRemote(el);
    }
    if (!to.local) return;
    if (to.resource) {
      await this.deliverToFullJid(to, el);
      return;
    }
    const { sessions } = await this.store.getUserRoute(to.bare);
    await this.deliverToSessions(sessions, el);
  }

  async deliverToFullJid(to: Jid, el: Element): Promise<boolean> {
    const session = (await this.store.getUserRoute(to.bare)).sessions.find((s) => s.resource === to.resource);
    return session ? this.deliver(session, el) : false;
  }

  /**
   * Posts to one session (unless a delivery filter takes the stanza); false when its socket is gone
   * (the session is then cleaned up by $disconnect).
   */
  async deliver(session: SessionRecord, el: Element, frame = el.toString()): Promise<boolean> {
    for (const filter of this.deliveryFilters) if (await filter({ server: this, session, stanza: el })) return true;
    return this.sender.send(session.connectionId, frame, sessionHint(session));
  }

  /** Posts to several sessions in parallel (bounded); resolves to how many took it. */
  async deliverToSessions(sessions: SessionRecord[], el: Element): Promise<number> {
    const frame = el.toString();
    let delivered = 0;
    await forEachBounded(sessions, 16, async (s) => {
      if (await this.deliver(s, el, frame)) delivered++;
    });
    return delivered;
  }
}
