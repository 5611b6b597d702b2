/**
 * `npm run bench`: every benchmark in turn, each in its own process (a fresh local mode, its own DynamoDB Local),
 * then their ratio lines together. A benchmark whose file is absent is skipped with a line saying so; one that
 * fails (a lost device, a failed check) makes the whole run fail, after the others have run.
 *
 *   npm run bench
 *   npm run bench -- --only local-onboarding,issuance
 *
 * Each benchmark takes its own defaults (the figures the README quotes); BENCH_DEVICES and BENCH_CONCURRENCY
 * apply to those that read them. Meant to finish in under 10 minutes on a quiet 2-core machine.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadNow, machineLine } from './support/measure';

interface Bench {
  readonly name: string;
  readonly file: string;
  readonly args: readonly string[];
  /** Defaults for the variables it reads, when the caller has not set them. */
  readonly env?: Readonly<Record<string, string>>;
}

const BENCHES: readonly Bench[] = [
  { name: 'local-onboarding', file: 'bench/local-onboarding.ts', args: [] },
  { name: 'issuance', file: 'bench/issuance.ts', args: [] },
  { name: 'jitr-lifecycle', file: 'bench/onboarding.ts', args: [], env: { BENCH_DEVICES: '1000' } },
  { name: 'revocation', file: 'bench/revocation.ts', args: [] },
  { name: 'rotation', file: 'bench/rotation.ts', args: [] },
  { name: 'bundles', file: 'bench/bundles.ts', args: [] },
  { name: 'aws-calls', file: 'bench/aws-calls.ts', args: [] },
];

const ROOT = join(__dirname, '..');
/** Issue 12: `npm run bench` in under 10 minutes on a quiet machine. */
const SUITE_BUDGET_MS = 10 * 60_000;

const minutes = (wallMs: number): string => `${Math.floor(wallMs / 60_000)} min ${Math.round((wallMs % 60_000) / 1000)} s`;

function run(bench: Bench): Promise<{ code: number | null; summary: string[] }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', bench.file, ...bench.args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...bench.env, ...process.env, NODE_NO_WARNINGS: '1' } });
    const summary: string[] = [];
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      const lines = (pending + chunk.toString()).split('\n');
      pending = lines.pop() ?? '';
      summary.push(...lines.filter((line) => /^(ratio|machine:)|\bratio\b.*:/i.test(line)));
    });
    child.once('close', (code) => {
      if (/^(ratio|machine:)/i.test(pending)) summary.push(pending);
      resolve({ code, summary });
    });
  });
}

async function main(): Promise<void> {
  const only = process.argv.find((arg) => arg.startsWith('--only'))?.split('=')[1] ?? (process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined);
  const selected = only === undefined ? BENCHES : BENCHES.filter((bench) => only.split(',').includes(bench.name));
  if (selected.length === 0) throw new Error(`--only ${only}: none of ${BENCHES.map((bench) => bench.name).join(', ')}`);
  const loadAtStart = loadNow();
  const started = performance.now();
  const results: { bench: Bench; outcome: string; summary: string[] }[] = [];
  for (const bench of selected) {
    if (!existsSync(join(ROOT, bench.file))) {
      console.log(`\n=== ${bench.name}: skipped, ${bench.file} is not in this checkout`);
      results.push({ bench, outcome: 'skipped (file absent)', summary: [] });
      continue;
    }
    console.log(`\n=== ${bench.name}: tsx ${[bench.file, ...bench.args].join(' ')}`);
    const begun = performance.now();
    const { code, summary } = await run(bench);
    const seconds = ((performance.now() - begun) / 1000).toFixed(0);
    const outcome = code === 0 ? `ok in ${seconds} s` : `FAILED (exit ${code}) after ${seconds} s`;
    console.log(`=== ${bench.name}: ${outcome} (wall time; the suite so far ${minutes(performance.now() - started)})`);
    results.push({ bench, outcome, summary });
  }
  const totalMs = performance.now() - started;
  console.log(`\n=== summary: the suite took ${minutes(totalMs)} of wall time (goal < 10 min on a quiet machine${totalMs > SUITE_BUDGET_MS ? ': NOT met in this run, see the load average below' : ''})`);
  for (const { bench, outcome, summary } of results) {
    console.log(`${bench.name}: ${outcome}`);
    for (const line of summary.filter((text) => !text.startsWith('machine:'))) console.log(`  ${line}`);
  }
  console.log(machineLine(loadAtStart));
  if (results.some((result) => result.outcome.startsWith('FAILED'))) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
