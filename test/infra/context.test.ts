import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, RemovalPolicy } from 'aws-cdk-lib';
import { CONTEXT_VALUES, appContextKeys, cdkJsonContextKeys, closestContextKey, contextOf, stackPropsFromContext, withContextTerms, type ContextName } from '../../infra/context';
import { DeviceCertificateLifecycleStack } from '../../infra/device-certificate-lifecycle-stack';
import { CaKeyAlgorithm, CaType, CaUsageMode, EnrollmentPolicy } from '../../infra/settings';
import { EXISTING_CA_ARN } from './stacks';

const from = (values: Partial<Record<ContextName, unknown>>, files: Record<string, string> = {}) =>
  stackPropsFromContext(new App(), {
    get: (name) => values[name],
    readFile: (path) => {
      const content = files[path];
      if (content === undefined) throw new Error(`ENOENT: no such file, open '${path}'`);
      return content;
    },
  });

describe('context values', () => {
  test('without any, the stack creates a CA and uses the construct defaults', () => {
    const props = from({});
    expect(props.existingCaArn).toBeUndefined();
    expect(props.stackName).toBe('iot-cert-lifecycle');
    expect(Object.values(props.lifecycle ?? {}).filter((value) => value !== undefined)).toEqual(['iot-cert-lifecycle']);
  });

  test('maps every value to its prop', () => {
    const props = from(
      {
        caArn: EXISTING_CA_ARN,
        caKeyAlgorithm: 'EC_secp384r1',
        caUsageMode: 'SHORT_LIVED_CERTIFICATE',
        validityDays: '5',
        enrollmentPolicy: 'open',
        removalPolicy: 'destroy',
        namePrefix: 'fleet-a',
        topicRoot: 'things',
        apiRateLimit: '50',
        alarmTopicArn: 'arn:aws:sns:eu-west-1:111122223333:alarms',
      },
    );
    expect(props).toMatchObject({
      stackName: 'fleet-a',
      existingCaArn: EXISTING_CA_ARN,
      alarmTopicArn: 'arn:aws:sns:eu-west-1:111122223333:alarms',
      lifecycle: {
        caKeyAlgorithm: CaKeyAlgorithm.EC_SECP384R1,
        caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE,
        certificateValidityDays: 5,
        enrollmentPolicy: EnrollmentPolicy.OPEN,
        removalPolicy: RemovalPolicy.DESTROY,
        namePrefix: 'fleet-a',
        topicRoot: 'things',
        apiThrottling: { rateLimit: 50, burstLimit: 20 },
      },
    });
  });

  test('reads the signed subordinate certificate and chain from the files named', () => {
    const props = from({ caType: 'SUBORDINATE', subordinateCaCertificateFile: 'sub.pem', subordinateCaChainFile: 'chain.pem' }, { 'sub.pem': 'SUB', 'chain.pem': 'CHAIN' });
    expect(props.lifecycle).toMatchObject({ caType: CaType.SUBORDINATE, subordinateCaCertificate: { certificatePem: 'SUB', certificateChainPem: 'CHAIN' } });
  });

  test('maps the rotation values to their props', () => {
    expect(from({ rotationCommitHours: '12', rotationSweepMinutes: '5', rotationConcurrency: 4 }).lifecycle).toMatchObject({ rotationCommitHours: 12, rotationSweepMinutes: 5, rotationConcurrency: 4 });
  });

  test.each([
    [{ rotationCommitHours: '0' }, 'rotationCommitHours must be a whole number of hours from 1 to 720 (got 0): how long a device has to commit its rotated certificate.'],
    [{ rotationSweepMinutes: '2000' }, 'rotationSweepMinutes must be a whole number of minutes from 1 to 1440 (got 2000)'],
    [{ rotationCommitHours: '1', rotationSweepMinutes: '90' }, 'rotationSweepMinutes (90) must not exceed the commit window, rotationCommitHours (1, that is 60 minutes)'],
    [{ rotationConcurrency: '1' }, 'rotationConcurrency must be a whole number from 2 to 1000 (got 1)'],
  ])('the construct refuses the rotation values %j at synth, naming the context key', (values, message) => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const props = stackPropsFromContext(app, { get: (name) => (values as Partial<Record<ContextName, string>>)[name] });
    expect(() => withContextTerms(() => new DeviceCertificateLifecycleStack(app, 'Stack', props))).toThrow(message);
  });

  test('every value is documented in docs/deploy.md', () => {
    const docs = readFileSync(join(__dirname, '..', '..', 'docs', 'deploy.md'), 'utf8');
    expect(Object.keys(CONTEXT_VALUES).filter((name) => !docs.includes(`\`${name}\``))).toEqual([]);
  });

  test.each([
    [{ caUsageMode: 'SHORT' }, 'Context value caUsageMode must be one of GENERAL_PURPOSE, SHORT_LIVED_CERTIFICATE (got "SHORT").'],
    [{ caKeyAlgorithm: 'P256' }, 'Context value caKeyAlgorithm must be one of EC_prime256v1, EC_secp384r1, RSA_2048, RSA_4096 (got "P256").'],
    [{ caType: 'INTERMEDIATE' }, 'Context value caType must be one of ROOT, SUBORDINATE (got "INTERMEDIATE").'],
    [{ removalPolicy: 'keep' }, 'Context value removalPolicy must be one of retain, destroy (got "keep").'],
    [{ validityDays: 'a week' }, 'Context value validityDays must be a number (got "a week").'],
    [{ rotationSweepMinutes: 'often' }, 'Context value rotationSweepMinutes must be a number (got "often").'],
    [{ rotationConcurrency: { max: 4 } }, 'Context value rotationConcurrency must be a string (got {"max":4}).'],
    [{ caArn: 'my-ca' }, 'caArn must look like arn:aws:acm-pca:<region>:<account>:certificate-authority/<uuid> (got "my-ca").'],
    [{ namePrefix: '1fleet' }, 'namePrefix must start with a letter and hold 1 to 32 letters, digits and "-" (got "1fleet").'],
    [{ subordinateCaCertificateFile: 'sub.pem' }, 'Give both subordinateCaCertificateFile and subordinateCaChainFile, or neither.'],
    [{ subordinateCaCertificateFile: 'missing.pem', subordinateCaChainFile: 'missing.pem' }, "Context value subordinateCaCertificateFile names missing.pem, which cannot be read: ENOENT: no such file, open 'missing.pem'"],
  ])('fails on %j', (values, message) => {
    expect(() => from(values)).toThrow(message);
  });

  test('fails at synth when validityDays exceeds 7 in short-lived mode, naming the fix', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const props = stackPropsFromContext(app, { get: (name) => ({ caUsageMode: 'SHORT_LIVED_CERTIFICATE', validityDays: '30' })[name as string] });
    expect(() => new DeviceCertificateLifecycleStack(app, 'Stack', props)).toThrow(
      'certificateValidityDays is 30, but a CA in SHORT_LIVED_CERTIFICATE mode issues certificates valid for 7 days at most: use 7 or less, or the GENERAL_PURPOSE mode.',
    );
  });

  test('a bad value the construct refuses is named by the context key as typed, not by the prop', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const props = stackPropsFromContext(app, { get: (name) => ({ caUsageMode: 'SHORT_LIVED_CERTIFICATE', validityDays: '30' })[name as string] });
    expect(() => withContextTerms(() => new DeviceCertificateLifecycleStack(app, 'Stack', props))).toThrow(
      /^validityDays is 30, but a CA in SHORT_LIVED_CERTIFICATE mode issues certificates valid for 7 days at most/,
    );
  });

  test('a subordinate certificate given without caType=SUBORDINATE names the file key', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const props = from({ subordinateCaCertificateFile: 'sub.pem', subordinateCaChainFile: 'chain.pem' }, { 'sub.pem': 'SUB', 'chain.pem': 'CHAIN' });
    expect(() => withContextTerms(() => new DeviceCertificateLifecycleStack(app, 'Stack', props))).toThrow('subordinateCaCertificateFile applies only when caType is SUBORDINATE.');
  });
});

