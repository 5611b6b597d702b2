import { Duration, type RemovalPolicy } from 'aws-cdk-lib';
import type * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { ExpiryMonitor, type ExpiryMonitorDriftCheckProps } from './expiry-monitor';
import type { CertificateAuthorityBinding } from './lifecycle-function';
import { DEFAULTS } from './settings';

export interface MonitoringProps {
  readonly registrationQueue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  readonly jitrFunction: IFunction;
  readonly apiFunction: IFunction;
  readonly restApi: apigateway.RestApi;
  /**
   * What the expiry monitor watches and when; it needs a CA that can be read.
   * @default - no expiry monitor (a new SUBORDINATE CA waiting for its certificate has nothing to read yet)
   */
  readonly expiry?: {
    readonly deviceTable: ITable;
    readonly certificateAuthority: CertificateAuthorityBinding;
    readonly schedule: events.Schedule;
    readonly warningDays: number;
    readonly caExpiryAlarmDays: number;
    readonly renewalNoticesPerSecond: number;
    readonly metricsServiceName: string;
    /** @default - no drift check (see `ExpiryMonitorProps.driftCheck`) */
    readonly driftCheck?: ExpiryMonitorDriftCheckProps;
  };
  /** @default - alarms without actions */
  readonly alarmTopic?: sns.ITopic;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export interface Monitoring {
  readonly expiryMonitor?: ExpiryMonitor;
  /** Every alarm, the expiry monitor's last. */
  readonly alarms: readonly cloudwatch.Alarm[];
}

/**
 * The alarms on registration, on the functions and on the API, and the expiry monitor (`ExpiryMonitor`) with its
 * own. Created directly in `scope`, so their logical ids are those of a deployed stack.
 */
export function addMonitoring(scope: Construct, props: MonitoringProps): Monitoring {
  const expiryMonitor =
    props.expiry &&
    new ExpiryMonitor(scope, 'ExpiryMonitor', { ...props.expiry, logRetention: props.logRetention, removalPolicy: props.removalPolicy, alarmTopic: props.alarmTopic });

  const fiveMinutes = Duration.minutes(5);
  const alarm = alarmMaker(scope, props.alarmTopic);
  const oldestMessageAlarmSeconds = DEFAULTS.registrationQueue.oldestMessageAlarmMinutes * 60;
  const alarms = [
    alarm(
      'DeadLetterQueueNotEmptyAlarm',
      props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
      'A registration event could not be processed: a device may be stuck in PENDING_ACTIVATION. Inspect the dead-letter queue, then redrive it (docs/deploy.md).',
    ),
    alarm(
      'RegistrationQueueBacklogAlarm',
      props.registrationQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
      `A registration event has waited ${DEFAULTS.registrationQueue.oldestMessageAlarmMinutes} minutes or more: onboarding is not keeping up or the JITR function keeps failing.`,
      oldestMessageAlarmSeconds,
    ),
    alarm('JitrErrorsAlarm', props.jitrFunction.metricErrors({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The JITR function crashed or timed out; its batch comes back through the registration queue.'),
    alarm('ApiFunctionErrorsAlarm', props.apiFunction.metricErrors({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The device API function crashed.'),
    alarm('ApiServerErrorsAlarm', props.restApi.metricServerError({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The device API answered 5XX.'),
  ];
  return { ...(expiryMonitor ? { expiryMonitor } : {}), alarms: [...alarms, ...(expiryMonitor?.alarms ?? [])] };
}

/** An alarm that fires at `threshold` or more (1 by default) in one period, missing data not breaching, notifying `alarmTopic`. */
function alarmMaker(scope: Construct, alarmTopic: sns.ITopic | undefined) {
  return (id: string, metric: cloudwatch.IMetric, description: string, threshold = 1): cloudwatch.Alarm => {
    const created = new cloudwatch.Alarm(scope, id, {
      metric,
      threshold,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: description,
    });
    if (alarmTopic) created.addAlarmAction(new SnsAction(alarmTopic));
    return created;
  };
}

export interface RotationAlarmsProps {
  /** The rotation pipeline (infra/rotation-pipeline.ts): its queues, its function and its rejected-rotations metric. */
  readonly rotationQueue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  readonly rotationFunction: IFunction;
  readonly rotationsRejected: cloudwatch.IMetric;
  /** @default - alarms without actions */
  readonly alarmTopic?: sns.ITopic;
}

/**
 * The alarms of certificate rotation: a rotation message that could not be processed, messages waiting too long, the
 * function failing (a batch crashed, or a sweep left due rotations unfinished), and devices' rotations refused.
 * Created directly in `scope` (ids `Rotation*Alarm`), like the others.
 */
export function addRotationAlarms(scope: Construct, rotation: RotationAlarmsProps): cloudwatch.Alarm[] {
  const alarm = alarmMaker(scope, rotation.alarmTopic);
  const { oldestMessageAlarmMinutes } = DEFAULTS.rotationQueue;
  const { periodMinutes, threshold } = DEFAULTS.rotation.rejectedAlarm;
  return [
    alarm(
      'RotationDeadLetterQueueNotEmptyAlarm',
      rotation.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
      'A rotate or commit message could not be processed: its device got no answer and keeps its current certificate (a rotate) or its pending rotation (a commit, withdrawn at the deadline). ' +
        'Inspect the rotation dead-letter queue and the rotation function log, then redrive it (docs/deploy.md).',
    ),
    alarm(
      'RotationQueueBacklogAlarm',
      rotation.rotationQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
      `A rotate or commit message has waited ${oldestMessageAlarmMinutes} minutes or more: rotation is not keeping up (rotationConcurrency) or the rotation function keeps failing.`,
      oldestMessageAlarmMinutes * 60,
    ),
    alarm(
      'RotationErrorsAlarm',
      rotation.rotationFunction.metricErrors({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
      'The rotation function failed: a batch crashed or timed out (it comes back through the rotation queue), or a sweep left rotations past their deadline unfinished (the next sweep retries them).',
    ),
    alarm(
      'RotationsRejectedAlarm',
      rotation.rotationsRejected,
      `${threshold} or more rotate or commit messages were refused (answered on .../rejected) within ${periodMinutes} minutes: devices may be failing to renew their certificates. ` +
        'The rotation function log has each refusal with its thingName and code ("rotation rotate rejected", "rotation commit rejected").',
      threshold,
    ),
  ];
}
