/**
 * The TURN REST API secret (XEP-0215, modules/external-services.ts) in the cloud: the CDK app keeps
 * it in Secrets Manager and gives the stream Lambda only its ARN (XMPP_TURN_SECRET_ARN), so the
 * secret is in neither the template nor the function's configuration. Read once per execution
 * environment, before the configuration is loaded; the SDK client is loaded only when needed.
 */
export type SecretReader = (arn: string) => Promise<string>;

async function readFromSecretsManager(arn: string): Promise<string> {
  const { SecretsManagerClient, GetSecretValueCommand } = await import('@aws-sdk/client-secrets-manager');
  const out = await new SecretsManagerClient({}).send(new GetSecretValueCommand({ SecretId: arn }));
  if (!out.SecretString) throw new Error(`secret ${arn} has no string value (XMPP_TURN_SECRET_ARN)`);
  return out.SecretString;
}

/** The environment with XMPP_TURN_SECRET filled in from XMPP_TURN_SECRET_ARN when only the ARN is set. */
export async function withTurnSecret(env: NodeJS.ProcessEnv, read: SecretReader = readFromSecretsManager): Promise<NodeJS.ProcessEnv> {
  const arn = env.XMPP_TURN_SECRET_ARN;
  if (!arn || env.XMPP_TURN_SECRET) return env;
  return { ...env, XMPP_TURN_SECRET: (await read(arn)).trim() };
}
