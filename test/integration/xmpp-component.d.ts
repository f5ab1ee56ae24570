/** The part of @xmpp/component (0.13, no published types) the federation test uses. */
declare module '@xmpp/component' {
  import type { Element } from '@xmpp/xml';
  export interface Component {
    /** Milliseconds @xmpp/connection waits for the stream header, the handshake answer and the close (default 2000). */
    timeout: number;
    /** The automatic reconnection @xmpp/component starts with. */
    reconnect: { stop(): void };
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    send(element: Element): Promise<void>;
    on(event: 'stanza', listener: (stanza: Element) => void): void;
    on(event: 'error', listener: (error: Error) => void): void;
  }
  export function component(options: { service: string; domain: string; password: string }): Component;
}
