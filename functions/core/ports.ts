import type { AuditEvent, CertificateRecord, CertificateStatus, Device, DeviceStatus, DeviceView, OperationRecord, Page, RevocationReason } from './model';

/* ----------------------------------------------------------------------------
 * The certificate authority: AWS Private CA in the cloud, a software CA locally.
 * -------------------------------------------------------------------------- */

export interface IssueCertificateRequest {
  readonly csrPem: string;
  readonly validityDays: number;
  /** Same token, same certificate: lets a retried request not issue twice. */
  readonly idempotencyToken: string;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  /** The issuing CA's certificate and any intermediates up to the root, PEM, leaf-most first. */
  readonly certificateChainPem: string;
}

export interface RevokeCertificateRequest {
  readonly serialNumber: string;
  readonly reason: RevocationReason;
  /** Some CAs (AWS Private CA) want the issued certificate to find it. */
  readonly certificatePem: string;
}

export interface CaCertificates {
  /** The CA that signs device certificates. */
  readonly certificatePem: string;
  /** Its chain up to the root (empty for a root CA), PEM. */
  readonly certificateChainPem: string;
  /**
   * CAs that no longer sign but whose certificates are still accepted (JITR, rotation, connects) while their devices
   * rotate over to the signing CA: a CA rotation (functions/core/fleet-cas.ts). Each without its own `previous`.
   * @default - none
   */
  readonly previous?: readonly Omit<CaCertificates, 'previous'>[];
}

export interface CertificateAuthority {
  /**
   * Asks the CA to sign; answers an id to collect the certificate with. Keeping that id is what makes a retry never
   * issue twice: the idempotency token alone is honoured only for a while (AWS Private CA: 5 minutes).
   */
  requestCertificate(request: IssueCertificateRequest): Promise<{ readonly issuanceId: string }>;
  /** The certificate of an accepted request; a retryable `UpstreamError` while the CA is still signing it. */
  collectCertificate(issuanceId: string): Promise<IssuedCertificate>;
  /** Revoking an already revoked certificate succeeds. */
  revokeCertificate(request: RevokeCertificateRequest): Promise<void>;
  getCaCertificates(): Promise<CaCertificates>;
}

/* ----------------------------------------------------------------------------
 * The device registry: AWS IoT Core's view of certificates and things.
 * -------------------------------------------------------------------------- */

/**
 * A certificate's status in the registry, in the core's own words: the certificate statuses a registry can
 * hold. An adapter maps its provider's statuses to these and refuses any other.
 */
export type RegistryCertificateStatus = Extract<CertificateStatus, 'PENDING_ACTIVATION' | 'ACTIVE' | 'INACTIVE' | 'REVOKED'>;

export interface RegistryCertificate {
  readonly certificateId: string;
  readonly certificatePem: string;
  readonly status: RegistryCertificateStatus;
  readonly caCertificateId?: string;
}

export interface RegisterCertificateRequest {
  readonly certificatePem: string;
  /** The issuing CA's certificate, for registries that link a certificate to its registered CA. */
  readonly caCertificatePem: string;
}

export interface RegisteredCertificate {
  readonly certificateId: string;
  /** True when the registry had it before this call (a retried request): not necessarily ACTIVE. */
  readonly alreadyRegistered: boolean;
}

export interface DeviceRegistry {
  describeCertificate(certificateId: string): Promise<RegistryCertificate>;
  /**
   * Registers an issued certificate as ACTIVE and answers its id. Registering it again answers the same id with
   * `alreadyRegistered` (its status is then left as it is: the caller reads it back).
   */
  registerCertificate(request: RegisterCertificateRequest): Promise<RegisteredCertificate>;
  /** Setting the status a certificate already has succeeds. */
  updateCertificateStatus(certificateId: string, status: 'ACTIVE' | 'INACTIVE' | 'REVOKED'): Promise<void>;
  /** Creates the thing (an existing one is fine) and puts it where the fleet policy applies. */
  ensureThing(thingName: string, attributes: Readonly<Record<string, string>>): Promise<void>;
  /** Links the certificate to the thing and makes the fleet policy apply to it. */
  attachCertificate(thingName: string, certificateId: string): Promise<void>;
  /** Undoes `attachCertificate`; a link already gone is fine. */
  detachCertificate(thingName: string, certificateId: string): Promise<void>;
  /**
   * Retires a registered CA (AWS IoT: UpdateCACertificate): INACTIVE, with auto-registration off, so no certificate
   * it signed connects or registers any more. Setting it again succeeds. `NotFoundError` (CA_NOT_FOUND) when the
   * registry has no such CA.
   */
  setCaCertificateStatus(caCertificateId: string, status: 'INACTIVE'): Promise<void>;
}

