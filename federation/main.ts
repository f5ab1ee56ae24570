/**
 * Entry point of the federation service (the Fargate task; `cdk/federation.Dockerfile` bundles it).
 *
 * Environment (set by the CDK construct in the cloud):
 *   XMPP_DOMAIN, XMPP_TABLE, XMPP_CONNECTIONS_ENDPOINT    the routing core, as for the stream Lambda
 *   XMPP_BIND (default 127.0.0.1), XMPP_S2S_PORT (default 5269), XMPP_S2S_DIRECT_TLS_PORT (XEP-0368),
 *   XMPP_COMPONENT_PORT (XEP-0114) with XMPP_COMPONENTS="domain=secret,…"
 *   XMPP_DIALBACK_SECRET    XEP-0185 secret (random per process when unset: keys then die with it)
 *   XMPP_TLS_SECRET         JSON {"cert","key"} (Secrets Manager); or XMPP_TLS_CERT_FILE + XMPP_TLS_KEY_FILE
 *   XMPP_S2S_QUEUE_URL      the outbound queue the stream Lambda fills
 *   XMPP_S2S_ROUTES         "domain=host:port,…" overrides DNS
 *   XMPP_S2S_TIMEOUT_SECONDS, XMPP_S2S_PING_SECONDS, XMPP_S2S_IDLE_SECONDS   see docs/federation.md
 *   XMPP_C2S_PORT, XMPP_C2S_TLS_PORT        native clients (STARTTLS, direct TLS); off when unset
 *   XMPP_C2S_QUEUE_URL_PREFIX               the task's mailbox queue is <prefix><task id>.fifo (docs/native-clients.md)
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../shared/config.ts';
import { withTurnSecret } from '../shared/turn-secret.ts';
import { log } from '../shared/log.ts';
import { federationSettingsFromEnv } from './settings.ts';
import { startFederation } from './service.ts';

async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // Native clients get the same features as WebSocket ones: the TURN secret is read as the stream Lambda reads it.
  const config = loadConfig(await withTurnSecret(process.env));
  const settings = federationSettingsFromEnv(process.env);
  if (!process.env.XMPP_DIALBACK_SECRET) log.warn('XMPP_DIALBACK_SECRET is not set: using a random secret for this process');
  const service = await startFederation({
    config,
    ...settings,
    dialbackSecret: process.env.XMPP_DIALBACK_SECRET || randomBytes(32).toString('hex'),
    queueUrl: config.s2sQueueUrl,
    // Without a queue (a local run of this entry point), stanzas can be posted to a loopback intake.
    httpIntake: config.s2sQueueUrl ? undefined : {},
  });
  if (service.intakeUrl) log.info('loopback intake (set XMPP_S2S_ENDPOINT to this for the stream handler)', { url: service.intakeUrl });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('federation service stopping', { signal });
    service.stop().then(
      () => process.exit(0),
      (err) => {
        log.error('shutdown failed', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err) => {
  log.error('federation service failed to start', { error: (err as Error).stack ?? String(err) });
  process.exit(1);
});
