import { z } from 'zod';
import { CERTIFICATE_STATUSES, DEVICE_STATUSES, AUDIT_EVENT_TYPES, REVOCATION_REASONS } from '../../core/model';
import { ERROR_CODES } from '../../core/errors';
import { HTTP_STATUS_OF } from './responses';
import { createDeviceBody, listDevicesQuery, revokeBody, signCsrBody } from './requests';

/**
 * The OpenAPI 3 description of the device API, built from the same zod schemas the
 * handlers validate with, so the document cannot promise fields the API refuses.
 * `npm run openapi` writes it to docs/openapi.json; a test fails when the file is stale.
 */
const bodySchema = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', target: 'openapi-3.0' }) as Record<string, unknown>;
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ 'application/json': { schema } });

const errorStatuses = (codes: readonly (typeof ERROR_CODES)[number][]) => {
  const byStatus = new Map<number, string[]>();
  for (const code of codes) byStatus.set(HTTP_STATUS_OF[code], [...(byStatus.get(HTTP_STATUS_OF[code]) ?? []), code]);
  return Object.fromEntries([...byStatus].map(([status, list]) => [String(status), { description: `Error: ${list.join(', ')}`, content: json(ref('Error')) }]));
};

const deviceIdParameter = { name: 'deviceId', in: 'path', required: true, schema: { type: 'string', pattern: '^[a-zA-Z0-9:_-]{1,128}$' } };
const idempotencyKeyParameter = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes a retried POST safe. Kept 30 days per caller and key: the same key with the same request answers the first outcome again; ' +
    'with another request, 422 IDEMPOTENCY_KEY_REUSED; while the first is still running, 409 REQUEST_IN_PROGRESS.',
  schema: { type: 'string', pattern: '^[A-Za-z0-9_.:-]{8,128}$' },
};
const common = ['INVALID_REQUEST', 'UPSTREAM_THROTTLED', 'UPSTREAM_FAILURE'] as const;
const post = ['IDEMPOTENCY_KEY_REUSED', 'REQUEST_IN_PROGRESS', 'PAYLOAD_TOO_LARGE'] as const;

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
    servers: [{ url: 'https://{restApiId}.execute-api.{region}.amazonaws.com/prod', variables: { restApiId: { default: 'example' }, region: { default: 'eu-west-1' } } }, { url: 'http://127.0.0.1:3000' }],
    security: [{ sigv4: [] }, { localBearer: [] }],
    paths: {
      '/devices': {
        post: {
          operationId: 'preRegisterDevice',
          summary: 'Pre-register a device (status REGISTERED) before it has a certificate.',
          parameters: [idempotencyKeyParameter],
          requestBody: { required: true, content: json(bodySchema(createDeviceBody)) },
          responses: { '201': { description: 'Created', content: json(ref('Device')) }, ...errorStatuses([...common, ...post, 'DEVICE_ALREADY_EXISTS']) },
        },
        get: {
          operationId: 'listDevices',
          summary: 'A page of devices in one state.',
          parameters: Object.entries((bodySchema(listDevicesQuery).properties ?? {}) as Record<string, unknown>).map(([name, schema]) => ({ name, in: 'query', required: name === 'status', schema })),
          responses: { '200': { description: 'A page', content: json(ref('DevicePage')) }, ...errorStatuses(common) },
        },
      },
      '/devices/{deviceId}': {
        get: {
          operationId: 'getDevice',
          summary: 'The device, its certificates and its latest audit events (newest first).',
          parameters: [deviceIdParameter],
          responses: { '200': { description: 'The device', content: json(ref('DeviceView')) }, ...errorStatuses([...common, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND']) },
        },
      },
      '/devices/{deviceId}/certificates': {
        post: {
          operationId: 'signCsr',
          summary: 'Sign a PKCS#10 CSR (CN = deviceId; EC P-256/P-384 or RSA 2048-4096) and register the certificate with AWS IoT as ACTIVE.',
          parameters: [deviceIdParameter, idempotencyKeyParameter],
          requestBody: { required: true, content: json(bodySchema(signCsrBody)) },
          responses: { '201': { description: 'Issued', content: json(ref('IssuedCertificate')) }, ...errorStatuses([...common, ...post, 'INVALID_DEVICE_ID', 'INVALID_CSR', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT']) },
        },
      },
      '/devices/{deviceId}/certificates/{certificateId}/revoke': {
        post: {
          operationId: 'revokeCertificate',
          summary: 'Revoke one certificate in AWS IoT (takes effect at the next connect), at the CA (CRL) and in the record; detach it from the thing.',
          parameters: [deviceIdParameter, { name: 'certificateId', in: 'path', required: true, schema: { type: 'string', pattern: '^[0-9a-f]{64}$' } }, idempotencyKeyParameter],
          requestBody: { required: true, content: json(bodySchema(revokeBody)) },
          responses: { '200': { description: 'Revoked', content: json(ref('Certificate')) }, ...errorStatuses([...common, ...post, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'CERTIFICATE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT']) },
        },
      },
      '/devices/{deviceId}/revoke': {
        post: {
          operationId: 'revokeDevice',
          summary: 'Revoke the device and every live certificate of it.',
          parameters: [deviceIdParameter, idempotencyKeyParameter],
          requestBody: { required: true, content: json(bodySchema(revokeBody)) },
          responses: { '200': { description: 'Revoked', content: json(ref('Device')) }, ...errorStatuses([...common, ...post, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT']) },
        },
      },
      '/devices/{deviceId}/suspend': {
        post: {
          operationId: 'suspendDevice',
          summary: 'Suspend an ACTIVE device: its ACTIVE certificates become INACTIVE in AWS IoT.',
          parameters: [deviceIdParameter, idempotencyKeyParameter],
          responses: { '200': { description: 'Suspended', content: json(ref('Device')) }, ...errorStatuses([...common, ...post, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT']) },
        },
      },
      '/devices/{deviceId}/resume': {
        post: {
          operationId: 'resumeDevice',
          summary: 'Resume a SUSPENDED device: its unexpired INACTIVE certificates become ACTIVE again.',
          parameters: [deviceIdParameter, idempotencyKeyParameter],
          responses: { '200': { description: 'Resumed', content: json(ref('Device')) }, ...errorStatuses([...common, ...post, 'INVALID_DEVICE_ID', 'DEVICE_NOT_FOUND', 'INVALID_TRANSITION', 'CONFLICT']) },
        },
      },
    },
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
            source: { type: 'string', enum: ['JITR', 'CSR'] },
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
              properties: { code: { type: 'string', enum: [...ERROR_CODES, 'INTERNAL_ERROR', 'ROUTE_NOT_FOUND', 'METHOD_NOT_ALLOWED', 'UNAUTHORIZED', 'FORBIDDEN'] }, message: { type: 'string' }, details: { type: 'object' } },
            },
          },
        },
      },
    },
  };
}
