import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import { Logger } from '@aws-lambda-powertools/logger';
import { LifecycleError, type ErrorCode } from '../core/errors';
import type { CampaignsRunResult, RotationSweepResult } from '../core/lifecycle';
import { systemClock, type Clock, type DeviceMessenger } from '../core/ports';
import { ROTATION_CAMPAIGN_JOB_EVENT } from '../core/use-cases/rotation-campaign';
import type { Rotation } from './aws-wiring';
import {
  answerTopic,
  expiringTopic,
  commitRequestSchema,
  parseRotationTopic,
  rotateRequestSchema,
  RULE_FIELDS,
  ruleMessageSchema,
  type CommitAccepted,
  type Rejected,
  type RotateAccepted,
  type RotationStep,
} from './mqtt/rotation-protocol';

export interface RotationDependencies {
  /** The rotation use cases: a `DeviceLifecycle` (the local mode, tests), or the rotation function's own part of it. */
  readonly lifecycle: Rotation;
  readonly messenger: DeviceMessenger;
  readonly logger?: Logger;
  /** The rotation campaigns' pacing: the clock their deadline is read on, and how a pause is waited. @default - the system clock and a timer */
  readonly pacing?: { readonly clock: Clock; readonly wait: (ms: number) => Promise<void> };
}

/** What one device message led to (the local mode logs it; SQS ignores it). */
export type RotationMessageResult =
  | { readonly kind: 'answered'; readonly step: RotationStep; readonly thingName: string; readonly topic: string; readonly answer: RotateAccepted | CommitAccepted | Rejected }
  | { readonly kind: 'dropped'; readonly reason: string };

export type RotationResult = RotationMessageResult | ({ readonly kind: 'swept' } & RotationSweepResult) | ({ readonly kind: 'campaigns' } & CampaignsRunResult);

export { ROTATION_CAMPAIGN_JOB_EVENT };

/**
 * How long before the invocation's timeout a campaign run stops sending, so it saves its cursors in time. With the
 * stack's 60-second function and a run a minute, a campaign sends about 50 seconds of each minute at its rate.
 */
export const CAMPAIGN_DEADLINE_MARGIN_MS = 10_000;
/** A run's length when invoked without a Lambda context. */
const CAMPAIGN_RUN_WITHOUT_CONTEXT_MS = 50_000;

/**
 * Failures a later delivery may not meet: the message is retried (SQS redelivers it, the local mode invokes again),
 * and the device hears nothing until then. Every other refusal is answered on `.../rejected` at once.
 */
const RETRIED_CODES: ReadonlySet<ErrorCode> = new Set(['UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE', 'CONFLICT', 'REQUEST_IN_PROGRESS', 'CONFIGURATION_ERROR']);

/** The requestIds a device may send (docs/rotation.md); anything else is answered with `requestId: null`. */
const ECHOED_REQUEST_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

const isSqsEvent = (event: unknown): event is SQSEvent =>
  typeof event === 'object' && event !== null && Array.isArray((event as SQSEvent).Records) && (event as SQSEvent).Records.every((record) => record?.eventSource === 'aws:sqs');

const isCampaignJobEvent = (event: unknown): boolean => typeof event === 'object' && event !== null && (event as { job?: unknown }).job === ROTATION_CAMPAIGN_JOB_EVENT.job;

const isScheduledEvent = (event: unknown): boolean => typeof event === 'object' && event !== null && (event as { 'detail-type'?: unknown })['detail-type'] === 'Scheduled Event';

export interface RotationHandler {
  (event: SQSEvent, context?: Context): Promise<SQSBatchResponse>;
  (event: unknown, context?: Context): Promise<RotationResult>;
}

/**
 * The rotation function: the two topic rules (rotate, commit) put device messages on its queue, an EventBridge
 * schedule sends it the sweep that withdraws rotations past their commit deadline, and another, every minute, the run
 * of the rotation campaigns (`ROTATION_CAMPAIGN_JOB_EVENT`). Each message is answered on its
 * `accepted` or `rejected` topic; a message that is not a rotation message at all (no thing in its topic) is dropped.
 */
