import type { Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { z } from 'zod';
import type { DeviceLifecycle, RegistrationOutcome } from '../core/lifecycle';
import { jitrDependencies } from './dependencies';

export interface JitrDependencies {
  readonly lifecycle: DeviceLifecycle;
  readonly logger?: Logger;
}

/** The AWS IoT registration event, as the topic rule delivers it (`SELECT * FROM '$aws/events/certificates/registered/<caId>'`). */
export const registrationEventSchema = z.object({
  certificateId: z.string().regex(/^[0-9a-f]{64}$/, 'must be the 64 lower-case hex characters of a certificate id'),
  caCertificateId: z.string().regex(/^[0-9a-f]{64}$/, 'must be the 64 lower-case hex characters of a CA certificate id'),
  timestamp: z.number(),
  certificateStatus: z.string(),
  awsAccountId: z.string(),
  certificateRegistrationTimestamp: z.union([z.string(), z.number()]).transform(String),
});

/**
 * Just-in-time registration. A malformed event is logged and dropped (retrying cannot fix it);
 * any other failure is thrown so Lambda retries the asynchronous invocation and, in the end,
 * hands it to the on-failure destination. The lifecycle makes duplicates and retries harmless.
 */
export function createJitrHandler(dependencies: JitrDependencies): (event: unknown, context?: Context) => Promise<RegistrationOutcome | { outcome: 'MALFORMED_EVENT'; problems: string[] }> {
  const logger = dependencies.logger ?? new Logger({ serviceName: 'jitr' });
  return async (event, context) => {
    if (context) logger.addContext(context);
    const parsed = registrationEventSchema.safeParse(event);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'event'}: ${issue.message}`);
      logger.error('malformed registration event dropped', { problems });
      return { outcome: 'MALFORMED_EVENT', problems };
    }
    const outcome = await dependencies.lifecycle.registerOnFirstConnect(parsed.data);
    logger.info('registration event processed', { ...outcome });
    return outcome;
  };
}

let awsHandler: ReturnType<typeof createJitrHandler> | undefined;

export const handler = async (event: unknown, context: Context) => {
  awsHandler ??= createJitrHandler(jitrDependencies());
  return awsHandler(event, context);
};
