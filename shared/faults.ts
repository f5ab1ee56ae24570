/**
 * Fault injection for tests of the distributed core (never set in the cloud): `XMPP_FAULTS` makes a
 * chosen fraction of DynamoDB calls fail with throttling, and of frame invocations crash right
 * after one of their steps (a DynamoDB call or a post that took effect). Failing posts (410, time
 * outs) are the local gateway's part (local/gateway.ts), where the @connections API lives.
 *
 *   XMPP_FAULTS="throttle=0.05,crash=0.01,gone=0.02,timeout=0.01"
 *
 * A throttle is thrown below the client's retry layer, exactly where DynamoDB's own
 * ProvisionedThroughputExceededException surfaces, so the backoff sees it as the real thing.
 * A crash is thrown after the step took effect and is not retried by anything but the queue.
 */
import { currentFrame } from './storage/frame-context.ts';
import type { DynamoHooks } from './storage/dynamo-hooks.ts';

export interface FaultSettings {
  /** Fraction of DynamoDB requests (each attempt) answered with a throttling error. */
  throttle: number;
  /** Fraction of steps (DynamoDB calls, posts) of a frame after which the invocation crashes. */
  crash: number;
  /** Fraction of @connections posts answered 410 with the connection closed (local gateway). */
  gone: number;
  /** Fraction of @connections posts never answered, so the sender's request times out (local gateway). */
  timeout: number;
}

const NAMES = ['throttle', 'crash', 'gone', 'timeout'] as const;

/** Parses `XMPP_FAULTS`; undefined when unset or empty. Throws on anything it does not understand. */
export function parseFaults(value: string | undefined): FaultSettings | undefined {
  if (!value?.trim()) return undefined;
  const settings: FaultSettings = { throttle: 0, crash: 0, gone: 0, timeout: 0 };
  for (const part of value.split(',')) {
    const [name, raw] = part.split('=').map((s) => s.trim());
    const rate = Number(raw);
    if (!(NAMES as readonly string[]).includes(name ?? '') || raw === undefined || !Number.isFinite(rate) || rate < 0 || rate > 1) {
      throw new Error(`XMPP_FAULTS: "${part}" is not one of ${NAMES.map((n) => `${n}=<0..1>`).join(', ')}`);
    }
    settings[name as (typeof NAMES)[number]] = rate;
  }
  return settings;
}

export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): FaultSettings | undefined {
  return parseFaults(env.XMPP_FAULTS);
}

/** The error an injected crash throws (a Lambda invocation that died half-way). */
export class InjectedCrash extends Error {
  constructor(step: string) {
    super(`injected crash after ${step}`);
    this.name = 'InjectedCrash';
  }
}

/** Throws InjectedCrash with the configured probability, only inside a frame the queue will redeliver. */
export function maybeCrash(faults: FaultSettings | undefined, step: string): void {
  if (!faults?.crash || !currentFrame()?.id) return;
  if (Math.random() < faults.crash) throw new InjectedCrash(step);
}

/** Adds throttling (inside the client's retries) and crashes (after a call took effect) to a store's DynamoDB client. */
export function injectDynamoFaults(hooks: DynamoHooks, faults: FaultSettings): void {
  if (faults.throttle > 0) {
    hooks.aroundAttempt('injectedThrottling', async (_call, next) => {
      if (Math.random() < faults.throttle) {
        const err = new Error('injected throttling') as Error & { $metadata: object; $fault: string };
        err.name = 'ProvisionedThroughputExceededException';
        err.$metadata = { httpStatusCode: 400, attempts: 1 };
        err.$fault = 'client';
        throw err;
      }
      return next();
    });
  }
  if (faults.crash > 0) {
    hooks.aroundCall('injectedCrash', async (call, next) => {
      const out = await next();
      maybeCrash(faults, `DynamoDB ${call.name}`);
      return out;
    });
  }
}
