import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createHash } from 'node:crypto';
import { App, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { HANDLER_ENTRIES, LifecycleFunction } from '../../infra/lifecycle-function';

/*
 * The construct as another CDK app gets it: `npm pack` (its `prepack` compiles dist/ and prebuilds the Lambda
 * bundles), the tarball unpacked into a copy of examples/ where `npm install` would put it, then the example
 * type-checked and synthesized with `cdk synth`. Offline: no network, no AWS account, no Docker.
 *
 * The packed package's own dependencies (and the example's: aws-cdk-lib, cdk-nag, the CLI, tsx) come from this
 * repository's node_modules, linked as the temporary folder's parent node_modules: a fresh CI machine has them
 * after `npm ci`, while `npm install --offline` would also need registry metadata that `npm ci` never caches.
 */

const ROOT = join(__dirname, '..', '..');
/** The prebuilt bundles' folders: one per HANDLER_ENTRIES key. */
const HANDLER_NAMES = Object.keys(HANDLER_ENTRIES);

interface Run {
  readonly status: number | null;
  readonly output: string;
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Run {
  const result = spawnSync(command, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

function mustRun(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): string {
  const result = run(command, args, cwd, env);
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status}:\n${result.output}`);
  return result.output;
}

/** No AWS account (no credentials, no profile, no instance metadata), no Docker, no registry, no CDK notices or telemetry. */
function offlineEnvironment(work: string): NodeJS.ProcessEnv {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AWS_') && !name.startsWith('CDK_')));
  return {
    ...inherited,
    PATH: [join(work, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter),
    npm_config_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: join(work, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-aws-credentials'),
    CDK_DOCKER: join(work, 'no-docker'),
    CDK_DISABLE_VERSION_CHECK: 'true',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
  };
}

const digest = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

let work: string;
let app: string;
let installed: string;
let tarball: string;
let tarballFiles: string[];
let env: NodeJS.ProcessEnv;
let synth: Run;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'iotcert-package-'));
  env = offlineEnvironment(work);

  // Pack as a user would; prepack builds dist/ first.
  mustRun('npm', ['pack', '--pack-destination', work], ROOT, env);
  const packed = readdirSync(work).filter((name) => name.endsWith('.tgz'));
  if (packed.length !== 1) throw new Error(`npm pack left ${packed.length} tarballs in ${work}`);
  tarball = packed[0] as string;
  tarballFiles = mustRun('tar', ['-tzf', join(work, tarball)], work, env).split('\n').filter(Boolean);

  // Install it into a copy of the example app: the package where npm puts it, its dependencies from this repository.
  app = join(work, 'app');
  cpSync(join(ROOT, 'examples'), app, { recursive: true, filter: (source) => !/[\\/](node_modules|cdk\.out)$/.test(source) });
  installed = join(app, 'node_modules', 'iot-certificate-lifecycle');
  mkdirSync(installed, { recursive: true });
  mustRun('tar', ['-xzf', join(work, tarball), '-C', installed, '--strip-components=1'], work, env);
  symlinkSync(join(ROOT, 'node_modules'), join(work, 'node_modules'), 'dir');

  synth = run(process.execPath, [join(ROOT, 'node_modules', 'aws-cdk', 'bin', 'cdk'), 'synth', '--quiet', '--no-notices'], app, env);
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the tarball carries the compiled construct with its declarations and a prebuilt bundle per handler, and no TypeScript sources', () => {
  const expected = ['package/dist/infra/index.js', 'package/dist/infra/index.d.ts', ...HANDLER_NAMES.flatMap((name) => [`package/dist/lambda/${name}/index.js`, `package/dist/lambda/${name}/index.js.map`])];
  expect(tarballFiles).toEqual(expect.arrayContaining(expected));
  expect(tarballFiles.filter((file) => /\.ts$/.test(file) && !file.endsWith('.d.ts'))).toEqual([]);
  expect(tarballFiles).not.toContain('package/package-lock.json');
});

test('the example app depends on the tarball npm pack makes', () => {
  const example = JSON.parse(readFileSync(join(ROOT, 'examples', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  expect(example.dependencies['iot-certificate-lifecycle']).toBe(`file:../${tarball}`);
});

test('the example type-checks against the declarations the package exports', () => {
  const result = run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app, env);
  expect(result.output).toBe('');
  expect(result.status).toBe(0);
}, 120_000);

test('the example synthesizes from the tarball offline, with cdk-nag, and without a lock file, esbuild or Docker', () => {
  expect(synth.output).not.toMatch(/Lock file/);
  expect(synth.output).not.toMatch(/Bundling asset/);
  expect(synth.status).toBe(0);
});

test('every handler deploys the bundle that was built at pack time', () => {
  const assembly = join(app, 'cdk.out');
  const template = Template.fromJSON(JSON.parse(readFileSync(join(assembly, 'SensorFleet.template.json'), 'utf8')));
  // The construct's functions: the ones LifecycleFunction makes, with source maps on.
  const lifecycleFunctions = template.findResources('AWS::Lambda::Function', {
    Properties: { Handler: 'index.handler', Runtime: 'nodejs22.x', Environment: { Variables: Match.objectLike({ NODE_OPTIONS: '--enable-source-maps' }) } },
  });
  const deployed = Object.values(lifecycleFunctions).map((fn) => digest(join(assembly, `asset.${String(fn.Properties.Code.S3Key).replace(/\.zip$/, '')}`, 'index.js')));
  const packed = new Set(HANDLER_NAMES.map((name) => digest(join(installed, 'dist', 'lambda', name, 'index.js'))));
  expect(deployed.length).toBeGreaterThanOrEqual(4);
  expect(deployed.filter((bundle) => !packed.has(bundle))).toEqual([]);
});

test('a prebuilt bundle is byte for byte what NodejsFunction bundles in this repository', () => {
  const repoApp = new App({ outdir: join(work, 'repo-cdk.out') });
  const stack = new Stack(repoApp, 'BundleStack');
  new LifecycleFunction(stack, 'Fn', { entry: HANDLER_ENTRIES.registerCaWithIot, description: 'bundle', logRetention: RetentionDays.ONE_DAY, removalPolicy: RemovalPolicy.DESTROY });
  const assembly = repoApp.synth().directory;
  const [fn] = Object.values(Template.fromStack(stack).findResources('AWS::Lambda::Function'));
  const bundled = join(assembly, `asset.${String(fn?.Properties.Code.S3Key).replace(/\.zip$/, '')}`, 'index.js');
  expect(digest(join(installed, 'dist', 'lambda', 'registerCaWithIot', 'index.js'))).toBe(digest(bundled));
}, 120_000);
