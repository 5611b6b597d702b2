import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { Plugin, PluginBuild } from 'esbuild';

/*
 * What esbuild's resolution alone would put into a Lambda bundle but the function never runs, and how the bundle
 * leaves it out. Used by every Lambda build (infra/lifecycle-function.ts at synth, scripts/build-lambda-bundles.ts
 * for the npm package, bench/bundles.ts); measured in docs/performance.md.
 *
 * 1. One copy of each AWS SDK package per major version. npm hoisted the older generation of `@smithy/*` and
 *    `@aws-sdk/core` (what `@aws-sdk/client-acm-pca` 3.523, the newest the registry has, depends on) to the top
 *    of node_modules, so every newer client carries its own nested copy of the same newer versions: the jitr
 *    bundle held `@smithy/core` 3.x five times. Each import of a package of these scopes is resolved to the
 *    highest installed version of the same major (what semver promises is compatible), so identical code is
 *    bundled once. Majors are never mixed: the Private CA client keeps its own generation (see docs/performance.md).
 * 2. No default credential-provider chain. The SDK's default chain (environment, SSO, login, web identity, STS,
 *    INI files, process, IMDS, ECS) is ~330 KB minified; a Lambda function gets its role's credentials in
 *    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, so `@aws-sdk/credential-provider-node` is
 *    replaced by the environment provider alone, the one of the importing client's own generation.
 * 3. Zod's error messages in English only. The handlers' schemas are on `zod/mini`, which loads English itself
 *    (functions/handlers/schema-messages.ts) and whose unused exports esbuild drops, `locales` among them. Zod's
 *    classic API (`import { z } from 'zod'`) cannot be trimmed that way: it keeps the whole namespace, `z.locales`
 *    included (~40 languages, ~258 KB). Should a handler import it again, `z.locales` holds `en` only.
 * 4. Only the operations a function calls from each client's schema table. The newer clients describe every
 *    operation and shape of their service in one generated module (`dist-es/schemas/schemas_0.js`), each an exported
 *    array such as `[9, n0, _DC, { [_h]: ["GET", "/certificates/{certificateId}", 200] }, ...]`. esbuild drops the
 *    exports nothing imports, but not an object literal with a computed key (`[_h]`): converting the key could run
 *    code, as far as it knows. So it kept all of AWS IoT's ~1,000 schemas (110 KB) for the handful the adapter sends.
 *    Every such key in these modules names a module constant holding a string (`const _h = "http";`): the build
 *    writes the string in its place (`{ "http": [...] }`, the same object), and esbuild then keeps what is used.
 *    The errors' schemas stay: each is registered by a top-level call (`n0_registry.registerError(...)`).
 * 5. The metadata polyfill without its own polyfills. `@peculiar/x509` needs `Reflect.getMetadata` (for tsyringe);
 *    `import 'reflect-metadata'` also brings Map, Set and WeakMap polyfills for runtimes that lack them, which Node.js
 *    never does: the bundles take the package's own `reflect-metadata/lite`, the same API without them.
 */

/** An AWS SDK client's generated schema table (item 4 at the top of this file). */
const SDK_SCHEMA_TABLE = /[\\/]@aws-sdk[\\/]client-[^\\/]+[\\/]dist-es[\\/]schemas[\\/]schemas_\d+\.js$/;

/**
 * `source` with each computed key `[_name]:` whose `_name` is a module-level `const _name = "...";` (declared once)
 * replaced by that string literal: the same object, which esbuild can then drop when nothing uses it.
 */
