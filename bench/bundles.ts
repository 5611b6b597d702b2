import { spawnSync } from 'node:child_process';
import type { Metafile } from 'esbuild';
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
 *
 * The SDK floor of each function: a bundle of only the AWS SDK clients that function's bundle holds (found in its
 * esbuild metafile, the same copies), each constructed at load and one of its commands imported and referenced,
 * built with the same plugin and settings. It is what any function using those clients would weigh and load in:
 * `bundle ÷ floor` is what our code and its libraries add, and the floor against 500 KB and 2× hello-world says
 * whether those goals are reachable with the SDK bundled at all.
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

interface SdkClient {
  /** `@aws-sdk/client-iot`, `@aws-sdk/lib-dynamodb`. */
  readonly name: string;
  /** The copy the bundle holds, absolute. */
  readonly directory: string;
  readonly clientClass: string;
  /** The first of its commands by name: a floor needs one referenced, any one. */
  readonly command: string;
}

/** The AWS SDK clients a bundle holds, from its metafile (paths relative to the project root). */
export function sdkClientsOf(metafile: Metafile): SdkClient[] {
  const found = new Map<string, { directory: string; files: string[] }>();
  for (const input of Object.keys(metafile.inputs)) {
    const match = /^(.*node_modules\/(@aws-sdk\/(?:client-[^/]+|lib-dynamodb)))\/(?!node_modules\/)(.*)$/.exec(input);
    if (!match) continue;
    const [, directory, name, file] = match as unknown as [string, string, string, string];
    const entry = found.get(name) ?? { directory: path.resolve(PROJECT_ROOT, directory), files: [] };
    entry.files.push(file);
    found.set(name, entry);
  }
  return [...found.entries()]
    .map(([name, { directory, files }]) => {
      const clientClass = files.map((file) => /^dist-[a-z]+\/([A-Za-z0-9]+Client)\.js$/.exec(file)?.[1]).find((found) => found !== undefined);
      const command = files
        .map((file) => /^dist-[a-z]+\/commands\/([A-Za-z0-9]+Command)\.js$/.exec(file)?.[1])
        .filter((found): found is string => found !== undefined)
        .sort()[0];
      if (clientClass === undefined || command === undefined) throw new Error(`${name} in a bundle, but no client class or command file of it in the metafile: sdkClientsOf needs a look`);
      return { name, directory, clientClass, command };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The source of an SDK floor: the clients, each constructed at load (as a function's wiring does), one command each referenced. */
export function sdkFloorSource(clients: readonly SdkClient[]): string {
  const dynamoDb = clients.findIndex((client) => client.name === '@aws-sdk/client-dynamodb');
  const lines = clients.map((client, index) => `import { ${client.clientClass} as Client${index}, ${client.command} as Command${index} } from ${JSON.stringify(client.directory)};`);
  const construct = clients.map((client, index) => {
    if (client.name !== '@aws-sdk/lib-dynamodb') return `new Client${index}({})`;
    if (dynamoDb < 0) throw new Error('@aws-sdk/lib-dynamodb without @aws-sdk/client-dynamodb');
    return `Client${index}.from(new Client${dynamoDb}({}))`;
  });
  lines.push(`const clients: unknown[] = [${construct.join(', ')}];`);
  lines.push(`const commands: unknown[] = [${clients.map((_, index) => `Command${index}`).join(', ')}];`);
  lines.push('export const handler = async (): Promise<{ statusCode: number; body: string }> => ({ statusCode: 200, body: String(clients.length + commands.length) });');
  return `${lines.join('\n')}\n`;
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
    const floors: { name: HandlerName; clients: SdkClient[]; floor: Candidate }[] = [];
    for (const name of Object.keys(HANDLER_ENTRIES) as HandlerName[]) {
      const { outfile, metafile } = await buildLambdaBundle(HANDLER_ENTRIES[name], path.join(workDir, name));
      candidates.push({ label: name, file: outfile });
      const clients = sdkClientsOf(metafile);
      if (clients.length === 0) continue;
      const floorEntry = path.join(workDir, `${name}-sdk-floor.ts`);
      writeFileSync(floorEntry, sdkFloorSource(clients));
      const floor = { label: `${name}, SDK floor`, file: (await buildLambdaBundle(floorEntry, path.join(workDir, `${name}-sdk-floor`))).outfile };
      floors.push({ name, clients, floor });
    }
    candidates.push(...floors.map(({ floor }) => floor));
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

    const loadMs = (label: string) => median(samples.get(`${label}|plain|process`) ?? []) / 1000;
    process.stdout.write('\nSDK floors: only the AWS SDK clients each bundle holds, constructed, one command each (same plugin and settings)\n');
    for (const { name, clients } of floors) {
      process.stdout.write(`  ${name}: ${clients.map((client) => client.name.replace('@aws-sdk/', '')).join(', ')}\n`);
    }
    for (const { name, floor } of floors) {
      const bundleFile = candidates.find((candidate) => candidate.label === name)?.file as string;
      const floorKib = kib(floor.file);
      const floorLoad = loadMs(floor.label) / loadMs('hello');
      const reachable = floorKib * 1.024 <= 500 && floorLoad <= 2 ? 'within' : 'already beyond';
      process.stdout.write(
        `ratio ${name} ÷ its SDK floor: size ${(kib(bundleFile) / floorKib).toFixed(2)}×, cold load ${(loadMs(name) / loadMs(floor.label)).toFixed(2)}×; the floor alone: ${floorKib.toFixed(0)} KiB, cold load ${floorLoad.toFixed(2)}× hello-world (${reachable} 500 KB / 2×)\n`,
      );
    }
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
