import { Annotations, Duration, Validations, type RemovalPolicy } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iot from 'aws-cdk-lib/aws-iot';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { iotRegistryIamActions } from '../functions/adapters/aws/iot-device-registry';
import { privateCaIamActions } from '../functions/adapters/aws/private-ca-certificate-authority';
import { CA_OPERATIONS, EXPIRY_METRICS, REGISTRY_MODES, REGISTRY_OPERATIONS } from '../functions/handlers/config';
import { ROTATION_TOPIC_FILTERS, rotationRuleSql, type RotationStep } from '../functions/handlers/mqtt/rotation-protocol';
import { ROTATION_CAMPAIGN_JOB_EVENT } from '../functions/core/use-cases/rotation-campaign';
import { DEFAULT_TOPIC_ROOT } from '../functions/policy/fleet-policy';
import {
  acknowledgeRegistryFunctionWildcards,
  HANDLER_ENTRIES,
  LifecycleFunction,
  type CertificateAuthorityBinding,
  type FleetBinding,
} from './lifecycle-function';
import { DEFAULTS, ruleNameFrom, type EnrollmentPolicy } from './settings';
import { addRuleQueue, ruleSendRole } from './rule-queue';

/** The rotation steps, in the order their rules are created. */
export const ROTATION_STEPS = Object.keys(ROTATION_TOPIC_FILTERS) as RotationStep[];

/**
 * The log lines of the rotation function (functions/handlers/rotation.ts, Powertools Logger, JSON) that say a device
 * message was answered on `.../rejected`: `rotation <step> rejected`. The rejected-rotations metric counts them.
 */
export const ROTATION_REJECTED_LOG_MESSAGES: readonly string[] = ROTATION_STEPS.map((step) => `rotation ${step} rejected`);

/**
 * The metric the rotation function's log gives (a CloudWatch Logs metric filter): one per rejected rotate or commit
 * message, with the function's name as its dimension (taken from the `function_name` field Powertools adds to each
 * line), so two deployments in one account never share it.
 */
export const ROTATION_METRICS = {
  namespace: EXPIRY_METRICS.namespace,
  rotationsRejected: 'RotationsRejected',
  functionDimension: 'FunctionName',
} as const;

/** The topics the rotation function answers devices on (`.../rotate/accepted`, `.../commit/rejected`, ...), as an IAM resource name. */
export const ANSWER_TOPICS_RESOURCE = `${DEFAULT_TOPIC_ROOT}/*/certificates/*`;

