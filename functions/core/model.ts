/**
 * The records the lifecycle keeps. Stored states are the ones written here;
 * `EXPIRED` is never stored: it is derived from `notAfter` (see `effectiveCertificateStatus`).
 */
export const CERTIFICATE_STATUSES = ['PENDING_ACTIVATION', 'ACTIVE', 'INACTIVE', 'REVOKED', 'RETIRED', 'REJECTED'] as const;
export type CertificateStatus = (typeof CERTIFICATE_STATUSES)[number];
export type EffectiveCertificateStatus = CertificateStatus | 'EXPIRED';

export const DEVICE_STATUSES = ['REGISTERED', 'ACTIVE', 'SUSPENDED', 'REVOKED', 'DECOMMISSIONED'] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

/** How a certificate came to us: a device's first connect (JITR) or a CSR signed through the API. */
export type CertificateSource = 'JITR' | 'CSR';

/** RFC 5280 CRLReason names; adapters map them to their provider's enum. */
export const REVOCATION_REASONS = [
  'UNSPECIFIED',
  'KEY_COMPROMISE',
  'CERTIFICATE_AUTHORITY_COMPROMISE',
  'AFFILIATION_CHANGED',
  'SUPERSEDED',
  'CESSATION_OF_OPERATION',
  'PRIVILEGE_WITHDRAWN',
  'A_A_COMPROMISE',
] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

export interface Device {
  readonly deviceId: string;
  /** The AWS IoT thing name; equal to the device id. */
  readonly thingName: string;
  readonly status: DeviceStatus;
  readonly attributes: Readonly<Record<string, string>>;
  /** Every certificate ever linked to the device, oldest first. */
  readonly certificateIds: readonly string[];
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Optimistic-concurrency counter: every change writes `version + 1` on condition of `version`. */
  readonly version: number;
}

export interface CertificateRecord {
  /** SHA-256 fingerprint of the DER certificate, lower-case hex: the id AWS IoT uses. */
  readonly certificateId: string;
  /** Absent only for a certificate rejected before a device could be named from it. */
  readonly deviceId?: string;
  readonly serialNumber: string;
  readonly subject: string;
  readonly issuer: string;
  readonly keyAlgorithm: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly status: CertificateStatus;
  readonly source: CertificateSource;
  readonly certificatePem: string;
  readonly statusReason?: string;
  readonly revocationReason?: RevocationReason;
  /** While PENDING_ACTIVATION: until when the JITR invocation that claimed it owns the activation. */
  readonly activationLeaseUntil?: string;
  /** The delivery (SQS message or Lambda request) holding the lease; it may take its own claim over at once. */
  readonly activationLeaseHolder?: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly version: number;
}

export const AUDIT_EVENT_TYPES = [
  'DEVICE_PREREGISTERED',
  'DEVICE_CREATED',
  'DEVICE_ACTIVATED',
  'DEVICE_SUSPENDED',
  'DEVICE_RESUMED',
  'DEVICE_REVOKED',
  'DEVICE_DECOMMISSIONED',
  'CERTIFICATE_REGISTERED',
  'CERTIFICATE_ACTIVATED',
  'CERTIFICATE_REJECTED',
  'CERTIFICATE_ISSUED',
  'CERTIFICATE_SUSPENDED',
  'CERTIFICATE_RESUMED',
  'CERTIFICATE_REVOKED',
  'CERTIFICATE_RETIRED',
] as const;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** One line of the append-only audit trail: what happened, when, by whom, from which state to which. */
export interface AuditEvent {
  readonly eventId: string;
  readonly type: AuditEventType;
  readonly at: string;
  /** Who or what caused it: `jitr`, an IAM principal ARN, `local-api`, ... */
  readonly actor: string;
  readonly deviceId?: string;
  readonly certificateId?: string;
  readonly fromStatus?: string;
  readonly toStatus?: string;
  readonly reason?: string;
  /** The key that makes the change it belongs to happen at most once. */
  readonly idempotencyKey: string;
}

export interface DeviceView {
  readonly device: Device;
  readonly certificates: readonly CertificateRecord[];
  readonly events: readonly AuditEvent[];
}

export interface Page<T> {
  readonly items: readonly T[];
  readonly nextToken?: string;
}
