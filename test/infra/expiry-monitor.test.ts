import { App, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Schedule } from 'aws-cdk-lib/aws-events';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { DRIFT_LIMITS, DriftCheck } from '../../functions/core/drift';
import { EXPIRY_METRICS } from '../../functions/handlers/config';
import { DRIFT_DEADLINE_MARGIN_MS, expiryMonitorDependencies } from '../../functions/handlers/expiry-monitor';
import { stackPropsFromContext } from '../../infra/context';
import { DeviceCertificateLifecycleStack } from '../../infra/device-certificate-lifecycle-stack';
import { addDeviceTable } from '../../infra/device-table';
import { DRIFT_CHECK_TIMEOUT, DRIFT_CURSOR_PARTITION_KEY, ExpiryMonitor } from '../../infra/expiry-monitor';
import { CaType, CaUsageMode } from '../../infra/settings';
import { acknowledgements, actionsOf, buildStack, functionLogicalId, resourcesOf, statementsOfFunction, unacknowledgedNagFindings, type SynthesizedStack } from './stacks';

/** The default stack (new ROOT CA, general-purpose mode, device certificates valid 365 days), built once. */
let built: SynthesizedStack;
let template: Template;
beforeAll(() => {
  built = buildStack();
  template = built.template;
});

const MONITOR = 'LifecycleExpiryMonitorFunction';
const caArn = (t: Template = template) => ({ 'Fn::GetAtt': [Object.keys(t.findResources('AWS::ACMPCA::CertificateAuthority'))[0], 'Arn'] });
const deviceTableId = (t: Template = template) => {
  const [id] = Object.entries(t.findResources('AWS::DynamoDB::Table')).find(([, table]) => table.Properties.GlobalSecondaryIndexes !== undefined) ?? [];
  if (!id) throw new Error('no device table');
  return id;
};
const alarmOn = (t: Template, metricName: string) => Object.values(t.findResources('AWS::CloudWatch::Alarm')).find((alarm) => alarm.Properties.MetricName === metricName);
const environmentOf = (t: Template) => t.findResources('AWS::Lambda::Function')[functionLogicalId(t, MONITOR)]?.Properties.Environment.Variables as Record<string, unknown>;

describe('schedule', () => {
  test('an EventBridge rule runs the monitor once a day', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 day)',
      State: 'ENABLED',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [functionLogicalId(template, MONITOR), 'Arn'] } })],
    });
  });

  test('only EventBridge, and only from that rule, may invoke the monitor', () => {
    const [ruleId] = Object.keys(template.findResources('AWS::Events::Rule'));
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).filter(
      (permission) => JSON.stringify(permission.Properties.FunctionName).includes(functionLogicalId(template, MONITOR)),
    );
    expect(permissions.map((permission) => permission.Properties)).toEqual([
      { Action: 'lambda:InvokeFunction', FunctionName: { 'Fn::GetAtt': [functionLogicalId(template, MONITOR), 'Arn'] }, Principal: 'events.amazonaws.com', SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] } },
    ]);
  });

  test('a schedule given as a prop replaces the daily rate', () => {
    const { template: custom } = buildStack({ lifecycle: { expiryMonitorSchedule: Schedule.cron({ hour: '6', minute: '0' }) } });
    custom.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(0 6 * * ? *)' });
  });
});

describe('function', () => {
  test('runs Node.js 22 on arm64 with X-Ray, for up to 15 minutes (the drift check reads AWS IoT at a few calls a second)', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('^Expiry monitor'),
      Runtime: 'nodejs22.x',
      Architectures: ['arm64'],
      TracingConfig: { Mode: 'Active' },
      Timeout: 900,
    });
  });

  test('gets the table, the CA, the 30-day warning window, the deployment as metrics service and the thing group (drift check), and nothing else of the lifecycle', () => {
    const environment = environmentOf(template);
    expect(environment).toMatchObject({
      DEVICE_TABLE_NAME: { Ref: deviceTableId() },
      CA_ARN: caArn(),
      EXPIRY_WARNING_DAYS: '30',
      METRICS_SERVICE_NAME: 'iot-cert-lifecycle',
    });
    expect(environment).toHaveProperty('THING_GROUP_NAME');
    for (const name of ['IDEMPOTENCY_TABLE_NAME', 'ENROLLMENT_POLICY', 'CERTIFICATE_VALIDITY_DAYS']) expect(environment).not.toHaveProperty(name);
  });

  test('starts with the variables the stack sets: expiryMonitorDependencies finds each one it reads', () => {
    const samples: Record<string, string> = {
      DEVICE_TABLE_NAME: 'devices',
      CA_ARN: 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9',
      CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
      CA_TEMPLATE_ARN: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
      NODE_OPTIONS: '--enable-source-maps',
    };
    const environment = Object.fromEntries(Object.entries(environmentOf(template)).map(([name, value]) => [name, typeof value === 'string' ? value : samples[name]]));
    const saved = { ...process.env };
    try {
      process.env = { ...environment, AWS_REGION: 'eu-west-1' };
      expect(expiryMonitorDependencies().monitor.settings.warningDays).toBe(30);
    } finally {
      process.env = saved;
    }
  });
});

