import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildStack, functionLogicalId, type SynthesizedStack } from './stacks';

/**
 * The one test file that runs esbuild (four bundles, a few seconds): each function ships a
 * minified bundle holding the AWS SDK clients its entry imports, and no others.
 */
let built: SynthesizedStack;
let bundles: Record<'jitr' | 'api' | 'registerCa' | 'expiryMonitor', string>;
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
