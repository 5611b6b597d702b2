import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { ValidationError, type LifecycleError } from '../core/errors';
import type { DeviceLifecycle } from '../core/lifecycle';
import type { Clock, DeviceMessenger } from '../core/ports';
import { ERROR_MESSAGES } from './http/errors';
import { apiErrorResponse, errorResponse, jsonResponse, isServerError } from './http/responses';
import { callerOf, emptyBody, idempotencyKey, parseBody, parseQuery, REQUEST_BODIES } from './http/requests';
import { API_ROUTES, matchPath, takesIdempotencyKey, type ApiRoute } from './http/routes';
import { apiDependencies } from './api-wiring';

export interface ApiDependencies {
  readonly lifecycle: DeviceLifecycle;
  readonly clock: Clock;
  readonly messenger?: DeviceMessenger;
  readonly logger?: Logger;
}

type RouteMatch = { route: ApiRoute; params: Record<string, string> } | 'METHOD_NOT_ALLOWED' | undefined;

/**
 * API Gateway names the matched resource template (`/devices/{deviceId}`) and its path parameters;
 * the local server may send only the path, so the path is matched against the templates then.
 */
function matchRoute(event: APIGatewayProxyEvent): RouteMatch {
  const byResource = API_ROUTES.filter((route) => route.resource === event.resource);
  if (byResource.length > 0) {
    const route = byResource.find((candidate) => candidate.method === event.httpMethod);
    return route ? { route, params: Object.fromEntries(Object.entries(event.pathParameters ?? {}).flatMap(([name, value]) => (value === undefined ? [] : [[name, value]]))) } : 'METHOD_NOT_ALLOWED';
  }
  const matched = matchPath(event.httpMethod, event.path ?? '');
  if (matched === undefined) return undefined;
  if (!matched.allowed) return 'METHOD_NOT_ALLOWED';
  const params: Record<string, string> = {};
  for (const [name, value] of Object.entries(matched.pathParameters)) {
    try {
      params[name] = decodeURIComponent(value);
    } catch {
      throw new ValidationError('INVALID_REQUEST', ERROR_MESSAGES.badPathEncoding(name));
    }
  }
  return { route: matched.route, params };
}

/** Checks the request against the route's schemas (the Idempotency-Key first), runs it and answers with the route's status. */
async function run(route: ApiRoute, event: APIGatewayProxyEvent, params: Record<string, string>, dependencies: Pick<ApiDependencies, 'lifecycle' | 'clock' | 'messenger'>): Promise<APIGatewayProxyResult> {
  const key = takesIdempotencyKey(route) ? idempotencyKey(event) : undefined;
  const requestKey = key ?? event.requestContext?.requestId ?? globalThis.crypto.randomUUID();
  let body: unknown;
  if (route.body !== undefined) body = parseBody(event, REQUEST_BODIES[route.body]);
  else if (route.method === 'POST') parseBody(event, emptyBody);
  const query = route.query !== undefined ? parseQuery(event, route.query) : undefined;
  const answer = await route.handle({ params, body, query, actor: callerOf(event), requestKey } as Parameters<ApiRoute['handle']>[0], dependencies);
  return jsonResponse(route.success.status, answer.body, answer.headers);
}

/**
 * The device API: one router for every route, so one function, one cold start, one role.
 * Idempotency is the core's: every change is passed the caller (`actor`) and the Idempotency-Key
 * (else the request id) as `requestKey`, and the core decides whether it is a retry, a reused key
 * (422 IDEMPOTENCY_KEY_REUSED) or a request still running (409 REQUEST_IN_PROGRESS).
 */
export function createApiHandler(dependencies: ApiDependencies): (event: APIGatewayProxyEvent, context?: Context) => Promise<APIGatewayProxyResult> {
  const logger = dependencies.logger ?? new Logger({ serviceName: 'device-api' });
  return async (event) => {
    try {
      const matched = matchRoute(event);
      if (matched === undefined) return apiErrorResponse('ROUTE_NOT_FOUND', ERROR_MESSAGES.routeNotFound(event.httpMethod, event.path));
      if (matched === 'METHOD_NOT_ALLOWED') return apiErrorResponse('METHOD_NOT_ALLOWED', ERROR_MESSAGES.methodNotAllowed(event.httpMethod, event.path));
      return await run(matched.route, event, matched.params, dependencies);
    } catch (error) {
      const response = errorResponse(error);
      if (isServerError(response)) logger.error('request failed', { error: error as Error, path: event.path, method: event.httpMethod });
      else logger.info('request refused', { code: (error as LifecycleError).code, path: event.path, method: event.httpMethod });
      return response;
    }
  };
}

let awsHandler: ReturnType<typeof createApiHandler> | undefined;

/** The Lambda entry point: dependencies are built and checked once per cold start. */
export const handler = async (event: APIGatewayProxyEvent, context: Context): Promise<APIGatewayProxyResult> => {
  awsHandler ??= createApiHandler(apiDependencies());
  return awsHandler(event, context);
};
