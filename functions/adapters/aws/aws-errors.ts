import { isLifecycleError, UpstreamError } from '../../core/errors';

const THROTTLING_NAMES = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'ServiceUnavailableException',
  'ServiceUnavailable',
  'InternalFailureException',
]);

export const errorName = (error: unknown): string | undefined =>
  typeof error === 'object' && error !== null && 'name' in error ? String((error as { name: unknown }).name) : undefined;

/**
 * The SDK already retried throttling with backoff (see `retryingClientConfig`);
 * what still fails becomes our typed error, telling the caller whether a later try can help.
 */
export function toUpstreamError(error: unknown, service: string, operation: string): Error {
  if (isLifecycleError(error)) return error;
  const name = errorName(error) ?? 'Error';
  if (THROTTLING_NAMES.has(name)) {
    return new UpstreamError('UPSTREAM_THROTTLED', `${service} ${operation} is throttled; try again later.`, true, { cause: error });
  }
  return new UpstreamError('UPSTREAM_FAILURE', `${service} ${operation} failed (${name}).`, false, { cause: error });
}

/**
 * SDK client settings for our adapters: adaptive retry mode absorbs throttling
 * (AWS IoT and Private CA have low default TPS quotas) with client-side rate limiting and backoff.
 */
export const retryingClientConfig = { maxAttempts: 8, retryMode: 'adaptive' } as const;
