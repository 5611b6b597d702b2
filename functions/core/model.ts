import type { CertificatePurpose } from './certificate-purpose';

/**
 * The records the lifecycle keeps. Stored states are the ones written here;
 * `EXPIRED` is never stored: it is derived from `notAfter` (see `effectiveCertificateStatus`).
 */
export const CERTIFICATE_STATUSES = ['PENDING_ACTIVATION', 'ACTIVE', 'INACTIVE', 'REVOKED', 'RETIRED', 'REJECTED'] as const;
export type CertificateStatus = (typeof CERTIFICATE_STATUSES)[number];
export type EffectiveCertificateStatus = CertificateStatus | 'EXPIRED';

export const DEVICE_STATUSES = ['REGISTERED', 'ACTIVE', 'SUSPENDED', 'REVOKED', 'DECOMMISSIONED'] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

/** How a certificate came to us: a device's first connect (JITR), a CSR signed through the API, or a device's own rotation over MQTT. */
export type CertificateSource = 'JITR' | 'CSR' | 'ROTATION';

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
  /** Why the device is in its status (e.g. the reason it was revoked). */
  readonly statusReason?: string;
  /** Set when the device is REVOKED: the reason its certificates were revoked with. */
  readonly revocationReason?: RevocationReason;
  /** The device's rotation in flight, if any: at most one, because it is written on condition of the device's version. */
  readonly rotation?: PendingRotation;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Optimistic-concurrency counter: every change writes `version + 1` on condition of `version`. */
  readonly version: number;
}

/**
 * A rotation between its two phases: the new certificate is issued, ACTIVE and attached, and waits for the device
 * to connect with it and commit; the previous one stays ACTIVE until then. The commit and the timeout both clear it,
 * on condition of the device's version: exactly one of them decides.
 */
export interface PendingRotation {
  /**
   * `ISSUING`: the request holds the device's slot while the CA signs (`certificateId` is still empty). `PENDING`: waiting
   * for the commit. `COMMITTING` / `WITHDRAWING`: decided (by the commit, or by the sweep after the deadline, or by a
   * revocation), its side effects in AWS IoT and at the CA under way; it is cleared when they are done.
   */
  readonly state: 'ISSUING' | 'PENDING' | 'COMMITTING' | 'WITHDRAWING';
  readonly requestId: string;
  readonly certificateId: string;
  readonly previousCertificateId: string;
  /** After this instant the sweep withdraws the new certificate and the previous one stays. */
  readonly commitDeadline: string;
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
  /** A certificate a rotation issued: the certificate it replaces (RETIRED once the rotation is committed). */
  readonly rotatedFrom?: string;
  /**
   * BOOTSTRAP: the subject's OU is `bootstrap`, a certificate the fleet policy confines to the rotation topics (recovery
   * after expiry). Absent on records written before purposes existed: read it with `purposeOf`, which answers OPERATIONAL.
   */
  readonly purpose?: CertificatePurpose;
  readonly certificatePem: string;
  readonly statusReason?: string;
  readonly revocationReason?: RevocationReason;
  /** While PENDING_ACTIVATION: until when the JITR invocation that claimed it owns the activation. */
  readonly activationLeaseUntil?: string;
  /** The delivery (SQS message or Lambda request) holding the lease; it may take its own claim over at once. */
  readonly activationLeaseHolder?: string;
  /**
   * While PENDING_ACTIVATION: set when the certificate was refused only because its device was not pre-registered
   * (enrollment policy `preregistered`). It stays PENDING_ACTIVATION in AWS IoT (which refuses its connects) and is
   * activated when the device is pre-registered.
   */
  readonly awaitingPreRegistration?: boolean;
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
  'ROTATION_STARTED',
  'ROTATION_COMMITTED',
  'ROTATION_WITHDRAWN',
  'CA_DEACTIVATED',
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

/* ----------------------------------------------------------------------------
 * Operation records: every change a caller asks for, written before any side effect.
 * -------------------------------------------------------------------------- */

export const OPERATION_TYPES = [
  'PRE_REGISTER_DEVICE',
  'ISSUE_CERTIFICATE',
  'REVOKE_CERTIFICATE',
  'REVOKE_DEVICE',
  'SUSPEND_DEVICE',
  'RESUME_DEVICE',
  'ROTATE_CERTIFICATE',
  'COMMIT_ROTATION',
  'WITHDRAW_ROTATION',
  'REQUEST_RENEWAL',
  'CHECK_DRIFT',
  'ROTATION_CAMPAIGN',
  'CANCEL_ROTATION_CAMPAIGN',
  'ROTATION_CAMPAIGN_INDEX',
  'DEACTIVATE_CA',
] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];

/** `PENDING`: started, side effects may be part-done. `DONE`: finished, `outcome` answers every retry. `WITHDRAWN`: undone for good. */
export type OperationStatus = 'PENDING' | 'DONE' | 'WITHDRAWN';

/** What a finished operation answers to every retry with its key. */
export interface OperationOutcome {
  readonly device?: Device;
  readonly certificate?: CertificateRecord;
  readonly certificateId?: string;
  /** A committed rotation: the certificate it retired. */
  readonly retiredCertificateId?: string;
  /** A rotation: until when the device may commit the new certificate. */
  readonly commitDeadline?: string;
  /** Why a WITHDRAWN operation was undone: its answer, with the error code a retry gets. */
  readonly error?: { readonly code: string; readonly message: string };
}

/**
 * One caller's request, kept under its handle (the client's Idempotency-Key, or the request id) so a retry
 * finishes it or answers its outcome. A handle reused for another request is refused, never answered.
 */
export interface OperationRecord {
  /** SHA-256 of caller and handle: the same handle from two callers names two operations. */
  readonly operationId: string;
  readonly caller: string;
  readonly handle: string;
  readonly operation: OperationType;
  /** The device (and certificate) the operation acts on. */
  readonly target: string;
  /** SHA-256 of the normalized request payload. */
  readonly payloadHash: string;
  readonly status: OperationStatus;
  /** Steps already done that a retry must not redo (e.g. the certificate the CA issued). */
  readonly progress?: Readonly<Record<string, string>>;
  readonly outcome?: OperationOutcome;
  /** Until when the execution named by `leaseHolder` owns the operation; others answer REQUEST_IN_PROGRESS. */
  readonly leaseUntil?: string;
  readonly leaseHolder?: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly version: number;
}
