import { App, Duration } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { Schedule } from 'aws-cdk-lib/aws-events';
import { EXPIRY_METRICS } from '../../functions/handlers/config';
import { expiryMonitorDependencies } from '../../functions/handlers/expiry-monitor';
import { stackPropsFromContext } from '../../infra/context';
import { DeviceCertificateLifecycleStack } from '../../infra/device-certificate-lifecycle-stack';
import { CaType, CaUsageMode } from '../../infra/settings';
import { actionsOf, buildStack, functionLogicalId, resourcesOf, statementsOfFunction, type SynthesizedStack } from './stacks';

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
  test('runs Node.js 22 on arm64 with X-Ray, for up to 5 minutes', () => {
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('^Expiry monitor'),
      Runtime: 'nodejs22.x',
      Architectures: ['arm64'],
      TracingConfig: { Mode: 'Active' },
      Timeout: 300,
    });
  });

  test('gets the table, the CA, the 30-day warning window and the deployment as metrics service, and nothing of the lifecycle', () => {
    const environment = environmentOf(template);
    expect(environment).toMatchObject({
      DEVICE_TABLE_NAME: { Ref: deviceTableId() },
      CA_ARN: caArn(),
      EXPIRY_WARNING_DAYS: '30',
      METRICS_SERVICE_NAME: 'iot-cert-lifecycle',
    });
    for (const name of ['IDEMPOTENCY_TABLE_NAME', 'THING_GROUP_NAME', 'ENROLLMENT_POLICY', 'CERTIFICATE_VALIDITY_DAYS']) expect(environment).not.toHaveProperty(name);
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
  test('the role may query the ByExpiry index of the device table, read the CA certificate, write its log and trace: nothing else', () => {
    const statements = statementsOfFunction(template, MONITOR);
    expect(statements.flatMap(actionsOf).sort()).toEqual(
      ['acm-pca:GetCertificateAuthorityCertificate', 'dynamodb:Query', 'logs:CreateLogStream', 'logs:PutLogEvents', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments'].sort(),
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

  test('the construct lists the monitor alarms with its own', () => {
    const monitor = built.stack.lifecycle.expiryMonitor;
    expect(monitor).toBeDefined();
    expect(built.stack.lifecycle.alarms).toEqual(expect.arrayContaining([monitor!.caExpiryAlarm, monitor!.errorsAlarm]));
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
