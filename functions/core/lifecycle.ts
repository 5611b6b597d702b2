import { createHash } from 'node:crypto';
import { ConflictError, DeviceAlreadyExistsError, EnrollmentRefusedError, InvalidTransitionError, LifecycleError, NotFoundError, ValidationError } from './errors';
import { assertValidDeviceId, isValidDeviceId } from './device-id';
import type {
  AuditEvent,
  AuditEventType,
  CertificateRecord,
  CertificateStatus,
  Device,
  DeviceStatus,
  DeviceView,
  Page,
  RevocationReason,
} from './model';
import type { CertificateAuthority, Clock, CommitOutcome, DeviceRegistry, DeviceStore, IdGenerator, StoreChange } from './ports';
import {
  assertCertificateTransition,
  assertDeviceTransition,
  deviceAcceptsNewCertificates,
  isLiveCertificateStatus,
} from './state-machines';
import { checkCsr, checkDeviceCertificate, inspectCertificate, splitPemChain, type CertificateFacts } from './x509';

export type EnrollmentPolicy = 'open' | 'preregistered';

export interface LifecycleSettings {
  /** `open`: any device with a certificate from our CA may enroll. `preregistered`: only devices created through the API first. */
  readonly enrollmentPolicy: EnrollmentPolicy;
  readonly validityDays: number;
  /** How long a JITR invocation owns a pending activation before a redelivery may take it over. */
  readonly activationLeaseSeconds: number;
  /** How many audit events a device view carries. */
  readonly recentEventLimit: number;
  /** How many times a change is re-read and re-decided after losing a race. */
  readonly maxConflictRetries: number;
}

export const DEFAULT_LIFECYCLE_SETTINGS: LifecycleSettings = {
  enrollmentPolicy: 'open',
  validityDays: 365,
  activationLeaseSeconds: 60,
  recentEventLimit: 20,
  maxConflictRetries: 4,
};

export interface LifecycleDependencies {
  readonly store: DeviceStore;
  readonly registry: DeviceRegistry;
  readonly ca: CertificateAuthority;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

/** The AWS IoT event published on `$aws/events/certificates/registered/<caCertificateId>`. */
export interface RegistrationEvent {
  readonly certificateId: string;
  readonly caCertificateId: string;
  readonly timestamp: number;
  readonly certificateStatus: string;
  readonly awsAccountId: string;
  readonly certificateRegistrationTimestamp: string;
}

export type RegistrationOutcome =
  | { readonly outcome: 'ACTIVATED'; readonly deviceId: string; readonly certificateId: string }
  | { readonly outcome: 'REJECTED'; readonly certificateId: string; readonly reason: string; readonly code: string }
  /** Processed before (this delivery is a duplicate): nothing changed. */
  | { readonly outcome: 'ALREADY_PROCESSED'; readonly certificateId: string; readonly status: CertificateStatus }
  /** A concurrent delivery holds the activation; it finishes the work. */
  | { readonly outcome: 'IN_PROGRESS'; readonly certificateId: string }
  /** AWS IoT no longer shows the certificate pending (someone revoked or deactivated it): nothing to do. */
  | { readonly outcome: 'IGNORED'; readonly certificateId: string; readonly reason: string };

export interface Actor {
  /** Who asks: an IAM principal ARN, `jitr`, `local-api`, ... */
  readonly actor: string;
  /** Makes a retried request a no-op: the API's Idempotency-Key, or the invocation's request id. */
  readonly requestKey: string;
}

export interface IssueFromCsrRequest extends Actor {
  readonly deviceId: string;
  readonly csrPem: string;
}

export interface IssuedDeviceCertificate {
  readonly certificateId: string;
  readonly certificatePem: string;
  readonly certificateChainPem: string;
  readonly notAfter: string;
}

export interface RevokeCertificateCommand extends Actor {
  readonly deviceId: string;
  readonly certificateId: string;
  readonly reason: RevocationReason;
}

export interface DeviceCommand extends Actor {
  readonly deviceId: string;
}

export interface PreRegisterDeviceCommand extends DeviceCommand {
  readonly attributes: Readonly<Record<string, string>>;
}

/**
 * The device-certificate lifecycle. Every flow (first connect, CSR signing,
 * revocation, suspension) decides here; handlers and the local mode only call it.
 *
 * Side effects on AWS IoT and the CA are all idempotent, so a flow that loses a
 * race to another change on the same device re-reads, re-decides and re-applies;
 * the store's versioned commit decides which change wins.
 */
export class DeviceLifecycle {
  private readonly settings: LifecycleSettings;

