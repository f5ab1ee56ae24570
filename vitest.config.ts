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
    // The integration suites drive real servers (DynamoDB Local's JVM, Prosody, Chromium) on two
    // shared cores; one retry absorbs a scheduling hiccup, a test that fails twice fails the run.
    // Seen once in ~8 full runs: federation.test.ts "serves an XEP-0114 component…" (not reproduced
    // alone or under load since; see the session note).
    retry: 1,
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
