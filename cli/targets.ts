/**
 * Where xmppctl works: the local stack's DynamoDB Local, or a deployed stack's table.
 *
 * Locally, a running `npm start` publishes its endpoints in `<data dir>/local-stack.json`; when no
 * stack runs, xmppctl starts DynamoDB Local on the same data directory for the one command.
 */
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureTable } from '../shared/storage/table.ts';
import { localDynamoClient, startDynamoDbLocal } from '../local/dynamodb.ts';
import { LOCAL_STACK_INFO_FILE, type LocalStackInfo } from '../local/stack.ts';

export interface Target {
  domain: string;
  tableName: string;
  endpoint?: string;
  /** The @connections endpoint, when sockets can be open (a running stack): account removal tells them. */
  connectionsEndpoint?: string;
  /** The outbound federation queue (a deployed stack with federation): contacts elsewhere are told too. */
  s2sQueueUrl?: string;
  /** The web client's address (invitation landing pages), when there is one. */
  webUrl?: string;
  close(): Promise<void>;
}

/** The running local stack's endpoints, or undefined when none runs. */
export function readLocalStackInfo(dataDir: string): LocalStackInfo | undefined {
  try {
    const info = JSON.parse(readFileSync(join(dataDir, LOCAL_STACK_INFO_FILE), 'utf8')) as LocalStackInfo;
    process.kill(info.pid, 0); // throws when that process is gone
    return info;
  } catch {
    return undefined;
  }
}

export async function openLocalTarget(): Promise<Target> {
  const dataDir = process.env.XMPP_DATA_DIR || '.data';
  // DynamoDB Local accepts any credentials; the SDK only needs some to sign.
  process.env.AWS_REGION ??= 'local';
  process.env.AWS_ACCESS_KEY_ID ??= 'local';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'local';
  const running = readLocalStackInfo(dataDir);
  if (running) {
    return {
      domain: running.domain,
      tableName: running.tableName,
      endpoint: running.dynamoEndpoint,
      connectionsEndpoint: running.connectionsEndpoint,
      webUrl: new URL('/', running.wsUrl.replace(/^ws/, 'http')).href,
      close: async () => {},
    };
  }
  const tableName = process.env.XMPP_TABLE || 'xmpp';
  const db = await startDynamoDbLocal({ dataDir });
  await ensureTable(localDynamoClient(db.endpoint), tableName);
  return { domain: (process.env.XMPP_DOMAIN || 'localhost').toLowerCase(), tableName, endpoint: db.endpoint, close: () => db.stop() };
}

export async function openStackTarget(stackName: string, region?: string): Promise<Target> {
  const cfn = new CloudFormationClient({ region });
  const out = await cfn.send(new DescribeStacksCommand({ StackName: stackName }));
  const outputs = new Map((out.Stacks?.[0]?.Outputs ?? []).map((o) => [o.OutputKey, o.OutputValue]));
  const tableName = outputs.get('TableName');
  const domain = outputs.get('Domain');
  if (!tableName || !domain) throw new Error(`stack ${stackName} has no TableName/Domain outputs; is it an XMPP stack?`);
  if (region) process.env.AWS_REGION = region;
  return {
    domain,
    tableName,
    connectionsEndpoint: outputs.get('ConnectionsEndpoint'),
    s2sQueueUrl: outputs.get('S2sQueueUrl'),
    webUrl: outputs.get('WebClientUrl'),
    close: async () => {},
  };
}