describe('permissions', () => {
  test('the role may query the device table (ByExpiry; devices and their certificates and its cursor for the drift check), read the CA certificate, read and repair certificate statuses in AWS IoT, publish renewal notices, write its log and trace: nothing else', () => {
    const statements = statementsOfFunction(template, MONITOR);
    expect(statements.flatMap(actionsOf).sort()).toEqual(
      [
        'acm-pca:GetCertificateAuthorityCertificate',
        'dynamodb:BatchGetItem',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:Query',
        'dynamodb:Query',
        'iot:DescribeCertificate',
        'iot:DescribeEndpoint',
        'iot:Publish',
        'iot:UpdateCertificate',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
        'xray:PutTelemetryRecords',
        'xray:PutTraceSegments',
      ].sort(),
    );
  });

  test('dynamodb:Query is granted on the ByExpiry index only, not on the table or its other index', () => {
    const [query] = statementsOfFunction(template, MONITOR).filter((statement) => actionsOf(statement).includes('dynamodb:Query'));
    expect(resourcesOf(query!)).toEqual([{ 'Fn::Join': ['', [{ 'Fn::GetAtt': [deviceTableId(), 'Arn'] }, '/index/ByExpiry']] }]);
  });

  test('acm-pca:GetCertificateAuthorityCertificate is granted on the CA only', () => {
    expect(statementsOfFunction(template, MONITOR)).toContainEqual({ Effect: 'Allow', Action: 'acm-pca:GetCertificateAuthorityCertificate', Resource: caArn() });
  });
});

describe('alarms', () => {
  test('alarms when the CA has fewer days left than the device certificate validity plus 90, and when the monitor stops reporting', () => {
    expect(alarmOn(template, EXPIRY_METRICS.caDaysToExpiry)?.Properties).toMatchObject({
      Namespace: 'IotCertificateLifecycle',
      MetricName: 'CaDaysToExpiry',
      Dimensions: [{ Name: 'service', Value: 'iot-cert-lifecycle' }],
      Statistic: 'Minimum',
      Period: 86_400,
      EvaluationPeriods: 1,
      ComparisonOperator: 'LessThanThreshold',
      Threshold: 365 + 90,
      TreatMissingData: 'breaching',
    });
  });

  test('alarms when the monitor function fails', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: functionLogicalId(template, MONITOR) } }],
      Statistic: 'Sum',
      Period: 86_400,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  test('alarms when an ACTIVE device\'s certificates all expired without a rotation', () => {
    expect(alarmOn(template, EXPIRY_METRICS.devicesExpiredWithoutRotation)?.Properties).toMatchObject({
      Namespace: 'IotCertificateLifecycle',
      Dimensions: [{ Name: 'service', Value: 'iot-cert-lifecycle' }],
      Statistic: 'Maximum',
      Period: 86_400,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Threshold: 1,
      TreatMissingData: 'notBreaching',
    });
  });

  test('alarms when devices are still on a previous CA that expires within the CA alarm threshold (no data: none left)', () => {
    expect(alarmOn(template, EXPIRY_METRICS.previousCaDaysToExpiry)?.Properties).toMatchObject({
      Namespace: 'IotCertificateLifecycle',
      Dimensions: [{ Name: 'service', Value: 'iot-cert-lifecycle' }],
      Statistic: 'Minimum',
      ComparisonOperator: 'LessThanThreshold',
      Threshold: 365 + 90,
      TreatMissingData: 'notBreaching',
    });
  });

  test('the construct lists the monitor alarms with its own', () => {
    const monitor = built.stack.lifecycle.expiryMonitor;
    expect(monitor).toBeDefined();
    expect(built.stack.lifecycle.alarms).toEqual(expect.arrayContaining([monitor!.caExpiryAlarm, monitor!.errorsAlarm, monitor!.expiredWithoutRotationAlarm, monitor!.previousCaExpiryAlarm]));
  });

  test('previous CAs (previousCaArns) may be read by the monitor, and issued from by no function', () => {
    const previous = 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/99999999-4e5f-6071-8293-a4b5c6d7e8f9';
    const { template: rotated } = buildStack({ previousCaArns: [previous] });
    expect(environmentOf(rotated).PREVIOUS_CA_ARNS).toBe(previous);
    expect(statementsOfFunction(rotated, MONITOR)).toContainEqual({ Effect: 'Allow', Action: 'acm-pca:GetCertificateAuthorityCertificate', Resource: [caArn(rotated), previous] });
    const issuing = Object.values(rotated.findResources('AWS::IAM::Policy'))
      .flatMap((policy) => policy.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[])
      .filter((statement) => [statement.Action].flat().includes('acm-pca:IssueCertificate'));
    expect(issuing.length).toBeGreaterThan(0);
    expect(issuing.filter((statement) => JSON.stringify(statement.Resource).includes(previous))).toEqual([]);
  });

  test('both notify the alarm topic when there is one', () => {
    const topicArn = 'arn:aws:sns:eu-west-1:111122223333:alarms';
    const { template: withTopic } = buildStack({ alarmTopicArn: topicArn });
    expect(alarmOn(withTopic, 'CaDaysToExpiry')?.Properties.AlarmActions).toEqual([topicArn]);
    const errors = Object.values(withTopic.findResources('AWS::CloudWatch::Alarm')).find(
      (alarm) => alarm.Properties.MetricName === 'Errors' && alarm.Properties.Dimensions[0].Value.Ref === functionLogicalId(withTopic, MONITOR),
    );
    expect(errors?.Properties.AlarmActions).toEqual([topicArn]);
  });

  test('without a topic the alarms have no actions', () => {
    expect(alarmOn(template, 'CaDaysToExpiry')?.Properties.AlarmActions).toBeUndefined();
  });
});

