import type { AuditEvent, CertificateRecord, Device, DeviceStatus, DeviceView, Page, RevocationReason } from './model';

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
}

export interface CertificateAuthority {
  issueCertificate(request: IssueCertificateRequest): Promise<IssuedCertificate>;
  /** Revoking an already revoked certificate succeeds. */
  revokeCertificate(request: RevokeCertificateRequest): Promise<void>;
  getCaCertificates(): Promise<CaCertificates>;
}

/* ----------------------------------------------------------------------------
 * The device registry: AWS IoT Core's view of certificates and things.
 * -------------------------------------------------------------------------- */

export type RegistryCertificateStatus =
  | 'ACTIVE'
  | 'INACTIVE'
  | 'REVOKED'
  | 'PENDING_TRANSFER'
  | 'REGISTER_INACTIVE'
  | 'PENDING_ACTIVATION';

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

export interface DeviceRegistry {
  describeCertificate(certificateId: string): Promise<RegistryCertificate>;
  /** Registers an issued certificate as ACTIVE and answers its id. Registering it again answers the same id. */
  registerCertificate(request: RegisterCertificateRequest): Promise<{ readonly certificateId: string }>;
  /** Setting the status a certificate already has succeeds. */
  updateCertificateStatus(certificateId: string, status: 'ACTIVE' | 'INACTIVE' | 'REVOKED'): Promise<void>;
  /** Creates the thing (an existing one is fine) and puts it where the fleet policy applies. */
  ensureThing(thingName: string, attributes: Readonly<Record<string, string>>): Promise<void>;
  /** Links the certificate to the thing and makes the fleet policy apply to it. */
  attachCertificate(thingName: string, certificateId: string): Promise<void>;
  /** Undoes `attachCertificate`; a link already gone is fine. */
  detachCertificate(thingName: string, certificateId: string): Promise<void>;
}

/* ----------------------------------------------------------------------------
 * The device store: devices, their certificates and the audit trail.
 * -------------------------------------------------------------------------- */

/**
 * One atomic change. Each record is written on condition that it still has
 * `expectedVersion` (or does not exist yet when `expectedVersion` is absent);
 * the whole change is applied at most once per `idempotencyKey`.
 */
export interface StoreChange {
  readonly idempotencyKey: string;
  /** What the change produced (e.g. the issued certificate id), kept with its marker so a retry can answer it again. */
  readonly outcome?: Readonly<Record<string, string>>;
  readonly device?: { readonly next: Device; readonly expectedVersion?: number };
  readonly certificates?: readonly { readonly next: CertificateRecord; readonly expectedVersion?: number }[];
  readonly events: readonly AuditEvent[];
}

/** A change written before, found by its idempotency key. */
export interface RecordedChange {
  readonly idempotencyKey: string;
  readonly committedAt: string;
  readonly outcome?: Readonly<Record<string, string>>;
}

/** `APPLIED`: written now. `DUPLICATE`: a change with this idempotency key was written before; nothing was written now. */
export type CommitOutcome = 'APPLIED' | 'DUPLICATE';

export interface ListDevicesQuery {
  readonly status: DeviceStatus;
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

export interface DeviceStore {
  getDevice(deviceId: string): Promise<Device | undefined>;
  /** The device, its certificates and its latest `eventLimit` audit events, newest first. */
  getDeviceView(deviceId: string, eventLimit: number): Promise<DeviceView | undefined>;
  getCertificate(certificateId: string): Promise<CertificateRecord | undefined>;
  getCertificates(certificateIds: readonly string[]): Promise<CertificateRecord[]>;
  listDevices(query: ListDevicesQuery): Promise<Page<Device>>;
  /** Live (ACTIVE, INACTIVE, PENDING_ACTIVATION) certificates expiring in the window, soonest first. */
  findCertificatesExpiring(query: ExpiringCertificatesQuery): Promise<Page<CertificateRecord>>;
  /** Throws `ConflictError` when any record is not at its expected version. */
  commit(change: StoreChange): Promise<CommitOutcome>;
  /** The change committed under `idempotencyKey`, if any (kept for `CHANGE_RETENTION_DAYS`). */
  getChange(idempotencyKey: string): Promise<RecordedChange | undefined>;
}

/** How long the store remembers a change's idempotency key: far longer than any redelivery or client retry. */
export const CHANGE_RETENTION_DAYS = 30;

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** Makes ids for audit events; injectable so tests can be deterministic. */
export interface IdGenerator {
  next(): string;
}
