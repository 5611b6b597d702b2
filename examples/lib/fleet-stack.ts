import { CfnOutput, Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { CaUsageMode, DeviceCertificateLifecycle, EnrollmentPolicy } from 'iot-certificate-lifecycle';

export interface SensorFleetStackProps extends StackProps {
  /**
   * An SNS topic of yours that the construct's alarms notify.
   * @default - alarms without actions (visible in the CloudWatch console)
   */
  readonly alarmTopicArn?: string;
}

/** Your own stack: the certificate lifecycle of a sensor fleet, next to whatever else the app deploys. */
export class SensorFleetStack extends Stack {
  public readonly lifecycle: DeviceCertificateLifecycle;

  public constructor(scope: Construct, id: string, props: SensorFleetStackProps = {}) {
    super(scope, id, props);

    this.lifecycle = new DeviceCertificateLifecycle(this, 'SensorCertificates', {
      // A new AWS Private CA (no existingCertificateAuthority) in general-purpose mode, device certificates valid a
      // year; docs/production.md compares what each CA mode costs per device.
      caUsageMode: CaUsageMode.GENERAL_PURPOSE,
      certificateValidityDays: 365,
      // Only devices your backend pre-registered (POST /devices) are activated on their first connect.
      enrollmentPolicy: EnrollmentPolicy.PREREGISTERED,
      // Names of the thing group, IoT policy, topic rule and API; each sensor owns sensors/<thingName>/...
      namePrefix: 'sensor-fleet',
      topicRoot: 'sensors',
      logRetention: RetentionDays.THREE_MONTHS,
      apiThrottling: { rateLimit: 20, burstLimit: 40 },
      expiryMonitorSchedule: events.Schedule.rate(Duration.hours(12)),
      alarmTopic: props.alarmTopicArn === undefined ? undefined : sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn),
    });

    new CfnOutput(this, 'DeviceApiUrl', { value: this.lifecycle.api.restApi.url, description: 'The device API (IAM auth: sign requests with SigV4, service execute-api)' });
    new CfnOutput(this, 'CertificateAuthorityArn', { value: this.lifecycle.certificateAuthorityArn });
    new CfnOutput(this, 'ThingGroupName', { value: this.lifecycle.thingGroup.ref });
  }
}
