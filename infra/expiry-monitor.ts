import { Duration, Validations, type RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { CA_OPERATIONS, EXPIRY_METRICS } from '../functions/handlers/config';
import { HANDLER_ENTRIES, LifecycleFunction, type CertificateAuthorityBinding } from './lifecycle-function';
import { DEFAULTS } from './settings';
import { DEFAULT_TOPIC_ROOT } from '../functions/policy/fleet-policy';
import { privateCaIamActions } from '../functions/adapters/aws/private-ca-certificate-authority';

/** Where the monitor may publish: the renewal notice topic of every device. */
export const EXPIRING_TOPICS_RESOURCE = `${DEFAULT_TOPIC_ROOT}/*/certificates/expiring`;

export interface ExpiryMonitorProps {
  /** The device table; the monitor may only query its ByExpiry index. */
  readonly deviceTable: ITable;
  /** The CA whose certificate and chain the monitor reads (GetCertificateAuthorityCertificate only). */
  readonly certificateAuthority: CertificateAuthorityBinding;
  /** When the monitor runs; at least daily (see `checkExpiryMonitorSchedule`). */
  readonly schedule: events.Schedule;
  /** Device certificates with fewer days left are counted and their devices logged. */
  readonly warningDays: number;
  /** The CA alarm fires when the CA, or a certificate of its chain, has fewer days left. */
  readonly caExpiryAlarmDays: number;
  /** Renewal notices published per second at most (0: none). */
  readonly renewalNoticesPerSecond: number;
  /** The `service` dimension of the metrics: one value per deployment (the construct uses its `namePrefix`). */
  readonly metricsServiceName: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /**
   * Where the alarms notify.
   * @default - alarms without actions
   */
  readonly alarmTopic?: sns.ITopic;
}

/**
 * The expiry monitor: a function run on a schedule (EventBridge) that publishes how many days the CA has left
 * (`CaDaysToExpiry`) and how many live device certificates expire soon (`DeviceCertificatesExpiringSoon`), and
 * logs their devices; an alarm on the CA's days left that also fires when the monitor stops reporting, and one
 * on the monitor's errors.
 */
export class ExpiryMonitor extends Construct {
  public readonly monitorFunction: LifecycleFunction;
  public readonly schedule: events.Rule;
  /** Whole days the CA (or the first-expiring certificate of its chain) has left, lowest of the day. */
  public readonly caDaysToExpiry: cloudwatch.Metric;
  /** Live device certificates with fewer than `warningDays` days left, highest of the day. */
  public readonly deviceCertificatesExpiringSoon: cloudwatch.Metric;
  public readonly caExpiryAlarm: cloudwatch.Alarm;
  public readonly errorsAlarm: cloudwatch.Alarm;
  public readonly alarms: readonly cloudwatch.Alarm[];

  public constructor(scope: Construct, id: string, props: ExpiryMonitorProps) {
    super(scope, id);

    this.monitorFunction = new LifecycleFunction(this, 'Function', {
      entry: HANDLER_ENTRIES.expiryMonitor,
      description: 'Expiry monitor: days left to the CA, device certificates expiring soon (scheduled)',
      timeout: Duration.minutes(DEFAULTS.expiryMonitor.timeoutMinutes),
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    })
      .useDeviceTableExpiryIndex(props.deviceTable)
      .useCertificateAuthority(props.certificateAuthority, privateCaIamActions(CA_OPERATIONS.expiryMonitor))
      .useExpiryMonitoring({ warningDays: props.warningDays, metricsServiceName: props.metricsServiceName })
      .useRenewalNotices({ perSecond: props.renewalNoticesPerSecond });
    if (props.renewalNoticesPerSecond > 0) {
      this.monitorFunction.useDeviceMessaging(EXPIRING_TOPICS_RESOURCE);
      Validations.of(this.monitorFunction.executionRole).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/${EXPIRING_TOPICS_RESOURCE}]`,
        reason: 'iot:Publish of the renewal notice to each device whose certificate expires soon: thing names are only known at run time; the grant is limited to the expiring topic of every device, in this account and region.',
      });
    }
    Validations.of(this.monitorFunction.executionRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing), and iot:DescribeEndpoint (the data endpoint of the renewal notices), have no resource type, so IAM only accepts "*"; every other grant of this role names its resource.',
    });

    // EventBridge invokes the function asynchronously: Lambda retries a failed run twice, and a run that still fails
    // raises the errors alarm. There is nothing to keep for a later replay (the next run reads everything afresh),
    // so no dead-letter queue; a monitor that stops running altogether raises the CA alarm (missing data).
    this.schedule = new events.Rule(this, 'Schedule', {
      description: 'Runs the expiry monitor of the device certificate lifecycle',
      schedule: props.schedule,
      targets: [new targets.LambdaFunction(this.monitorFunction)],
    });

    const metric = (metricName: string, statistic: string) =>
      new cloudwatch.Metric({
        namespace: EXPIRY_METRICS.namespace,
        metricName,
        dimensionsMap: { [EXPIRY_METRICS.serviceDimension]: props.metricsServiceName },
        statistic,
        period: Duration.days(1),
      });
    this.caDaysToExpiry = metric(EXPIRY_METRICS.caDaysToExpiry, cloudwatch.Stats.MINIMUM);
    this.deviceCertificatesExpiringSoon = metric(EXPIRY_METRICS.deviceCertificatesExpiringSoon, cloudwatch.Stats.MAXIMUM);

    // One-day periods: a daily run leaves one data point per period, and CloudWatch looks back over a few periods
    // for real data before it counts missing ones, so schedule jitter is harmless, while days without any data
    // (the monitor stopped, or keeps failing) are treated as breaching.
    this.caExpiryAlarm = new cloudwatch.Alarm(this, 'CaExpiryAlarm', {
      metric: this.caDaysToExpiry,
      threshold: props.caExpiryAlarmDays,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      alarmDescription:
        `The device CA, or a certificate of its chain, expires in fewer than ${props.caExpiryAlarmDays} days: rotate it (docs/deploy.md, "Rotating the CA"). ` +
        'Also fires when the expiry monitor stopped publishing CaDaysToExpiry: look at its log.',
    });
    this.errorsAlarm = new cloudwatch.Alarm(this, 'ErrorsAlarm', {
      metric: this.monitorFunction.metricErrors({ period: Duration.days(1), statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: 'The expiry monitor failed: it could not read the CA certificate or the device table (its log says which).',
    });
    this.alarms = [this.caExpiryAlarm, this.errorsAlarm];
    if (props.alarmTopic) for (const alarm of this.alarms) alarm.addAlarmAction(new SnsAction(props.alarmTopic));
  }
}
