import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RemovalPolicy } from 'aws-cdk-lib';
import { Schedule } from 'aws-cdk-lib/aws-events';
import type { Construct } from 'constructs';
import type { DeviceCertificateLifecycleStackProps } from './device-certificate-lifecycle-stack';
import { CaKeyAlgorithm, CaType, CaUsageMode, DEFAULTS, EnrollmentPolicy, InvalidConfigurationError, checkCaArn, checkNamePrefix, fail } from './settings';

/**
 * The context values the app reads (`cdk deploy -c name=value`, or the "context" of cdk.json),
 * with what each does. docs/deploy.md explains them at length.
 */
export const CONTEXT_VALUES = {
  caArn: 'ARN of an existing, ACTIVE AWS Private CA to use; when absent the stack creates a CA',
  previousCaArns: 'comma-separated ARNs of the CAs this stack issued from before (a CA rotation): their devices are still accepted until you deactivate them (default none)',
  caType: 'ROOT (default) or SUBORDINATE, for a CA the stack creates',
  caKeyAlgorithm: 'EC_prime256v1 (default), EC_secp384r1, RSA_2048 or RSA_4096: the new CA key, or the key the existing CA has',
  caUsageMode: 'GENERAL_PURPOSE (default) or SHORT_LIVED_CERTIFICATE: the new CA mode, or the mode the existing CA has',
  caCommonName: 'subject CN of a new CA (default "<namePrefix> device CA")',
  caOrganization: 'subject O of a new CA (default none)',
  caValidityYears: 'validity of a new ROOT CA certificate in years (default 10)',
  subordinateCaCertificateFile: 'PEM file of the certificate your parent CA signed for the new SUBORDINATE CA',
  subordinateCaChainFile: 'PEM file of the parent chain (issuer first, up to the root)',
  validityDays: 'validity of device certificates in days (default 365; 7 at most, and by default, in SHORT_LIVED_CERTIFICATE mode)',
  enrollmentPolicy: 'preregistered (default: only devices created through POST /devices) or open (any device with a certificate from the CA)',
  removalPolicy: 'retain (default) or destroy: what happens to tables, CRL bucket, logs and a new CA on stack deletion',
  namePrefix: 'prefix of the stack, thing group, IoT policy, topic rule and API names (default iot-cert-lifecycle)',
  topicRoot: 'topic root of the fleet policy: devices own <topicRoot>/<thingName>/... (default devices)',
  apiRateLimit: 'device API requests per second, steady (default 10)',
  apiBurstLimit: 'device API burst, in requests (default 20)',
  webAclArn: 'ARN of a regional AWS WAFv2 web ACL to put in front of the API (default none)',
  alarmTopicArn: 'ARN of an SNS topic the alarms notify (default none)',
  expiryMonitorSchedule: 'EventBridge schedule of the expiry monitor, rate(...) or cron(...), at least daily (default rate(1 day))',
  expiryWarningDays: 'the expiry monitor counts device certificates with fewer days left than this (default 30; 2 in SHORT_LIVED_CERTIFICATE mode)',
  caExpiryAlarmDays: 'the CA expiry alarm fires when the CA has fewer days left than this (default validityDays + 90)',
  rotationCommitHours: 'hours a device has to commit its rotated certificate before the new one is withdrawn, 1 to 720 (default 6)',
  rotationSweepMinutes: 'minutes between two sweeps that withdraw rotations past their commit deadline, 1 to 1440 and at most the commit window (default 15)',
  rotationConcurrency: 'rotation function invocations the rotation queue feeds at once, 2 to 1000 (default 2)',
  registrationConcurrency: 'JITR function invocations the registration queue feeds at once, 2 to 1000 (default 2: see docs/performance.md)',
} as const;

export type ContextName = keyof typeof CONTEXT_VALUES;

export interface ContextSource {
  /** A context value as CDK gives it: a string from `-c`, or any JSON value from cdk.json. */
  readonly get: (name: ContextName) => unknown;
  /**
   * Every context key that looks like one of this app's (see `appContextKeys`); any that is not in
   * `CONTEXT_VALUES` is refused. Omitted: no key is checked.
   */
  readonly keys?: () => readonly string[];
  /** Reads a file named by a context value. */
  readonly readFile?: (path: string) => string;
}

/**
 * Keys the CDK itself puts in the context without a ":" or "@" (`cdk acknowledge` writes the first to cdk.context.json).
 * Its other keys hold a ":" or "@" (`@aws-cdk/...` feature flags, `aws:cdk:...`, lookups like `availability-zones:...`)
 * or start with `cdk-` or `aws-`.
 */
const CDK_OWN_KEYS: ReadonlySet<string> = new Set(['acknowledged-issue-numbers', 'assets-ecr-repository-name']);

