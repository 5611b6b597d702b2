import { Aws, Duration, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { DEFAULTS } from './settings';

/*
 * What the pipelines "topic rule → queue → function" (JITR, rotation) share: the queue with its dead-letter queue, and
 * the roles AWS IoT's rule actions send with. Created directly in `scope` under the ids given, so the logical ids are
 * those of a deployed stack.
 */

export interface RuleQueueProps {
  /** The construct ids of the queue and of its dead-letter queue. */
  readonly ids: { readonly queue: string; readonly deadLetterQueue: string };
  /** The consuming function's timeout: the visibility timeout is `visibilityTimeoutFactor` times it. */
  readonly functionTimeout: Duration;
  readonly settings: { readonly visibilityTimeoutFactor: number; readonly retentionDays: number; readonly maxReceiveCount: number };
  /** Why the dead-letter queue has no dead-letter queue of its own (cdk-nag AwsSolutions-SQS3). */
  readonly deadLetterQueueReason: string;
}

export function addRuleQueue(scope: Construct, props: RuleQueueProps): { readonly queue: sqs.Queue; readonly deadLetterQueue: sqs.Queue } {
  const deadLetterQueue = new sqs.Queue(scope, props.ids.deadLetterQueue, {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(DEFAULTS.deadLetterRetentionDays),
  });
  Validations.of(deadLetterQueue).acknowledge({ id: 'AwsSolutions-SQS3', reason: props.deadLetterQueueReason });
  const queue = new sqs.Queue(scope, props.ids.queue, {
    // SQS-managed keys: AWS IoT can send to the queue without KMS permissions on its role.
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    visibilityTimeout: Duration.seconds(props.functionTimeout.toSeconds() * props.settings.visibilityTimeoutFactor),
    retentionPeriod: Duration.days(props.settings.retentionDays),
    deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: props.settings.maxReceiveCount },
  });
  return { queue, deadLetterQueue };
}

/** A role only AWS IoT of this account assumes, allowed sqs:SendMessage to its one queue and nothing else (one per rule action). */
export function ruleSendRole(scope: Construct, id: string, description: string, queue: sqs.IQueue): iam.Role {
  const role = new iam.Role(scope, id, {
    description,
    assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } } }),
  });
  role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [queue.queueArn] }));
  return role;
}
