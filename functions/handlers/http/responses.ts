import type { APIGatewayProxyResult } from 'aws-lambda';
import { ERROR_CODES, isLifecycleError, UpstreamError, type ErrorCode } from '../../core/errors';

/** The one place where an error code becomes an HTTP status. */
export const HTTP_STATUS_OF: Readonly<Record<ErrorCode, number>> = {
  INVALID_REQUEST: 400,
  INVALID_DEVICE_ID: 400,
  INVALID_CSR: 422,
  INVALID_CERTIFICATE: 422,
  PAYLOAD_TOO_LARGE: 413,
  DEVICE_NOT_FOUND: 404,
  CERTIFICATE_NOT_FOUND: 404,
  DEVICE_ALREADY_EXISTS: 409,
  INVALID_TRANSITION: 409,
  CONFLICT: 409,
  REQUEST_IN_PROGRESS: 409,
  CERTIFICATE_WITHDRAWN: 410,
  ENROLLMENT_REFUSED: 403,
  IDEMPOTENCY_KEY_REUSED: 422,
  UPSTREAM_THROTTLED: 503,
  UPSTREAM_FAILURE: 502,
  CONFIGURATION_ERROR: 500,
};

// Every code has a status: a new code without one fails the type check above and this guard at start.
for (const code of ERROR_CODES) if (HTTP_STATUS_OF[code] === undefined) throw new Error(`No HTTP status for ${code}`);

const JSON_HEADERS = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' } as const;

export function jsonResponse(statusCode: number, body: unknown, headers: Record<string, string> = {}): APIGatewayProxyResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

export interface ErrorBody {
  readonly error: { readonly code: ErrorCode | 'INTERNAL_ERROR'; readonly message: string; readonly details?: Readonly<Record<string, unknown>> };
}

/**
 * Client errors carry their message and details; anything unexpected becomes a
 * generic 500 that leaks nothing (the full error goes to the log only).
 */
const UPSTREAM_MESSAGES = {
  UPSTREAM_THROTTLED: 'A service this API depends on is busy; retry in a few seconds with the same Idempotency-Key.',
  UPSTREAM_FAILURE: 'A service this API depends on failed; retry later with the same Idempotency-Key.',
} as const;

export function errorResponse(error: unknown): APIGatewayProxyResult {
  if (error instanceof UpstreamError) {
    // Which AWS call failed, and how, is for our logs only.
    const code = error.code as keyof typeof UPSTREAM_MESSAGES;
    return jsonResponse(HTTP_STATUS_OF[code], { error: { code, message: UPSTREAM_MESSAGES[code] } }, error.retryable ? { 'Retry-After': '2' } : undefined);
  }
  if (isLifecycleError(error) && error.code !== 'CONFIGURATION_ERROR') {
    const hasDetails = Object.keys(error.details).length > 0;
    const body: ErrorBody = { error: { code: error.code, message: error.message, ...(hasDetails ? { details: error.details } : {}) } };
    return jsonResponse(HTTP_STATUS_OF[error.code], body);
  }
  return jsonResponse(500, { error: { code: 'INTERNAL_ERROR', message: 'The request failed on our side; it is safe to retry with the same Idempotency-Key.' } });
}

export const isServerError = (response: APIGatewayProxyResult): boolean => response.statusCode >= 500;
