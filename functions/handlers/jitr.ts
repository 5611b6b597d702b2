import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { Logger } from '@aws-lambda-powertools/logger';
import * as z from 'zod/mini';
import type { RegistrationOutcome } from '../core/lifecycle';
import { awsRegistration, LIFECYCLE_VARIABLES, type Registration } from './aws-wiring';
import { readConfig } from './config';
import './schema-messages';

export interface JitrDependencies {
  /** The first-connect use case: a `DeviceLifecycle` (the local mode, tests), or the JITR function's own part of it. */
  readonly lifecycle: Registration;
  readonly logger?: Logger;
}

/** The AWS IoT registration event, as the topic rule delivers it (`SELECT * FROM '$aws/events/certificates/registered/<caId>'`). */
export const registrationEventSchema = z.object({
  certificateId: z.string().check(z.regex(/^[0-9a-f]{64}$/, 'must be the 64 lower-case hex characters of a certificate id')),
  caCertificateId: z.string().check(z.regex(/^[0-9a-f]{64}$/, 'must be the 64 lower-case hex characters of a CA certificate id')),
  timestamp: z.number(),
  certificateStatus: z.string(),
  awsAccountId: z.string(),
  certificateRegistrationTimestamp: z.pipe(z.union([z.string(), z.number()]), z.transform(String)),
});

export type JitrResult = RegistrationOutcome | { readonly outcome: 'MALFORMED_EVENT'; readonly problems: readonly string[] };

/** Thrown for an SQS record whose certificate another delivery is activating: the queue redelivers it later. */
export class RegistrationInProgressError extends Error {
  public constructor(certificateId: string) {
    super(`Certificate ${certificateId} is being activated by another delivery; this one is retried after the visibility timeout.`);
    this.name = 'RegistrationInProgressError';
  }
}

/**
 * A message the topic rule's error action wrote carries the event base64-encoded in `base64OriginalPayload`;
 * unwrapping it lets such messages be moved back to the queue (`aws sqs start-message-move-task`) as they are.
 */
function unwrapRuleError(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || typeof (body as { base64OriginalPayload?: unknown }).base64OriginalPayload !== 'string') return body;
  try {
    return JSON.parse(Buffer.from((body as { base64OriginalPayload: string }).base64OriginalPayload, 'base64').toString('utf8'));
  } catch {
    return body;
  }
}

const isSqsEvent = (event: unknown): event is SQSEvent =>
  typeof event === 'object' && event !== null && Array.isArray((event as SQSEvent).Records) && (event as SQSEvent).Records.every((record) => record?.eventSource === 'aws:sqs');

/**
 * Just-in-time registration. In AWS the topic rule puts each registration event on a queue and this
 * function takes batches from it (`{ batchItemFailures }` names the records to redeliver); invoked
 * directly (the local mode), it takes one event. A malformed event is logged and dropped, since
 * retrying cannot fix it; any other failure is retried. The lifecycle makes duplicates harmless.
 */
export interface JitrHandler {
  (event: SQSEvent, context?: Context): Promise<SQSBatchResponse>;
  (event: unknown, context?: Context): Promise<JitrResult>;
}

export function createJitrHandler(dependencies: JitrDependencies): JitrHandler {
  const logger = dependencies.logger ?? new Logger({ serviceName: 'jitr' });

  const processOne = async (event: unknown, deliveryId: string | undefined): Promise<JitrResult> => {
    const parsed = registrationEventSchema.safeParse(event);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'event'}: ${issue.message}`);
      logger.error('malformed registration event dropped', { problems });
      return { outcome: 'MALFORMED_EVENT', problems };
    }
    const outcome = await dependencies.lifecycle.registerOnFirstConnect(parsed.data, { deliveryId });
    logger.info('registration event processed', { ...outcome });
    return outcome;
  };

  const processRecord = async (record: SQSRecord): Promise<void> => {
    let body: unknown;
    try {
      body = JSON.parse(record.body);
    } catch {
      logger.error('registration event that is not JSON dropped', { messageId: record.messageId });
      return;
    }
    const outcome = await processOne(unwrapRuleError(body), record.messageId);
    if (outcome.outcome === 'IN_PROGRESS') throw new RegistrationInProgressError(outcome.certificateId);
  };

  return (async (event: unknown, context?: Context): Promise<JitrResult | SQSBatchResponse> => {
    if (context) logger.addContext(context);
    if (isSqsEvent(event)) {
      return processPartialResponse(event, processRecord, new BatchProcessor(EventType.SQS), { ...(context ? { context } : {}), throwOnFullBatchFailure: false });
    }
    return processOne(event, context?.awsRequestId);
  }) as JitrHandler;
}

/** The function's AWS wiring, built once per cold start. */
export function jitrDependencies(): JitrDependencies {
  return { lifecycle: awsRegistration(readConfig(LIFECYCLE_VARIABLES)) };
}

let awsHandler: JitrHandler | undefined;

export const handler = async (event: SQSEvent, context: Context): Promise<SQSBatchResponse> => {
  awsHandler ??= createJitrHandler(jitrDependencies());
  return awsHandler(event, context);
};