export function withLiteralSchemaKeys(source: string): string {
  const declared = new Map<string, string | null>();
  for (const [, name, literal] of source.matchAll(/^const (_\w+) = ("[^"\\\n]*");$/gm)) {
    if (name === undefined || literal === undefined) continue;
    declared.set(name, declared.has(name) ? null : literal);
  }
  return source.replace(/\[(_\w+)\]:/g, (key, name: string) => {
    const literal = declared.get(name);
    return literal ? `${literal}:` : key;
  });
}

/** The module that replaces the default credential-provider chain in the bundles. */
export const ENVIRONMENT_ONLY_CREDENTIALS = [
  '// Lambda gives the function its credentials in the environment: the default chain is not bundled.',
  "import { fromEnv } from '@aws-sdk/credential-provider-env';",
  'export const defaultProvider = (init = {}) => fromEnv(init);',
].join('\n');

interface InstalledPackage {
  readonly directory: string;
  readonly version: readonly [number, number, number];
}

const NAMESPACE = 'lean-lambda';
const RESOLVING = 'leanLambdaResolving';

/** Every installed copy of each package under `nodeModules`, nested ones included. */
export function installedPackages(nodeModules: string): ReadonlyMap<string, readonly InstalledPackage[]> {
  const found = new Map<string, InstalledPackage[]>();
  const visitPackage = (directory: string) => {
    const manifestPath = path.join(directory, 'package.json');
    if (existsSync(manifestPath)) {
      const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { name?: string; version?: string };
      const version = /^(\d+)\.(\d+)\.(\d+)/.exec(manifest.version ?? '');
      if (manifest.name && version) {
        const copies = found.get(manifest.name) ?? [];
        copies.push({ directory, version: [Number(version[1]), Number(version[2]), Number(version[3])] });
        found.set(manifest.name, copies);
      }
    }
    const nested = path.join(directory, 'node_modules');
    if (existsSync(nested)) visitFolder(nested);
  };
  const visitFolder = (folder: string) => {
    for (const entry of readdirSync(folder, { withFileTypes: true })) {
      if (!entry.isDirectory() && !entry.isSymbolicLink()) continue;
      if (entry.name.startsWith('.')) continue;
      const entryPath = path.join(folder, entry.name);
      if (entry.name.startsWith('@')) {
        for (const scoped of readdirSync(entryPath, { withFileTypes: true })) {
          if (scoped.isDirectory() || scoped.isSymbolicLink()) visitPackage(path.join(entryPath, scoped.name));
        }
      } else {
        visitPackage(entryPath);
      }
    }
  };
  visitFolder(nodeModules);
  return found;
}

const compareVersions = (a: InstalledPackage, b: InstalledPackage) => a.version[0] - b.version[0] || a.version[1] - b.version[1] || a.version[2] - b.version[2];

/** The package name of a bare import path (`@smithy/core/protocols` → `@smithy/core`). */
const packageNameOf = (importPath: string) => importPath.split('/').slice(0, importPath.startsWith('@') ? 2 : 1).join('/');

/** The directory of the package that holds `file` and is named `name`. */
function packageDirectoryOf(file: string, name: string): string | undefined {
  const marker = `${path.sep}node_modules${path.sep}${name.split('/').join(path.sep)}${path.sep}`;
  const at = file.lastIndexOf(marker);
  return at < 0 ? undefined : file.slice(0, at + marker.length - 1);
}

/** The esbuild plugin that leaves out of a Lambda bundle what the function never runs (see the top of this file). */
export function leanLambdaPlugin(options: { readonly nodeModules: string }): Plugin {
  return {
    name: NAMESPACE,
    setup(build: PluginBuild) {
      let packages: ReadonlyMap<string, readonly InstalledPackage[]> | undefined;
      const copiesOf = (name: string) => (packages ??= installedPackages(realpathSync(options.nodeModules))).get(name) ?? [];

      build.onResolve({ filter: /^@aws-sdk\/credential-provider-node$/ }, (args) => ({
        path: `credential-provider-node@${args.resolveDir}`,
        namespace: NAMESPACE,
        pluginData: { resolveDir: args.resolveDir },
      }));
      build.onLoad({ filter: /^credential-provider-node@/, namespace: NAMESPACE }, (args) => ({
        contents: ENVIRONMENT_ONLY_CREDENTIALS,
        // Resolved from the importing client, so each SDK generation gets its own environment provider.
        resolveDir: (args.pluginData as { resolveDir: string }).resolveDir,
        loader: 'js',
      }));

      build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) => {
        if (!args.importer.includes(`${path.sep}node_modules${path.sep}zod${path.sep}`)) return undefined;
        return { path: path.join(args.resolveDir, '..', 'locales', 'en-only'), namespace: NAMESPACE };
      });
      build.onLoad({ filter: /en-only$/, namespace: NAMESPACE }, (args) => ({
        contents: "export { default as en } from './en.js';",
        resolveDir: path.dirname(args.path),
        loader: 'js',
      }));

      build.onResolve({ filter: /^reflect-metadata$/ }, (args) => build.resolve('reflect-metadata/lite', { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer }));

      build.onLoad({ filter: SDK_SCHEMA_TABLE }, async (args) => ({ contents: withLiteralSchemaKeys(await readFile(args.path, 'utf8')), loader: 'js' }));

      // The AWS SDK's scopes: their copies are folded into one per major version.
      build.onResolve({ filter: /^@(smithy|aws-sdk|aws-crypto)\// }, async (args) => {
        if ((args.pluginData as { [RESOLVING]?: boolean } | undefined)?.[RESOLVING]) return undefined;
        const name = packageNameOf(args.path);
        const resolved = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: { [RESOLVING]: true } });
        if (resolved.errors.length > 0 || resolved.external) return resolved;
        const directory = packageDirectoryOf(resolved.path, name);
        const copy = copiesOf(name).find((candidate) => candidate.directory === directory);
        if (directory === undefined || copy === undefined) return resolved;
        const highest = copiesOf(name)
          .filter((candidate) => candidate.version[0] === copy.version[0])
          .sort((a, b) => compareVersions(a, b) || a.directory.localeCompare(b.directory))
          .at(-1);
        if (highest === undefined || highest.directory === directory) return resolved;
        // Resolved from inside the chosen copy, so its own package.json (exports, main fields) applies.
        return build.resolve(args.path, { kind: args.kind, resolveDir: highest.directory, importer: args.importer, pluginData: { [RESOLVING]: true } });
      });
    },
  };
}
