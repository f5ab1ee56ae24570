/** A client's connection as the core sees it while processing its frames. */
import { isDeepStrictEqual } from 'node:util';
import { Jid } from '../jid.ts';
import type { Element } from '../xml/element.ts';
import type { SessionChanges } from '../storage/store.ts';
import type { Account, ConnectionState, SessionRecord } from './types.ts';
import type { XmppServer } from './server.ts';
import { isStanzaFrame } from '../transport/sm-sender.ts';

export class ClientSession {
  private dirty = false;
  /** Set once the session's end hooks ran (they run once, however the session ends). */
  ended = false;

  constructor(
    readonly server: XmppServer,
    public state: ConnectionState,
  ) {}

  /**
   * The session's id: the connection it began on. Session items, room occupancy and carbons name
   * it; it differs from the connection (socket) only after a XEP-0198 resumption.
   */
  get id(): string {
    return this.state.session ?? this.state.id;
  }

  /** The connection (socket) this session's frames arrive on now. */
  get socket(): string {
    return this.state.id;
  }

  /** The bound full JID; only valid once the stage is 'bound'. */
  get jid(): Jid {
    const [local, domain] = this.state.user!.split('@') as [string, string];
    return new Jid(local, domain, this.state.resource);
  }

  get bare(): string {
    return this.state.user!;
  }

  get bound(): boolean {
    return this.state.stage === 'bound';
  }

  /**
   * Changes this connection's stream state (committed at the end of the frame). Setting what is
   * already there changes nothing: a status-only presence change then commits no state (one
   * request and one round trip less).
   */
  update(changes: Partial<ConnectionState>): void {
    const state = this.state as unknown as Record<string, unknown>;
    for (const [key, value] of Object.entries(changes)) {
      if (isDeepStrictEqual(state[key], value)) continue;
      state[key] = value;
      this.dirty = true;
    }
  }

  /**
   * Commits the connection state now, in the middle of a frame (a resumption, before the session
   * moves to this connection); the frame's own commit at its end follows on from it. False when
   * another frame or connection changed it meanwhile.
   */
  async commitNow(): Promise<boolean> {
    const base = this.state.version;
    this.state.version = base + 1;
    let committed = false;
    try {
      committed = await this.server.store.putConnection(this.state, base);
    } finally {
      if (!committed) this.state.version = base;
    }
    return committed;
  }

  get isDirty(): boolean {
    return this.dirty;
  }

  clean(): void {
    this.dirty = false;
  }

  /**
   * Changes what other connections see of this session (its session item, by attribute update) and
   * the state's copy of it. Resolves with the account as written (sessions are attributes of the
   * account item), or undefined when the session is no longer this connection's (replaced by a
   * newer session with the same resource).
   */
  async updateSession(changes: SessionChanges): Promise<Account | undefined> {
    // When it became available: a message to the bare JID routed before that did not reach it.
    if (changes.available === true && !this.state.available) changes = { ...changes, availableAt: Date.now() };
    const { presence, sm, inactive, smOpenUntil, availableAt, ...mirrored } = changes;
    this.update(inactive === undefined ? mirrored : { ...mirrored, inactive: inactive ?? undefined });
    return this.server.store.updateSession(this.bare, this.state.resource!, this.id, changes);
  }

  /**
   * Sends to this session: a stanza is addressed to the session (numbered under XEP-0198, and it
   * reaches whichever socket carries the session), anything else goes to this socket as it is.
   * Resolves false when the socket is gone (and nothing keeps the stanza for a resumption).
   */
  send(el: Element | string): Promise<boolean> {
    const frame = typeof el === 'string' ? el : el.toString();
    return isStanzaFrame(frame) ? this.server.sender.send(this.id, frame, { sm: this.state.sm !== undefined }) : this.server.socketSender.send(this.socket, frame);
  }

  /** This session as other sessions see it (the session item in the store). */
  toRecord(): SessionRecord {
    return {
      bare: this.bare,
      resource: this.state.resource!,
      connectionId: this.id,
      available: this.state.available ?? false,
      interested: this.state.interested ?? false,
      priority: this.state.priority ?? 0,
      boundAt: this.state.connectedAt,
      sm: this.state.sm !== undefined,
      ...(this.state.inactive ? { inactive: true } : {}),
    };
  }
}
