import { Duration, Validations, type RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { DEVICE_TABLE_SCHEMA } from '../functions/adapters/aws/device-table';
import { iotRegistryIamActions } from '../functions/adapters/aws/iot-device-registry';
import { DRIFT_CURSOR_OPERATION_ID } from '../functions/core/drift';
import { CA_OPERATIONS, EXPIRY_METRICS, REGISTRY_MODES, REGISTRY_OPERATIONS } from '../functions/handlers/config';
import { HANDLER_ENTRIES, LifecycleFunction, type CertificateAuthorityBinding, type FleetBinding } from './lifecycle-function';
import { DEFAULTS } from './settings';
import { DEFAULT_TOPIC_ROOT } from '../functions/policy/fleet-policy';
import { privateCaIamActions } from '../functions/adapters/aws/private-ca-certificate-authority';

/** Where the monitor may publish: the renewal notice topic of every device. */
export const EXPIRING_TOPICS_RESOURCE = `${DEFAULT_TOPIC_ROOT}/*/certificates/expiring`;

/**
 * The partition key of the drift check's cursor record (an operation record: `OPERATION#<id>`, see the table layout in
 * functions/adapters/aws/device-table.ts): the one item of the table the monitor may write.
 */
export const DRIFT_CURSOR_PARTITION_KEY = `OPERATION#${DRIFT_CURSOR_OPERATION_ID}`;

/**
 * How long the monitor may run when it checks drift: Lambda's maximum. At `DRIFT_LIMITS.registryCallsPerSecond`, a run's
 * `DRIFT_LIMITS.maxCertificatesPerRun` registry reads take about 8 minutes; the check also stops 30 s before the end
 * (DRIFT_DEADLINE_MARGIN_MS) and saves its cursor, so a slow AWS IoT shortens a run and loses nothing.
 */
export const DRIFT_CHECK_TIMEOUT = Duration.minutes(15);

export interface ExpiryMonitorDriftCheckProps {
  /** The fleet: THING_GROUP_NAME for the AWS IoT adapter (which the drift check uses for certificates only). */
  readonly fleet: FleetBinding;
}

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
  /**
   * Compare the device records with AWS IoT's certificate statuses each run (functions/core/drift.ts): the monitor may
   * then describe and update certificates in AWS IoT (`REGISTRY_OPERATIONS.expiryMonitor`), read the devices and their
   * certificates, write its own cursor record, and `CertificateDriftAlarm` watches what it finds.
   * @default - no drift check
   */
  readonly driftCheck?: ExpiryMonitorDriftCheckProps;
}

/**
 * The expiry monitor: a function run on a schedule (EventBridge) that publishes how many days the CA has left
 * (`CaDaysToExpiry`) and how many live device certificates expire soon (`DeviceCertificatesExpiringSoon`), and
 * logs their devices; an alarm on the CA's days left that also fires when the monitor stops reporting, and one
 * on the monitor's errors. With `driftCheck`, each run also compares the device records with AWS IoT
 * (`CertificateDrift`, `CertificateDriftRepaired`) and `CertificateDriftAlarm` fires on any disagreement.
 */
export class ExpiryMonitor extends Construct {
  public readonly monitorFunction: LifecycleFunction;
  public readonly schedule: events.Rule;
  /** Whole days the CA (or the first-expiring certificate of its chain) has left, lowest of the day. */
  public readonly caDaysToExpiry: cloudwatch.Metric;
  /** Live device certificates with fewer than `warningDays` days left, highest of the day. */
  public readonly deviceCertificatesExpiringSoon: cloudwatch.Metric;
  /** Certificates on which the records and AWS IoT disagreed, summed over a day; with a drift check. */
  public readonly certificateDrift?: cloudwatch.Metric;
  /** Of those, the ones repaired in AWS IoT, summed over a day; with a drift check. */
  public readonly certificateDriftRepaired?: cloudwatch.Metric;
  /** ACTIVE devices whose every live operational certificate expired (they did not rotate in time). */
  public readonly devicesExpiredWithoutRotation: cloudwatch.Metric;
  /** Live certificates still on the CAs the stack replaced (a CA rotation), summed. */
  public readonly liveCertificatesOnPreviousCas: cloudwatch.Metric;
  /** Days left to the soonest-expiring previous CA that still has live certificates. */
  public readonly previousCaDaysToExpiry: cloudwatch.Metric;
  public readonly caExpiryAlarm: cloudwatch.Alarm;
  /** Fires when a device's certificates all expired without a rotation. */
  public readonly expiredWithoutRotationAlarm: cloudwatch.Alarm;
  /** Fires when devices are still on a previous CA that expires within `caExpiryAlarmDays`: they strand then. */
  public readonly previousCaExpiryAlarm: cloudwatch.Alarm;
  public readonly errorsAlarm: cloudwatch.Alarm;
  /** Fires on any disagreement in a day, repaired or not; with a drift check. */
  public readonly driftAlarm?: cloudwatch.Alarm;
  public readonly alarms: readonly cloudwatch.Alarm[];

