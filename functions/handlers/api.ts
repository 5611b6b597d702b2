import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { ValidationError, type LifecycleError } from '../core/errors';
import type { DeviceLifecycle } from '../core/lifecycle';
import type { Clock } from '../core/ports';
import { errorResponse, jsonResponse, isServerError } from './http/responses';
import { presentCertificate, presentDevice, presentDeviceView } from './http/presenters';
import { callerOf, createDeviceBody, emptyBody, idempotencyKey, listDevicesQuery, parseBody, parseQuery, revokeBody, signCsrBody } from './http/requests';
import { apiDependencies } from './dependencies';

export interface ApiDependencies {
  readonly lifecycle: DeviceLifecycle;
  readonly clock: Clock;
  readonly logger?: Logger;
}

interface RouteRequest {
  readonly event: APIGatewayProxyEvent;
  readonly params: Readonly<Record<string, string>>;
  readonly actor: string;
  /** The Idempotency-Key, or the request id: what makes a retried change a no-op. */
  readonly requestKey: string;
}

interface Route {
  readonly method: 'GET' | 'POST';
  /** The API Gateway resource template, as in the OpenAPI document. */
  readonly resource: string;
  readonly run: (request: RouteRequest) => Promise<APIGatewayProxyResult>;
}

export function createRoutes({ lifecycle, clock }: Pick<ApiDependencies, 'lifecycle' | 'clock'>): readonly Route[] {
  const param = (request: RouteRequest, name: string) => request.params[name] as string;
  return [
    {
      method: 'POST',
      resource: '/devices',
      run: async (request) => {
        const body = parseBody(request.event, createDeviceBody);
        const device = await lifecycle.preRegisterDevice({ deviceId: body.deviceId, attributes: body.attributes ?? {}, actor: request.actor, requestKey: request.requestKey });
        return jsonResponse(201, presentDevice(device), { Location: `/devices/${encodeURIComponent(device.deviceId)}` });
      },
    },
    {
      method: 'GET',
      resource: '/devices',
      run: async (request) => {
        const query = parseQuery(request.event, listDevicesQuery);
        const page = await lifecycle.listDevices(query);
        return jsonResponse(200, { items: page.items.map(presentDevice), ...(page.nextToken ? { nextToken: page.nextToken } : {}) });
      },
    },
    {
      method: 'GET',
      resource: '/devices/{deviceId}',
      run: async (request) => jsonResponse(200, presentDeviceView(await lifecycle.getDevice(param(request, 'deviceId')), clock.now())),
    },
    {
      method: 'POST',
      resource: '/devices/{deviceId}/certificates',
      run: async (request) => {
        const body = parseBody(request.event, signCsrBody);
        const issued = await lifecycle.issueFromCsr({ deviceId: param(request, 'deviceId'), csrPem: body.csr, actor: request.actor, requestKey: request.requestKey });
        return jsonResponse(201, issued);
      },
    },
    {
      method: 'POST',
      resource: '/devices/{deviceId}/certificates/{certificateId}/revoke',
      run: async (request) => {
        const body = parseBody(request.event, revokeBody);
        const certificateId = param(request, 'certificateId');
        if (!/^[0-9a-f]{64}$/.test(certificateId)) {
          throw new ValidationError('INVALID_REQUEST', 'certificateId must be the 64 lower-case hex characters of the certificate SHA-256 fingerprint.');
        }
        const revoked = await lifecycle.revokeCertificate({ deviceId: param(request, 'deviceId'), certificateId, reason: body.reason, actor: request.actor, requestKey: request.requestKey });
        return jsonResponse(200, presentCertificate(revoked, clock.now()));
      },
    },
    {
      method: 'POST',
      resource: '/devices/{deviceId}/revoke',
      run: async (request) => {
        const body = parseBody(request.event, revokeBody);
        return jsonResponse(200, presentDevice(await lifecycle.revokeDevice({ deviceId: param(request, 'deviceId'), reason: body.reason, actor: request.actor, requestKey: request.requestKey })));
      },
    },
    {
      method: 'POST',
      resource: '/devices/{deviceId}/suspend',
      run: async (request) => {
        parseBody(request.event, emptyBody);
        return jsonResponse(200, presentDevice(await lifecycle.suspendDevice({ deviceId: param(request, 'deviceId'), actor: request.actor, requestKey: request.requestKey })));
      },
    },
    {
      method: 'POST',
      resource: '/devices/{deviceId}/resume',
      run: async (request) => {
        parseBody(request.event, emptyBody);
        return jsonResponse(200, presentDevice(await lifecycle.resumeDevice({ deviceId: param(request, 'deviceId'), actor: request.actor, requestKey: request.requestKey })));
      },
    },
  ];
}

