import { mkdirSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { buildSync, type BuildOptions } from 'esbuild';
import { OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { bundleFileName, HANDLER_ENTRIES, LAMBDA_BUNDLE_SETTINGS, PREBUILT_BUNDLES_FOLDER, type HandlerName, type LambdaBundleSettings } from '../infra/lifecycle-function';

/*
 * `npm run build` (and so `npm pack`, through `prepack`): one Lambda bundle per HANDLER_ENTRIES key, in
 * dist/lambda/<name>/, which the compiled construct (dist/infra) deploys with lambda.Code.fromAsset. An app that
 * installs the package then needs neither the TypeScript sources, nor a lock file, nor esbuild.
 * Usage: tsx scripts/build-lambda-bundles.ts [outDir]  (default: dist/lambda)
 */

const PROJECT_ROOT = path.join(__dirname, '..');

/**
 * The esbuild options NodejsFunction derives from the same settings (its local bundling runs
 * `esbuild --bundle <entry> --platform=node ...` in the project root), so a prebuilt bundle is the code the
 * repository's own synth deploys.
 */
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
    logLevel: 'warning',
  };
}

function main(outDir: string): void {
  rmSync(outDir, { recursive: true, force: true });
  const names = Object.keys(HANDLER_ENTRIES) as HandlerName[];
  for (const name of names) {
    const directory = path.join(outDir, name);
    mkdirSync(directory, { recursive: true });
    const outfile = path.join(directory, bundleFileName(LAMBDA_BUNDLE_SETTINGS));
    buildSync(esbuildOptions(HANDLER_ENTRIES[name], outfile));
    process.stdout.write(`${path.relative(PROJECT_ROOT, outfile)}  ${(statSync(outfile).size / 1024).toFixed(0)} KiB\n`);
  }
}

if (require.main === module) main(path.resolve(process.argv[2] ?? path.join(PROJECT_ROOT, 'dist', PREBUILT_BUNDLES_FOLDER)));