  public constructor(
    private readonly deps: LifecycleDependencies,
    settings: Partial<LifecycleSettings> = {},
  ) {
    this.settings = { ...DEFAULT_LIFECYCLE_SETTINGS, ...settings };
  }

  /* ------------------------------------------------------------------ reads */

  public async getDevice(deviceId: string): Promise<DeviceView> {
    assertValidDeviceId(deviceId);
    const view = await this.deps.store.getDeviceView(deviceId, this.settings.recentEventLimit);
    if (!view) throw deviceNotFound(deviceId);
    return view;
  }

  public async listDevices(query: { status: DeviceStatus; limit: number; nextToken?: string }): Promise<Page<Device>> {
    return this.deps.store.listDevices(query);
  }

  /* ------------------------------------------------------- pre-registration */

  public async preRegisterDevice(command: PreRegisterDeviceCommand): Promise<Device> {
    assertValidDeviceId(command.deviceId);
    const now = this.now();
    const device: Device = {
      deviceId: command.deviceId,
      thingName: command.deviceId,
      status: 'REGISTERED',
      attributes: { ...command.attributes },
      certificateIds: [],
      createdAt: now,
      updatedAt: now,
      version: 1,
    };
    const key = `preregister:${command.deviceId}`;
    let outcome: CommitOutcome;
    try {
      outcome = await this.deps.store.commit({
        idempotencyKey: key,
        device: { next: device },
        events: [this.event('DEVICE_PREREGISTERED', command.actor, key, { deviceId: device.deviceId, toStatus: 'REGISTERED' })],
      });
    } catch (error) {
      if (error instanceof ConflictError) throw new DeviceAlreadyExistsError(command.deviceId);
      throw error;
    }
    // DUPLICATE: the device was pre-registered before, so it exists already.
    if (outcome === 'DUPLICATE') throw new DeviceAlreadyExistsError(command.deviceId);
    return device;
  }

  /* ---------------------------------------------- just-in-time registration */

  public async registerOnFirstConnect(event: RegistrationEvent, actor = 'jitr'): Promise<RegistrationOutcome> {
    const { certificateId } = event;
    const existing = await this.deps.store.getCertificate(certificateId);
    if (existing && existing.status !== 'PENDING_ACTIVATION') {
      return { outcome: 'ALREADY_PROCESSED', certificateId, status: existing.status };
    }
    if (existing && existing.activationLeaseUntil !== undefined && Date.parse(existing.activationLeaseUntil) > this.deps.clock.now().getTime()) {
      return { outcome: 'IN_PROGRESS', certificateId };
    }

    const registered = await this.deps.registry.describeCertificate(certificateId);
    const ourClaimSurvivedACrash = existing !== undefined && registered.status === 'ACTIVE';
    if (registered.status !== 'PENDING_ACTIVATION' && !ourClaimSurvivedACrash) {
      return { outcome: 'IGNORED', certificateId, reason: `AWS IoT shows the certificate ${registered.status}, not PENDING_ACTIVATION.` };
    }

    const { certificatePem: caPem, certificateChainPem } = await this.deps.ca.getCaCertificates();
    const trustedIssuers = [caPem, ...splitPemChain(certificateChainPem)];
    let deviceId: string;
    let facts: CertificateFacts;
    try {
      ({ deviceId, facts } = await checkDeviceCertificate(registered.certificatePem, trustedIssuers, this.deps.clock.now()));
    } catch (error) {
      if (error instanceof ValidationError) return this.rejectRegistration(registered.certificatePem, existing, error, actor);
      throw error;
    }

    const device = await this.deps.store.getDevice(deviceId);
    const refusal = this.enrollmentRefusal(deviceId, device);
    if (refusal) return this.rejectRegistration(registered.certificatePem, existing, refusal, actor);

    const claimed = await this.claimActivation(facts, deviceId, existing, actor);
    if (!claimed) return { outcome: 'IN_PROGRESS', certificateId };

    const thingAttributes = (await this.deps.store.getDevice(deviceId))?.attributes ?? {};
    await this.deps.registry.ensureThing(deviceId, thingAttributes);
    await this.deps.registry.attachCertificate(deviceId, certificateId);
    await this.deps.registry.updateCertificateStatus(certificateId, 'ACTIVE');

    await this.retryOnConflict(async () => {
      const [currentDevice, currentCertificate] = await Promise.all([
        this.requireDevice(deviceId),
        this.deps.store.getCertificate(certificateId),
      ]);
      if (!currentCertificate) throw new ConflictError(`Certificate ${certificateId} claim disappeared.`);
      if (currentCertificate.status !== 'PENDING_ACTIVATION') return;
      const key = `jitr:${certificateId}:activate`;
      await this.deps.store.commit({
        idempotencyKey: key,
        ...this.deviceActivatedBy(currentDevice, certificateId, actor, key),
        certificates: [{ next: this.withStatus(currentCertificate, 'ACTIVE', { activationLeaseUntil: undefined }), expectedVersion: currentCertificate.version }],
        events: [
          this.event('CERTIFICATE_ACTIVATED', actor, key, { deviceId, certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'ACTIVE' }),
          ...(currentDevice.status === 'REGISTERED'
            ? [this.event('DEVICE_ACTIVATED', actor, key, { deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })]
            : []),
        ],
      });
    });
    return { outcome: 'ACTIVATED', deviceId, certificateId };
  }