type RouteMatch = { route: Route; params: Record<string, string> } | 'METHOD_NOT_ALLOWED' | undefined;

/**
 * API Gateway names the matched resource template (`/devices/{deviceId}`) and its path parameters;
 * the local server may send only the path, so the path is matched against the templates then.
 */
function matchRoute(routes: readonly Route[], event: APIGatewayProxyEvent): RouteMatch {
  const byResource = routes.filter((route) => route.resource === event.resource);
  if (byResource.length > 0) {
    const route = byResource.find((candidate) => candidate.method === event.httpMethod);
    return route ? { route, params: Object.fromEntries(Object.entries(event.pathParameters ?? {}).flatMap(([name, value]) => (value === undefined ? [] : [[name, value]]))) } : 'METHOD_NOT_ALLOWED';
  }
  let pathMatched = false;
  for (const route of routes) {
    const names: string[] = [];
    const pattern = new RegExp(`^${route.resource.replace(/\{(\w+)\}/g, (_, name: string) => (names.push(name), '([^/]+)'))}/?$`);
    const match = pattern.exec(event.path ?? '');
    if (!match) continue;
    pathMatched = true;
    if (route.method !== event.httpMethod) continue;
    const params: Record<string, string> = {};
    for (const [index, name] of names.entries()) {
      try {
        params[name] = decodeURIComponent(match[index + 1] as string);
      } catch {
        throw new ValidationError('INVALID_REQUEST', `The ${name} in the path is not valid percent-encoding.`);
      }
    }
    return { route, params };
  }
  return pathMatched ? 'METHOD_NOT_ALLOWED' : undefined;
}

/**
 * The device API: one router for every route, so one function, one cold start, one role.
 * Idempotency is the core's: every change is passed the caller (`actor`) and the Idempotency-Key
 * (else the request id) as `requestKey`, and the core decides whether it is a retry, a reused key
 * (422 IDEMPOTENCY_KEY_REUSED) or a request still running (409 REQUEST_IN_PROGRESS).
 */
export function createApiHandler(dependencies: ApiDependencies): (event: APIGatewayProxyEvent, context?: Context) => Promise<APIGatewayProxyResult> {
  const routes = createRoutes(dependencies);
  const logger = dependencies.logger ?? new Logger({ serviceName: 'device-api' });
  return async (event) => {
    try {
      const matched = matchRoute(routes, event);
      if (matched === undefined) return jsonResponse(404, { error: { code: 'ROUTE_NOT_FOUND', message: `No route ${event.httpMethod} ${event.path}.` } });
      if (matched === 'METHOD_NOT_ALLOWED') return jsonResponse(405, { error: { code: 'METHOD_NOT_ALLOWED', message: `${event.httpMethod} is not allowed on ${event.path}.` } });
      const actor = callerOf(event);
      const key = matched.route.method === 'POST' ? idempotencyKey(event) : undefined;
      const request: RouteRequest = { event, params: matched.params, actor, requestKey: key ?? event.requestContext?.requestId ?? globalThis.crypto.randomUUID() };
      return await matched.route.run(request);
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
