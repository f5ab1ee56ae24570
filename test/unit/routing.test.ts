import { describe, expect, it } from 'vitest';
import { bareJidTargets } from '../../shared/core/bare-jid-targets.ts';
import type { SessionRecord } from '../../shared/core/types.ts';

const session = (resource: string, priority: number, available = true): SessionRecord => ({
  bare: 'juliet@example.com',
  resource,
  connectionId: resource,
  available,
  interested: true,
  priority,
  boundAt: 0,
});

describe('message routing to a bare JID (RFC 6121 §8.5.2)', () => {
  it('goes to the available resources with the highest priority', () => {
    const targets = bareJidTargets([session('low', 1), session('high', 5), session('high2', 5), session('off', 50, false)]);
    expect(targets.map((s) => s.resource).sort()).toEqual(['high', 'high2']);
  });

  it('never goes to negative priorities: the message is stored offline instead', () => {
    expect(bareJidTargets([session('neg', -1)])).toEqual([]);
    expect(bareJidTargets([session('neg', -1), session('zero', 0)]).map((s) => s.resource)).toEqual(['zero']);
  });

  it('skips sessions that never sent presence', () => {
    expect(bareJidTargets([session('bound-only', 10, false)])).toEqual([]);
  });
});
