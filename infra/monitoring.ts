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
import { ExpiryMonitor } from './expiry-monitor';
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
    readonly metricsServiceName: string;
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
  const alarm = (id: string, metric: cloudwatch.IMetric, description: string, threshold = 1) => {
    const created = new cloudwatch.Alarm(scope, id, {
      metric,
      threshold,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: description,
    });
    if (props.alarmTopic) created.addAlarmAction(new SnsAction(props.alarmTopic));
    return created;
  };
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
