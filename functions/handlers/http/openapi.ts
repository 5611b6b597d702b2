import { CERTIFICATE_STATUSES, DEVICE_STATUSES, AUDIT_EVENT_TYPES, REVOCATION_REASONS } from '../../core/model';
import { CAMPAIGN_ID_PATTERN } from '../../core/use-cases/rotation-campaign';
import { API_ERROR_CODES, API_ERRORS, type ApiErrorCode } from './errors';
import { IDEMPOTENCY_KEY_PATTERN, PATH_PARAMETER_PATTERNS, REQUEST_BODIES, requestJsonSchema } from './requests';
import { API_ROUTES, API_STAGE, pathParameterNames, takesIdempotencyKey, type ApiRoute, type ResponseSchemaName } from './routes';

/**
 * The OpenAPI 3 description of the device API, built from the route table and the same zod schemas the
 * handlers validate with, so the document cannot promise routes or fields the API refuses.
 * `npm run openapi` writes it to docs/openapi.json; a test fails when the file is stale.
 */
const ref = (name: ResponseSchemaName | 'AuditEvent' | 'Error') => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });

const errorStatuses = (codes: readonly ApiErrorCode[]) => {
  const byStatus = new Map<number, string[]>();
  for (const code of codes) byStatus.set(API_ERRORS[code].status, [...(byStatus.get(API_ERRORS[code].status) ?? []), code]);
  return Object.fromEntries([...byStatus].map(([status, list]) => [String(status), { description: `Error: ${list.join(', ')}`, content: json(ref('Error')) }]));
};

const idempotencyKeyParameter = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes a retried POST safe. Kept 30 days per caller and key: the same key with the same request answers the first outcome again; ' +
    `with another request, ${API_ERRORS.IDEMPOTENCY_KEY_REUSED.status} IDEMPOTENCY_KEY_REUSED; while the first is still running, ${API_ERRORS.REQUEST_IN_PROGRESS.status} REQUEST_IN_PROGRESS.`,
  schema: { type: 'string', pattern: IDEMPOTENCY_KEY_PATTERN.source },
};

function parametersOf(route: ApiRoute): unknown[] {
  const path = pathParameterNames(route.resource).map((name) => ({ name, in: 'path', required: true, schema: { type: 'string', pattern: PATH_PARAMETER_PATTERNS[name]?.source } }));
  const querySchema = route.query === undefined ? {} : requestJsonSchema(route.query, 'openapi-3.0');
  const required = (querySchema.required ?? []) as string[];
  const query = Object.entries((querySchema.properties ?? {}) as Record<string, unknown>).map(([name, schema]) => ({ name, in: 'query', required: required.includes(name), schema }));
  return [...path, ...query, ...(takesIdempotencyKey(route) ? [idempotencyKeyParameter] : [])];
}

function operationOf(route: ApiRoute) {
  const parameters = parametersOf(route);
  return {
    operationId: route.operationId,
    summary: route.summary,
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(route.body !== undefined ? { requestBody: { required: true, content: json(requestJsonSchema(REQUEST_BODIES[route.body], 'openapi-3.0')) } } : {}),
    responses: { [String(route.success.status)]: { description: route.success.description, content: json(ref(route.success.schema)) }, ...errorStatuses(route.errors) },
  };
}

/** The paths of the route table, each with its operations, in the table's order. */
function pathsOf(routes: readonly ApiRoute[]): Record<string, Record<string, ReturnType<typeof operationOf>>> {
  const paths: Record<string, Record<string, ReturnType<typeof operationOf>>> = {};
  for (const route of routes) (paths[route.resource] ??= {})[route.method.toLowerCase()] = operationOf(route);
  return paths;
}

