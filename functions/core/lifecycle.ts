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
import { certificateIdOf, checkCsr, checkDeviceCertificate, inspectCertificate, splitPemChain, type CertificateFacts } from './x509';

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

  /**
   * Handles one delivery of the AWS IoT registration event. `delivery.deliveryId` names this delivery
   * (the SQS message id, or the Lambda request id, which Lambda keeps across its own retries): a claim
   * left by the same delivery is taken over at once instead of waiting for its lease to run out.
   */
  public async registerOnFirstConnect(event: RegistrationEvent, delivery: { readonly actor?: string; readonly deliveryId?: string } = {}): Promise<RegistrationOutcome> {
    const actor = delivery.actor ?? 'jitr';
    const { certificateId } = event;
    const ca = await this.deps.ca.getCaCertificates();
    const ourCaCertificateIds = await Promise.all([ca.certificatePem, ...splitPemChain(ca.certificateChainPem)].map(certificateIdOf));
    if (!ourCaCertificateIds.includes(event.caCertificateId)) {
      // Another CA registered in the account: its certificates are not ours to activate or revoke.
      return { outcome: 'IGNORED', certificateId, reason: `The event is for CA ${event.caCertificateId}, not this fleet's CA.` };
    }

    const existing = await this.deps.store.getCertificate(certificateId);
    if (existing && existing.status !== 'PENDING_ACTIVATION') {
      return { outcome: 'ALREADY_PROCESSED', certificateId, status: existing.status };
    }
    const leaseIsLive = existing?.activationLeaseUntil !== undefined && Date.parse(existing.activationLeaseUntil) > this.deps.clock.now().getTime();
    const leaseIsOurs = delivery.deliveryId !== undefined && existing?.activationLeaseHolder === delivery.deliveryId;
    if (leaseIsLive && !leaseIsOurs) return { outcome: 'IN_PROGRESS', certificateId };

    const registered = await this.deps.registry.describeCertificate(certificateId);
    const ourClaimSurvivedACrash = existing !== undefined && registered.status === 'ACTIVE';
    if (registered.status !== 'PENDING_ACTIVATION' && !ourClaimSurvivedACrash) {
      const reason = `AWS IoT shows the certificate ${registered.status}, not PENDING_ACTIVATION.`;
      if (existing) await this.closeAbandonedClaim(existing, registered.status === 'REVOKED' ? 'REVOKED' : 'REJECTED', reason, actor);
      return { outcome: 'IGNORED', certificateId, reason };
    }
    if (registered.caCertificateId !== undefined && registered.caCertificateId !== event.caCertificateId) {
      return { outcome: 'IGNORED', certificateId, reason: `AWS IoT links the certificate to CA ${registered.caCertificateId}, not to the event's CA.` };
    }

    let deviceId: string;
    let facts: CertificateFacts;
    try {
      ({ deviceId, facts } = await checkDeviceCertificate(registered.certificatePem, [ca.certificatePem, ...splitPemChain(ca.certificateChainPem)], this.deps.clock.now()));
    } catch (error) {
      if (error instanceof ValidationError) return this.rejectRegistration(registered.certificatePem, existing, error, actor);
      throw error;
    }

    const device = await this.deps.store.getDevice(deviceId);
    const refusal = this.enrollmentRefusal(deviceId, device);
    if (refusal) return this.rejectRegistration(registered.certificatePem, existing, refusal, actor);

    const claimed = await this.claimActivation(facts, deviceId, existing, actor, delivery.deliveryId);
    if (!claimed) return { outcome: 'IN_PROGRESS', certificateId };
    try {
      return await this.activateClaimed(facts, deviceId, actor);
    } catch (error) {
      await this.releaseClaim(certificateId);
      throw error;
    }
  }

  /** The side effects of an activation, then the record; undone when the device stopped accepting certificates meanwhile. */
  private async activateClaimed(facts: CertificateFacts, deviceId: string, actor: string): Promise<RegistrationOutcome> {
    const { certificateId } = facts;
    const thingAttributes = (await this.deps.store.getDevice(deviceId))?.attributes ?? {};
    await this.deps.registry.ensureThing(deviceId, thingAttributes);
    await this.deps.registry.attachCertificate(deviceId, certificateId);
    await this.deps.registry.updateCertificateStatus(certificateId, 'ACTIVE');

    return this.retryOnConflict(async (): Promise<RegistrationOutcome> => {
      const [currentDevice, currentCertificate] = await Promise.all([this.requireDevice(deviceId), this.deps.store.getCertificate(certificateId)]);
      if (!currentCertificate) throw new ConflictError(`Certificate ${certificateId} claim disappeared.`);
      if (currentCertificate.status !== 'PENDING_ACTIVATION') return { outcome: 'ALREADY_PROCESSED', certificateId, status: currentCertificate.status };
      if (!deviceAcceptsNewCertificates(currentDevice.status)) {
        // Suspended or revoked while we activated: the certificate must not stay usable.
        const reason = `Device ${deviceId} became ${currentDevice.status} while its certificate was being activated.`;
        await this.revokeEverywhere(currentDevice, currentCertificate, 'PRIVILEGE_WITHDRAWN');
        const key = `jitr:${certificateId}:withdraw`;
        await this.deps.store.commit({
          idempotencyKey: key,
          device: { next: this.touched(currentDevice), expectedVersion: currentDevice.version },
          certificates: [{ next: this.withStatus(currentCertificate, 'REVOKED', { activationLeaseUntil: undefined, activationLeaseHolder: undefined, revocationReason: 'PRIVILEGE_WITHDRAWN', statusReason: reason }), expectedVersion: currentCertificate.version }],
          events: [this.event('CERTIFICATE_REVOKED', actor, key, { deviceId, certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'REVOKED', reason })],
        });
        return { outcome: 'REJECTED', certificateId, reason, code: 'ENROLLMENT_REFUSED' };
      }
      const key = `jitr:${certificateId}:activate`;
      await this.deps.store.commit({
        idempotencyKey: key,
        ...this.deviceActivatedBy(currentDevice, certificateId),
        certificates: [{ next: this.withStatus(currentCertificate, 'ACTIVE', { activationLeaseUntil: undefined, activationLeaseHolder: undefined }), expectedVersion: currentCertificate.version }],
        events: [
          this.event('CERTIFICATE_ACTIVATED', actor, key, { deviceId, certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'ACTIVE' }),
          ...(currentDevice.status === 'REGISTERED' ? [this.event('DEVICE_ACTIVATED', actor, key, { deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })] : []),
        ],
      });
      return { outcome: 'ACTIVATED', deviceId, certificateId };
    });
  }

  /**
   * A claim whose certificate someone revoked or deactivated in AWS IoT before it was activated: the record follows
   * AWS IoT, so the certificate no longer counts as live. Losing a race here is fine (another delivery closed it).
   */
  private async closeAbandonedClaim(claim: CertificateRecord, to: 'REVOKED' | 'REJECTED', reason: string, actor: string): Promise<void> {
    const key = `jitr:${claim.certificateId}:abandon`;
    await this.deps.store
      .commit({
        idempotencyKey: key,
        certificates: [{ next: this.withStatus(claim, to, { statusReason: reason, activationLeaseUntil: undefined, activationLeaseHolder: undefined }), expectedVersion: claim.version }],
        events: [this.event(to === 'REVOKED' ? 'CERTIFICATE_REVOKED' : 'CERTIFICATE_REJECTED', actor, key, { deviceId: claim.deviceId, certificateId: claim.certificateId, fromStatus: claim.status, toStatus: to, reason })],
      })
      .catch((error: unknown) => {
        if (!(error instanceof ConflictError)) throw error;
      });
  }

  /** After a failure, ends our lease at once so the retry (or a duplicate) does not wait for it. Best effort. */
  private async releaseClaim(certificateId: string): Promise<void> {
    try {
      const claim = await this.deps.store.getCertificate(certificateId);
      if (!claim || claim.status !== 'PENDING_ACTIVATION') return;
      await this.deps.store.commit({
        idempotencyKey: `jitr:${certificateId}:release:${claim.version}`,
        certificates: [{ next: { ...claim, activationLeaseUntil: this.now(), activationLeaseHolder: undefined, updatedAt: this.now(), version: claim.version + 1 }, expectedVersion: claim.version }],
        events: [],
      });
    } catch {
      // The lease then simply runs out.
    }
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
  private async claimActivation(facts: CertificateFacts, deviceId: string, existing: CertificateRecord | undefined, actor: string, holder: string | undefined): Promise<boolean> {
    const leaseUntil = new Date(this.deps.clock.now().getTime() + this.settings.activationLeaseSeconds * 1000).toISOString();
    if (existing) {
      const key = `jitr:${facts.certificateId}:reclaim:${existing.version}`;
      try {
        const outcome = await this.deps.store.commit({
          idempotencyKey: key,
          certificates: [{ next: { ...existing, activationLeaseUntil: leaseUntil, activationLeaseHolder: holder, updatedAt: this.now(), version: existing.version + 1 }, expectedVersion: existing.version }],
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
          certificates: [{ next: { ...this.newCertificateRecord(facts, deviceId, 'PENDING_ACTIVATION', 'JITR'), activationLeaseUntil: leaseUntil, ...(holder ? { activationLeaseHolder: holder } : {}) } }],
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
      ? this.withStatus(existing, 'REJECTED', { statusReason: reason.message, activationLeaseUntil: undefined, activationLeaseHolder: undefined })
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

  /**
   * Signs a CSR through the CA and makes the certificate usable: registered ACTIVE with AWS IoT,
   * attached to the thing, recorded. The same request key answers the same certificate again; a
   * failure after issuance revokes what was issued, so no usable certificate is left unrecorded.
   */
  public async issueFromCsr(request: IssueFromCsrRequest): Promise<IssuedDeviceCertificate> {
    assertValidDeviceId(request.deviceId);
    const { csrPem } = await checkCsr(request.csrPem, request.deviceId);
    const key = `issue:${request.deviceId}:${request.requestKey}`;
    const earlier = await this.answerRecordedIssuance(key);
    if (earlier) return earlier;
    const device = await this.requireDevice(request.deviceId);
    this.assertAcceptsNewCertificates(device);

    const issued = await this.deps.ca.issueCertificate({
      csrPem,
      validityDays: this.settings.validityDays,
      idempotencyToken: sha256Hex(key).slice(0, 36),
    });
    const facts = await inspectCertificate(issued.certificatePem);
    let registeredId: string | undefined;
    let recordedElsewhere = false;
    try {
      const caCertificatePem = splitPemChain(issued.certificateChainPem)[0] ?? (await this.deps.ca.getCaCertificates()).certificatePem;
      await this.deps.registry.ensureThing(device.thingName, device.attributes);
      registeredId = (await this.deps.registry.registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem })).certificateId;
      const certificateId = registeredId;
      const recorded = await this.deps.store.getCertificate(certificateId);
      recordedElsewhere = recorded?.status === 'ACTIVE';
      if (recorded && recorded.status !== 'ACTIVE') {
        // The CA answered a certificate this request got before, which was revoked when that attempt failed.
        throw new LifecycleError('CONFLICT', `The certificate issued for this request earlier is ${recorded.status}; send the request again with a new Idempotency-Key.`, {
          details: { certificateId },
        });
      }
      await this.deps.registry.attachCertificate(device.thingName, certificateId);
      const outcome = await this.retryOnConflict(async () => {
        const current = await this.requireDevice(request.deviceId);
        this.assertAcceptsNewCertificates(current);
        return this.deps.store.commit({
          idempotencyKey: key,
          outcome: { certificateId },
          ...this.deviceActivatedBy(current, certificateId),
          certificates: [{ next: this.newCertificateRecord(facts, request.deviceId, 'ACTIVE', 'CSR') }],
          events: [
            this.event('CERTIFICATE_ISSUED', request.actor, key, { deviceId: request.deviceId, certificateId, toStatus: 'ACTIVE' }),
            ...(current.status === 'REGISTERED' ? [this.event('DEVICE_ACTIVATED', request.actor, key, { deviceId: request.deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })] : []),
          ],
        });
      });
      if (outcome === 'DUPLICATE') {
        // A concurrent request with the same key recorded its certificate first: answer that one.
        const theirs = await this.answerRecordedIssuance(key);
        if (theirs && theirs.certificateId !== certificateId) await this.withdrawIssued(device, facts, certificateId, request.actor, 'a concurrent request with the same key won');
        if (theirs) return theirs;
      }
      return { certificateId, certificatePem: issued.certificatePem, certificateChainPem: issued.certificateChainPem, notAfter: facts.notAfter.toISOString() };
    } catch (error) {
      // Not ours to withdraw: a concurrent request with the same key recorded this very certificate and answered it,
      // or it was withdrawn before (the CONFLICT above).
      const withdrawnBefore = error instanceof LifecycleError && error.code === 'CONFLICT' && registeredId !== undefined && error.details.certificateId === registeredId;
      if (!recordedElsewhere && !withdrawnBefore) {
        await this.withdrawIssued(device, facts, registeredId, request.actor, `issuance failed: ${error instanceof Error ? error.message : String(error)}`);
      }
      throw error;
    }
  }

  /** The answer of an issuance committed before under `key`, rebuilt from the record. */
  private async answerRecordedIssuance(key: string): Promise<IssuedDeviceCertificate | undefined> {
    const change = await this.deps.store.getChange(key);
    const certificateId = change?.outcome?.certificateId;
    if (certificateId === undefined) return undefined;
    const certificate = await this.deps.store.getCertificate(certificateId);
    if (!certificate) return undefined;
    const ca = await this.deps.ca.getCaCertificates();
    return {
      certificateId,
      certificatePem: certificate.certificatePem,
      certificateChainPem: [ca.certificatePem, ...splitPemChain(ca.certificateChainPem)].join(''),
      notAfter: certificate.notAfter,
    };
  }

  /**
   * Undoes an issuance that cannot be completed: revoked at the CA, REVOKED and detached in AWS IoT
   * when it got there, and recorded as REVOKED. Best effort: a step that fails does not hide the cause.
   */
  private async withdrawIssued(device: Device, facts: CertificateFacts, registeredId: string | undefined, actor: string, reason: string): Promise<void> {
    const attempts: Promise<unknown>[] = [this.deps.ca.revokeCertificate({ serialNumber: facts.serialNumber, reason: 'PRIVILEGE_WITHDRAWN', certificatePem: facts.certificatePem })];
    if (registeredId !== undefined) {
      attempts.push(this.deps.registry.updateCertificateStatus(registeredId, 'REVOKED').then(() => this.deps.registry.detachCertificate(device.thingName, registeredId)));
    }
    await Promise.allSettled(attempts);
    const key = `withdraw:${facts.certificateId}`;
    const record: CertificateRecord = { ...this.newCertificateRecord(facts, device.deviceId, 'REVOKED', 'CSR'), revocationReason: 'PRIVILEGE_WITHDRAWN', statusReason: reason.slice(0, 500) };
    await this.deps.store
      .commit({ idempotencyKey: key, certificates: [{ next: record }], events: [this.event('CERTIFICATE_REVOKED', actor, key, { deviceId: device.deviceId, certificateId: facts.certificateId, toStatus: 'REVOKED', reason: record.statusReason })] })
      .catch(() => undefined);
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
      const already = await this.isRecorded(key) ? await this.deps.store.getCertificate(command.certificateId) : undefined;
      if (already?.deviceId === command.deviceId) return already;
      const certificate = await this.deps.store.getCertificate(command.certificateId);
      if (!certificate || certificate.deviceId !== command.deviceId) {
        throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${command.certificateId} does not belong to device ${command.deviceId}.`);
      }
      assertCertificateTransition(certificate.status, 'REVOKED');
      await this.revokeEverywhere(device, certificate, command.reason);
      const revoked = this.withStatus(certificate, 'REVOKED', { revocationReason: command.reason, activationLeaseUntil: undefined, activationLeaseHolder: undefined });
      await this.deps.store.commit({
        idempotencyKey: key,
        device: { next: this.touched(device), expectedVersion: device.version },
        certificates: [{ next: revoked, expectedVersion: certificate.version }],
        events: [this.event('CERTIFICATE_REVOKED', command.actor, key, { deviceId: device.deviceId, certificateId: certificate.certificateId, fromStatus: certificate.status, toStatus: 'REVOKED', reason: command.reason })],
      });
      return revoked;
    });
  }

  /**
   * Revokes every live certificate (each recorded as it is revoked, so a failure part-way leaves a true
   * record and a retry finishes the job), then the device. A certificate issued meanwhile changes the
   * device's version, so the final commit loses, re-reads and revokes that one too.
   */
  public async revokeDevice(command: DeviceCommand & { readonly reason: RevocationReason }): Promise<Device> {
    assertValidDeviceId(command.deviceId);
    const key = `device_revoked:${command.deviceId}:${command.requestKey}`;
    return this.retryOnConflict(async () => {
      if (await this.isRecorded(key)) return this.requireDevice(command.deviceId);
      let device = await this.requireDevice(command.deviceId);
      assertDeviceTransition(device.status, 'REVOKED');
      const live = (await this.deps.store.getCertificates(device.certificateIds)).filter((certificate) => isLiveCertificateStatus(certificate.status));
      for (const certificate of live) {
        await this.revokeCertificate({ deviceId: device.deviceId, certificateId: certificate.certificateId, reason: command.reason, actor: command.actor, requestKey: `${command.requestKey}:device` });
      }
      if (live.length > 0) device = await this.requireDevice(command.deviceId);
      const next: Device = { ...this.touched(device), status: 'REVOKED' };
      await this.deps.store.commit({
        idempotencyKey: key,
        device: { next, expectedVersion: device.version },
        events: [this.event('DEVICE_REVOKED', command.actor, key, { deviceId: device.deviceId, fromStatus: device.status, toStatus: 'REVOKED', reason: command.reason })],
      });
      return next;
    });
  }

  public async suspendDevice(command: DeviceCommand): Promise<Device> {
    return this.switchDeviceCertificates(command, { to: 'SUSPENDED', eventType: 'DEVICE_SUSPENDED', certificatesFrom: 'ACTIVE', certificatesTo: 'INACTIVE', certificateEvent: 'CERTIFICATE_SUSPENDED' });
  }

  public async resumeDevice(command: DeviceCommand): Promise<Device> {
    return this.switchDeviceCertificates(command, { to: 'ACTIVE', eventType: 'DEVICE_RESUMED', certificatesFrom: 'INACTIVE', certificatesTo: 'ACTIVE', certificateEvent: 'CERTIFICATE_RESUMED' });
  }

  /**
   * Suspension and resumption: the device moves to `to` and its certificates in `certificatesFrom`
   * (unexpired) move to `certificatesTo`, in AWS IoT first, then in one commit. When a registry call
   * fails part-way, the certificates already switched are switched back, so AWS IoT and the record agree.
   */
  private async switchDeviceCertificates(
    command: DeviceCommand,
    plan: { to: DeviceStatus; eventType: AuditEventType; certificatesFrom: 'ACTIVE' | 'INACTIVE'; certificatesTo: 'ACTIVE' | 'INACTIVE'; certificateEvent: AuditEventType },
  ): Promise<Device> {
    assertValidDeviceId(command.deviceId);
    const key = `${plan.eventType.toLowerCase()}:${command.deviceId}:${command.requestKey}`;
    return this.retryOnConflict(async () => {
      if (await this.isRecorded(key)) return this.requireDevice(command.deviceId);
      const device = await this.requireDevice(command.deviceId);
      assertDeviceTransition(device.status, plan.to);
      const now = this.deps.clock.now().getTime();
      const affected = (await this.deps.store.getCertificates(device.certificateIds)).filter(
        (certificate) => certificate.status === plan.certificatesFrom && Date.parse(certificate.notAfter) > now,
      );
      const switched: CertificateRecord[] = [];
      try {
        for (const certificate of affected) {
          await this.deps.registry.updateCertificateStatus(certificate.certificateId, plan.certificatesTo);
          switched.push(certificate);
        }
        const next: Device = { ...this.touched(device), status: plan.to };
        await this.deps.store.commit({
          idempotencyKey: key,
          device: { next, expectedVersion: device.version },
          certificates: affected.map((certificate) => ({ next: this.withStatus(certificate, plan.certificatesTo), expectedVersion: certificate.version })),
          events: [
            this.event(plan.eventType, command.actor, key, { deviceId: device.deviceId, fromStatus: device.status, toStatus: plan.to }),
            ...affected.map((certificate) =>
              this.event(plan.certificateEvent, command.actor, key, { deviceId: device.deviceId, certificateId: certificate.certificateId, fromStatus: certificate.status, toStatus: plan.certificatesTo }),
            ),
          ],
        });
        return next;
      } catch (error) {
        // Losing a race is not undone: the retry re-reads and either re-applies or finds the state already reached.
        if (error instanceof ConflictError) throw error;
        // A commit that failed on its way back (a timeout) may have been written: then the switch stands.
        if (await this.isRecorded(key)) return this.requireDevice(command.deviceId);
        await Promise.allSettled(switched.map((certificate) => this.deps.registry.updateCertificateStatus(certificate.certificateId, plan.certificatesFrom)));
        throw error;
      }
    });
  }

  /** Revocation takes effect at the next connect through AWS IoT; the CA revocation puts it on the CRL. */
  private async revokeEverywhere(device: Device, certificate: CertificateRecord, reason: RevocationReason): Promise<void> {
    await this.deps.registry.updateCertificateStatus(certificate.certificateId, 'REVOKED');
    await this.deps.registry.detachCertificate(device.thingName, certificate.certificateId);
    await this.deps.ca.revokeCertificate({ serialNumber: certificate.serialNumber, reason, certificatePem: certificate.certificatePem });
  }

  /* ---------------------------------------------------------------- helpers */

  private deviceActivatedBy(device: Device, certificateId: string): Pick<StoreChange, 'device'> {
    if (device.status === 'REGISTERED') assertDeviceTransition('REGISTERED', 'ACTIVE');
    const next: Device = {
      ...this.touched(device),
      status: device.status === 'REGISTERED' ? 'ACTIVE' : device.status,
      certificateIds: appendUnique(device.certificateIds, certificateId),
    };
    return { device: { next, expectedVersion: device.version } };
  }

  /** Whether a change with this key was committed: a retry of a request that succeeded answers the state it left. */
  private async isRecorded(key: string): Promise<boolean> {
    try {
      return (await this.deps.store.getChange(key)) !== undefined;
    } catch {
      return false;
    }
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