/**
 * Of all the keys in the context (`node.getAllContext()`: ours, the CDK's and those of cdk.json), the ones that look
 * like this app's and so are checked: no ":", "@", "/" or ".", no `cdk-` or `aws-` prefix, not one of the CDK's own,
 * and not set in cdk.json's "context" (where the CDK and other tools keep their settings).
 */
export function appContextKeys(allKeys: readonly string[], cdkJsonKeys: readonly string[] = []): string[] {
  const fromCdkJson = new Set(cdkJsonKeys);
  return allKeys.filter((key) => !/[:@/.]/.test(key) && !/^(cdk|aws)-/.test(key) && !CDK_OWN_KEYS.has(key) && !fromCdkJson.has(key));
}

/** The keys of the "context" object of the cdk.json in `directory` (where the CDK CLI runs the app); none without one. */
export function cdkJsonContextKeys(directory: string = process.cwd()): string[] {
  let text: string;
  try {
    text = readFileSync(join(directory, 'cdk.json'), 'utf8');
  } catch {
    return [];
  }
  const context = (JSON.parse(text) as { context?: unknown }).context;
  return typeof context === 'object' && context !== null ? Object.keys(context) : [];
}

/** Reads the context through a construct's node (the App). */
export function contextOf(scope: Construct, cdkJsonKeys: readonly string[] = cdkJsonContextKeys()): ContextSource {
  return {
    get: (name) => scope.node.tryGetContext(name),
    keys: () => appContextKeys(Object.keys(scope.node.getAllContext()), cdkJsonKeys),
  };
}

const KNOWN_KEYS = Object.keys(CONTEXT_VALUES) as readonly ContextName[];

/** Edit distance (insertions, deletions, substitutions) between two strings. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      current[j] = Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The known key an unknown one most likely meant: same letters but for case, "-" and "_", or a few typos away. */
export function closestContextKey(key: string): ContextName | undefined {
  const normal = (name: string) => name.toLowerCase().replace(/[-_]/g, '');
  const typed = normal(key);
  let best: { name: ContextName; distance: number } | undefined;
  for (const name of KNOWN_KEYS) {
    const d = distance(typed, normal(name));
    if (best === undefined || d < best.distance) best = { name, distance: d };
  }
  return best !== undefined && best.distance <= Math.max(1, Math.floor(typed.length / 4)) ? best.name : undefined;
}

/** Fails naming every unknown key as typed, with the known key it likely meant, and listing the known keys. */
export function checkContextKeys(keys: readonly string[]): void {
  const unknown = keys.filter((key) => !(KNOWN_KEYS as readonly string[]).includes(key));
  if (unknown.length === 0) return;
  const lines = unknown.map((key) => {
    const closest = closestContextKey(key);
    return `Unknown context key "${key}"${closest === undefined ? '.' : `: did you mean "${closest}"?`}`;
  });
  fail(`${lines.join('\n')} Known keys: ${KNOWN_KEYS.join(', ')}.`);
}

/**
 * The construct's props named by the context key that sets them, so that a message from the construct's checks
 * names what the user typed (`validityDays`, not `certificateValidityDays`). Longest first.
 */
const PROP_TO_CONTEXT_KEY: readonly (readonly [RegExp, string])[] = [
  [/\bsubordinateCaCertificate\.certificateChainPem\b/g, 'subordinateCaChainFile'],
  [/\bsubordinateCaCertificate\.certificatePem\b/g, 'subordinateCaCertificateFile'],
  [/\bsubordinateCaCertificate\b/g, 'subordinateCaCertificateFile'],
  [/\bcertificateValidityDays\b/g, 'validityDays'],
  [/\bapiThrottling needs a positive rateLimit and a whole positive burstLimit\b/g, 'apiRateLimit must be positive and apiBurstLimit a whole positive number'],
  [/\bcaSubject\b/g, 'caCommonName'],
  [/\bThe CA ARN\b/g, 'caArn'],
];

/** A message of the construct's checks in context terms: each prop named by the context key that sets it. */
export function inContextTerms(message: string): string {
  return PROP_TO_CONTEXT_KEY.reduce((text, [prop, key]) => text.replace(prop, key), message);
}

/**
 * Runs `build` (making the stack from context values), rewording a configuration error so it names the context key
 * as typed rather than the construct's prop.
 */
export function withContextTerms<T>(build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (error instanceof InvalidConfigurationError) throw new InvalidConfigurationError(inContextTerms(error.message), { cause: error });
    throw error;
  }
}

/**
 * Turns the context values into the stack's props, failing at synth with a message that names
 * the value, what it got and what it accepts. The construct then checks how the values combine.
 */
export function stackPropsFromContext(scope: Construct, source: ContextSource = contextOf(scope)): DeviceCertificateLifecycleStackProps & { readonly stackName: string } {
  if (source.keys) checkContextKeys(source.keys());
  return withContextTerms(() => propsFrom(source));
}

