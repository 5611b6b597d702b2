import { ERROR_CODES, type ErrorCode } from '../../core/errors';

/**
 * The error catalogue of the device API: every code an answer may carry, its HTTP status and its message,
 * in the one shape `{ error: { code, message, details? } }`. The Lambda router, the local server and
 * API Gateway's own answers all build their error bodies here; the core knows codes, never statuses.
 */

/** Codes only the HTTP layer answers with: the core never throws them. */
export const HTTP_ERROR_CODES = ['INTERNAL_ERROR', 'ROUTE_NOT_FOUND', 'METHOD_NOT_ALLOWED', 'UNAUTHORIZED', 'FORBIDDEN'] as const;

export type ApiErrorCode = ErrorCode | (typeof HTTP_ERROR_CODES)[number];

/** Every code an error body may carry: the core's, then the HTTP layer's. */
export const API_ERROR_CODES: readonly ApiErrorCode[] = [...ERROR_CODES, ...HTTP_ERROR_CODES];

export interface ApiErrorDefinition {
  readonly status: number;
  /**
   * What the caller reads instead of the error's own message, which is for our logs only.
   * @default - a client error (4xx) shows its own message and details; a server error without one is answered as INTERNAL_ERROR
   */
  readonly message?: string;
}

/** The one place where an error code becomes an HTTP status. */
export const API_ERRORS = {
  INVALID_REQUEST: { status: 400 },
  INVALID_DEVICE_ID: { status: 400 },
  INVALID_CSR: { status: 422 },
  INVALID_CERTIFICATE: { status: 422 },
  PAYLOAD_TOO_LARGE: { status: 413 },
  DEVICE_NOT_FOUND: { status: 404 },
  CERTIFICATE_NOT_FOUND: { status: 404 },
  DEVICE_ALREADY_EXISTS: { status: 409 },
  INVALID_TRANSITION: { status: 409 },
  CONFLICT: { status: 409 },
  REQUEST_IN_PROGRESS: { status: 409 },
  CERTIFICATE_WITHDRAWN: { status: 410 },
  PRINCIPAL_NOT_ALLOWED: { status: 403 },
  ROTATION_IN_PROGRESS: { status: 409 },
  NO_ROTATION_PENDING: { status: 409 },
  CAMPAIGN_NOT_FOUND: { status: 404 },
  CAMPAIGN_LIMIT_REACHED: { status: 409 },
  CA_NOT_FOUND: { status: 404 },
  CA_IS_CURRENT: { status: 409 },
  CA_STILL_IN_USE: { status: 409 },
  ENROLLMENT_REFUSED: { status: 403 },
  IDEMPOTENCY_KEY_REUSED: { status: 422 },
  // Which AWS call failed, and how, is for our logs only.
  UPSTREAM_THROTTLED: { status: 503, message: 'A service this API depends on is busy; retry in a few seconds with the same Idempotency-Key.' },
  UPSTREAM_FAILURE: { status: 502, message: 'A service this API depends on failed; retry later with the same Idempotency-Key.' },
  CONFIGURATION_ERROR: { status: 500 },
  INTERNAL_ERROR: { status: 500, message: 'The request failed on our side; it is safe to retry with the same Idempotency-Key.' },
  ROUTE_NOT_FOUND: { status: 404 },
  METHOD_NOT_ALLOWED: { status: 405 },
  UNAUTHORIZED: { status: 401 },
  FORBIDDEN: { status: 403 },
} as const satisfies Readonly<Record<ApiErrorCode, ApiErrorDefinition>>;

/** The header that tells a caller when to try again (a throttled dependency, a throttled stage). */
export const RETRY_AFTER: Readonly<Record<string, string>> = { 'Retry-After': '2' };

