import type { APIGatewayProxyEvent } from 'aws-lambda';
import * as z from 'zod/mini';
import '../schema-messages';
import { ValidationError } from '../../core/errors';
import { DEVICE_ID_PATTERN } from '../../core/device-id';
import { DEVICE_STATUSES, REVOCATION_REASONS } from '../../core/model';
import { CERTIFICATE_LIMITS } from '../../core/x509';
import { CAMPAIGN_ID_PATTERN, CAMPAIGN_LIMITS } from '../../core/use-cases/rotation-campaign';
import { ERROR_MESSAGES } from './errors';

/** Requests larger than this are refused before parsing; the largest legitimate body is a CSR. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * Names every JavaScript object already has: a field or attribute so named is dropped (`__proto__`: zod
 * skips it and assigning it sets the prototype) or shadows the object's machinery, so it is refused.
 */
const RESERVED_NAMES: readonly string[] = ['__proto__', 'constructor', 'prototype'];
const reservedName = (name: string): string =>
  `"${name}" is a reserved name (JavaScript objects use it for their prototype machinery, so it would be dropped or misread): choose another name`;

/** AWS IoT's attribute name rule, minus the names JavaScript reserves. */
const attributeName = z
  .string()
  .check(
    z.regex(/^[a-zA-Z0-9_.,@/:#-]{1,128}$/, 'attribute names are 1-128 of a-z A-Z 0-9 _ . , @ / : # -'),
    z.refine((name) => !RESERVED_NAMES.includes(name), { error: (issue) => reservedName(String(issue.input)) }),
  );

/** AWS IoT allows 3 attributes on a thing without a thing type. */
const MAX_ATTRIBUTES = 3;

/**
 * AWS IoT's attribute rules. `[` is escaped in the value class although JavaScript does not need it: the pattern
 * also goes into the JSON schemas (API Gateway's model, the OpenAPI document), whose readers may not all be ECMAScript.
 * The count is a refinement, which JSON Schema cannot read: `maxProperties` says it to them.
 */
const attributes = z
  // eslint-disable-next-line no-useless-escape -- escaped on purpose, see above
  .record(attributeName, z.string().check(z.regex(/^[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}$/, 'attribute values are up to 800 of a-z A-Z 0-9 _ . , @ / : # = [ ] -')))
  .check(z.refine((value) => Object.keys(value).length <= MAX_ATTRIBUTES, `a device has at most ${MAX_ATTRIBUTES} attributes`), z.meta({ maxProperties: MAX_ATTRIBUTES }));

export const createDeviceBody = z.strictObject({
  deviceId: z.string().check(z.regex(DEVICE_ID_PATTERN, 'use 1 to 128 characters from a-z, A-Z, 0-9, ":", "_" and "-"')),
  attributes: z.optional(attributes),
});

export const signCsrBody = z.strictObject({
  csr: z.string().check(z.minLength(1), z.maxLength(CERTIFICATE_LIMITS.maxCsrPemBytes, `the CSR must be at most ${CERTIFICATE_LIMITS.maxCsrPemBytes} characters`)),
});

export const revokeBody = z.strictObject({
  reason: z.enum(REVOCATION_REASONS, { message: `reason must be one of ${REVOCATION_REASONS.join(', ')}` }),
});

export const emptyBody = z.strictObject({});

export const startRotationCampaignBody = z.strictObject({
  expiringBefore: z.iso.datetime({ offset: true, message: 'expiringBefore must be an ISO-8601 date and time with its offset, such as 2027-01-31T00:00:00Z' }),
  noticesPerSecond: z.optional(z.number().check(z.int(), z.minimum(CAMPAIGN_LIMITS.minNoticesPerSecond), z.maximum(CAMPAIGN_LIMITS.maxNoticesPerSecond))).check(
    z.meta({ description: `Notices published a second (default ${CAMPAIGN_LIMITS.defaultNoticesPerSecond}).` }),
  ),
});

export const deactivateCaBody = z.strictObject({
  force: z.optional(z.boolean({ message: 'force must be true or false' })).check(
    z.meta({ description: 'Deactivate even though live certificates remain on the CA: they are stranded (the answer counts them). Default false.' }),
  ),
});

/** The JSON bodies the API takes, by the name of their API Gateway model. A route names its body here. */
export const REQUEST_BODIES = { CreateDevice: createDeviceBody, SignCsr: signCsrBody, Revoke: revokeBody, StartRotationCampaign: startRotationCampaignBody, DeactivateCa: deactivateCaBody } as const;

export type RequestBodyName = keyof typeof REQUEST_BODIES;

export const listDevicesQuery = z.strictObject({
  /** Without it, every device: state by state, then by device id. */
  status: z.optional(z.enum(DEVICE_STATUSES, { message: `status must be one of ${DEVICE_STATUSES.join(', ')} (or left out for every device)` })),
  limit: z._default(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(100)), 25),
  nextToken: z.optional(z.string().check(z.minLength(1), z.maxLength(2048))),
});

export const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9_.:-]{8,128}$/;

