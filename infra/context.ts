import { readFileSync } from 'node:fs';
import { RemovalPolicy } from 'aws-cdk-lib';
import { Schedule } from 'aws-cdk-lib/aws-events';
import type { Construct } from 'constructs';
import type { DeviceCertificateLifecycleStackProps } from './device-certificate-lifecycle-stack';
import { CaKeyAlgorithm, CaType, CaUsageMode, DEFAULTS, EnrollmentPolicy, checkCaArn, checkNamePrefix, fail } from './settings';

/**
 * The context values the app reads (`cdk deploy -c name=value`, or the "context" of cdk.json),
 * with what each does. docs/deploy.md explains them at length.
 */
export const CONTEXT_VALUES = {
  caArn: 'ARN of an existing, ACTIVE AWS Private CA to use; when absent the stack creates a CA',
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
} as const;

export type ContextName = keyof typeof CONTEXT_VALUES;

export interface ContextSource {
  /** A context value as CDK gives it: a string from `-c`, or any JSON value from cdk.json. */
  readonly get: (name: ContextName) => unknown;
  /** Reads a file named by a context value. */
  readonly readFile?: (path: string) => string;
}

/** Reads the context through a construct's node (the App). */
export function contextOf(scope: Construct): ContextSource {
  return { get: (name) => scope.node.tryGetContext(name) };
}

/**
 * Turns the context values into the stack's props, failing at synth with a message that names
 * the value, what it got and what it accepts. The construct then checks how the values combine.
 */
export function stackPropsFromContext(scope: Construct, source: ContextSource = contextOf(scope)): DeviceCertificateLifecycleStackProps & { readonly stackName: string } {
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
    },
  };
}