export function buildOpenApiDocument() {
  return {
    openapi: '3.0.3',
    info: {
      title: 'IoT certificate lifecycle — device API',
      version: '1.0.0',
      description:
        'Pre-register devices, sign CSRs through the fleet CA, revoke, suspend and resume, and read devices with their certificates and audit trail. ' +
        'In AWS every method uses IAM (SigV4) authorization; the local mode takes `Authorization: Bearer <.local/api-token>`.',
    },
    servers: [{ url: `https://{restApiId}.execute-api.{region}.amazonaws.com/${API_STAGE}`, variables: { restApiId: { default: 'example' }, region: { default: 'eu-west-1' } } }, { url: 'http://127.0.0.1:3000' }],
    security: [{ sigv4: [] }, { localBearer: [] }],
    paths: pathsOf(API_ROUTES),
    components: {
      securitySchemes: {
        sigv4: { type: 'apiKey', name: 'Authorization', in: 'header', 'x-amazon-apigateway-authtype': 'awsSigv4' },
        localBearer: { type: 'http', scheme: 'bearer' },
      },
      schemas: {
        Device: {
          type: 'object',
          required: ['deviceId', 'thingName', 'status', 'attributes', 'createdAt', 'updatedAt'],
          properties: {
            deviceId: { type: 'string' },
            thingName: { type: 'string' },
            status: { type: 'string', enum: [...DEVICE_STATUSES] },
            attributes: { type: 'object', additionalProperties: { type: 'string' } },
            statusReason: { type: 'string' },
            revocationReason: { type: 'string', enum: [...REVOCATION_REASONS] },
            rotation: {
              type: 'object',
              description: 'The rotation over MQTT in flight (docs/rotation.md), if any.',
              required: ['state', 'requestId', 'certificateId', 'previousCertificateId', 'commitDeadline'],
              properties: {
                state: { type: 'string', enum: ['ISSUING', 'PENDING', 'COMMITTING', 'WITHDRAWING'] },
                requestId: { type: 'string' },
                certificateId: { type: 'string' },
                previousCertificateId: { type: 'string' },
                commitDeadline: { type: 'string', format: 'date-time' },
              },
            },
            createdAt: { type: 'string', format: 'date-time' },
            updatedAt: { type: 'string', format: 'date-time' },
          },
        },
        Certificate: {
          type: 'object',
          required: ['certificateId', 'serialNumber', 'status', 'source', 'notBefore', 'notAfter'],
          properties: {
            certificateId: { type: 'string', description: 'SHA-256 fingerprint of the DER certificate, lower-case hex (the AWS IoT certificate id).' },
            serialNumber: { type: 'string' },
            status: { type: 'string', enum: [...CERTIFICATE_STATUSES, 'EXPIRED'] },
            source: { type: 'string', enum: ['JITR', 'CSR', 'ROTATION'] },
            rotatedFrom: { type: 'string', description: 'For a certificate a rotation issued: the certificate it replaces.' },
            subject: { type: 'string' },
            issuer: { type: 'string' },
            keyAlgorithm: { type: 'string' },
            notBefore: { type: 'string', format: 'date-time' },
            notAfter: { type: 'string', format: 'date-time' },
            revocationReason: { type: 'string' },
            statusReason: { type: 'string' },
            createdAt: { type: 'string', format: 'date-time' },
            updatedAt: { type: 'string', format: 'date-time' },
          },
        },
        RenewalRequested: {
          type: 'object',
          required: ['deviceId', 'notices'],
          properties: {
            deviceId: { type: 'string' },
            notices: {
              type: 'array',
              description: 'What was published on devices/<thing>/certificates/expiring, one per ACTIVE certificate.',
              items: {
                type: 'object',
                required: ['certificateId', 'notAfter', 'renewBy'],
                properties: { certificateId: { type: 'string' }, notAfter: { type: 'string', format: 'date-time' }, renewBy: { type: 'string', format: 'date-time' } },
              },
            },
          },
        },
        RotationCampaign: {
          type: 'object',
          description: 'A rotation campaign (docs/rotation.md, "When to rotate"): its request and its progress.',
          required: ['campaignId', 'status', 'expiringBefore', 'noticesPerSecond', 'noticesSent', 'certificatesScanned', 'certificatesSkipped', 'createdAt', 'updatedAt'],
          properties: {
            campaignId: { type: 'string', pattern: CAMPAIGN_ID_PATTERN.source },
            status: { type: 'string', enum: ['RUNNING', 'DONE', 'CANCELLED'] },
            expiringBefore: { type: 'string', format: 'date-time' },
            noticesPerSecond: { type: 'integer' },
            noticesSent: { type: 'integer', description: 'Notices published so far, one per device.' },
            certificatesScanned: { type: 'integer', description: 'Certificates of the window looked at so far.' },
            certificatesSkipped: {
              type: 'integer',
              description: 'Of those, the ones that got no notice: not ACTIVE, expired, their device not ACTIVE or already rotating, or the device told for its soonest-expiring certificate.',
            },
            createdAt: { type: 'string', format: 'date-time' },
            updatedAt: { type: 'string', format: 'date-time' },
            lastRunAt: { type: 'string', format: 'date-time', description: 'When the scheduled job last worked on it.' },
            finishedAt: { type: 'string', format: 'date-time' },
            cancelledBy: { type: 'string' },
          },
        },
        CaDeactivated: {
          type: 'object',
          description: 'A previous fleet CA retired: INACTIVE with auto-registration off in AWS IoT.',
          required: ['caCertificateId', 'status', 'autoRegistrationStatus', 'liveCertificates', 'strandedCertificates', 'deviceIds', 'forced', 'deactivatedAt'],
          properties: {
            caCertificateId: { type: 'string', pattern: '^[0-9a-f]{64}$' },
            status: { type: 'string', enum: ['INACTIVE'] },
            autoRegistrationStatus: { type: 'string', enum: ['DISABLE'] },
            liveCertificates: {
              type: 'integer',
              description: 'Live certificates (ACTIVE, INACTIVE or PENDING_ACTIVATION, unexpired) the CA had signed for REGISTERED, ACTIVE or SUSPENDED devices when it was deactivated.',
            },
            strandedCertificates: { type: 'integer', description: 'Of those, the ones the deactivation stranded: as many when forced, else 0.' },
            deviceIds: { type: 'array', items: { type: 'string' }, description: 'A few of the devices holding them.' },
            forced: { type: 'boolean' },
            deactivatedAt: { type: 'string', format: 'date-time' },
          },
        },
        AuditEvent: {
          type: 'object',
          required: ['eventId', 'type', 'at', 'actor'],
          properties: {
            eventId: { type: 'string' },
            type: { type: 'string', enum: [...AUDIT_EVENT_TYPES] },
            at: { type: 'string', format: 'date-time' },
            actor: { type: 'string' },
            deviceId: { type: 'string' },
            certificateId: { type: 'string' },
            fromStatus: { type: 'string' },
            toStatus: { type: 'string' },
            reason: { type: 'string' },
          },
        },
        DeviceView: {
          allOf: [ref('Device'), { type: 'object', required: ['certificateIds', 'certificates', 'events'], properties: { certificateIds: { type: 'array', items: { type: 'string' } }, certificates: { type: 'array', items: ref('Certificate') }, events: { type: 'array', items: ref('AuditEvent') } } }],
        },
        DevicePage: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: ref('Device') }, nextToken: { type: 'string' } } },
        IssuedCertificate: {
          type: 'object',
          required: ['certificateId', 'certificatePem', 'certificateChainPem', 'notAfter'],
          properties: { certificateId: { type: 'string' }, certificatePem: { type: 'string' }, certificateChainPem: { type: 'string' }, notAfter: { type: 'string', format: 'date-time' } },
        },
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message'],
              properties: { code: { type: 'string', enum: [...API_ERROR_CODES] }, message: { type: 'string' }, details: { type: 'object' } },
            },
          },
        },
      },
    },
  };
}