/** A certificate id in a path: the SHA-256 fingerprint of the DER certificate, lower-case hex (the AWS IoT certificate id). */
export const CERTIFICATE_ID_PATTERN = /^[0-9a-f]{64}$/;

/** What each path parameter of a resource template must look like. */
export const PATH_PARAMETER_PATTERNS: Readonly<Record<string, RegExp>> = {
  deviceId: DEVICE_ID_PATTERN,
  certificateId: CERTIFICATE_ID_PATTERN,
  campaignId: CAMPAIGN_ID_PATTERN,
  caCertificateId: CERTIFICATE_ID_PATTERN,
};

/**
 * The JSON schema of what a request may hold, from the zod schema the handler validates with: OpenAPI 3.0 for the
 * document, draft 4 for API Gateway's models (without `$schema`, which the model sets itself).
 */
export function requestJsonSchema(schema: z.ZodMiniType, target: 'openapi-3.0' | 'draft-4'): Record<string, unknown> {
  const { $schema: _version, ...jsonSchema } = z.toJSONSchema(schema, { io: 'input', target }) as Record<string, unknown>;
  return jsonSchema;
}

/** Parses a JSON body against `schema`; every failure is a 400/413 that names the field to fix. */
export function parseBody<T extends z.ZodMiniType>(event: APIGatewayProxyEvent, schema: T): z.infer<T> {
  const raw = event.body === null || event.body === undefined || event.body === '' ? '{}' : event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  if (Buffer.byteLength(raw, 'utf8') > MAX_BODY_BYTES) {
    throw new ValidationError('PAYLOAD_TOO_LARGE', ERROR_MESSAGES.bodyTooLarge(MAX_BODY_BYTES));
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new ValidationError('INVALID_REQUEST', 'The request body is not valid JSON.');
  }
  const protoPath = pathOfProtoKey(json);
  if (protoPath !== undefined) throw invalidRequest([`${protoPath}: ${reservedName('__proto__')}`]);
  return parseWith(schema, json, 'body');
}

/**
 * Where parsed JSON holds a `__proto__` key, if anywhere. JSON.parse keeps it as an own property, but zod
 * skips it before any key rule runs, so without this it would vanish silently. Iterative: bodies may nest deep.
 */
function pathOfProtoKey(json: unknown): string | undefined {
  interface Visit {
    readonly value: unknown;
    readonly key?: string;
    readonly parent?: Visit;
  }
  const pending: Visit[] = [{ value: json }];
  for (let visit = pending.pop(); visit !== undefined; visit = pending.pop()) {
    if (typeof visit.value !== 'object' || visit.value === null) continue;
    for (const [key, value] of Object.entries(visit.value)) {
      const child: Visit = { value, key, parent: visit };
      if (key === '__proto__') {
        const path: string[] = [];
        for (let at: Visit | undefined = child; at?.key !== undefined; at = at.parent) path.unshift(at.key);
        return path.join('.');
      }
      pending.push(child);
    }
  }
  return undefined;
}

export function parseQuery<T extends z.ZodMiniType>(event: APIGatewayProxyEvent, schema: T): z.infer<T> {
  return parseWith(schema, event.queryStringParameters ?? {}, 'query');
}

function parseWith<T extends z.ZodMiniType>(schema: T, value: unknown, where: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') return `unknown field(s) ${issue.keys.map((key) => `"${key}"`).join(', ')} in the ${where}`;
    const path = issue.path.length > 0 ? issue.path.join('.') : where;
    // A record key that breaks its rule: say the rule, not zod's generic "Invalid key in record".
    if (issue.code === 'invalid_key') return `${path}: ${issue.issues.map((keyIssue) => keyIssue.message).join('; ')}`;
    return `${path}: ${issue.message}`;
  });
  throw invalidRequest(problems);
}

function invalidRequest(problems: readonly string[]): ValidationError {
  return new ValidationError('INVALID_REQUEST', `Invalid request: ${problems.join('; ')}.`, { details: { problems } });
}

export function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(event.headers ?? {})) if (key.toLowerCase() === wanted && value !== undefined) return value;
  return undefined;
}

/** The caller's Idempotency-Key, checked; undefined when the caller sent none. */
export function idempotencyKey(event: APIGatewayProxyEvent): string | undefined {
  const key = header(event, 'Idempotency-Key');
  if (key === undefined) return undefined;
  if (!IDEMPOTENCY_KEY_PATTERN.test(key)) {
    throw new ValidationError('INVALID_REQUEST', 'Idempotency-Key must be 8 to 128 characters from A-Z, a-z, 0-9, "_", ".", ":" and "-" (a UUID works).');
  }
  return key;
}

/** Who is calling: the SigV4 principal API Gateway authenticated (AWS_IAM), or what the local mode sets. */
export function callerOf(event: APIGatewayProxyEvent): string {
  const identity = event.requestContext?.identity;
  return identity?.userArn ?? identity?.caller ?? 'unknown';
}