  private enrollmentRefusal(deviceId: string, device: Device | undefined): EnrollmentRefusedError | undefined {
    if (!device) {
      return this.settings.enrollmentPolicy === 'preregistered'
        ? new EnrollmentRefusedError(`Device ${deviceId} is not pre-registered and the enrollment policy is "preregistered".`)
        : undefined;
    }
    if (!deviceAcceptsNewCertificates(device.status)) {
      return new EnrollmentRefusedError(`Device ${deviceId} is ${device.status}: it cannot enroll a new certificate.`);
    }
    return undefined;
  }

  /** Records the certificate as PENDING_ACTIVATION with a lease; `false` when another delivery holds it. */
  private async claimActivation(facts: CertificateFacts, deviceId: string, existing: CertificateRecord | undefined, actor: string): Promise<boolean> {
    const leaseUntil = new Date(this.deps.clock.now().getTime() + this.settings.activationLeaseSeconds * 1000).toISOString();
    if (existing) {
      const key = `jitr:${facts.certificateId}:reclaim:${existing.version}`;
      try {
        const outcome = await this.deps.store.commit({
          idempotencyKey: key,
          certificates: [{ next: { ...existing, activationLeaseUntil: leaseUntil, updatedAt: this.now(), version: existing.version + 1 }, expectedVersion: existing.version }],
          events: [],
        });
        return outcome === 'APPLIED';
      } catch (error) {
        if (error instanceof ConflictError) return false;
        throw error;
      }
    }
    const key = `jitr:${facts.certificateId}:claim`;
    try {
      const outcome = await this.retryOnConflict(async () => {
        const device = await this.deps.store.getDevice(deviceId);
        const refusal = this.enrollmentRefusal(deviceId, device);
        if (refusal) throw refusal;
        const now = this.now();
        const nextDevice: Device = device
          ? { ...device, certificateIds: appendUnique(device.certificateIds, facts.certificateId), updatedAt: now, version: device.version + 1 }
          : { deviceId, thingName: deviceId, status: 'REGISTERED', attributes: {}, certificateIds: [facts.certificateId], createdAt: now, updatedAt: now, version: 1 };
        const change: StoreChange = {
          idempotencyKey: key,
          device: { next: nextDevice, expectedVersion: device?.version },
          certificates: [{ next: { ...this.newCertificateRecord(facts, deviceId, 'PENDING_ACTIVATION', 'JITR'), activationLeaseUntil: leaseUntil } }],
          events: [
            ...(device ? [] : [this.event('DEVICE_CREATED', actor, key, { deviceId, toStatus: 'REGISTERED', reason: 'first connect with a certificate from the fleet CA' })]),
            this.event('CERTIFICATE_REGISTERED', actor, key, { deviceId, certificateId: facts.certificateId, toStatus: 'PENDING_ACTIVATION' }),
          ],
        };
        return this.deps.store.commit(change);
      });
      return outcome === 'APPLIED';
    } catch (error) {
      // The certificate item exists now: a concurrent delivery claimed it.
      if (error instanceof ConflictError && (await this.deps.store.getCertificate(facts.certificateId))) return false;
      throw error;
    }
  }

