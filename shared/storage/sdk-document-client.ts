/**
 * The stores' commands (commands.ts) carried by the AWS SDK's document client: where the lean
 * client cannot be used (the Fargate service, whose credentials come from its container
 * endpoint; XMPP_AWS_CLIENT=sdk) and in tests that hook the SDK client's middleware. The SDK is
 * loaded on first use, so a process on the lean client never loads it.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
  type DocClient,
  type DocCommand,
} from './commands.ts';

type Lib = typeof import('@aws-sdk/lib-dynamodb');

/** lib-dynamodb's command for each of ours. */
const sdkCommands = (lib: Lib) =>
  new Map<Function, new (input: any) => any>([
    [GetCommand, lib.GetCommand],
    [PutCommand, lib.PutCommand],
    [UpdateCommand, lib.UpdateCommand],
    [DeleteCommand, lib.DeleteCommand],
    [QueryCommand, lib.QueryCommand],
    [ScanCommand, lib.ScanCommand],
    [BatchGetCommand, lib.BatchGetCommand],
    [BatchWriteCommand, lib.BatchWriteCommand],
  ]);

/** `client`: the SDK's DynamoDB client, or what makes it on first use. */
export function sdkDocumentClient(client: DynamoDBClient | (() => Promise<DynamoDBClient>)): DocClient {
  let ready: Promise<{ doc: DynamoDBDocumentClient; commands: ReturnType<typeof sdkCommands> }> | undefined;
  let base: DynamoDBClient | undefined;
  const load = () =>
    (ready ??= Promise.all([import('@aws-sdk/lib-dynamodb'), typeof client === 'function' ? client() : client]).then(([lib, c]) => {
      base = c;
      return { doc: lib.DynamoDBDocumentClient.from(c, { marshallOptions: { removeUndefinedValues: true } }), commands: sdkCommands(lib) };
    }));
  return {
    async send<Input, Output>(command: DocCommand<Input, Output>): Promise<Output> {
      const { doc, commands } = await load();
      const Sdk = commands.get(command.constructor);
      if (!Sdk) throw new Error(`sdkDocumentClient: ${command.constructor.name} is not a store command`);
      return (await doc.send(new Sdk(command.input))) as Output;
    },
    destroy() {
      base?.destroy();
    },
  };
}
