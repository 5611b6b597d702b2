import * as z from 'zod/mini';
import { DEFAULT_TOPIC_ROOT } from '../../policy/fleet-policy';
import '../schema-messages';

/**
 * Version 1 of the rotation protocol over MQTT (docs/rotation.md, docs/rotation.asyncapi.yaml): its topics, inside each
 * device's own `devices/<thing>/` namespace that the fleet policy confines, and the messages on them. The topic rules
 * (the CDK construct's and the local mode's), the rotation function and the device simulator all take them from here.
 */
export const ROTATION_TOPIC_FILTERS = {
  rotate: `${DEFAULT_TOPIC_ROOT}/+/certificates/rotate`,
  commit: `${DEFAULT_TOPIC_ROOT}/+/certificates/commit`,
} as const;

export type RotationStep = keyof typeof ROTATION_TOPIC_FILTERS;

export const rotationTopic = (thingName: string, step: RotationStep): string => `${DEFAULT_TOPIC_ROOT}/${thingName}/certificates/${step}`;
export const answerTopic = (thingName: string, step: RotationStep, outcome: 'accepted' | 'rejected'): string => `${rotationTopic(thingName, step)}/${outcome}`;
/** Where the expiry monitor and a backend's "rotate now" tell a device to renew. */
export const expiringTopic = (thingName: string): string => `${DEFAULT_TOPIC_ROOT}/${thingName}/certificates/expiring`;

/** The step and thing a message's topic names, if it is a rotation topic. */
export function parseRotationTopic(topic: string): { readonly thingName: string; readonly step: RotationStep } | undefined {
  const match = new RegExp(`^${DEFAULT_TOPIC_ROOT}/([^/+#]+)/certificates/(rotate|commit)$`).exec(topic);
  return match ? { thingName: match[1] as string, step: match[2] as RotationStep } : undefined;
}

/**
 * The fields the topic rules add to a device's message: what AWS IoT knows of the sender. The rule selects the
 * payload's fields by name (never `*`), so a device cannot put its own `mqtt*` fields in.
 */
export const RULE_FIELDS = { topic: 'mqttTopic', clientId: 'mqttClientId', principal: 'mqttPrincipal' } as const;

/** The SQL of the topic rule for `step`: the message's own fields and what AWS IoT knows of its sender. */
export const rotationRuleSql = (step: RotationStep): string =>
  `SELECT requestId, ${step === 'rotate' ? 'csr' : 'certificateId'}, topic() AS ${RULE_FIELDS.topic}, clientid() AS ${RULE_FIELDS.clientId}, principal() AS ${RULE_FIELDS.principal} FROM '${ROTATION_TOPIC_FILTERS[step]}'`;

/** A device message as the rule delivers it. */
export const ruleMessageSchema = z.object({
  [RULE_FIELDS.topic]: z.string(),
  [RULE_FIELDS.clientId]: z.optional(z.string()),
  [RULE_FIELDS.principal]: z.optional(z.string()),
  requestId: z.optional(z.unknown()),
  csr: z.optional(z.unknown()),
  certificateId: z.optional(z.unknown()),
});
export type RuleMessage = z.infer<typeof ruleMessageSchema>;

export const rotateRequestSchema = z.object({
  requestId: z.string().check(z.minLength(1), z.maxLength(64)),
  csr: z.string().check(z.minLength(1), z.maxLength(16_384)),
});

export const commitRequestSchema = z.object({
  requestId: z.string().check(z.minLength(1), z.maxLength(64)),
  certificateId: z.string().check(z.regex(/^[0-9a-f]{64}$/, 'must be the 64 lower-case hex characters of the new certificate id')),
});

/** The answer on `.../rotate/accepted`. */
export interface RotateAccepted {
  readonly requestId: string;
  readonly certificateId: string;
  readonly certificatePem: string;
  readonly certificateChainPem: string;
  readonly notAfter: string;
  readonly commitDeadline: string;
}

/** The answer on `.../commit/accepted`. */
export interface CommitAccepted {
  readonly requestId: string;
  readonly certificateId: string;
  readonly retiredCertificateId: string;
}

/** The answer on `.../rejected`: the HTTP API's error codes; `retryAfter` in seconds when waiting helps. */
export interface Rejected {
  readonly requestId: string | null;
  readonly code: string;
  readonly message: string;
  readonly retryAfter?: number;
}

/**
 * What the topic rule of `step` makes of a device's message: the payload's own fields by name (absent when the
 * payload is not a JSON object) and what AWS IoT knows of the sender, as `rotationRuleSql` selects them.
 */
export function ruleMessageOf(step: RotationStep, payload: unknown, topic: string, sender: { readonly clientId: string; readonly principal: string }): RuleMessage {
  const fields = typeof payload === 'object' && payload !== null && !Array.isArray(payload) ? (payload as Record<string, unknown>) : {};
  const own = step === 'rotate' ? { requestId: fields.requestId, csr: fields.csr } : { requestId: fields.requestId, certificateId: fields.certificateId };
  return {
    ...Object.fromEntries(Object.entries(own).filter(([, value]) => value !== undefined)),
    [RULE_FIELDS.topic]: topic,
    [RULE_FIELDS.clientId]: sender.clientId,
    [RULE_FIELDS.principal]: sender.principal,
  };
}
