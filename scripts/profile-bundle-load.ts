import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { HANDLER_ENTRIES, type HandlerName } from '../infra/lifecycle-function';
import { buildLambdaBundle } from './build-lambda-bundles';
import { groupOf, partOf } from './bundle-contents';

/*
 * Where the CPU of a cold load goes: builds a function's bundle as `cdk synth` does, loads it in fresh `node`
 * processes under `--cpu-prof`, and sums the samples of all runs by where they fall: V8 compiling the bundle
 * (`wrapSafe`), node's own start, and the bundle's code by group and package (through its source map).
 * A sample counts for the function it falls in: the top-level statements of the modules esbuild hoisted into the
 * bundle's scope (class definitions, schema tables, registrations) show as "bundle top level".
 * Usage: tsx scripts/profile-bundle-load.ts [handler] [runs]   (default: jitr 7)
 */

const PROJECT_ROOT = path.join(__dirname, '..');

interface CpuProfile {
  readonly nodes: readonly { readonly id: number; readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber: number } }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

async function main(name: HandlerName, runs: number): Promise<void> {
  const entry = HANDLER_ENTRIES[name];
  if (entry === undefined) throw new Error(`No handler named ${name}; known: ${Object.keys(HANDLER_ENTRIES).join(', ')}`);
  const workDir = mkdtempSync(path.join(tmpdir(), 'profile-bundle-load-'));
  try {
    const { outfile } = await buildLambdaBundle(entry, path.join(workDir, name));
    const sourceMap = new SourceMap(JSON.parse(readFileSync(`${outfile}.map`, 'utf8')));
    const profiles = path.join(workDir, 'profiles');
    mkdirSync(profiles);
    for (let run = 0; run < runs; run += 1) {
      execFileSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profiles}`, '--cpu-prof-interval', '100', '-e', 'require(process.argv[1])', outfile], { env: { ...process.env, AWS_REGION: 'eu-west-1' } });
    }

    const byPlace = new Map<string, number>();
    const byPackage = new Map<string, number>();
    const add = (totals: Map<string, number>, key: string, micros: number) => totals.set(key, (totals.get(key) ?? 0) + micros);
    let total = 0;
    for (const file of readdirSync(profiles)) {
      const profile = JSON.parse(readFileSync(path.join(profiles, file), 'utf8')) as CpuProfile;
      const nodes = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
      profile.samples.forEach((id, index) => {
        const micros = profile.timeDeltas[index] ?? 0;
        const frame = nodes.get(id);
        total += micros;
        if (frame === undefined) return;
        if (frame.functionName === 'wrapSafe') return void add(byPlace, 'V8 compiling the bundle (wrapSafe)', micros);
        if (!frame.url.endsWith(path.basename(outfile)) || !frame.url.includes(workDir)) return void add(byPlace, frame.url ? "node's own modules" : `node: (${frame.functionName || 'anonymous'})`, micros);
        const source = (sourceMap.findEntry(frame.lineNumber, frame.columnNumber) as { originalSource?: string }).originalSource;
        if (frame.functionName === '' && source === undefined) return void add(byPlace, 'bundle top level', micros);
        const part = source === undefined ? 'bundle (unmapped)' : partOf(path.relative(PROJECT_ROOT, path.resolve(path.dirname(outfile), source.replace(/^file:\/\//, ''))));
        add(byPlace, `bundle: ${groupOf(part)}`, micros);
        add(byPackage, part, micros);
      });
    }
    const ms = (micros: number) => (micros / 1000 / runs).toFixed(1).padStart(7);
    process.stdout.write(`${name}: ${ms(total)} ms of CPU sampled per cold load (${runs} runs)\n`);
    for (const [place, micros] of [...byPlace].sort((a, b) => b[1] - a[1])) process.stdout.write(`${ms(micros)}  ${place}\n`);
    process.stdout.write('bundle code by package:\n');
    for (const [part, micros] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`${ms(micros)}  ${part}\n`);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main((process.argv[2] ?? 'jitr') as HandlerName, Number(process.argv[3] ?? 7)).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  });
}
