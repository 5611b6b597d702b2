import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildStack, functionLogicalId, type SynthesizedStack } from './stacks';

/**
 * The one test file that runs esbuild (five bundles, as `cdk synth` builds them): each function ships a
 * minified bundle holding the AWS SDK clients its entry imports, and no others, and none of what Lambda never runs
 * (infra/lambda-bundle-plugin.ts).
 */
let built: SynthesizedStack;
let bundles: Record<'jitr' | 'api' | 'registerCa' | 'expiryMonitor' | 'rotation', string>;
beforeAll(() => {
  built = buildStack({}, { bundle: true });
  const directory = built.app.synth().directory;
  const functions = built.template.findResources('AWS::Lambda::Function');
  const bundleOf = (prefix: string) => {
    const key = functions[functionLogicalId(built.template, prefix)]?.Properties.Code.S3Key as string;
    return join(directory, `asset.${key.replace(/\.zip$/, '')}`, 'index.js');
  };
  bundles = {
    jitr: bundleOf('LifecycleJitrFunction'),
    api: bundleOf('LifecycleApiFunction'),
    registerCa: bundleOf('LifecycleIotCaRegistrationHandler'),
    expiryMonitor: bundleOf('LifecycleExpiryMonitorFunction'),
    rotation: bundleOf('LifecycleRotationFunction'),
  };
}, 120_000);

const read = (path: string) => readFileSync(path, 'utf8');