describe('settings', () => {
  test('in short-lived mode, warns 2 days ahead and alarms 97 days before the CA expires', () => {
    const { template: shortLived } = buildStack({ lifecycle: { caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE } });
    expect(environmentOf(shortLived).EXPIRY_WARNING_DAYS).toBe('2');
    expect(alarmOn(shortLived, 'CaDaysToExpiry')?.Properties.Threshold).toBe(97);
  });

  test('takes the warning window, the alarm threshold and the name prefix from the props', () => {
    const { template: custom } = buildStack({ lifecycle: { expiryWarningDays: 14, caExpiryAlarmDays: 540, namePrefix: 'fleet-a' } });
    expect(environmentOf(custom)).toMatchObject({ EXPIRY_WARNING_DAYS: '14', METRICS_SERVICE_NAME: 'fleet-a' });
    expect(alarmOn(custom, 'CaDaysToExpiry')?.Properties).toMatchObject({ Threshold: 540, Dimensions: [{ Name: 'service', Value: 'fleet-a' }] });
  });

  test('an existing CA is watched too', () => {
    const existing = 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9';
    const { template: withExisting } = buildStack({ existingCaArn: existing });
    expect(environmentOf(withExisting).CA_ARN).toBe(existing);
    expect(statementsOfFunction(withExisting, MONITOR)).toContainEqual({ Effect: 'Allow', Action: 'acm-pca:GetCertificateAuthorityCertificate', Resource: existing });
  });

  test('a SUBORDINATE CA waiting for its certificate has nothing to watch yet: no monitor, no schedule, no CA alarm', () => {
    const pending = buildStack({ lifecycle: { caType: CaType.SUBORDINATE } });
    expect(pending.stack.lifecycle.expiryMonitor).toBeUndefined();
    pending.template.resourceCountIs('AWS::Events::Rule', 0);
    expect(alarmOn(pending.template, 'CaDaysToExpiry')).toBeUndefined();
  });

  test.each([
    [{ expiryWarningDays: 0 }, 'expiryWarningDays must be a whole number of days from 1 to 3650 (got 0).'],
    [{ expiryWarningDays: 2.5 }, 'expiryWarningDays must be a whole number of days from 1 to 3650 (got 2.5).'],
    [{ caExpiryAlarmDays: 4000 }, 'caExpiryAlarmDays must be a whole number of days from 1 to 3650 (got 4000).'],
    [
      { caExpiryAlarmDays: 90 },
      'caExpiryAlarmDays (90) must exceed certificateValidityDays (365): from 365 days before the CA expires, a device certificate of full validity would outlive it, so the alarm would come after CSR signing is already affected.',
    ],
    [{ caExpiryAlarmDays: 365 }, 'caExpiryAlarmDays (365) must exceed certificateValidityDays (365)'],
    [{ expiryMonitorSchedule: Schedule.rate(Duration.days(2)) }, 'expiryMonitorSchedule runs every 2 days, but the CA expiry alarm expects a data point every day: run it at least daily.'],
    [{ expiryMonitorSchedule: Schedule.rate(Duration.hours(25)) }, 'expiryMonitorSchedule runs every 25 hours, but the CA expiry alarm expects a data point every day: run it at least daily.'],
    [{ expiryMonitorSchedule: Schedule.expression('at(2030-01-01T00:00:00)') }, 'expiryMonitorSchedule must be a rate(...) or cron(...) expression (got "at(2030-01-01T00:00:00)").'],
  ])('fails at synth on %j', (lifecycle, message) => {
    expect(() => buildStack({ lifecycle })).toThrow(message);
  });

  test.each([Schedule.rate(Duration.days(1)), Schedule.rate(Duration.hours(6)), Schedule.rate(Duration.minutes(30))])('accepts a schedule of at least once a day (%#)', (schedule) => {
    expect(() => buildStack({ lifecycle: { expiryMonitorSchedule: schedule } })).not.toThrow();
  });

  test('context values set the schedule, the warning window and the alarm threshold', () => {
    const values: Record<string, string> = { expiryMonitorSchedule: 'cron(0 6 * * ? *)', expiryWarningDays: '21', caExpiryAlarmDays: '400' };
    const props = stackPropsFromContext(new App(), { get: (name) => values[name] });
    expect(props.lifecycle).toMatchObject({ expiryWarningDays: 21, caExpiryAlarmDays: 400 });
    expect(props.lifecycle?.expiryMonitorSchedule?.expressionString).toBe('cron(0 6 * * ? *)');
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    expect(() => new DeviceCertificateLifecycleStack(app, 'Stack', props)).not.toThrow();
  });
});

