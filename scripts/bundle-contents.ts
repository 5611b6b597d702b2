import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Metafile } from 'esbuild';
import { HANDLER_ENTRIES, type HandlerName } from '../infra/lifecycle-function';
import { buildLambdaBundle } from './build-lambda-bundles';

/*
 * What each Lambda bundle is made of: builds every bundle as `cdk synth` does (scripts/build-lambda-bundles.ts) and
 * prints, from esbuild's metafile, the minified bytes each package (or, for our own code, each folder) puts into it.
 * Usage: tsx scripts/bundle-contents.ts [handler…] [--files <package>]   (default: every HANDLER_ENTRIES key)
 *   --files <package>  also lists the files of that package (or source folder) in each bundle, largest first.
 */

const PROJECT_ROOT = path.join(__dirname, '..');

/** The package a bundled input belongs to (the innermost node_modules entry), or its source folder for our own code. */
export function partOf(input: string): string {
  const normalized = input.replace(/^[a-z-]+:/, '');
  const at = normalized.lastIndexOf('node_modules/');
  if (at < 0) return path.dirname(normalized).split('/').slice(0, 3).join('/');
  const rest = normalized.slice(at + 'node_modules/'.length).split('/');
  const name = rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? normalized);
  // Nested copies are told apart by their position, e.g. `@smithy/core` under `@aws-sdk/client-acm-pca`.
  const outer = normalized.slice(0, at).split('node_modules/').filter((part) => part !== '').at(-1);
  return outer === undefined || !normalized.slice(0, at).includes('node_modules/') ? name : `${name} (in ${outer.replace(/\/$/, '')})`;
}

/** The groups the bundle tables of docs/performance.md use, by the package names of their parts. */
const GROUPS: readonly (readonly [string, RegExp])[] = [
  ['AWS SDK (@aws-sdk, @smithy, @aws-crypto and their helpers)', /^(@aws-sdk\/|@smithy\/|@aws-crypto\/|@aws\/|mnemonist|obliterator|uuid|fast-xml-parser|strnum|bowser|tslib$)/],
  ['X.509 (@peculiar/*, asn1js, pvtsutils, pvutils, tsyringe, reflect-metadata)', /^(@peculiar\/|asn1js|pvtsutils|pvutils|tsyringe|reflect-metadata|tslib \(in tsyringe\))/],
  ['zod', /^zod/],
  ['Powertools', /^@aws-lambda-powertools\//],
  ['our own code (functions/)', /^functions(\/|$)/],
];

/** The group of a part (see GROUPS), or "other". */
export const groupOf = (part: string): string => GROUPS.find(([, pattern]) => pattern.test(part))?.[0] ?? 'other';

export function bytesByPart(metafile: Metafile): Map<string, number> {
  const parts = new Map<string, number>();
  for (const output of Object.values(metafile.outputs)) {
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const part = partOf(input);
      parts.set(part, (parts.get(part) ?? 0) + bytesInOutput);
    }
  }
  return parts;
}

async function main(args: readonly string[]): Promise<void> {
  const filesAt = args.indexOf('--files');
  const filesOf = filesAt < 0 ? undefined : args[filesAt + 1];
  const names = args.filter((arg, index) => !arg.startsWith('--') && (filesAt < 0 || index !== filesAt + 1)) as HandlerName[];
  const workDir = mkdtempSync(path.join(tmpdir(), 'bundle-contents-'));
  try {
    for (const name of names.length > 0 ? names : (Object.keys(HANDLER_ENTRIES) as HandlerName[])) {
      const entry = HANDLER_ENTRIES[name];
      if (entry === undefined) throw new Error(`No handler named ${name}; known: ${Object.keys(HANDLER_ENTRIES).join(', ')}`);
      const { outfile, metafile } = await buildLambdaBundle(entry, path.join(workDir, name));
      process.stdout.write(`\n${name}: ${(statSync(outfile).size / 1024).toFixed(1)} KiB\n`);
      const parts = bytesByPart(metafile);
      const groups = new Map<string, number>();
      for (const [part, bytes] of parts) groups.set(groupOf(part), (groups.get(groupOf(part)) ?? 0) + bytes);
      for (const [group, bytes] of [...groups].sort((a, b) => b[1] - a[1])) process.stdout.write(`  ${(bytes / 1024).toFixed(1).padStart(7)}  ${group}\n`);
      process.stdout.write('  by package:\n');
      for (const [part, bytes] of [...parts].sort((a, b) => b[1] - a[1])) process.stdout.write(`    ${(bytes / 1024).toFixed(1).padStart(7)}  ${part}  [${groupOf(part)}]\n`);
      if (filesOf !== undefined) {
        const files = Object.values(metafile.outputs)
          .flatMap((output) => Object.entries(output.inputs))
          .filter(([input]) => partOf(input) === filesOf || partOf(input).startsWith(filesOf))
          .sort((a, b) => b[1].bytesInOutput - a[1].bytesInOutput);
        process.stdout.write(`  files of ${filesOf}:\n`);
        for (const [input, { bytesInOutput }] of files) process.stdout.write(`    ${(bytesInOutput / 1024).toFixed(1).padStart(7)}  ${path.relative(PROJECT_ROOT, input)}\n`);
      }
    }
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  });
}
