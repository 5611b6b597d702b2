import type { APIGatewayProxyResult } from 'aws-lambda';
import { isLifecycleError, UpstreamError } from '../../core/errors';
import { API_ERRORS, errorBody, RETRY_AFTER, type ApiErrorCode, type ApiErrorDefinition } from './errors';

const JSON_HEADERS = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' } as const;

export function jsonResponse(statusCode: number, body: unknown, headers: Readonly<Record<string, string>> = {}): APIGatewayProxyResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

/** An error answer: its status from the catalogue, its body in the catalogue's shape. */
export function apiErrorResponse(code: ApiErrorCode, message: string, options: { readonly details?: Readonly<Record<string, unknown>>; readonly headers?: Readonly<Record<string, string>> } = {}): APIGatewayProxyResult {
  return jsonResponse(API_ERRORS[code].status, errorBody(code, message, options.details), options.headers);
}

/**
 * Client errors carry their message and details; a code with a fixed message (a failed dependency) answers
 * that instead; anything else becomes a generic 500 that leaks nothing (the full error goes to the log only).
 */
export function errorResponse(error: unknown): APIGatewayProxyResult {
  if (isLifecycleError(error)) {
    const definition: ApiErrorDefinition = API_ERRORS[error.code];
    if (definition.message !== undefined) {
      return apiErrorResponse(error.code, definition.message, { headers: error instanceof UpstreamError && error.retryable ? RETRY_AFTER : undefined });
    }
    if (definition.status < 500) return apiErrorResponse(error.code, error.message, { details: error.details });
  }
  return apiErrorResponse('INTERNAL_ERROR', API_ERRORS.INTERNAL_ERROR.message);
}

export const isServerError = (response: APIGatewayProxyResult): boolean => response.statusCode >= 500;