  private async rejectRegistration(
    certificatePem: string,
    existing: CertificateRecord | undefined,
    reason: LifecycleError,
    actor: string,
  ): Promise<RegistrationOutcome> {
    const facts = await inspectCertificate(certificatePem);
    await this.deps.registry.updateCertificateStatus(facts.certificateId, 'REVOKED');
    const key = `jitr:${facts.certificateId}:reject`;
    const deviceId = facts.commonName !== undefined && isValidDeviceId(facts.commonName) ? facts.commonName : undefined;
    const rejected: CertificateRecord = existing
      ? this.withStatus(existing, 'REJECTED', { statusReason: reason.message, activationLeaseUntil: undefined })
      : { ...this.newCertificateRecord(facts, deviceId, 'REJECTED', 'JITR'), statusReason: reason.message };
    try {
      await this.deps.store.commit({
        idempotencyKey: key,
        certificates: [{ next: rejected, expectedVersion: existing?.version }],
        events: [this.event('CERTIFICATE_REJECTED', actor, key, { deviceId, certificateId: facts.certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'REJECTED', reason: reason.message })],
      });
    } catch (error) {
      // A concurrent duplicate recorded the rejection first.
      if (!(error instanceof ConflictError)) throw error;
    }
    return { outcome: 'REJECTED', certificateId: facts.certificateId, reason: reason.message, code: reason.code };
  }

  /* ------------------------------------------------------------ CSR signing */

  public async issueFromCsr(request: IssueFromCsrRequest): Promise<IssuedDeviceCertificate> {
    assertValidDeviceId(request.deviceId);
    const { csrPem } = await checkCsr(request.csrPem, request.deviceId);
    const device = await this.requireDevice(request.deviceId);
    this.assertAcceptsNewCertificates(device);

    const issued = await this.deps.ca.issueCertificate({
      csrPem,
      validityDays: this.settings.validityDays,
      idempotencyToken: sha256Hex(`issue:${request.deviceId}:${request.requestKey}`).slice(0, 36),
    });
    const facts = await inspectCertificate(issued.certificatePem);
    const caCertificatePem = splitPemChain(issued.certificateChainPem)[0] ?? (await this.deps.ca.getCaCertificates()).certificatePem;
    await this.deps.registry.ensureThing(device.thingName, device.attributes);
    const { certificateId } = await this.deps.registry.registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem });
    await this.deps.registry.attachCertificate(device.thingName, certificateId);

