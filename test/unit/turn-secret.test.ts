/**
 * The stream Lambda's TURN secret comes from Secrets Manager by ARN (AWS: the edge we cannot reach,
 * so the reader is a stand-in here); what it yields is what the XEP-0215 module signs with.
 */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { turnCredentials } from '../../shared/modules/external-services.ts';
import { withTurnSecret } from '../../shared/turn-secret.ts';

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:turn-AbCdEf';

describe('TURN secret by ARN', () => {
  it('reads the secret once when only the ARN is set, and signs credentials with it', async () => {
    const asked: string[] = [];
    const env = await withTurnSecret({ XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET_ARN: ARN }, async (arn) => {
      asked.push(arn);
      return 'from-secrets-manager\n';
    });
    expect(asked).toEqual([ARN]);
    const turn = loadConfig(env).turn!;
    expect(turn.secret).toBe('from-secrets-manager');
    const { username, password } = turnCredentials(turn.secret, 'ann@example.com', 1_900_000_000);
    expect(username).toBe('1900000000:ann@example.com');
    expect(password).toBe(createHmac('sha1', 'from-secrets-manager').update(username).digest('base64'));
  });

  it('leaves an environment without the ARN, or with the secret itself, as it is', async () => {
    const never = async () => {
      throw new Error('not asked');
    };
    const plain = { XMPP_DOMAIN: 'example.com' };
    expect(await withTurnSecret(plain, never)).toBe(plain);
    const direct = { XMPP_TURN_HOST: 'turn.example.com', XMPP_TURN_SECRET: 's', XMPP_TURN_SECRET_ARN: ARN };
    expect(await withTurnSecret(direct, never)).toBe(direct);
  });
});
