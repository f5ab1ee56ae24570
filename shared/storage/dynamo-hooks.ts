/**
 * Hooks around a store's DynamoDB calls, the same whichever client carries them (the SDK's, or the
 * lean one of the stream handler: lean-dynamodb.ts): the frame's write gate, injected faults in
 * tests, the benchmark's request counter. On the SDK's client they become middleware.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { LeanDynamoClient } from './lean-dynamodb.ts';

/** One call: the SDK's command name (e.g. 'GetItemCommand') and the document client's input (hooks may add to it). */
export interface DynamoCall {
  readonly name: string;
  readonly input: Record<string, any>;
}

/** Runs around a call (or one attempt of it): `next()` sends it and resolves with its output. */
export type DynamoCallHook = (call: DynamoCall, next: () => Promise<Record<string, any>>) => Promise<Record<string, any>>;

/** A store's client as hooks see it. Hooks added earlier run outside those added later. */
export interface DynamoHooks {
  /** Around every call, its retries included. */
  aroundCall(name: string, hook: DynamoCallHook): void;
  /** Around every attempt (inside the retries: what a throttling answer would be). */
  aroundAttempt(name: string, hook: DynamoCallHook): void;
  /** Whether a hook of this name was added already (a client shared by several stores). */
  has(name: string): boolean;
}

export function leanClientHooks(client: LeanDynamoClient): DynamoHooks {
  const names = new Set<string>();
  return {
    aroundCall(name, hook) {
      names.add(name);
      client.callHooks.push(hook);
    },
    aroundAttempt(name, hook) {
      names.add(name);
      client.attemptHooks.push(hook);
    },
    has: (name) => names.has(name),
  };
}

export function sdkClientHooks(client: DynamoDBClient): DynamoHooks {
  type Next = (args: { input: object }) => Promise<{ output: object }>;
  // One shape serves both steps: it reads only the input and the output.
  const middleware = (hook: DynamoCallHook) => (next: Next, context: { commandName?: string }) => async (args: { input: object }) => {
    let result: Awaited<ReturnType<Next>> | undefined;
    await hook({ name: context.commandName ?? 'Unknown', input: args.input as Record<string, any> }, async () => {
      result = await next(args);
      return result.output as Record<string, any>;
    });
    return result!;
  };
  return {
    // initialize: outside the retries.
    aroundCall: (name, hook) => client.middlewareStack.add(middleware(hook) as never, { step: 'initialize', priority: 'high', name }),
    // finalizeRequest at low priority: inside them, each attempt.
    aroundAttempt: (name, hook) => client.middlewareStack.add(middleware(hook) as never, { step: 'finalizeRequest', priority: 'low', name }),
    has: (name) => client.middlewareStack.identify().some((n) => n.startsWith(name)),
  };
}

/** Hooks for an SDK client made later, on first use: kept until it is made, then added to it. */
export function lateSdkClientHooks(): DynamoHooks & { attach(client: DynamoDBClient): void } {
  const names = new Set<string>();
  const pending: Array<(hooks: DynamoHooks) => void> = [];
  let attached: DynamoHooks | undefined;
  const add = (name: string, f: (hooks: DynamoHooks) => void) => {
    names.add(name);
    if (attached) f(attached);
    else pending.push(f);
  };
  return {
    aroundCall: (name, hook) => add(name, (h) => h.aroundCall(name, hook)),
    aroundAttempt: (name, hook) => add(name, (h) => h.aroundAttempt(name, hook)),
    has: (name) => names.has(name),
    attach(client) {
      attached = sdkClientHooks(client);
      for (const f of pending.splice(0)) f(attached);
    },
  };
}
