import type * as z from 'zod/mini';
import { ConfigurationError, ValidationError } from '../../core/errors';
import type { DeviceLifecycle } from '../../core/lifecycle';
import type { Clock, DeviceMessenger } from '../../core/ports';
import { expiringTopic } from '../mqtt/rotation-protocol';
import type { ApiErrorCode } from './errors';
import { presentCertificate, presentDevice, presentDeviceView } from './presenters';
import { CERTIFICATE_ID_PATTERN, listDevicesQuery, REQUEST_BODIES, type RequestBodyName } from './requests';

/**
 * The route table of the device API: one entry per route. The Lambda router (../api.ts), the local server
 * (local/api-server.ts), the test harness, API Gateway's resources, methods and models (infra/device-api.ts)
 * and the OpenAPI document (./openapi.ts) are all derived from it, so adding a route is adding an entry.
 */

/** The API Gateway stage the stack deploys the API to: the first path segment of every URL of a deployed API. */
export const API_STAGE = 'v1';

export interface RouteDependencies {
  readonly lifecycle: DeviceLifecycle;
  readonly clock: Clock;
  /** Messages to devices (the renewal notice); absent, the routes that need it answer CONFIGURATION_ERROR. */
  readonly messenger?: DeviceMessenger;
}

/** What a route's handler is given: everything already parsed and checked against the route's schemas. */
export interface RouteRequest<Body = unknown, Query = unknown> {
  /** The path parameters, decoded. */
  readonly params: Readonly<Record<string, string>>;
  readonly body: Body;
  readonly query: Query;
  readonly actor: string;
  /** The Idempotency-Key, or the request id: what makes a retried change a no-op. */
  readonly requestKey: string;
}

