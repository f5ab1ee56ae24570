/**
 * The layering rules of docs/architecture.md, checked on the tree as it is: a change that makes a
 * module import another, builds a key outside storage, reads the environment inside a module, or
 * adds an import cycle fails here with the file named.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const CODE_FOLDERS = ['shared', 'lambdas', 'federation', 'local', 'cli', 'cdk', 'bench'];

function sourceFiles(folder: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, folder))) {
    const path = join(folder, name);
    if (statSync(join(ROOT, path)).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.ts$/.test(name) && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

const files = CODE_FOLDERS.flatMap(sourceFiles);
const text = (file: string) => readFileSync(join(ROOT, file), 'utf8');

describe('architecture', () => {
  it('keeps the dependency rules (.dependency-cruiser.cjs): no cycle, modules independent, DynamoDB only in storage', () => {
    const out = execFileSync(join(ROOT, 'node_modules/.bin/depcruise'), [...CODE_FOLDERS, '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], {
      cwd: ROOT,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    const { summary } = JSON.parse(out) as { summary: { violations: { rule: { name: string }; from: string; to: string }[]; totalCruised: number } };
    expect(summary.totalCruised).toBeGreaterThan(150);
    expect(summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`)).toEqual([]);
  });

  it('reads the environment only in configuration, never in a feature module or library', () => {
    const readers = files.filter((f) => /^shared\/(modules|lib)\//.test(f) && /process\.env/.test(text(f)));
    expect(readers).toEqual([]);
  });

  it('builds table keys only in shared/storage/', () => {
    const key = /`(user|conn|room|mucdir|invite|caps|attempts|roster|s2s|instance)#\$\{/;
    const builders = files.filter((f) => !f.startsWith('shared/storage/') && key.test(text(f)));
    expect(builders).toEqual([]);
  });

  it('reaches the table only through storage: no raw document client or Store.db outside shared/storage/', () => {
    const raw = files.filter((f) => /^(shared|lambdas|federation|cli)\//.test(f) && !f.startsWith('shared/storage/') && /\bstore\.db\b|\.db\.doc\b|\.doc\.send\(/.test(text(f)));
    expect(raw).toEqual([]);
  });

  it('says at its top why a source file is longer than 400 lines', () => {
    const long = files.filter((f) => text(f).split('\n').length > 400 && !/Long because:/.test(text(f).split('\n').slice(0, 40).join('\n')));
    expect(long.map((f) => `${f} (${text(f).split('\n').length} lines)`)).toEqual([]);
  });
});
