/**
 * `npm start`: the whole backend on this machine (see docs/local-stack.md).
 *
 *   npm start                    persistent data under XMPP_DATA_DIR (default .data)
 *   npm start -- --in-memory     nothing written to disk
 *
 * Settings come from the environment: XMPP_DOMAIN, XMPP_WS_PORT, XMPP_BIND, XMPP_DATA_DIR,
 * XMPP_TABLE, XMPP_REGISTRATION, XMPP_IDLE_SECONDS, XMPP_MAX_LIFETIME_SECONDS, XMPP_DYNAMODB_PORT;
 * federation (on unless XMPP_FEDERATION=false): XMPP_S2S_PORT, XMPP_S2S_ROUTES, XMPP_COMPONENT_PORT,
 * XMPP_COMPONENTS, … (see docs/federation.md); native clients (off with XMPP_C2S=false):
 * XMPP_C2S_PORT (default 5222), XMPP_C2S_TLS_PORT (default 5223) (see docs/native-clients.md).
 */
import { DEFAULT_C2S_PORTS, c2sPortsFromEnv } from '../federation/settings.ts';
import { LocalStackError } from './errors.ts';
import { startLocalStack, type LocalStack } from './stack.ts';
import { webClientHandler } from './web-http.ts';

function usage(): string {
  return 'usage: tsx local/start.ts [--in-memory]\n(settings: XMPP_DOMAIN, XMPP_WS_PORT, XMPP_BIND, XMPP_DATA_DIR, …; see docs/local-stack.md)';
}

async function main(): Promise<void> {
  // The AWS SDK supports this machine's Node 20 until 2027; its notice would only clutter the output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // The local stack runs on the machine's Node 20; the SDK's "Node 22 from 2027" notice is noise here.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(usage());
    return;
  }
  const unknown = args.filter((a) => a !== '--in-memory');
  if (unknown.length > 0) {
    console.error(`unknown argument(s): ${unknown.join(' ')}\n${usage()}`);
    process.exit(2);
  }
  const inMemory = args.includes('--in-memory');
  const off = (value: string | undefined) => /^(0|false|no|off)$/i.test(value ?? '');
  const federationOn = !off(process.env.XMPP_FEDERATION);

  let stack: LocalStack;
  try {
    stack = await startLocalStack({
      inMemory,
      writeInfoFile: true,
      federation: federationOn && {
        // Native clients on 5222 (STARTTLS) and 5223 (direct TLS) unless XMPP_C2S=false.
        c2s: off(process.env.XMPP_C2S) ? undefined : c2sPortsFromEnv(process.env, DEFAULT_C2S_PORTS),
      },
      // Plain HTTP on the WebSocket port, tried in order.
      httpHandlers: [webClientHandler()],
      logger: {
        info: (m) => {
          if (process.env.XMPP_LOG_LEVEL?.toLowerCase() === 'debug') console.log(`[gateway] ${m}`);
        },
        warn: (m) => console.warn(`[gateway] ${m}`),
        error: (m) => console.error(`[gateway] ${m}`),
      },
    });
  } catch (err) {
    if (err instanceof LocalStackError) {
      console.error(`Cannot start the local stack: ${err.message}`);
    } else {
      console.error('Cannot start the local stack:', err);
    }
    process.exit(1);
  }

  console.log(`Web client: ${new URL('/', stack.wsUrl.replace(/^ws/, 'http')).href}`);
  console.log(`XMPP over WebSocket: ${stack.wsUrl} (domain ${stack.domain})`);
  console.log(
    `DynamoDB Local: ${stack.dynamoEndpoint} (table ${stack.tableName}, ${inMemory ? 'in memory' : `data in ${stack.dataDir}`})`,
  );
  console.log(`@connections API: ${stack.connectionsEndpoint} (loopback only)`);
  const fed = stack.federation;
  if (fed) {
    console.log(
      `Federation: server-to-server on ${process.env.XMPP_BIND || '127.0.0.1'}:${fed.s2sPort}` +
        (fed.componentPort !== undefined ? `, components on ${fed.componentPort}` : '') +
        ` (self-signed certificate${inMemory ? ' in memory' : ` in ${stack.dataDir}/federation`})`,
    );
    if (fed.c2sPort !== undefined || fed.c2sTlsPort !== undefined) {
      console.log(
        `Native XMPP clients: ${process.env.XMPP_BIND || '127.0.0.1'}` +
          (fed.c2sPort !== undefined ? `:${fed.c2sPort} (STARTTLS)` : '') +
          (fed.c2sTlsPort !== undefined ? `${fed.c2sPort !== undefined ? ', ' : ':'}${fed.c2sTlsPort} (direct TLS)` : '') +
          ' with the same certificate',
      );
    }
  } else {
    console.log('Federation and native clients: off (XMPP_FEDERATION=false)');
  }
  console.log(`In-band registration: ${process.env.XMPP_REGISTRATION === 'true' ? 'on' : 'off'}. Press Ctrl+C to stop.`);

  // Ctrl+C reaches this process twice (from the terminal and relayed by tsx): a second signal
  // forces the exit only when it comes a while after the first.
  let stoppingSince = 0;
  const shutdown = (signal: NodeJS.Signals) => {
    if (stoppingSince) {
      if (Date.now() - stoppingSince < 1500) return;
      console.error(`${signal} again: exiting without a clean shutdown`);
      process.exit(1);
    }
    stoppingSince = Date.now();
    console.log(`${signal}: stopping…`);
    stack.stop().then(
      () => process.exit(0),
      (err) => {
        console.error('Error during shutdown:', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
