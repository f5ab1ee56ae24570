/**
 * The layering the code keeps (docs/architecture.md), checked by `npm run lint:deps` and by
 * test/unit/architecture.test.ts:
 *   adapters (lambdas, federation, local, cli) → core → modules → lib → storage / xml / sasl
 * A feature module is one file (or one folder) that registers with the core; it may use lib/,
 * storage and the core's types, never another module, so dropping it from modules/index.ts drops
 * the feature and nothing else. Of the core it sees the module API (core/registry.ts: Registry at
 * setup, ModuleServer in events), never the server's internals.
 */
const RUNTIME = { dependencyTypesNot: ['type-only'] };

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import cycle (of values; type-only imports vanish at runtime) makes load order and ownership unclear.',
      from: {},
      to: { circular: true, viaOnly: RUNTIME },
    },
    {
      name: 'modules-are-independent',
      severity: 'error',
      comment: 'A module uses what it shares with another through shared/lib/, not by importing it.',
      from: { path: '^shared/modules/([^/.]+)', pathNot: '^shared/modules/index\\.ts$' },
      to: { path: '^shared/modules/', pathNot: ['^shared/modules/$1(/|\\.ts$)'] },
    },
    {
      name: 'modules-see-the-module-api',
      severity: 'error',
      comment: 'Modules and lib reach the server through core/registry.ts (Registry at setup, ModuleServer in events) and the core types, not its internals (server, session manager, stream).',
      from: { path: '^shared/(modules|lib)/' },
      to: { path: '^shared/core/', pathNot: '^shared/core/(registry|session|types|bounded|bare-jid-targets)\\.ts$' },
    },
    {
      name: 'only-the-assembly-knows-modules',
      severity: 'error',
      comment: 'Below and beside the modules nothing names a feature: only core/create.ts assembles them.',
      from: { path: '^(shared|lambdas|federation|local|cli|cdk)/', pathNot: ['^shared/modules/', '^shared/core/create\\.ts$'] },
      to: { path: '^shared/modules/' },
    },
    {
      name: 'dynamodb-only-in-storage',
      severity: 'error',
      comment: 'Keys, items and the DynamoDB client belong to shared/storage/ (local/ and bench/ set up tables).',
      from: { path: '^(shared|lambdas|federation|cli)/', pathNot: '^shared/storage/' },
      to: { path: '@aws-sdk/(client-dynamodb|lib-dynamodb|util-dynamodb)', ...RUNTIME },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
