import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { buildLambdaBundle } from '../scripts/build-lambda-bundles';
import { HANDLER_ENTRIES, LAMBDA_BUNDLE_SETTINGS, type HandlerName } from '../infra/lifecycle-function';

/*
 * Lambda bundles as `cdk synth` builds them (scripts/build-lambda-bundles.ts): size, and the CPU time `node` spends
 * loading each one, against a hello-world handler built the same way and loaded in the same run (interleaved, several
 * runs, median). Also with `--enable-source-maps`, and the jitr bundle with the AWS SDK left to the runtime (loaded from
 * node_modules, as Lambda's runtime SDK would be). Exits non-zero only when a build fails: the figures are printed, not
 * asserted.
 * Usage: tsx bench/bundles.ts [runs]   (default 7)
 */

const PROJECT_ROOT = path.join(__dirname, '..');
const runs = Number(process.argv[2] ?? 7);

/**
 * Loads `file` in a fresh node and prints the CPU microseconds (user + system) of the whole process so far (node's own
 * start included, as in a cold start) and of the `require` alone.
 */
const LOADER = `const t = process.cpuUsage(); require(process.argv[1]); const d = process.cpuUsage(t), all = process.cpuUsage(); process.stdout.write((all.user + all.system) + ' ' + (d.user + d.system));`;

function loadCpuMicros(file: string, flags: readonly string[], env: NodeJS.ProcessEnv = {}): { readonly process: number; readonly require: number } {
  const result = spawnSync(process.execPath, [...flags, '-e', LOADER, file], { encoding: 'utf8', env: { ...process.env, ...env, AWS_REGION: 'eu-west-1' } });
  if (result.status !== 0) throw new Error(`loading ${file} failed: ${result.stderr}`);
  const [all, load] = result.stdout.split(' ').map(Number);
  return { process: all ?? Number.NaN, require: load ?? Number.NaN };
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

interface Candidate {
  readonly label: string;
  readonly file: string;
  readonly env?: NodeJS.ProcessEnv;
}

async function main(): Promise<void> {
  const workDir = mkdtempSync(path.join(tmpdir(), 'bench-bundles-'));
  try {
    const helloEntry = path.join(workDir, 'hello-world.ts');
    writeFileSync(helloEntry, 'export const handler = async (): Promise<{ statusCode: number }> => ({ statusCode: 200 });\n');
    const hello = await buildLambdaBundle(helloEntry, path.join(workDir, 'hello-world'));
    const candidates: Candidate[] = [];
    for (const name of Object.keys(HANDLER_ENTRIES) as HandlerName[]) {
      const { outfile } = await buildLambdaBundle(HANDLER_ENTRIES[name], path.join(workDir, name));
      candidates.push({ label: name, file: outfile });
    }
    const runtimeSdk = await buildLambdaBundle(HANDLER_ENTRIES.jitr, path.join(workDir, 'jitr-runtime-sdk'), { ...LAMBDA_BUNDLE_SETTINGS, externalModules: ['@aws-sdk/*', '@smithy/*'] });
    candidates.push({ label: 'jitr, SDK from the runtime', file: runtimeSdk.outfile, env: { NODE_PATH: path.join(PROJECT_ROOT, 'node_modules') } });

    const variants = [
      { name: 'plain', flags: [] as string[] },
      { name: '--enable-source-maps', flags: ['--enable-source-maps'] },
    ];
    const samples = new Map<string, number[]>();
    const record = (key: string, value: { readonly process: number; readonly require: number }) => {
      samples.set(`${key}|process`, [...(samples.get(`${key}|process`) ?? []), value.process]);
      samples.set(`${key}|require`, [...(samples.get(`${key}|require`) ?? []), value.require]);
    };
    for (let run = 0; run < runs; run += 1) {
      for (const variant of variants) {
        // Interleaved: the baseline is measured between the bundles, under the same load.
        record(`hello|${variant.name}`, loadCpuMicros(hello.outfile, variant.flags));
        for (const candidate of candidates) record(`${candidate.label}|${variant.name}`, loadCpuMicros(candidate.file, variant.flags, candidate.env));
      }
    }

    const kib = (file: string) => statSync(file).size / 1024;
    process.stdout.write(`Lambda bundles (minified, as synth builds them); node ${process.version}; ${runs} cold loads each, median CPU\n`);
    process.stdout.write('process: node start + require, as in a cold start (ratio to hello-world: the goal is <= 2); require: the load alone\n');
    const columns = variants.flatMap((variant) => (['process', 'require'] as const).map((part) => ({ variant, part })));
    process.stdout.write(`${'bundle'.padEnd(28)} ${'KiB'.padStart(6)} ${'map KiB'.padStart(8)} | ${columns.map(({ variant, part }) => `${variant.name} ${part}`.padStart(32)).join(' | ')}\n`);
    const row = (label: string, file: string) => {
      const cells = columns.map(({ variant, part }) => {
        const ms = median(samples.get(`${label}|${variant.name}|${part}`) ?? []) / 1000;
        const base = median(samples.get(`hello|${variant.name}|${part}`) ?? []) / 1000;
        return `${ms.toFixed(1).padStart(8)} ms ${(ms / base).toFixed(2).padStart(6)}×`.padStart(32);
      });
      process.stdout.write(`${label.padEnd(28)} ${kib(file).toFixed(0).padStart(6)} ${kib(`${file}.map`).toFixed(0).padStart(8)} | ${cells.join(' | ')}\n`);
    };
    row('hello', hello.outfile);
    for (const candidate of candidates) row(candidate.label, candidate.file);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