/**
 * The drift check, on the construct: the monitor with `driftCheck`, in a stack of its own with a device table, a CA
 * binding and a fleet (what the lifecycle construct passes it).
 */
describe('drift check', () => {
  const FLEET = { thingGroupName: 'fleet-devices', thingGroupArn: 'arn:aws:iot:eu-west-1:111122223333:thinggroup/fleet-devices' };
  const CA = {
    certificateAuthorityArn: 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9',
    signingAlgorithm: 'SHA256WITHECDSA',
    deviceTemplateArn: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
  };

  function monitorStack(options: { driftCheck: boolean; alarmTopic?: boolean } = { driftCheck: true }) {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const stack = new Stack(app, 'MonitorStack');
    const deviceTable = addDeviceTable(stack, RemovalPolicy.DESTROY);
    const monitor = new ExpiryMonitor(stack, 'Monitor', {
      deviceTable,
      certificateAuthority: CA,
      schedule: Schedule.rate(Duration.days(1)),
      warningDays: 30,
      caExpiryAlarmDays: 455,
      renewalNoticesPerSecond: 0,
      metricsServiceName: 'fleet-a',
      logRetention: RetentionDays.ONE_WEEK,
      removalPolicy: RemovalPolicy.DESTROY,
      ...(options.driftCheck ? { driftCheck: { fleet: FLEET } } : {}),
    });
    const monitorTemplate = Template.fromStack(stack);
    return { app, stack, monitor, template: monitorTemplate, tableId: stack.getLogicalId(deviceTable.node.defaultChild as never) };
  }

  let built: ReturnType<typeof monitorStack>;
  beforeAll(() => {
    built = monitorStack();
  });
  const statements = () => statementsOfFunction(built.template, 'MonitorFunction');

  test('grants exactly the AWS IoT actions the registry adapter declares for describing and updating certificates, on certificates only', () => {
    const iot = statements().filter((statement) => actionsOf(statement).some((action) => action.startsWith('iot:')));
    expect(iot).toEqual([
      {
        Effect: 'Allow',
        Action: ['iot:DescribeCertificate', 'iot:UpdateCertificate'],
        Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iot:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':cert/*']] },
      },
    ]);
  });

  test('sets THING_GROUP_NAME with those grants: expiryMonitorDependencies then wires the drift check', () => {
    const [fn] = Object.values(built.template.findResources('AWS::Lambda::Function')).filter((resource) => String(resource.Properties.Description).startsWith('Expiry monitor'));
    const environment = fn?.Properties.Environment.Variables as Record<string, unknown>;
    expect(environment.THING_GROUP_NAME).toBe('fleet-devices');
    const saved = { ...process.env };
    try {
      const samples: Record<string, string> = { DEVICE_TABLE_NAME: 'devices', NODE_OPTIONS: '' };
      process.env = { ...Object.fromEntries(Object.entries(environment).map(([name, value]) => [name, typeof value === 'string' ? value : (samples[name] ?? '')])), AWS_REGION: 'eu-west-1' };
      expect(expiryMonitorDependencies().drift).toBeInstanceOf(DriftCheck);
    } finally {
      process.env = saved;
    }
  });

  test('reads the device table\'s items and its ByStatus index: devices, their certificate links and certificates, the cursor', () => {
    expect(statements()).toContainEqual({
      Effect: 'Allow',
      Action: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query'],
      Resource: [{ 'Fn::GetAtt': [built.tableId, 'Arn'] }, { 'Fn::Join': ['', [{ 'Fn::GetAtt': [built.tableId, 'Arn'] }, '/index/ByStatus']] }],
    });
  });

  // That this is the key the DynamoDB store writes the cursor under: test/integration/handlers/expiry-monitor.test.ts.
  test('may write one item of the table: its cursor record (dynamodb:LeadingKeys), nothing else', () => {
    const writes = statements().filter((statement) => actionsOf(statement).some((action) => /^dynamodb:(Put|Update|Delete|BatchWrite|ConditionCheck)/.test(action)));
    expect(writes).toEqual([
      {
        Effect: 'Allow',
        Action: 'dynamodb:PutItem',
        Resource: { 'Fn::GetAtt': [built.tableId, 'Arn'] },
        Condition: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [DRIFT_CURSOR_PARTITION_KEY] } },
      },
    ]);
  });

  test('runs up to 15 minutes: room for a full run of paced registry calls, and the margin the check stops at', () => {
    expect(built.template.findResources('AWS::Lambda::Function', { Properties: { Timeout: 900 } })).not.toEqual({});
    const fullRunSeconds = DRIFT_LIMITS.maxCertificatesPerRun / DRIFT_LIMITS.registryCallsPerSecond;
    expect(fullRunSeconds + DRIFT_DEADLINE_MARGIN_MS / 1000).toBeLessThan(DRIFT_CHECK_TIMEOUT.toSeconds() - 5 * 60);
  });

  test('alarms on any disagreement in a day (CertificateDrift sum >= 1), missing data not breaching', () => {
    expect(alarmOn(built.template, EXPIRY_METRICS.certificateDrift)?.Properties).toMatchObject({
      Namespace: 'IotCertificateLifecycle',
      MetricName: 'CertificateDrift',
      Dimensions: [{ Name: 'service', Value: 'fleet-a' }],
      Statistic: 'Sum',
      Period: 86_400,
      EvaluationPeriods: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Threshold: 1,
      TreatMissingData: 'notBreaching',
      AlarmDescription: expect.stringContaining('docs/deploy.md, "Drift check"'),
    });
    expect(Object.keys(built.template.findResources('AWS::CloudWatch::Alarm')).some((id) => id.startsWith('MonitorCertificateDriftAlarm'))).toBe(true);
    expect(built.monitor.alarms).toContain(built.monitor.driftAlarm);
  });

  test('cdk-nag: nothing unacknowledged, and only the reviewed acknowledgements, each with a reason', () => {
    expect(unacknowledgedNagFindings(built.app).map((violation) => violation.ruleName)).toEqual([]);
    const found = acknowledgements(built.app).filter(({ path }) => path.startsWith('MonitorStack/Monitor'));
    expect(new Set(found.map(({ id }) => id))).toEqual(
      new Set(['AwsSolutions-L1', 'AwsSolutions-IAM5[Resource::*]', 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cert/*]']),
    );
    for (const { reason } of found) expect(reason.length).toBeGreaterThan(40);
  });

  test('without driftCheck: no AWS IoT registry grant, no THING_GROUP_NAME, no table write, no drift alarm, the default timeout', () => {
    const plain = monitorStack({ driftCheck: false });
    const all = statementsOfFunction(plain.template, 'MonitorFunction').flatMap(actionsOf);
    // It still reads devices and their certificates: the census of the fleet's CAs.
    expect(all.filter((action) => action.startsWith('iot:') || action === 'dynamodb:PutItem')).toEqual([]);
    expect(alarmOn(plain.template, EXPIRY_METRICS.certificateDrift)).toBeUndefined();
    expect(plain.monitor.driftAlarm).toBeUndefined();
    plain.template.hasResourceProperties('AWS::Lambda::Function', { Description: Match.stringLikeRegexp('^Expiry monitor'), Timeout: 300, Environment: { Variables: Match.objectLike({ DEVICE_TABLE_NAME: Match.anyValue() }) } });
    const [fn] = Object.values(plain.template.findResources('AWS::Lambda::Function'));
    expect(fn?.Properties.Environment.Variables).not.toHaveProperty('THING_GROUP_NAME');
  });
});
