/**
 * The DynamoDB document commands the stores send, as plain objects: a class per command (the
 * same names and inputs as @aws-sdk/lib-dynamodb's) that holds its input and, in its type only,
 * its output. Either client carries them: the lean one (lean-dynamodb.ts) directly, the SDK's
 * through sdk-document-client.ts, which makes lib-dynamodb's command of the same name.
 *
 * Why not lib-dynamodb's classes themselves: importing them loads the whole SDK client (about
 * 230 KB of the stream bundle's 550 KB) at every cold start, where nothing else needs it.
 */
import type * as lib from '@aws-sdk/lib-dynamodb';

export abstract class DocCommand<Input, Output> {
  /** Output type only: what `send` resolves with. */
  declare readonly output?: Output;
  constructor(readonly input: Input) {}
}

export class GetCommand extends DocCommand<lib.GetCommandInput, lib.GetCommandOutput> {}
export class PutCommand extends DocCommand<lib.PutCommandInput, lib.PutCommandOutput> {}
export class UpdateCommand extends DocCommand<lib.UpdateCommandInput, lib.UpdateCommandOutput> {}
export class DeleteCommand extends DocCommand<lib.DeleteCommandInput, lib.DeleteCommandOutput> {}
export class QueryCommand extends DocCommand<lib.QueryCommandInput, lib.QueryCommandOutput> {}
export class ScanCommand extends DocCommand<lib.ScanCommandInput, lib.ScanCommandOutput> {}
export class BatchGetCommand extends DocCommand<lib.BatchGetCommandInput, lib.BatchGetCommandOutput> {}
export class BatchWriteCommand extends DocCommand<lib.BatchWriteCommandInput, lib.BatchWriteCommandOutput> {}

export type { QueryCommandInput, ScanCommandInput, BatchGetCommandOutput } from '@aws-sdk/lib-dynamodb';

/** What the stores send their commands to (`TableAccess.doc`). */
export interface DocClient {
  send<Input, Output>(command: DocCommand<Input, Output>): Promise<Output>;
  destroy(): void;
}