/* ----------------------------------------------------------------------------
 * The device store: devices, their certificates and the audit trail.
 * -------------------------------------------------------------------------- */

/**
 * One atomic change. Each record is written on condition that it still has `expectedVersion`
 * (or does not exist yet when `expectedVersion` is absent). The operation record, when present,
 * is written the same way, so a change belongs to at most one execution of one operation.
 * A new certificate record with a `deviceId` is also linked to its device, so the device's
 * certificates can be listed without a growing list on the device item.
 */
export interface StoreChange {
  readonly operation?: { readonly next: OperationRecord; readonly expectedVersion?: number };
  readonly device?: { readonly next: Device; readonly expectedVersion?: number };
  readonly certificates?: readonly { readonly next: CertificateRecord; readonly expectedVersion?: number }[];
  /** Written only if this device is still at this version (nothing is written to it): a change decided on the device's status. */
  readonly deviceUnchanged?: { readonly deviceId: string; readonly version: number };
  readonly events: readonly AuditEvent[];
}

/**
 * The most records one change may hold (DynamoDB allows 100 items per transaction; a new certificate
 * takes two: its record and its link to the device). Changes that would be larger are split by the core.
 */
export const MAX_RECORDS_PER_CHANGE = 90;

export interface ListDevicesQuery {
  /** Only the devices in this state. @default every device, state by state (in `DEVICE_STATUSES` order), then by device id */
  readonly status?: DeviceStatus;
  readonly limit: number;
  readonly nextToken?: string;
}

export interface ExpiringCertificatesQuery {
  /** Certificates whose `notAfter` is before this instant... */
  readonly before: Date;
  /** ...and not before this one. */
  readonly notBefore: Date;
  readonly limit: number;
  readonly nextToken?: string;
}

export interface RotationsDueQuery {
  /** Rotations whose commit deadline is at or before this instant. */
  readonly before: Date;
  readonly limit: number;
  readonly nextToken?: string;
}

export interface DeviceStore {
  getDevice(deviceId: string): Promise<Device | undefined>;
  /** The device, its certificates and its latest `eventLimit` audit events, newest first. */
  getDeviceView(deviceId: string, eventLimit: number): Promise<DeviceView | undefined>;
  getCertificate(certificateId: string): Promise<CertificateRecord | undefined>;
  /** The device and the certificate, each read consistently, in one round trip (JITR decides on both). */
  getDeviceAndCertificate(deviceId: string, certificateId: string): Promise<{ readonly device?: Device; readonly certificate?: CertificateRecord }>;
  /** Every certificate linked to the device (read consistently), oldest first. */
  listDeviceCertificates(deviceId: string): Promise<CertificateRecord[]>;
  listDevices(query: ListDevicesQuery): Promise<Page<Device>>;
  /** Live (ACTIVE, INACTIVE, PENDING_ACTIVATION) certificates expiring in the window, soonest first. */
  findCertificatesExpiring(query: ExpiringCertificatesQuery): Promise<Page<CertificateRecord>>;
  /** Devices whose rotation (`Device.rotation`) is due by `before`, soonest deadline first. */
  findRotationsDue(query: RotationsDueQuery): Promise<Page<Device>>;
  /** Throws `ConflictError` when any record is not at its expected version; writes nothing then. */
  commit(change: StoreChange): Promise<void>;
  /** The operation record, if any (kept for `OPERATION_RETENTION_DAYS` after it was last written). */
  getOperation(operationId: string): Promise<OperationRecord | undefined>;
  /**
   * Writes a new operation record (version 1) unless one with its id is stored; answers that one then, and writes
   * nothing. One round trip either way: an operation starts without reading first.
   */
  createOperation(record: OperationRecord): Promise<OperationRecord | undefined>;
}

/**
 * How long an operation record (the idempotency of every change) is kept after its last write:
 * far longer than any client retry, redelivery or dead-letter redrive (SQS keeps messages 14 days at most).
 */
export const OPERATION_RETENTION_DAYS = 30;

/* ----------------------------------------------------------------------------
 * Messages to devices: AWS IoT's data plane in the cloud, the local endpoint locally.
 * -------------------------------------------------------------------------- */

export interface DeviceMessenger {
  /** Publishes `message` as JSON, QoS 1, to subscribers of `topic` (their IoT policy permitting). */
  publish(topic: string, message: Readonly<Record<string, unknown>>): Promise<void>;
}

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** Makes ids for audit events; injectable so tests can be deterministic. */
export interface IdGenerator {
  next(): string;
}
