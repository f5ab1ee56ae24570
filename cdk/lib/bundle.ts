import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AssetHashType, DockerImage } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { buildSync } from 'esbuild';

/** The repository root (this file is cdk/lib/bundle.ts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Lets CommonJS dependencies inside the ESM bundle `require()` Node built-ins. */
const REQUIRE_SHIM = "import { createRequire as __xmppCreateRequire } from 'node:module'; const require = __xmppCreateRequire(import.meta.url);";

export interface BundleOptions {
  /** Minify the output (default true). Source maps are always written beside it. */
  readonly minify?: boolean;
}

/**
 * Lambda code bundled in-process with the locally installed esbuild: no Docker, no child process.
 * The output is an ESM file, `index.mjs` (handler `index.<export>`), the chunks it imports on
 * demand (`chunks/`), and their source maps; the function should run with
 * NODE_OPTIONS=--enable-source-maps.
 *
 * Two details matter (see DESIGN.md §7): the asset hash is computed from the bundle output
 * (`AssetHashType.OUTPUT`), and the bundling options carry the entry path, because CDK caches staged
 * assets by a key built from the JSON of those options, in which a `local.tryBundle` function is
 * invisible: without it every function would silently get the first bundle.
 */
export function bundledCode(entry: string, options: BundleOptions = {}): lambda.Code {
  const absEntry = path.resolve(entry);
  if (!existsSync(absEntry)) {
    throw new Error(`Lambda entry ${path.relative(process.cwd(), absEntry) || absEntry} does not exist`);
  }
  const minify = options.minify ?? true;
  return lambda.Code.fromAsset(path.dirname(absEntry), {
    assetHashType: AssetHashType.OUTPUT,
    bundling: {
      // Never pulled: local bundling below either succeeds or throws.
      image: DockerImage.fromRegistry('public.ecr.aws/docker/library/node:22-slim'),
      command: ['esbuild', absEntry, `--minify=${minify}`],
      local: {
        tryBundle(outputDir: string): boolean {
          const result = buildSync({
            entryPoints: { index: absEntry },
            // Code the handler imports on demand (the S3 and SQS clients) goes into chunks of its
            // own, read only when first needed; a cold start loads index.mjs and the chunks it imports statically.
            outdir: outputDir,
            splitting: true,
            chunkNames: 'chunks/[name]-[hash]',
            outExtension: { '.js': '.mjs' },
            absWorkingDir: REPO_ROOT,
            bundle: true,
            platform: 'node',
            target: 'node22',
            format: 'esm',
            mainFields: ['module', 'main'],
            banner: { js: REQUIRE_SHIM },
            minify,
            sourcemap: true,
            sourcesContent: false,
            legalComments: 'none',
            logLevel: 'silent',
            metafile: true,
          });
          // Name sources relative to the repository (e.g. "lambdas/stream.ts") rather than to the
          // temporary bundling directory, so stack traces read like the source tree.
          for (const mapFile of Object.keys(result.metafile.outputs).filter((f) => f.endsWith('.map'))) {
            const file = path.resolve(REPO_ROOT, mapFile);
            const map = JSON.parse(readFileSync(file, 'utf8')) as { sources: string[] };
            map.sources = map.sources.map((s) => path.relative(REPO_ROOT, path.resolve(path.dirname(file), s)).split(path.sep).join('/'));
            writeFileSync(file, JSON.stringify(map));
          }
          for (const warning of result.warnings) {
            process.stderr.write(`esbuild warning (${path.basename(absEntry)}): ${warning.text}\n`);
          }
          return true;
        },
      },
    },
  });
}
