import { Duration, type RemovalPolicy } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as iot from 'aws-cdk-lib/aws-iot';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { iotRegistryIamActions } from '../functions/adapters/aws/iot-device-registry';
import { CA_OPERATIONS, REGISTRY_MODES, REGISTRY_OPERATIONS } from '../functions/handlers/config';
import {
  acknowledgeRegistryFunctionWildcards,
  HANDLER_ENTRIES,
  LifecycleFunction,
  type CertificateAuthorityBinding,
  type FleetBinding,
} from './lifecycle-function';
import { DEFAULTS, ruleNameFrom, type EnrollmentPolicy } from './settings';
import { addRuleQueue, ruleSendRole } from './rule-queue';
import { privateCaIamActions } from '../functions/adapters/aws/private-ca-certificate-authority';

export interface RegistrationPipelineProps {
  readonly deviceTable: ITable;
  readonly certificateAuthority: CertificateAuthorityBinding;
  readonly fleet: FleetBinding;
  readonly issuance: { readonly enrollmentPolicy: EnrollmentPolicy; readonly certificateValidityDays: number };
  /** JITR invocations the registration queue feeds at once (resolved by `resolveSettings`: docs/performance.md). */
  readonly concurrency: number;
  /**
   * The CA's id in AWS IoT, whose registration events the rule selects.
   * @default - no rule: a new SUBORDINATE CA waiting for its certificate is not registered with AWS IoT yet
   */
  readonly caCertificateId?: string;
  readonly namePrefix: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export interface RegistrationPipeline {
  readonly registrationQueue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly jitrFunction: LifecycleFunction;
  readonly registrationRule?: iot.CfnTopicRule;
}

/**
 * Just-in-time registration: the topic rule on the CA's registration events → the registration queue → the JITR
 * function, and the dead-letter queue that takes what could not be processed. Created directly in `scope` (ids
 * `RegistrationQueue`, `RegistrationDeadLetterQueue`, `JitrFunction*`, `RegistrationRule*`), so their logical ids
 * are those of a deployed stack.
 */
export function addRegistrationPipeline(scope: Construct, props: RegistrationPipelineProps): RegistrationPipeline {
  const jitrTimeout = Duration.seconds(DEFAULTS.jitrTimeoutSeconds);
  const { queue: registrationQueue, deadLetterQueue } = addRuleQueue(scope, {
    ids: { queue: 'RegistrationQueue', deadLetterQueue: 'RegistrationDeadLetterQueue' },
    functionTimeout: jitrTimeout,
    settings: DEFAULTS.registrationQueue,
    deadLetterQueueReason: 'This queue is itself the dead-letter queue: the registration queue redrives into it, and the registration rule error action sends to it.',
  });

  const jitrFunction = new LifecycleFunction(scope, 'JitrFunction', {
    entry: HANDLER_ENTRIES.jitr,
    description: 'Just-in-time registration: onboards a device on its first connect (from the registration queue)',
    timeout: jitrTimeout,
    logRetention: props.logRetention,
    removalPolicy: props.removalPolicy,
  })
    .useDeviceTable(props.deviceTable)
    // RevokeCertificate: a certificate JITR closes as revoked (its device was suspended or revoked while it was being
    // activated, or someone revoked it in AWS IoT first) is revoked at the CA too, so the CRL lists it.
    .useCertificateAuthority(props.certificateAuthority, privateCaIamActions(CA_OPERATIONS.jitr))
    .useFleet(props.fleet, iotRegistryIamActions({ ...REGISTRY_MODES, operations: REGISTRY_OPERATIONS.jitr }))
    .useIssuancePolicy(props.issuance);
  // Failed records are reported one by one (batchItemFailures) and come back after the visibility timeout;
  // maxConcurrency holds the pollers back instead of letting Lambda throttle (which would burn receive counts), and is
  // sized from the AWS IoT quota that binds onboarding (settings.ts registrationConcurrencyFor, docs/performance.md).
  jitrFunction.addEventSource(
    new SqsEventSource(registrationQueue, {
      batchSize: DEFAULTS.registrationQueue.batchSize,
      reportBatchItemFailures: true,
      maxConcurrency: props.concurrency,
    }),
  );
  acknowledgeRegistryFunctionWildcards(jitrFunction, props.deviceTable, 'xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing) have no resource type, so IAM only accepts "*".');

  const registrationRule =
    props.caCertificateId === undefined ? undefined : addRegistrationRule(scope, { caCertificateId: props.caCertificateId, namePrefix: props.namePrefix, registrationQueue, deadLetterQueue });
  return { registrationQueue, deadLetterQueue, jitrFunction, ...(registrationRule ? { registrationRule } : {}) };
}

/** The rule that queues the CA's registration events, and sends what it could not deliver to the dead-letter queue. */
function addRegistrationRule(
  scope: Construct,
  props: { readonly caCertificateId: string; readonly namePrefix: string; readonly registrationQueue: sqs.IQueue; readonly deadLetterQueue: sqs.IQueue },
): iot.CfnTopicRule {
  const queueRole = ruleSendRole(scope, 'RegistrationRuleRole', 'Lets the JITR topic rule send registration events to the registration queue', props.registrationQueue);
  const errorRole = ruleSendRole(scope, 'RegistrationRuleErrorRole', 'Lets the JITR topic rule send events it could not deliver to the dead-letter queue', props.deadLetterQueue);
  return new iot.CfnTopicRule(scope, 'RegistrationRule', {
    ruleName: ruleNameFrom(props.namePrefix, 'jitr'),
    topicRulePayload: {
      description: 'Queues AWS IoT certificate registration events of the device CA for the JITR function',
      sql: `SELECT * FROM '$aws/events/certificates/registered/${props.caCertificateId}'`,
      awsIotSqlVersion: '2016-03-23',
      ruleDisabled: false,
      actions: [{ sqs: { queueUrl: props.registrationQueue.queueUrl, roleArn: queueRole.roleArn, useBase64: false } }],
      errorAction: { sqs: { queueUrl: props.deadLetterQueue.queueUrl, roleArn: errorRole.roleArn, useBase64: false } },
    },
  });
}