export interface RotationPipelineProps {
  readonly deviceTable: ITable;
  readonly certificateAuthority: CertificateAuthorityBinding;
  readonly fleet: FleetBinding;
  readonly issuance: { readonly enrollmentPolicy: EnrollmentPolicy; readonly certificateValidityDays: number };
  /** How long a device has to commit its new certificate (ROTATION_COMMIT_SECONDS). */
  readonly commitHours: number;
  /** Minutes between two sweeps of rotations past their commit deadline. */
  readonly sweepMinutes: number;
  /** Rotation function invocations the rotation queue feeds at once. */
  readonly concurrency: number;
  /** The fleet policy's topic root: the rotation protocol (version 1) lives under `devices/`, so another root gets a warning. */
  readonly topicRoot: string;
  readonly namePrefix: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export interface RotationPipeline {
  readonly rotationQueue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly rotationFunction: LifecycleFunction;
  /** The topic rules of the two steps. */
  readonly rules: Readonly<Record<RotationStep, iot.CfnTopicRule>>;
  /** The EventBridge schedule of the sweep that withdraws rotations past their commit deadline. */
  readonly sweepSchedule: events.Rule;
  /** The EventBridge schedule of the rotation campaigns' job (POST /rotation-campaigns): every minute. */
  readonly campaignSchedule: events.Rule;
  /** Rotate and commit messages answered on `.../rejected` (sum over `DEFAULTS.rotation.rejectedAlarm.periodMinutes`). */
  readonly rotationsRejected: cloudwatch.Metric;
}

/**
 * Certificate rotation over MQTT (docs/rotation.md): the rotate and commit topic rules → the rotation queue → the
 * rotation function, which answers devices through AWS IoT's data plane; the dead-letter queue that takes what could not
 * be processed; the EventBridge schedule of the sweep; and the metric of rejected rotations. Created directly in
 * `scope` (ids `Rotation*`), like the registration pipeline.
 */
export function addRotationPipeline(scope: Construct, props: RotationPipelineProps): RotationPipeline {
  if (props.topicRoot !== DEFAULT_TOPIC_ROOT) {
    Annotations.of(scope).addWarningV2(
      'iot-cert-lifecycle:rotationTopicRoot',
      `topicRoot is "${props.topicRoot}", but the rotation protocol (version 1) uses ${DEFAULT_TOPIC_ROOT}/<thing>/certificates/...: ` +
        'the fleet policy only lets devices publish under the topic root, so they cannot rotate over MQTT with this setting.',
    );
  }

  const timeout = Duration.seconds(DEFAULTS.rotation.timeoutSeconds);
  const { queue: rotationQueue, deadLetterQueue } = addRuleQueue(scope, {
    ids: { queue: 'RotationQueue', deadLetterQueue: 'RotationDeadLetterQueue' },
    functionTimeout: timeout,
    settings: DEFAULTS.rotationQueue,
    deadLetterQueueReason: 'This queue is itself the dead-letter queue: the rotation queue redrives into it, and the rotate and commit rules error actions send to it.',
  });

  const rotationFunction = new LifecycleFunction(scope, 'RotationFunction', {
    entry: HANDLER_ENTRIES.rotation,
    description: 'Certificate rotation over MQTT: rotate and commit messages (from the rotation queue), and the sweep of missed commit deadlines (scheduled)',
    timeout,
    logRetention: props.logRetention,
    removalPolicy: props.removalPolicy,
  })
    .useDeviceTable(props.deviceTable)
    .useCertificateAuthority(props.certificateAuthority, privateCaIamActions(CA_OPERATIONS.rotation))
    .useFleet(props.fleet, iotRegistryIamActions({ ...REGISTRY_MODES, operations: REGISTRY_OPERATIONS.rotation }))
    .useIssuancePolicy(props.issuance);
  rotationFunction.useDeviceMessaging(ANSWER_TOPICS_RESOURCE).useRotation({ commitSeconds: props.commitHours * 3600 });
  // As for JITR: failed records are reported one by one and come back after the visibility timeout; maxConcurrency
  // holds the pollers back instead of letting Lambda throttle (which would burn receive counts).
  rotationFunction.addEventSource(
    new SqsEventSource(rotationQueue, { batchSize: DEFAULTS.rotationQueue.batchSize, reportBatchItemFailures: true, maxConcurrency: props.concurrency }),
  );
  acknowledgeRegistryFunctionWildcards(
    rotationFunction,
    props.deviceTable,
    'iot:RegisterCertificate and iot:DescribeEndpoint have no resource type in the Service Authorization Reference, so IAM only accepts "*"; neither do xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing).',
  );
  Validations.of(rotationFunction.executionRole).acknowledge({
    id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:topic/${ANSWER_TOPICS_RESOURCE}]`,
    reason:
      'iot:Publish of the answers to devices (rotate/accepted, rotate/rejected, commit/accepted, commit/rejected, and the expiring notice): ' +
      'thing names are only known at run time; the grant is limited to the certificates/ topics of every device, in this account and region.',
  });

  const rules = addRotationRules(scope, { namePrefix: props.namePrefix, rotationQueue, deadLetterQueue });

  // EventBridge invokes the function asynchronously with its "Scheduled Event": Lambda retries a failed sweep twice, and
  // the next sweep starts afresh (the sweep is idempotent), so no dead-letter queue; failures raise the errors alarm.
  const sweepSchedule = new events.Rule(scope, 'RotationSweepSchedule', {
    description: 'Runs the rotation sweep: withdraws rotations whose commit deadline passed',
    schedule: events.Schedule.rate(Duration.minutes(props.sweepMinutes)),
    targets: [new targets.LambdaFunction(rotationFunction)],
  });

  // The rotation campaigns' job, with an input of its own: each run sends the notices of the open campaigns for up to the
  // function's timeout less a margin (50 of every 60 seconds), saving a cursor; a run with no open campaign reads one item.
  // A failed run is retried by Lambda like the sweep; the campaign's lease keeps two runs off the same campaign.
  const campaignSchedule = new events.Rule(scope, 'RotationCampaignSchedule', {
    description: 'Runs the rotation campaigns: sends the paced renewal notices of each open campaign (POST /rotation-campaigns)',
    schedule: events.Schedule.rate(Duration.minutes(1)),
    targets: [new targets.LambdaFunction(rotationFunction, { event: events.RuleTargetInput.fromObject(ROTATION_CAMPAIGN_JOB_EVENT) })],
  });

  const rejectedFilter = new logs.MetricFilter(scope, 'RotationsRejectedMetricFilter', {
    logGroup: rotationFunction.logGroup,
    filterPattern: logs.FilterPattern.any(...ROTATION_REJECTED_LOG_MESSAGES.map((message) => logs.FilterPattern.stringValue('$.message', '=', message))),
    metricNamespace: ROTATION_METRICS.namespace,
    metricName: ROTATION_METRICS.rotationsRejected,
    metricValue: '1',
    unit: cloudwatch.Unit.COUNT,
    dimensions: { [ROTATION_METRICS.functionDimension]: '$.function_name' },
  });
  const rotationsRejected = rejectedFilter.metric({
    dimensionsMap: { [ROTATION_METRICS.functionDimension]: rotationFunction.functionName },
    statistic: cloudwatch.Stats.SUM,
    period: Duration.minutes(DEFAULTS.rotation.rejectedAlarm.periodMinutes),
  });

  return { rotationQueue, deadLetterQueue, rotationFunction, rules, sweepSchedule, campaignSchedule, rotationsRejected };
}

/** The rotate and commit rules, both to the rotation queue, sending what they could not deliver to the dead-letter queue. */
function addRotationRules(
  scope: Construct,
  props: { readonly namePrefix: string; readonly rotationQueue: sqs.IQueue; readonly deadLetterQueue: sqs.IQueue },
): Record<RotationStep, iot.CfnTopicRule> {
  const queueRole = ruleSendRole(scope, 'RotationRuleRole', 'Lets the rotate and commit topic rules send device messages to the rotation queue', props.rotationQueue);
  const errorRole = ruleSendRole(scope, 'RotationRuleErrorRole', 'Lets the rotate and commit topic rules send messages they could not deliver to the rotation dead-letter queue', props.deadLetterQueue);
  const ruleOf = (step: RotationStep): iot.CfnTopicRule =>
    new iot.CfnTopicRule(scope, step === 'rotate' ? 'RotationRotateRule' : 'RotationCommitRule', {
      ruleName: ruleNameFrom(props.namePrefix, `rotation_${step}`),
      topicRulePayload: {
        description: `Queues devices' ${step} messages (${ROTATION_TOPIC_FILTERS[step]}) with their sender for the rotation function`,
        sql: rotationRuleSql(step),
        awsIotSqlVersion: '2016-03-23',
        ruleDisabled: false,
        actions: [{ sqs: { queueUrl: props.rotationQueue.queueUrl, roleArn: queueRole.roleArn, useBase64: false } }],
        errorAction: { sqs: { queueUrl: props.deadLetterQueue.queueUrl, roleArn: errorRole.roleArn, useBase64: false } },
      },
    });
  return { rotate: ruleOf('rotate'), commit: ruleOf('commit') };
}