function propsFrom(source: ContextSource): DeviceCertificateLifecycleStackProps & { readonly stackName: string } {
  const text = (name: ContextName): string | undefined => {
    const value = source.get(name);
    if (value === undefined || value === null || value === '') return undefined;
    if (typeof value !== 'string' && typeof value !== 'number') fail(`Context value ${name} must be a string (got ${JSON.stringify(value)}).`);
    return String(value).trim();
  };
  const oneOf = <T extends string>(name: ContextName, allowed: readonly T[]): T | undefined => {
    const value = text(name);
    if (value === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(value)) fail(`Context value ${name} must be one of ${allowed.join(', ')} (got "${value}").`);
    return value as T;
  };
  const number = (name: ContextName): number | undefined => {
    const value = text(name);
    if (value === undefined) return undefined;
    const parsed = Number(value);
    if (!Number.isFinite(parsed)) fail(`Context value ${name} must be a number (got "${value}").`);
    return parsed;
  };
  const readFile = source.readFile ?? ((path: string) => readFileSync(path, 'utf8'));
  const file = (name: ContextName): string | undefined => {
    const path = text(name);
    if (path === undefined) return undefined;
    try {
      return readFile(path);
    } catch (error) {
      fail(`Context value ${name} names ${path}, which cannot be read: ${(error as Error).message}`);
    }
  };

  const namePrefix = text('namePrefix') ?? DEFAULTS.namePrefix;
  checkNamePrefix(namePrefix);
  const caArn = text('caArn');
  if (caArn !== undefined) checkCaArn(caArn);
  const previousCaArns = (text('previousCaArns') ?? '').split(',').map((arn) => arn.trim()).filter((arn) => arn !== '');
  previousCaArns.forEach(checkCaArn);
  if (caArn !== undefined && previousCaArns.includes(caArn)) fail(`previousCaArns lists the current CA ${caArn}: list only the CAs it replaced.`);
  if ((text('subordinateCaCertificateFile') === undefined) !== (text('subordinateCaChainFile') === undefined)) {
    fail('Give both subordinateCaCertificateFile and subordinateCaChainFile, or neither.');
  }
  const certificatePem = file('subordinateCaCertificateFile');
  const certificateChainPem = file('subordinateCaChainFile');
  const caCommonName = text('caCommonName');
  const caOrganization = text('caOrganization');
  const rateLimit = number('apiRateLimit');
  const burstLimit = number('apiBurstLimit');
  const removalPolicy = oneOf('removalPolicy', ['retain', 'destroy']);
  const alarmTopicArn = text('alarmTopicArn');
  const expiryMonitorSchedule = text('expiryMonitorSchedule');

  return {
    stackName: namePrefix,
    description: 'Certificate lifecycle of IoT devices: AWS Private CA, JITR, device API (iot-certificate-lifecycle)',
    existingCaArn: caArn,
    previousCaArns: previousCaArns.length > 0 ? previousCaArns : undefined,
    alarmTopicArn,
    lifecycle: {
      caType: oneOf('caType', Object.values(CaType)),
      caKeyAlgorithm: oneOf('caKeyAlgorithm', Object.values(CaKeyAlgorithm)),
      caUsageMode: oneOf('caUsageMode', Object.values(CaUsageMode)),
      caSubject: caCommonName === undefined && caOrganization === undefined ? undefined : { commonName: caCommonName ?? `${namePrefix} device CA`, organization: caOrganization },
      caValidityYears: number('caValidityYears'),
      subordinateCaCertificate: certificatePem !== undefined && certificateChainPem !== undefined ? { certificatePem, certificateChainPem } : undefined,
      certificateValidityDays: number('validityDays'),
      enrollmentPolicy: oneOf('enrollmentPolicy', Object.values(EnrollmentPolicy)),
      removalPolicy: removalPolicy === undefined ? undefined : removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
      namePrefix,
      topicRoot: text('topicRoot'),
      apiThrottling:
        rateLimit === undefined && burstLimit === undefined
          ? undefined
          : { rateLimit: rateLimit ?? DEFAULTS.apiThrottling.rateLimit, burstLimit: burstLimit ?? DEFAULTS.apiThrottling.burstLimit },
      webAclArn: text('webAclArn'),
      expiryMonitorSchedule: expiryMonitorSchedule === undefined ? undefined : Schedule.expression(expiryMonitorSchedule),
      expiryWarningDays: number('expiryWarningDays'),
      caExpiryAlarmDays: number('caExpiryAlarmDays'),
      rotationCommitHours: number('rotationCommitHours'),
      rotationSweepMinutes: number('rotationSweepMinutes'),
      rotationConcurrency: number('rotationConcurrency'),
      registrationConcurrency: number('registrationConcurrency'),
    },
  };
}
