import { ConflictError, NotFoundError } from './errors';
import type { AuditEvent, AuditEventType, CertificateRecord, CertificateStatus, Device, RevocationReason } from './model';
import { Operations } from './operations';
import type { CertificateAuthority, Clock, DeviceRegistry, DeviceStore, IdGenerator } from './ports';
import { assertCertificateTransition } from './state-machines';
import type { CertificateFacts } from './x509';

export type EnrollmentPolicy = 'open' | 'preregistered';

export interface LifecycleSettings {
  /** `open`: any device with a certificate from our CA may enroll. `preregistered`: only devices created through the API first. */
  readonly enrollmentPolicy: EnrollmentPolicy;
  readonly validityDays: number;
  /** How long a JITR invocation owns a pending activation before a redelivery may take it over. */
  readonly activationLeaseSeconds: number;
  /** How long one execution of an API operation owns it before a retry may take it over (above the API's 29 s timeout). */
  readonly operationLeaseSeconds: number;
  /** How many audit events a device view carries. */
  readonly recentEventLimit: number;
  /** How many times a change is re-read and re-decided after losing a race, before answering CONFLICT. */
  readonly maxConflictRetries: number;
  /** How long a device has to connect with its rotated certificate and commit it, before the new certificate is withdrawn. */
  readonly rotationCommitSeconds: number;
}

export const DEFAULT_LIFECYCLE_SETTINGS: LifecycleSettings = {
  enrollmentPolicy: 'open',
  validityDays: 365,
  activationLeaseSeconds: 60,
  operationLeaseSeconds: 60,
  recentEventLimit: 20,
  maxConflictRetries: 6,
  rotationCommitSeconds: 6 * 3600,
};

export interface LifecycleDependencies {
  readonly store: DeviceStore;
  readonly registry: DeviceRegistry;
  readonly ca: CertificateAuthority;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

export interface Actor {
  /** Who asks: an IAM principal ARN, `jitr`, `local-api`, ... */
  readonly actor: string;
  /** The handle of the request's operation record: the API's Idempotency-Key, or the request id. */
  readonly requestKey: string;
}

export interface DeviceCommand extends Actor {
  readonly deviceId: string;
}

/**
 * What every use case shares: the ports, the settings, the operation records, and the small
 * helpers that build the records a change writes (versions, timestamps, audit events).
 */
export class ChangeRecorder {
  public readonly operations: Operations;

  public constructor(
    public readonly deps: LifecycleDependencies,
    public readonly settings: LifecycleSettings,
  ) {
    this.operations = new Operations(deps, settings.operationLeaseSeconds);
  }

  public get store(): DeviceStore {
    return this.deps.store;
  }

  public get registry(): DeviceRegistry {
    return this.deps.registry;
  }

  public get ca(): CertificateAuthority {
    return this.deps.ca;
  }

  public now(): string {
    return this.deps.clock.now().toISOString();
  }

  public async requireDevice(deviceId: string): Promise<Device> {
    const device = await this.deps.store.getDevice(deviceId);
    if (!device) throw deviceNotFound(deviceId);
    return device;
  }

  /** The device's next version, with nothing else changed: a change that must lose to any concurrent change of the device. */
  public touched(device: Device): Device {
    return { ...device, updatedAt: this.now(), version: device.version + 1 };
  }

  public withStatus(certificate: CertificateRecord, status: CertificateStatus, extra: Partial<CertificateRecord> = {}): CertificateRecord {
    assertCertificateTransition(certificate.status, status);
    return { ...certificate, ...extra, status, updatedAt: this.now(), version: certificate.version + 1 };
  }

  public newCertificateRecord(facts: CertificateFacts, deviceId: string | undefined, status: CertificateStatus, source: CertificateRecord['source']): CertificateRecord {
    const now = this.now();
    return {
      certificateId: facts.certificateId,
      ...(deviceId === undefined ? {} : { deviceId }),
      serialNumber: facts.serialNumber,
      subject: facts.subject,
      issuer: facts.issuer,
      keyAlgorithm: facts.keyAlgorithm,
      notBefore: facts.notBefore.toISOString(),
      notAfter: facts.notAfter.toISOString(),
      status,
      source,
      purpose: facts.purpose,
      certificatePem: facts.certificatePem,
      createdAt: now,
      updatedAt: now,
      version: 1,
    };
  }

  /** `key` ties the event to the change it belongs to: the operation id, or the JITR certificate claim. */
  public event(type: AuditEventType, actor: string, key: string, fields: Partial<Pick<AuditEvent, 'deviceId' | 'certificateId' | 'fromStatus' | 'toStatus' | 'reason'>>): AuditEvent {
    const defined = Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
    return { eventId: this.deps.ids.next(), type, at: this.now(), actor, idempotencyKey: key, ...defined };
  }

  /** Revocation takes effect at the next connect through AWS IoT; the CA revocation puts it on the CRL. All three steps are idempotent. */
  public async revokeEverywhere(thingName: string, certificate: CertificateRecord, reason: RevocationReason): Promise<void> {
    await this.deps.registry.updateCertificateStatus(certificate.certificateId, 'REVOKED');
    await this.deps.registry.detachCertificate(thingName, certificate.certificateId);
    await this.deps.ca.revokeCertificate({ serialNumber: certificate.serialNumber, reason, certificatePem: certificate.certificatePem });
  }

  /** Re-reads and re-decides after losing a race; a race lost too often is answered CONFLICT (retryable), never as a refusal. */
  public async retryOnConflict<T>(attempt: () => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries += 1) {
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof ConflictError) || tries > this.settings.maxConflictRetries) throw error;
      }
    }
  }
}

export const deviceNotFound = (deviceId: string): NotFoundError => new NotFoundError('DEVICE_NOT_FOUND', `Device ${deviceId} does not exist.`, { details: { deviceId } });
