import { Bucket } from 'aws-cdk-lib/aws-s3';
import { RemovalPolicy } from 'aws-cdk-lib';
import type { DeviceCertificateLifecycleStackProps } from '../../infra/device-certificate-lifecycle-stack';
import { CaType, CaUsageMode } from '../../infra/settings';
import { EXISTING_CA_ARN, acknowledgements, buildStack, unacknowledgedNagFindings } from './stacks';

/**
 * cdk-nag AwsSolutions over the app in each CA option: no error or warning may remain unless it was
 * acknowledged, on the narrowest construct, with a written reason. The rule ids we acknowledge are
 * listed here so that a new acknowledgement is a reviewed change.
 */
const ACKNOWLEDGED_RULES = new Set([
  'AwsSolutions-S1', // CRL bucket: no server access logs
  'AwsSolutions-SQS3', // the dead-letter queue itself
  'AwsSolutions-L1', // runtime pinned to nodejs22.x
  'AwsSolutions-APIG3', // no WAF unless webAclArn is given
  'AwsSolutions-COG4', // AWS_IAM instead of Cognito
  'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
  'AwsSolutions-IAM5[Resource::*]',
  'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cert/*]',
  'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]',
  'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cacert/*]',
  'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/devices/*/certificates/*]', // the rotation function's answers to devices
  'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/devices/*/certificates/expiring]', // renewal notices to devices (the expiry monitor)
]);
const ACKNOWLEDGED_PATTERNS = [/^AwsSolutions-IAM5\[Resource::<\w+\.Arn>\/index\/\*\]$/, /^AwsSolutions-IAM5\[Resource::<\w+\.Arn>:\*\]$/];

const variants: [string, DeviceCertificateLifecycleStackProps][] = [
  ['a new ROOT CA in general-purpose mode (the defaults)', {}],
  ['an existing CA in short-lived mode', { existingCaArn: EXISTING_CA_ARN, lifecycle: { caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE } }],
  [
    'a new short-lived ROOT CA, destroyed with the stack, with WAF and an alarm topic',
    {
      alarmTopicArn: 'arn:aws:sns:eu-west-1:111122223333:alarms',
      lifecycle: {
        caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE,
        removalPolicy: RemovalPolicy.DESTROY,
        webAclArn: 'arn:aws:wafv2:eu-west-1:111122223333:regional/webacl/api/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9',
      },
    },
  ],
  ['a new SUBORDINATE CA waiting for its certificate', { lifecycle: { caType: CaType.SUBORDINATE } }],
];

describe.each(variants)('cdk-nag AwsSolutions with %s', (_name, props) => {
  let built: ReturnType<typeof buildStack>;
  beforeAll(() => {
    built = buildStack(props);
  });

  test('reports no unacknowledged error or warning', () => {
    const findings = unacknowledgedNagFindings(built.app).map((violation) => `${violation.ruleName} (${violation.severity}) at ${violation.violatingResources.map((resource) => resource.constructPath).join(', ')}`);
    expect(findings).toEqual([]);
  });

  test('acknowledges only reviewed rules, each with a written reason', () => {
    for (const { path, id, reason } of acknowledgements(built.app)) {
      expect({ path, id, known: ACKNOWLEDGED_RULES.has(id) || ACKNOWLEDGED_PATTERNS.some((pattern) => pattern.test(id)) }).toEqual({ path, id, known: true });
      expect(reason.length).toBeGreaterThan(40);
    }
  });

  test('acknowledges nothing at the app or stack level', () => {
    const broad = acknowledgements(built.app).filter(({ path }) => path === '' || path === 'TestStack');
    expect(broad).toEqual([]);
  });
});

test('the check bites: a bucket without acknowledgement is reported', () => {
  const { app, stack } = buildStack();
  new Bucket(stack, 'Unreviewed', { enforceSSL: true });
  expect(unacknowledgedNagFindings(app).map((violation) => violation.ruleName)).toContain('AwsSolutions-S1');
});
