/** A client's connection as the core sees it while processing its frames. */
import { Jid } from '../jid.ts';
import type { Element } from '../xml/element.ts';
import type { SessionChanges } from '../storage/store.ts';
import type { ConnectionState, SessionRecord } from './types.ts';
import type { XmppServer } from './server.ts';

export class ClientSession {
  private dirty = false;
  /** Set once the session's end hooks ran (they run once, however the session ends). */
  ended = false;

  constructor(
    readonly server: XmppServer,
    public state: ConnectionState,
  ) {}

  get id(): string {
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

  /** Changes this connection's stream state (committed at the end of the frame). */
  update(changes: Partial<ConnectionState>): void {
    Object.assign(this.state, changes);
    this.dirty = true;
  }

  get isDirty(): boolean {
    return this.dirty;
  }

  clean(): void {
    this.dirty = false;
  }

  /**
   * Changes what other connections see of this session (its session item, by attribute update) and
   * the state's copy of it. Resolves false when the session item is no longer this connection's
   * (replaced by a newer session with the same resource).
   */
  async updateSession(changes: SessionChanges): Promise<boolean> {
    const { presence, ...mirrored } = changes;
    this.update(mirrored);
    return this.server.store.updateSession(this.bare, this.state.resource!, this.state.id, changes);
  }

  /** Sends to this connection; resolves false when the socket is gone. */
  send(el: Element | string): Promise<boolean> {
    return this.server.sender.send(this.state.id, typeof el === 'string' ? el : el.toString());
  }

  /** This session as other sessions see it (the session item in the store). */
  toRecord(): SessionRecord {
    return {
      bare: this.bare,
      resource: this.state.resource!,
      connectionId: this.state.id,
      available: this.state.available ?? false,
      interested: this.state.interested ?? false,
      priority: this.state.priority ?? 0,
      boundAt: this.state.connectedAt,
    };
  }
}