/** The messages of the answers the HTTP layer gives on its own, outside the core. */
export const ERROR_MESSAGES = {
  routeNotFound: (method: string, path: string) => `No route ${method} ${path}.`,
  methodNotAllowed: (method: string, path: string) => `${method} is not allowed on ${path}.`,
  badPathEncoding: (name: string) => `The ${name} in the path is not valid percent-encoding.`,
  bodyTooLarge: (maxBytes: number) => `The request body is larger than ${maxBytes} bytes.`,
  /** The local server's answer to a request without its bearer token. */
  localTokenMissing: 'Send the local API token as "Authorization: Bearer <token>" (the token is in .local/api-token).',
  /** The local server's answer when the handler itself throws instead of answering. */
  localServerFailed: 'The request failed on our side.',
} as const;

export interface ErrorBody {
  readonly error: { readonly code: ApiErrorCode; readonly message: string; readonly details?: Readonly<Record<string, unknown>> };
}

/** The one shape of every error body. */
export function errorBody(code: ApiErrorCode, message: string, details: Readonly<Record<string, unknown>> = {}): ErrorBody {
  return { error: { code, message, ...(Object.keys(details).length > 0 ? { details } : {}) } };
}

/** One of API Gateway's own answers, which never reach the function. */
export interface GatewayError {
  /** API Gateway's gateway response type, such as `THROTTLED` or `DEFAULT_4XX`. */
  readonly type: string;
  readonly code: ApiErrorCode;
  /** A fixed message. @default - API Gateway's own message (`$context.error.message`) */
  readonly message?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * API Gateway's answers that never reach the function: the specific ones, then DEFAULT_4XX and DEFAULT_5XX for
 * every other type. They keep API Gateway's own status for their type (a missing signature is a 403 there).
 */
export const GATEWAY_ERRORS: readonly GatewayError[] = [
  { type: 'BAD_REQUEST_BODY', code: 'INVALID_REQUEST' },
  { type: 'BAD_REQUEST_PARAMETERS', code: 'INVALID_REQUEST' },
  {
    type: 'MISSING_AUTHENTICATION_TOKEN',
    code: 'UNAUTHORIZED',
    // API Gateway answers an unknown method or path the same way, signed or not.
    message: 'Sign the request with AWS Signature Version 4 (service execute-api), and check its method and path: an unknown route is answered this way too.',
  },
  { type: 'INVALID_SIGNATURE', code: 'UNAUTHORIZED' },
  { type: 'EXPIRED_TOKEN', code: 'UNAUTHORIZED' },
  { type: 'UNAUTHORIZED', code: 'UNAUTHORIZED' },
  { type: 'ACCESS_DENIED', code: 'FORBIDDEN' },
  { type: 'WAF_FILTERED', code: 'FORBIDDEN', message: 'The request was blocked by the web ACL in front of this API.' },
  { type: 'THROTTLED', code: 'UPSTREAM_THROTTLED', message: 'Too many requests to this API: retry in a few seconds, with the same Idempotency-Key.', headers: RETRY_AFTER },
  { type: 'REQUEST_TOO_LARGE', code: 'PAYLOAD_TOO_LARGE', message: 'The request is larger than this API accepts.' },
  { type: 'INTEGRATION_TIMEOUT', code: 'UPSTREAM_FAILURE', message: 'The request did not finish in time; retry later with the same Idempotency-Key.' },
  { type: 'INTEGRATION_FAILURE', code: 'UPSTREAM_FAILURE', message: 'The request failed on our side; retry later with the same Idempotency-Key.' },
  { type: 'DEFAULT_4XX', code: 'INVALID_REQUEST' },
  { type: 'DEFAULT_5XX', code: 'INTERNAL_ERROR', message: API_ERRORS.INTERNAL_ERROR.message },
];

/** API Gateway's own message, JSON-quoted: the response template stays valid JSON whatever the message holds. */
const GATEWAY_MESSAGE = '$context.error.messageString';

/** The response template (VTL) of a gateway error: the error body, with API Gateway's message when it has no fixed one. */
export function gatewayErrorTemplate(response: Pick<GatewayError, 'code' | 'message'>): string {
  const placeholder = '\u0000message\u0000';
  const body = JSON.stringify(errorBody(response.code, response.message ?? placeholder));
  return body.replace(JSON.stringify(placeholder), GATEWAY_MESSAGE);
}