export function createRotationHandler(dependencies: RotationDependencies): RotationHandler {
  const { lifecycle, messenger } = dependencies;
  const logger = dependencies.logger ?? new Logger({ serviceName: 'rotation' });

  const answer = async (thingName: string, step: RotationStep, requestId: string | null, run: () => Promise<RotateAccepted | CommitAccepted>): Promise<RotationMessageResult> => {
    let outcome: 'accepted' | 'rejected';
    let message: RotateAccepted | CommitAccepted | Rejected;
    try {
      message = await run();
      outcome = 'accepted';
    } catch (error) {
      if (!(error instanceof LifecycleError) || RETRIED_CODES.has(error.code)) throw error;
      const retryAfter = typeof error.details.retryAfter === 'number' ? { retryAfter: error.details.retryAfter } : {};
      message = { requestId, code: error.code, message: error.message, ...retryAfter };
      outcome = 'rejected';
    }
    const topic = answerTopic(thingName, step, outcome);
    await messenger.publish(topic, { ...message });
    logger.info(`rotation ${step} ${outcome}`, { thingName, requestId, topic, ...(outcome === 'rejected' ? { code: (message as Rejected).code } : {}) });
    return { kind: 'answered', step, thingName, topic, answer: message };
  };

  const processMessage = async (event: unknown): Promise<RotationMessageResult> => {
    const parsed = ruleMessageSchema.safeParse(event);
    const route = parsed.success ? parseRotationTopic(parsed.data[RULE_FIELDS.topic]) : undefined;
    if (!parsed.success || !route) {
      logger.error('message that is not a rotation message dropped', { problems: parsed.success ? ['not a rotation topic'] : parsed.error.issues.map((issue) => issue.message) });
      return { kind: 'dropped', reason: 'not a rotation message' };
    }
    const message = parsed.data;
    const sender = { thingName: route.thingName, clientId: message[RULE_FIELDS.clientId] ?? '', principal: message[RULE_FIELDS.principal] ?? '' };
    // Echoed only when it is one (an oversized or odd value would make the answer itself too large or unreadable).
    const requestId = typeof message.requestId === 'string' && ECHOED_REQUEST_ID.test(message.requestId) ? message.requestId : null;
    if (route.step === 'rotate') {
      return answer(route.thingName, 'rotate', requestId, async () => {
        const request = parseOrRefuse(rotateRequestSchema, message);
        const rotated = await lifecycle.requestRotation({ ...sender, requestId: request.requestId, csrPem: request.csr });
        return { requestId: rotated.requestId, certificateId: rotated.certificateId, certificatePem: rotated.certificatePem, certificateChainPem: rotated.certificateChainPem, notAfter: rotated.notAfter, commitDeadline: rotated.commitDeadline };
      });
    }
    return answer(route.thingName, 'commit', requestId, async () => {
      const commit = parseOrRefuse(commitRequestSchema, message);
      return lifecycle.commitRotation({ ...sender, requestId: commit.requestId, certificateId: commit.certificateId });
    });
  };

  const sweep = async (): Promise<RotationResult> => {
    const result = await lifecycle.sweepDueRotations({ onError: (deviceId, error) => logger.error('due rotation not finished; the next sweep tries again', { deviceId, error: error as Error }) });
    logger.info('due rotations swept', { ...result });
    if (result.failed > 0) throw new Error(`${result.failed} due rotation(s) could not be finished; the next sweep tries again.`);
    return { kind: 'swept', ...result };
  };

  const clock = dependencies.pacing?.clock ?? systemClock;
  const wait = dependencies.pacing?.wait ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const runCampaigns = async (context?: Context): Promise<RotationResult> => {
    const runFor = context ? context.getRemainingTimeInMillis() - CAMPAIGN_DEADLINE_MARGIN_MS : CAMPAIGN_RUN_WITHOUT_CONTEXT_MS;
    const result = await lifecycle.runRotationCampaigns({
      deadline: new Date(clock.now().getTime() + Math.max(0, runFor)),
      notify: (deviceId, notice) => messenger.publish(expiringTopic(deviceId), { ...notice }),
      wait,
    });
    for (const campaign of result.campaigns) {
      if (campaign.stoppedBy === 'FAILED') logger.error('rotation campaign stopped by a failure; the next run goes on from its cursor', { ...campaign });
      else logger.info(`rotation campaign run: ${campaign.stoppedBy}`, { ...campaign });
    }
    const failed = result.campaigns.filter((campaign) => campaign.stoppedBy === 'FAILED');
    if (failed.length > 0) throw new Error(`${failed.length} rotation campaign(s) failed in this run (the first: ${failed[0]?.error ?? 'unknown'}); the next run goes on from their cursors.`);
    return { kind: 'campaigns', ...result };
  };

  const processRecord = async (record: SQSRecord): Promise<void> => {
    let body: unknown;
    try {
      body = JSON.parse(record.body);
    } catch {
      logger.error('rotation message that is not JSON dropped', { messageId: record.messageId });
      return;
    }
    await processMessage(body);
  };

  return (async (event: unknown, context?: Context): Promise<RotationResult | SQSBatchResponse> => {
    if (context) logger.addContext(context);
    if (isSqsEvent(event)) {
      return processPartialResponse(event, processRecord, new BatchProcessor(EventType.SQS), { ...(context ? { context } : {}), throwOnFullBatchFailure: false });
    }
    if (isCampaignJobEvent(event)) return runCampaigns(context);
    if (isScheduledEvent(event)) return sweep();
    return processMessage(event);
  }) as RotationHandler;
}

/** A device message's fields, or INVALID_REQUEST naming what is wrong (answered on `.../rejected`). */
function parseOrRefuse<T>(schema: { safeParse(value: unknown): { success: true; data: T } | { success: false; error: { issues: readonly { path: PropertyKey[]; message: string }[] } } }, message: unknown): T {
  const parsed = schema.safeParse(message);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `${issue.path.map(String).join('.') || 'message'}: ${issue.message}`);
  throw new LifecycleError('INVALID_REQUEST', `The rotation message is not valid: ${problems.join('; ')}.`);
}
