/**
 * One DynamoDB Local (in memory) for the whole test run: each test file's stack gets its own table
 * on it, instead of every file starting a JVM of its own (2 cores in CI).
 */
import type { TestProject } from 'vitest/node';
import { startDynamoDbLocal } from '../local/dynamodb.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamoEndpoint: string;
  }
}

export default async function setup(project: TestProject) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const db = await startDynamoDbLocal({ inMemory: true });
  project.provide('dynamoEndpoint', db.endpoint);
  return () => db.stop();
}