describe('context keys', () => {
  const known = Object.keys(CONTEXT_VALUES).join(', ');
  /** The context as the CDK CLI hands it to the app for `cdk synth -c <values>`, with its own keys. */
  const cliContext = (values: Record<string, string>) => ({
    'aws:cdk:enable-path-metadata': true,
    'aws:cdk:enable-asset-metadata': true,
    'aws:cdk:version-reporting': true,
    'aws:cdk:bundling-stacks': [],
    '@aws-cdk/core:failSynthOnValidationErrors': true,
    '@aws-cdk/aws-iam:minimizePolicies': true,
    'acknowledged-issue-numbers': [32775],
    'availability-zones:account=111122223333:region=eu-west-1': ['eu-west-1a'],
    'cdk-migrate': true,
    ...values,
  });
  const synthProps = (values: Record<string, string>, cdkJsonKeys: readonly string[] = []) => {
    const app = new App({ context: cliContext(values) });
    return stackPropsFromContext(app, contextOf(app, cdkJsonKeys));
  };

  test('a misspelled key is refused, naming it as typed, the key it likely meant and the known keys', () => {
    expect(() => synthProps({ enrolmentPolicy: 'open' })).toThrow(`Unknown context key "enrolmentPolicy": did you mean "enrollmentPolicy"? Known keys: ${known}.`);
  });

  test('a misspelled rotation key is refused with the key it meant', () => {
    expect(() => synthProps({ rotationCommitHour: '6' })).toThrow('Unknown context key "rotationCommitHour": did you mean "rotationCommitHours"?');
    expect(() => synthProps({ 'rotation-sweep-minutes': '5' })).toThrow('Unknown context key "rotation-sweep-minutes": did you mean "rotationSweepMinutes"?');
    expect(synthProps({ rotationConcurrency: '4' }).lifecycle?.rotationConcurrency).toBe(4);
  });

  test('a key in another case or kebab-case is refused with the key it meant', () => {
    expect(() => synthProps({ ValidityDays: '30' })).toThrow('Unknown context key "ValidityDays": did you mean "validityDays"?');
    expect(() => synthProps({ 'enrollment-policy': 'open' })).toThrow('Unknown context key "enrollment-policy": did you mean "enrollmentPolicy"?');
  });

  test('a key like no known one is refused with the known keys only', () => {
    expect(() => synthProps({ region: 'eu-west-1' })).toThrow(`Unknown context key "region". Known keys: ${known}.`);
  });

  test('every unknown key is named', () => {
    expect(() => synthProps({ enrolmentPolicy: 'open', namePrefx: 'fleet' })).toThrow(
      'Unknown context key "enrolmentPolicy": did you mean "enrollmentPolicy"?\nUnknown context key "namePrefx": did you mean "namePrefix"?',
    );
  });

  test("the CDK's own keys and the keys of cdk.json's context are not checked; known keys are read", () => {
    expect(synthProps({ enrollmentPolicy: 'open', myTeamSetting: 'x' }, ['myTeamSetting']).lifecycle?.enrollmentPolicy).toBe(EnrollmentPolicy.OPEN);
    expect(appContextKeys(Object.keys(cliContext({ caArn: 'x', typo: 'y' })), [])).toEqual(['caArn', 'typo']);
  });

  test('the suggestion is only made for a near miss', () => {
    expect(closestContextKey('caARN')).toBe('caArn');
    expect(closestContextKey('validityDay')).toBe('validityDays');
    expect(closestContextKey('stage')).toBeUndefined();
  });

  test("cdk.json's context keys are read from the project's cdk.json", () => {
    const keys = cdkJsonContextKeys(join(__dirname, '..', '..'));
    expect(keys.filter((key) => appContextKeys([key]).length > 0)).toEqual([]);
    expect(cdkJsonContextKeys(join(__dirname, 'no-such-folder'))).toEqual([]);
  });
});
