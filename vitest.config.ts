import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Integration suites start DynamoDB Local (a JVM) and real clients: give them room.
    testTimeout: 30_000,
    hookTimeout: 120_000,
    // Two cores: run files two at a time so JVM start-ups don't starve each other.
    maxWorkers: 2,
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