    const key = `issue:${request.deviceId}:${request.requestKey}`;
    try {
      await this.retryOnConflict(async () => {
        const current = await this.requireDevice(request.deviceId);
        this.assertAcceptsNewCertificates(current);
        await this.deps.store.commit({
          idempotencyKey: key,
          ...this.deviceActivatedBy(current, certificateId, request.actor, key),
          certificates: [{ next: this.newCertificateRecord(facts, request.deviceId, 'ACTIVE', 'CSR') }],
          events: [
            this.event('CERTIFICATE_ISSUED', request.actor, key, { deviceId: request.deviceId, certificateId, toStatus: 'ACTIVE' }),
            ...(current.status === 'REGISTERED'
              ? [this.event('DEVICE_ACTIVATED', request.actor, key, { deviceId: request.deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })]
              : []),
          ],
        });
      });
    } catch (error) {
      // The device was suspended or revoked while we issued: the new certificate must not stay usable.
      await this.deps.registry.updateCertificateStatus(certificateId, 'REVOKED');
      await this.deps.registry.detachCertificate(device.thingName, certificateId);
      await this.deps.ca.revokeCertificate({ serialNumber: facts.serialNumber, reason: 'PRIVILEGE_WITHDRAWN', certificatePem: issued.certificatePem });
      throw error;
    }
    return { certificateId, certificatePem: issued.certificatePem, certificateChainPem: issued.certificateChainPem, notAfter: facts.notAfter.toISOString() };
  }

  private assertAcceptsNewCertificates(device: Device): void {
    if (!deviceAcceptsNewCertificates(device.status)) {
      throw new InvalidTransitionError('DEVICE', device.status, 'ACTIVE', {
        details: { deviceId: device.deviceId, hint: 'Only REGISTERED or ACTIVE devices receive new certificates.' },
      });
    }
  }

  /* ------------------------------------------------- revocation, suspension */

  public async revokeCertificate(command: RevokeCertificateCommand): Promise<CertificateRecord> {
    assertValidDeviceId(command.deviceId);
    const key = `revoke-certificate:${command.certificateId}:${command.requestKey}`;
    return this.retryOnConflict(async () => {
      const device = await this.requireDevice(command.deviceId);
      const certificate = await this.deps.store.getCertificate(command.certificateId);
      if (!certificate || certificate.deviceId !== command.deviceId) {
        throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${command.certificateId} does not belong to device ${command.deviceId}.`);
      }
      assertCertificateTransition(certificate.status, 'REVOKED');
      await this.revokeEverywhere(device, certificate, command.reason);
      const revoked = this.withStatus(certificate, 'REVOKED', { revocationReason: command.reason, activationLeaseUntil: undefined });
      await this.deps.store.commit({
        idempotencyKey: key,
        device: { next: this.touched(device), expectedVersion: device.version },
        certificates: [{ next: revoked, expectedVersion: certificate.version }],
        events: [this.event('CERTIFICATE_REVOKED', command.actor, key, { deviceId: device.deviceId, certificateId: certificate.certificateId, fromStatus: certificate.status, toStatus: 'REVOKED', reason: command.reason })],
      });
      return revoked;
    });
  }

  public async revokeDevice(command: DeviceCommand & { readonly reason: RevocationReason }): Promise<Device> {
    return this.changeDevice(command, 'REVOKED', 'DEVICE_REVOKED', async (device, certificates) => {
      const live = certificates.filter((certificate) => isLiveCertificateStatus(certificate.status));
      for (const certificate of live) await this.revokeEverywhere(device, certificate, command.reason);
      return live.map((certificate) => ({
        next: this.withStatus(certificate, 'REVOKED', { revocationReason: command.reason, activationLeaseUntil: undefined }),
        type: 'CERTIFICATE_REVOKED' as const,
      }));
    }, command.reason);
  }

  public async suspendDevice(command: DeviceCommand): Promise<Device> {
    return this.changeDevice(command, 'SUSPENDED', 'DEVICE_SUSPENDED', async (_device, certificates) => {
      const active = certificates.filter((certificate) => certificate.status === 'ACTIVE');
      for (const certificate of active) await this.deps.registry.updateCertificateStatus(certificate.certificateId, 'INACTIVE');
      return active.map((certificate) => ({ next: this.withStatus(certificate, 'INACTIVE'), type: 'CERTIFICATE_SUSPENDED' as const }));
    });
  }

  public async resumeDevice(command: DeviceCommand): Promise<Device> {
    return this.changeDevice(command, 'ACTIVE', 'DEVICE_RESUMED', async (_device, certificates) => {
      const now = this.deps.clock.now().getTime();
      const resumable = certificates.filter((certificate) => certificate.status === 'INACTIVE' && Date.parse(certificate.notAfter) > now);
      for (const certificate of resumable) await this.deps.registry.updateCertificateStatus(certificate.certificateId, 'ACTIVE');
      return resumable.map((certificate) => ({ next: this.withStatus(certificate, 'ACTIVE'), type: 'CERTIFICATE_RESUMED' as const }));
    });
  }

  /**
   * A device-level transition: checks it, lets `applySideEffects` act on AWS IoT and the CA for the
   * device's certificates, then commits device, certificates and events as one change.
   */
  private async changeDevice(
    command: DeviceCommand,
    to: DeviceStatus,
    eventType: AuditEventType,
    applySideEffects: (device: Device, certificates: CertificateRecord[]) => Promise<{ next: CertificateRecord; type: AuditEventType }[]>,
    reason?: string,
  ): Promise<Device> {
    assertValidDeviceId(command.deviceId);
    const key = `${eventType.toLowerCase()}:${command.deviceId}:${command.requestKey}`;
    return this.retryOnConflict(async () => {
      const device = await this.requireDevice(command.deviceId);
      assertDeviceTransition(device.status, to);
      const certificates = await this.deps.store.getCertificates(device.certificateIds);
      const versions = new Map(certificates.map((certificate) => [certificate.certificateId, certificate.version]));
      const changed = await applySideEffects(device, certificates);
      const next: Device = { ...this.touched(device), status: to };
      await this.deps.store.commit({
        idempotencyKey: key,
        device: { next, expectedVersion: device.version },
        certificates: changed.map(({ next: certificate }) => ({ next: certificate, expectedVersion: versions.get(certificate.certificateId) })),
        events: [
          this.event(eventType, command.actor, key, { deviceId: device.deviceId, fromStatus: device.status, toStatus: to, reason }),
          ...changed.map(({ next: certificate, type }) =>
            this.event(type, command.actor, key, {
              deviceId: device.deviceId,
              certificateId: certificate.certificateId,
              fromStatus: certificates.find((c) => c.certificateId === certificate.certificateId)?.status,
              toStatus: certificate.status,
              reason,
            }),
          ),
        ],
      });
      return next;
    });
  }

  /** Revocation takes effect at the next connect through AWS IoT; the CA revocation puts it on the CRL. */
  private async revokeEverywhere(device: Device, certificate: CertificateRecord, reason: RevocationReason): Promise<void> {
    await this.deps.registry.updateCertificateStatus(certificate.certificateId, 'REVOKED');
    await this.deps.registry.detachCertificate(device.thingName, certificate.certificateId);
    await this.deps.ca.revokeCertificate({ serialNumber: certificate.serialNumber, reason, certificatePem: certificate.certificatePem });
  }

  /* ---------------------------------------------------------------- helpers */

  private deviceActivatedBy(device: Device, certificateId: string, _actor: string, _key: string): Pick<StoreChange, 'device'> {
    if (device.status === 'REGISTERED') assertDeviceTransition('REGISTERED', 'ACTIVE');
    const next: Device = {
      ...this.touched(device),
      status: device.status === 'REGISTERED' ? 'ACTIVE' : device.status,
      certificateIds: appendUnique(device.certificateIds, certificateId),
    };
    return { device: { next, expectedVersion: device.version } };
  }

  private async requireDevice(deviceId: string): Promise<Device> {
    const device = await this.deps.store.getDevice(deviceId);
    if (!device) throw deviceNotFound(deviceId);
    return device;
  }

  private touched(device: Device): Device {
    return { ...device, updatedAt: this.now(), version: device.version + 1 };
  }

  private withStatus(certificate: CertificateRecord, status: CertificateStatus, extra: Partial<CertificateRecord> = {}): CertificateRecord {
    assertCertificateTransition(certificate.status, status);
    return { ...certificate, ...extra, status, updatedAt: this.now(), version: certificate.version + 1 };
  }

  private newCertificateRecord(facts: CertificateFacts, deviceId: string | undefined, status: CertificateStatus, source: CertificateRecord['source']): CertificateRecord {
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
      certificatePem: facts.certificatePem,
      createdAt: now,
      updatedAt: now,
      version: 1,
    };
  }

  private event(
    type: AuditEventType,
    actor: string,
    idempotencyKey: string,
    fields: Partial<Pick<AuditEvent, 'deviceId' | 'certificateId' | 'fromStatus' | 'toStatus' | 'reason'>>,
  ): AuditEvent {
    const defined = Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
    return { eventId: this.deps.ids.next(), type, at: this.now(), actor, idempotencyKey, ...defined };
  }

  private now(): string {
    return this.deps.clock.now().toISOString();
  }

  private async retryOnConflict<T>(attempt: () => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries += 1) {
      try {
        return await attempt();
      } catch (error) {
        if (!(error instanceof ConflictError) || tries > this.settings.maxConflictRetries) throw error;
      }
    }
  }
}

const deviceNotFound = (deviceId: string): NotFoundError => new NotFoundError('DEVICE_NOT_FOUND', `Device ${deviceId} does not exist.`, { details: { deviceId } });

const appendUnique = (values: readonly string[], value: string): string[] => (values.includes(value) ? [...values] : [...values, value]);

const sha256Hex = (value: string): string => createHash('sha256').update(value).digest('hex');

export const randomIds: IdGenerator = { next: () => globalThis.crypto.randomUUID() };