  public constructor(scope: Construct, id: string, props: ExpiryMonitorProps) {
    super(scope, id);

    this.monitorFunction = new LifecycleFunction(this, 'Function', {
      entry: HANDLER_ENTRIES.expiryMonitor,
      description: 'Expiry monitor: days left to the CA, device certificates expiring soon (scheduled)',
      timeout: props.driftCheck ? DRIFT_CHECK_TIMEOUT : Duration.minutes(DEFAULTS.expiryMonitor.timeoutMinutes),
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
    // The census of the fleet's CAs reads the ACTIVE devices (ByStatus index) and their certificates (links, then items):
    // the same reads as the drift check, which grants them when there is one.
    if (props.driftCheck) this.grantDriftCheck(props.deviceTable, props.driftCheck);
    else this.monitorFunction.addToRolePolicy(this.deviceReads(props.deviceTable));
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
    this.devicesExpiredWithoutRotation = metric(EXPIRY_METRICS.devicesExpiredWithoutRotation, cloudwatch.Stats.MAXIMUM);
    this.liveCertificatesOnPreviousCas = metric(EXPIRY_METRICS.liveCertificatesOnPreviousCas, cloudwatch.Stats.MAXIMUM);
    this.previousCaDaysToExpiry = metric(EXPIRY_METRICS.previousCaDaysToExpiry, cloudwatch.Stats.MINIMUM);
    this.expiredWithoutRotationAlarm = new cloudwatch.Alarm(this, 'ExpiredWithoutRotationAlarm', {
      metric: this.devicesExpiredWithoutRotation,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      // A day without a run is the errors alarm's and the CA alarm's to report.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription:
        'ACTIVE devices whose every certificate expired without a rotation: they cannot rotate over MQTT any more. ' +
        'The expiry monitor log names them ("devices expired without rotating"); see docs/rotation.md, "Recovery after expiry".',
    });
    this.previousCaExpiryAlarm = new cloudwatch.Alarm(this, 'PreviousCaExpiryAlarm', {
      metric: this.previousCaDaysToExpiry,
      threshold: props.caExpiryAlarmDays,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 1,
      // Published only while a previous CA still has live certificates: no data is the good case.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription:
        `Devices are still on a CA this stack replaced, and it expires in fewer than ${props.caExpiryAlarmDays} days: they strand then unless they rotate. ` +
        'The expiry monitor log names them ("live certificate(s) still on previous CA"); ask them to rotate (docs/deploy.md, "Rotating the CA").',
    });
    this.errorsAlarm = new cloudwatch.Alarm(this, 'ErrorsAlarm', {
      metric: this.monitorFunction.metricErrors({ period: Duration.days(1), statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: 'The expiry monitor failed: it could not read the CA certificate or the device table (its log says which).',
    });
    if (props.driftCheck) {
      this.certificateDrift = metric(EXPIRY_METRICS.certificateDrift, cloudwatch.Stats.SUM);
      this.certificateDriftRepaired = metric(EXPIRY_METRICS.certificateDriftRepaired, cloudwatch.Stats.SUM);
      this.driftAlarm = new cloudwatch.Alarm(this, 'CertificateDriftAlarm', {
        metric: this.certificateDrift,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        // A day without a run is the errors alarm's and the CA alarm's to report.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          'The device records and AWS IoT disagreed on certificate statuses (the ones the record decides are repaired, the others only reported). ' +
          'Each disagreement is a WARN line "certificate drift <kind>" in the expiry monitor log: see docs/deploy.md, "Drift check".',
      });
    }
    this.alarms = [this.caExpiryAlarm, this.errorsAlarm, this.expiredWithoutRotationAlarm, this.previousCaExpiryAlarm, ...(this.driftAlarm ? [this.driftAlarm] : [])];
    if (props.alarmTopic) for (const alarm of this.alarms) alarm.addAlarmAction(new SnsAction(props.alarmTopic));
  }

  /** Reads of the device table's items and of its ByStatus index: devices, their certificate links and certificates. */
  private deviceReads(deviceTable: ITable): iam.PolicyStatement {
    return new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query'],
      resources: [deviceTable.tableArn, `${deviceTable.tableArn}/index/${DEVICE_TABLE_SCHEMA.byStatusIndex.indexName}`],
    });
  }

  /**
   * What the drift check needs, and no more: the AWS IoT actions the adapter declares for describing and updating
   * certificates (with THING_GROUP_NAME, set by `useFleet`); reads of the device table's items and of its ByStatus
   * index (devices, their certificate links, certificates, its cursor); and writes to its own cursor record only
   * (`dynamodb:LeadingKeys`: a transaction's Put is authorized as PutItem on that item).
   */
  private grantDriftCheck(deviceTable: ITable, driftCheck: ExpiryMonitorDriftCheckProps): void {
    this.monitorFunction.useFleet(driftCheck.fleet, iotRegistryIamActions({ ...REGISTRY_MODES, operations: REGISTRY_OPERATIONS.expiryMonitor }));
    this.monitorFunction.addToRolePolicy(this.deviceReads(deviceTable));
    this.monitorFunction.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['dynamodb:PutItem'],
        resources: [deviceTable.tableArn],
        conditions: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [DRIFT_CURSOR_PARTITION_KEY] } },
      }),
    );
    Validations.of(this.monitorFunction.executionRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cert/*]',
      reason:
        'The drift check reads and repairs the status of the fleet\'s certificates (iot:DescribeCertificate, iot:UpdateCertificate): their ids (SHA-256 fingerprints) ' +
        'are only known at run time; the grant is limited to certificates of this account and region.',
    });
  }
}
