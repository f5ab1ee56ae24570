import { describe, expect, it } from 'vitest';
import { dialbackKey, verifyDialbackKey } from '../../federation/dialback.ts';
import { handshakeDigest } from '../../federation/component.ts';

describe('dialback keys (XEP-0185)', () => {
  // The example of XEP-0185 §3: originating example.org, receiving xmpp.example.com.
  const secret = 's3cr3tf0rd14lb4ck';
  const key = '37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643';

  it('generates the XEP-0185 example key', () => {
    expect(dialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000229F')).toBe(key);
  });

  it('verifies the key the authoritative server issued, white space around it ignored', () => {
    expect(verifyDialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000229F', key)).toBe(true);
    expect(verifyDialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000229F', `\n  ${key}\n`)).toBe(true);
  });

  it('refuses a key for another stream, another pair of domains, or another secret', () => {
    expect(verifyDialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000230F', key)).toBe(false);
    expect(verifyDialbackKey(secret, 'example.org', 'xmpp.example.com', 'D60000229F', key)).toBe(false);
    expect(verifyDialbackKey('another secret', 'xmpp.example.com', 'example.org', 'D60000229F', key)).toBe(false);
    expect(verifyDialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000229F', key.slice(0, 63))).toBe(false);
    expect(verifyDialbackKey(secret, 'xmpp.example.com', 'example.org', 'D60000229F', '')).toBe(false);
  });
});

describe('component handshake (XEP-0114)', () => {
  it('is the lowercase hex SHA-1 of stream id + secret (XEP-0114 §3; the example gives no secret, so a known answer)', () => {
    expect(handshakeDigest('3BF96D32', 'sekrit')).toBe('5547269269506c23b408f2b69c0f74efdd03b4fb');
  });
});