/** A route's answer; its status is the route's `success.status`. */
export interface RouteAnswer {
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

/** The response schemas of the OpenAPI document (its `components.schemas`). */
export type ResponseSchemaName = 'Device' | 'DevicePage' | 'DeviceView' | 'IssuedCertificate' | 'Certificate' | 'RenewalRequested' | 'RotationCampaign' | 'CaDeactivated';

type BodyOf<Name> = Name extends RequestBodyName ? z.output<(typeof REQUEST_BODIES)[Name]> : undefined;
type QueryOf<Query> = Query extends z.ZodMiniType ? z.output<Query> : undefined;

export interface RouteDefinition<Body extends RequestBodyName | undefined, Query extends z.ZodMiniType | undefined> {
  readonly method: 'GET' | 'POST';
  /** The API Gateway resource template, such as `/devices/{deviceId}`. */
  readonly resource: string;
  readonly operationId: string;
  readonly summary: string;
  /** The JSON body, by name (requests.ts `REQUEST_BODIES`). @default - none: a POST takes an empty body (`{}`), a GET's is ignored */
  readonly body?: Body;
  /** The query string. @default - none read */
  readonly query?: Query;
  readonly success: { readonly status: 200 | 201 | 202; readonly description: string; readonly schema: ResponseSchemaName };
  /** Every error code the route may answer with (besides the routing errors), for the document. */
  readonly errors: readonly ApiErrorCode[];
  readonly handle: (request: RouteRequest<BodyOf<Body>, QueryOf<Query>>, dependencies: RouteDependencies) => Promise<RouteAnswer>;
}

export type ApiRoute = RouteDefinition<RequestBodyName | undefined, z.ZodMiniType | undefined>;

/** Types the handler by the route's schemas; the router parses with the same schemas, which keeps that promise. */
const route = <const Body extends RequestBodyName | undefined = undefined, Query extends z.ZodMiniType | undefined = undefined>(definition: RouteDefinition<Body, Query>): ApiRoute =>
  definition as unknown as ApiRoute;

/** A POST changes something: it takes an Idempotency-Key. */
export const takesIdempotencyKey = (apiRoute: Pick<ApiRoute, 'method'>): boolean => apiRoute.method === 'POST';

const COMMON_ERRORS = ['INVALID_REQUEST', 'UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE'] as const;
const CHANGE_ERRORS = [...COMMON_ERRORS, 'IDEMPOTENCY_KEY_REUSED', 'REQUEST_IN_PROGRESS', 'PAYLOAD_TOO_LARGE'] as const;
const DEVICE_CHANGE_ERRORS = [...CHANGE_ERRORS, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT'] as const;

export const API_ROUTES: readonly ApiRoute[] = [
  route({
    method: 'POST',
    resource: '/devices',
    operationId: 'preRegisterDevice',
    summary: 'Pre-register a device (status REGISTERED) before it has a certificate.',
    body: 'CreateDevice',
    success: { status: 201, description: 'Created', schema: 'Device' },
    errors: [...CHANGE_ERRORS, 'DEVICE_ALREADY_EXISTS'],
    handle: async ({ body, actor, requestKey }, { lifecycle }) => {
      const device = await lifecycle.preRegisterDevice({ deviceId: body.deviceId, attributes: body.attributes ?? {}, actor, requestKey });
      return { body: presentDevice(device), headers: { Location: `/devices/${encodeURIComponent(device.deviceId)}` } };
    },
  }),
  route({
    method: 'GET',
    resource: '/devices',
    operationId: 'listDevices',
    summary: 'A page of devices: those in one state (?status=), or every device, state by state then by device id.',
    query: listDevicesQuery,
    success: { status: 200, description: 'A page', schema: 'DevicePage' },
    errors: COMMON_ERRORS,
    handle: async ({ query }, { lifecycle }) => {
      const page = await lifecycle.listDevices(query);
      return { body: { items: page.items.map(presentDevice), ...(page.nextToken ? { nextToken: page.nextToken } : {}) } };
    },
  }),
  route({
    method: 'GET',
    resource: '/devices/{deviceId}',
    operationId: 'getDevice',
    summary: 'The device, its certificates and its latest audit events (newest first).',
    success: { status: 200, description: 'The device', schema: 'DeviceView' },
    errors: [...COMMON_ERRORS, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND'],
    handle: async ({ params }, { lifecycle, clock }) => ({ body: presentDeviceView(await lifecycle.getDevice(param(params, 'deviceId')), clock.now()) }),
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/certificates',
    operationId: 'signCsr',
    summary: 'Sign a PKCS#10 CSR (CN = deviceId; EC P-256/P-384 or RSA 2048-4096) and register the certificate with AWS IoT as ACTIVE.',
    body: 'SignCsr',
    success: { status: 201, description: 'Issued', schema: 'IssuedCertificate' },
    errors: [...CHANGE_ERRORS, 'INVALID_DEVICE_ID', 'INVALID_CSR', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT', 'CERTIFICATE_WITHDRAWN'],
    handle: async ({ params, body, actor, requestKey }, { lifecycle }) => ({ body: await lifecycle.issueFromCsr({ deviceId: param(params, 'deviceId'), csrPem: body.csr, actor, requestKey }) }),
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/certificates/{certificateId}/revoke',
    operationId: 'revokeCertificate',
    summary: 'Revoke one certificate in AWS IoT (takes effect at the next connect), at the CA (CRL) and in the record; detach it from the thing.',
    body: 'Revoke',
    success: { status: 200, description: 'Revoked', schema: 'Certificate' },
    errors: [...CHANGE_ERRORS, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'CERTIFICATE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT'],
    handle: async ({ params, body, actor, requestKey }, { lifecycle, clock }) => {
      const certificateId = param(params, 'certificateId');
      if (!CERTIFICATE_ID_PATTERN.test(certificateId)) {
        throw new ValidationError('INVALID_REQUEST', 'certificateId must be the 64 lower-case hex characters of the certificate SHA-256 fingerprint.');
      }
      const revoked = await lifecycle.revokeCertificate({ deviceId: param(params, 'deviceId'), certificateId, reason: body.reason, actor, requestKey });
      return { body: presentCertificate(revoked, clock.now()) };
    },
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/revoke',
    operationId: 'revokeDevice',
    summary: 'Revoke the device and every live certificate of it.',
    body: 'Revoke',
    success: { status: 200, description: 'Revoked', schema: 'Device' },
    errors: DEVICE_CHANGE_ERRORS,
    handle: async ({ params, body, actor, requestKey }, { lifecycle }) => ({ body: presentDevice(await lifecycle.revokeDevice({ deviceId: param(params, 'deviceId'), reason: body.reason, actor, requestKey })) }),
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/suspend',
    operationId: 'suspendDevice',
    summary: 'Suspend an ACTIVE device: its ACTIVE certificates become INACTIVE in AWS IoT.',
    success: { status: 200, description: 'Suspended', schema: 'Device' },
    errors: DEVICE_CHANGE_ERRORS,
    handle: async ({ params, actor, requestKey }, { lifecycle }) => ({ body: presentDevice(await lifecycle.suspendDevice({ deviceId: param(params, 'deviceId'), actor, requestKey })) }),
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/resume',
    operationId: 'resumeDevice',
    summary: 'Resume a SUSPENDED device: its unexpired INACTIVE certificates become ACTIVE again.',
    success: { status: 200, description: 'Resumed', schema: 'Device' },
    errors: DEVICE_CHANGE_ERRORS,
    handle: async ({ params, actor, requestKey }, { lifecycle }) => ({ body: presentDevice(await lifecycle.resumeDevice({ deviceId: param(params, 'deviceId'), actor, requestKey })) }),
  }),
  route({
    method: 'POST',
    resource: '/devices/{deviceId}/rotate',
    operationId: 'requestRotation',
    summary: 'Ask an ACTIVE device to rotate its certificate now: the renewal notice on devices/<thing>/certificates/expiring (docs/rotation.md), renewBy = now.',
    success: { status: 200, description: 'Notified', schema: 'RenewalRequested' },
    errors: [...DEVICE_CHANGE_ERRORS, 'CONFIGURATION_ERROR'],
    handle: async ({ params, actor, requestKey }, { lifecycle, messenger }) => {
      if (!messenger) throw new ConfigurationError('This deployment cannot publish to devices: the API function has no device messenger.');
      const requested = await lifecycle.requestRenewal({ deviceId: param(params, 'deviceId'), actor, requestKey }, (deviceId, notice) => messenger.publish(expiringTopic(deviceId), { ...notice }));
      return { body: requested };
    },
  }),
  // Rotation campaigns: every device whose certificate expires before a date, told at a paced rate (docs/rotation.md, "When to rotate").
  route({
    method: 'POST',
    resource: '/rotation-campaigns',
    operationId: 'startRotationCampaign',
    summary:
      'Ask every ACTIVE device whose ACTIVE certificate expires before a date to rotate now: the renewal notice (renewBy = now), paced at noticesPerSecond by a scheduled job. ' +
      'Devices already rotating, suspended or revoked are skipped; each device is told once.',
    body: 'StartRotationCampaign',
    success: { status: 202, description: 'Accepted: the campaign runs; read its progress with GET /rotation-campaigns/{campaignId}', schema: 'RotationCampaign' },
    errors: [...CHANGE_ERRORS, 'CAMPAIGN_LIMIT_REACHED', 'CONFLICT'],
    handle: async ({ body, actor, requestKey }, { lifecycle }) => {
      const campaign = await lifecycle.startRotationCampaign({ expiringBefore: body.expiringBefore, ...(body.noticesPerSecond === undefined ? {} : { noticesPerSecond: body.noticesPerSecond }), actor, requestKey });
      return { body: campaign, headers: { Location: `/rotation-campaigns/${campaign.campaignId}` } };
    },
  }),
  route({
    method: 'GET',
    resource: '/rotation-campaigns/{campaignId}',
    operationId: 'getRotationCampaign',
    summary: 'A rotation campaign and its progress (kept 30 days after its last change).',
    success: { status: 200, description: 'The campaign', schema: 'RotationCampaign' },
    errors: [...COMMON_ERRORS, 'CAMPAIGN_NOT_FOUND'],
    handle: async ({ params }, { lifecycle }) => ({ body: await lifecycle.getRotationCampaign(param(params, 'campaignId')) }),
  }),
  route({
    method: 'POST',
    resource: '/rotation-campaigns/{campaignId}/cancel',
    operationId: 'cancelRotationCampaign',
    summary: 'Cancel a RUNNING campaign: no notice goes out after the job\'s next checkpoint (seconds). Cancelling it again answers the same.',
    success: { status: 200, description: 'Cancelled', schema: 'RotationCampaign' },
    errors: [...CHANGE_ERRORS, 'CAMPAIGN_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT'],
    handle: async ({ params, actor, requestKey }, { lifecycle }) => ({ body: await lifecycle.cancelRotationCampaign({ campaignId: param(params, 'campaignId'), actor, requestKey }) }),
  }),
  // The last step of a CA rotation (docs/deploy.md, "Rotating the CA"): retiring a previous CA's registration.
  route({
    method: 'POST',
    resource: '/certificate-authorities/{caCertificateId}/deactivate',
    operationId: 'deactivateCa',
    summary:
      'Retire a previous fleet CA once its devices have rotated over: its AWS IoT registration becomes INACTIVE with auto-registration off, so no certificate it signed connects any more. ' +
      'Refused for the current CA, and while live certificates remain on it unless {"force": true}. Deactivating it again answers the same.',
    body: 'DeactivateCa',
    success: { status: 200, description: 'Deactivated', schema: 'CaDeactivated' },
    errors: [...CHANGE_ERRORS, 'CA_NOT_FOUND', 'CA_IS_CURRENT', 'CA_STILL_IN_USE'],
    handle: async ({ params, body, actor, requestKey }, { lifecycle }) => {
      const caCertificateId = param(params, 'caCertificateId');
      if (!CERTIFICATE_ID_PATTERN.test(caCertificateId)) {
        throw new ValidationError('INVALID_REQUEST', 'caCertificateId must be the 64 lower-case hex characters of the CA certificate SHA-256 fingerprint (the AWS IoT CA certificate id).');
      }
      return { body: await lifecycle.deactivateCa({ caCertificateId, ...(body.force === undefined ? {} : { force: body.force }), actor, requestKey }) };
    },
  }),
];

/** A path parameter the route's template names, so the router has matched it. */
function param(params: Readonly<Record<string, string>>, name: string): string {
  return params[name] as string;
}

/** The names of a resource template's path parameters, in order: `/devices/{deviceId}` → `['deviceId']`. */
export function pathParameterNames(resource: string): string[] {
  return [...resource.matchAll(/\{(\w+)\}/g)].map((match) => match[1] as string);
}

/**
 * Matches a path against a resource template as API Gateway does: each `{name}` is one path segment, and a trailing
 * slash is allowed. The values are as in the path, still percent-encoded; undefined when the path does not match.
 */
export function matchTemplate(resource: string, path: string): Record<string, string> | undefined {
  const names = pathParameterNames(resource);
  const match = new RegExp(`^${resource.replace(/\{\w+\}/g, '([^/]+)')}/?$`).exec(path);
  return match ? Object.fromEntries(names.map((name, index) => [name, match[index + 1] as string])) : undefined;
}

export interface PathMatch {
  readonly route: ApiRoute;
  /** Still percent-encoded. */
  readonly pathParameters: Readonly<Record<string, string>>;
  /** False when only another method is served on this path (405): `route` is then the first route of the path. */
  readonly allowed: boolean;
}

/** The route `method path` goes to; else a route of another method on the same path; else undefined (no such path). */
export function matchPath(method: string, path: string, routes: readonly ApiRoute[] = API_ROUTES): PathMatch | undefined {
  let other: PathMatch | undefined;
  for (const candidate of routes) {
    const pathParameters = matchTemplate(candidate.resource, path);
    if (pathParameters === undefined) continue;
    if (candidate.method === method) return { route: candidate, pathParameters, allowed: true };
    other ??= { route: candidate, pathParameters, allowed: false };
  }
  return other;
}
