import { mkdirSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { build, type BuildOptions, type Metafile } from 'esbuild';
import { OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { bundleFileName, HANDLER_ENTRIES, LAMBDA_BUNDLE_SETTINGS, PREBUILT_BUNDLES_FOLDER, type HandlerName, type LambdaBundleSettings } from '../infra/lifecycle-function';
import { leanLambdaPlugin } from '../infra/lambda-bundle-plugin';

/*
 * The one Lambda bundle build. `cdk synth` runs it for each function (infra/lifecycle-function.ts, `--entry`), and
 * `npm run build` (so `npm pack`, through `prepack`) runs it for every HANDLER_ENTRIES key into dist/lambda/<name>/,
 * which the compiled construct (dist/infra) deploys with lambda.Code.fromAsset: an app that installs the package
 * needs neither the TypeScript sources, nor a lock file, nor esbuild.
 * Usage: tsx scripts/build-lambda-bundles.ts [outDir]                       (default: dist/lambda)
 *        tsx scripts/build-lambda-bundles.ts --entry <file.ts> --outdir <dir>  (one bundle, as synth builds it)
 */

const PROJECT_ROOT = path.join(__dirname, '..');

/** The esbuild options of a function bundle: the shared settings, and the plugin that leaves out what Lambda never runs. */
export function esbuildOptions(entry: string, outfile: string, settings: LambdaBundleSettings = LAMBDA_BUNDLE_SETTINGS): BuildOptions {
  const { minify, sourceMap, sourcesContent, target, format, externalModules, mainFields, ...unmapped } = settings;
  // A setting added to LambdaBundleSettings must be mapped here too, or this stops compiling.
  const _noneLeft: Record<string, never> = unmapped;
  return {
    absWorkingDir: PROJECT_ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target,
    format: format === OutputFormat.ESM ? 'esm' : 'cjs',
    minify,
    sourcemap: sourceMap,
    sourcesContent,
    external: [...externalModules],
    mainFields: [...mainFields],
    plugins: [leanLambdaPlugin({ nodeModules: path.join(PROJECT_ROOT, 'node_modules') })],
    logLevel: 'warning',
  };
}

/** Builds the bundle of `entry` into `directory` (the file name Lambda's handler setting expects); returns what went into it. */
export async function buildLambdaBundle(entry: string, directory: string, settings: LambdaBundleSettings = LAMBDA_BUNDLE_SETTINGS): Promise<{ readonly outfile: string; readonly metafile: Metafile }> {
  mkdirSync(directory, { recursive: true });
  const outfile = path.join(directory, bundleFileName(settings));
  const result = await build({ ...esbuildOptions(entry, outfile, settings), metafile: true });
  return { outfile, metafile: result.metafile };
}

async function buildAll(outDir: string): Promise<void> {
  rmSync(outDir, { recursive: true, force: true });
  for (const name of Object.keys(HANDLER_ENTRIES) as HandlerName[]) {
    const { outfile } = await buildLambdaBundle(HANDLER_ENTRIES[name], path.join(outDir, name));
    process.stdout.write(`${path.relative(PROJECT_ROOT, outfile)}  ${(statSync(outfile).size / 1024).toFixed(0)} KiB\n`);
  }
}

async function main(args: readonly string[]): Promise<void> {
  const entryAt = args.indexOf('--entry');
  if (entryAt < 0) return buildAll(path.resolve(args[0] ?? path.join(PROJECT_ROOT, 'dist', PREBUILT_BUNDLES_FOLDER)));
  const entry = args[entryAt + 1];
  const outdirAt = args.indexOf('--outdir');
  const outdir = outdirAt < 0 ? undefined : args[outdirAt + 1];
  if (entry === undefined || outdir === undefined) throw new Error('Usage: build-lambda-bundles.ts --entry <file.ts> --outdir <dir>');
  await buildLambdaBundle(path.resolve(entry), path.resolve(outdir));
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