test.each(['jitr', 'api', 'registerCa', 'expiryMonitor'] as const)('the %s bundle is minified, with a source map, and carries its own AWS SDK', (name) => {
  const code = read(bundles[name]);
  expect(existsSync(`${bundles[name]}.map`)).toBe(true);
  expect(code.length / code.split('\n').length).toBeGreaterThan(1000); // minified: long lines
  // Only optional extras (signature-v4-crt, credential-providers) stay as guarded requires.
  expect(code).not.toMatch(/require\(["']@aws-sdk\/(client-|lib-)/);
});

test('the CA registration bundle holds the IoT and Private CA clients but not DynamoDB', () => {
  const code = read(bundles.registerCa);
  expect(code).toContain('RegisterCACertificate');
  expect(code).toContain('IssueCertificate');
  expect(code).not.toContain('DynamoDB_20120810');
});

test('the API bundle holds the DynamoDB, IoT and Private CA clients', () => {
  const code = read(bundles.api);
  expect(code).toContain('DynamoDB_20120810');
  expect(code).toContain('RegisterCertificate');
  expect(code).toContain('IssueCertificate');
});

test('the expiry monitor bundle holds the DynamoDB and Private CA clients, and AWS IoT for the drift check and the renewal notices', () => {
  const code = read(bundles.expiryMonitor);
  expect(code).toContain('DynamoDB_20120810');
  expect(code).toContain('GetCertificateAuthorityCertificate');
  expect(code).toContain('DescribeCertificate');
  expect(code).toContain('iotdata');
});

const ALL_BUNDLES = ['jitr', 'api', 'registerCa', 'expiryMonitor', 'rotation'] as const;
const NODE_MODULES = join(__dirname, '..', '..', 'node_modules');

/** The npm packages a bundle was built from, as its source map lists them: one entry per installed copy. */
function bundledPackages(bundle: string): { name: string; copy: string; major: number }[] {
  const { sources } = JSON.parse(read(`${bundle}.map`)) as { sources: string[] };
  const copies = new Set<string>();
  for (const source of sources) {
    const match = /node_modules\/(.*node_modules\/)?(@[^/]+\/[^/]+|[^@/][^/]*)\//.exec(source);
    if (match) copies.add(`${match[1] ?? ''}${match[2]}`);
  }
  return [...copies].map((copy) => {
    const name = copy.slice(copy.lastIndexOf('node_modules/') + (copy.includes('node_modules/') ? 'node_modules/'.length : 0));
    const { version } = JSON.parse(readFileSync(join(NODE_MODULES, copy, 'package.json'), 'utf8')) as { version: string };
    return { name, copy, major: Number(version.split('.')[0]) };
  });
}

test.each(ALL_BUNDLES)('the %s bundle holds no default credential-provider chain: credentials come from the environment, as Lambda gives them', (name) => {
  const code = read(bundles[name]);
  // Markers of the chain's web identity, process, SSO and STS providers (the whole chain was ~330 KB).
  for (const marker of ['AWS_WEB_IDENTITY_TOKEN_FILE', 'credential_process', 'sso_start_url', 'AssumeRoleWithWebIdentity']) expect(code).not.toContain(marker);
  expect(bundledPackages(bundles[name]).map((pkg) => pkg.name)).toEqual(expect.not.arrayContaining(['@aws-sdk/credential-provider-node', '@aws-sdk/credential-provider-sso', '@aws-sdk/client-sts', '@aws-sdk/nested-clients']));
  expect(code).toContain('AWS_SECRET_ACCESS_KEY');
});

test.each(ALL_BUNDLES)('the %s bundle holds one copy of each AWS SDK package per major version', (name) => {
  const copiesByMajor = new Map<string, string[]>();
  for (const pkg of bundledPackages(bundles[name]).filter((candidate) => /^@(smithy|aws-sdk|aws-crypto)\//.test(candidate.name))) {
    const key = `${pkg.name}@${pkg.major}`;
    copiesByMajor.set(key, [...(copiesByMajor.get(key) ?? []), pkg.copy]);
  }
  expect([...copiesByMajor].filter(([, copies]) => copies.length > 1)).toEqual([]);
  // The newer @smithy/core generation, which every client but AWS Private CA's uses, is there once.
  expect(bundledPackages(bundles[name]).filter((pkg) => pkg.name === '@smithy/core' && pkg.major >= 3)).toHaveLength(1);
});

test.each(ALL_BUNDLES)("the %s bundle carries Zod's English messages only", (name) => {
  const { sources } = JSON.parse(read(`${bundles[name]}.map`)) as { sources: string[] };
  const locales = sources.filter((source) => /zod\/v4\/locales\//.test(source)).map((source) => source.slice(source.lastIndexOf('/') + 1));
  // en-only: the module the build puts in place of the index of every locale (infra/lambda-bundle-plugin.ts).
  expect(locales.filter((file) => file !== 'en.js' && file !== 'en-only')).toEqual([]);
});

test.each(['jitr', 'api', 'rotation', 'expiryMonitor'] as const)("the %s bundle holds the AWS IoT operations the adapter sends, not the rest of the service's schema table", (name) => {
  const code = read(bundles[name]);
  // Sent by the registry adapter (functions/adapters/aws/iot-device-registry.ts)...
  expect(code).toContain('"/certificates/{certificateId}"');
  // ...but never these (Device Defender, jobs): ~1,000 operations and shapes were bundled before (110 KB).
  for (const unused of ['UpdateSecurityProfile', 'CreateJobTemplate', 'AuditMitigationActionsTaskTarget']) expect(code).not.toContain(unused);
});

test.each(ALL_BUNDLES)("the %s bundle validates with zod/mini, not Zod's classic API (which a bundle keeps whole, ~160 KB more)", (name) => {
  const { sources } = JSON.parse(read(`${bundles[name]}.map`)) as { sources: string[] };
  expect(sources.filter((source) => /node_modules\/zod\/v4\/classic\//.test(source))).toEqual([]);
});

test.each(ALL_BUNDLES)('the %s bundle holds no Powertools idempotency layer (one operation record in the store does that job)', (name) => {
  expect(bundledPackages(bundles[name]).map((pkg) => pkg.name)).not.toContain('@aws-lambda-powertools/idempotency');
});

test.each(ALL_BUNDLES)('the %s bundle stays under 800 KiB (about 1,900 before the lean build, 960 before zod/mini and the trimmed schema tables; docs/performance.md says what bounds it)', (name) => {
  expect(read(bundles[name]).length / 1024).toBeLessThan(800);
});
