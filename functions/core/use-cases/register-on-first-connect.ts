import { ConflictError, EnrollmentRefusedError, LifecycleError, RequestInProgressError, ValidationError } from '../errors';
import { isValidDeviceId } from '../device-id';
import type { CertificateRecord, CertificateStatus, Device } from '../model';
import type { StoreChange } from '../ports';
import { deviceAcceptsNewCertificates } from '../state-machines';
import { checkDeviceCertificate, inspectCertificate, type CertificateFacts } from '../x509';
import type { ChangeRecorder } from '../change-recorder';
import { fleetCaOfRegistration, fleetCasOf, issuingFleetCaOf, type FleetCa } from '../fleet-cas';

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
  /** The device is not pre-registered yet (policy `preregistered`): the certificate waits, and is activated when it is. */
  | { readonly outcome: 'AWAITING_PRE_REGISTRATION'; readonly deviceId: string; readonly certificateId: string }
  /** Processed before (this delivery is a duplicate): nothing changed. */
  | { readonly outcome: 'ALREADY_PROCESSED'; readonly certificateId: string; readonly status: CertificateStatus }
  /** A concurrent delivery holds the activation; it finishes the work. */
  | { readonly outcome: 'IN_PROGRESS'; readonly certificateId: string }
  /** AWS IoT no longer shows the certificate pending (someone revoked or deactivated it): nothing to do. */
  | { readonly outcome: 'IGNORED'; readonly certificateId: string; readonly reason: string };

export interface Delivery {
  readonly actor?: string;
  /** The SQS message id, or the Lambda request id (kept across Lambda's own retries). */
  readonly deliveryId?: string;
}

/**
 * Just-in-time registration, for one delivery of the AWS IoT registration event. The certificate's record is
 * this flow's operation record: it is claimed (PENDING_ACTIVATION with a lease naming the delivery) before any
 * side effect, so concurrent duplicates make one activation, and a redelivery takes over a claim whose lease ran
 * out (the same delivery takes its own claim over at once). Every step is idempotent.
 */
export async function registerOnFirstConnect(recorder: ChangeRecorder, event: RegistrationEvent, delivery: Delivery = {}): Promise<RegistrationOutcome> {
  const actor = delivery.actor ?? 'jitr';
  const { certificateId } = event;
  // The signing CA or a previous one still accepted during a CA rotation (functions/core/fleet-cas.ts).
  const fleetCa = await fleetCaOfRegistration(await fleetCasOf(await recorder.ca.getCaCertificates()), event.caCertificateId);
  if (!fleetCa) {
    // Another CA registered in the account: its certificates are not ours to activate or revoke.
    return { outcome: 'IGNORED', certificateId, reason: `The event is for CA ${event.caCertificateId}, not this fleet's CA (nor a previous one it still accepts).` };
  }
  const caPems = fleetCa.pems;

  // AWS IoT first: its PEM names the device, so the device and the certificate's record are then read together.
  const registered = await recorder.registry.describeCertificate(certificateId);
  if (registered.status !== 'PENDING_ACTIVATION') {
    // Processed before (a duplicate), closed by someone else, or our activation crashed before it was recorded.
    const existing = await recorder.store.getCertificate(certificateId);
    const settled = settledOutcome(recorder, certificateId, existing, delivery);
    if (settled) return settled;
    if (!existing || registered.status !== 'ACTIVE') {
      const reason = `AWS IoT shows the certificate ${registered.status}, not PENDING_ACTIVATION.`;
      if (existing) await closeAbandonedClaim(recorder, existing, registered.status === 'REVOKED' ? 'REVOKED' : 'REJECTED', reason, actor);
      return { outcome: 'IGNORED', certificateId, reason };
    }
  }
  if (registered.caCertificateId !== undefined && registered.caCertificateId !== event.caCertificateId) {
    return { outcome: 'IGNORED', certificateId, reason: `AWS IoT links the certificate to CA ${registered.caCertificateId}, not to the event's CA.` };
  }

  let deviceId: string;
  let facts: CertificateFacts;
  try {
    ({ deviceId, facts } = await checkDeviceCertificate(registered.certificatePem, caPems, recorder.deps.clock.now()));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    const existing = await recorder.store.getCertificate(certificateId);
    return settledOutcome(recorder, certificateId, existing, delivery) ?? rejectRegistration(recorder, registered.certificatePem, existing, error, actor);
  }

  const { device, certificate: existing } = await recorder.store.getDeviceAndCertificate(deviceId, certificateId);
  const settled = settledOutcome(recorder, certificateId, existing, delivery);
  if (settled) return settled;
  if (!device && recorder.settings.enrollmentPolicy === 'preregistered') return awaitPreRegistration(recorder, event, facts, deviceId, existing, actor, delivery);
  const refusal = enrollmentRefusal(deviceId, device);
  if (refusal) return rejectRegistration(recorder, registered.certificatePem, existing, refusal, actor);

  const claimed = await claimActivation(recorder, facts, deviceId, device, existing, actor, delivery.deliveryId);
  // Suspended or revoked between our read and our claim: the same refusal as had we read it so.
  if (claimed instanceof EnrollmentRefusedError) return rejectRegistration(recorder, registered.certificatePem, undefined, claimed, actor);
  if (!claimed) return { outcome: 'IN_PROGRESS', certificateId };
  try {
    return await activateClaimed(recorder, facts, deviceId, actor, claimed);
  } catch (error) {
    await releaseClaim(recorder, certificateId);
    throw error;
  }
}

/**
 * Activates the certificates that connected before their device was pre-registered (policy `preregistered`):
 * each goes through the same steps as a first connect, so the device's next connect succeeds. Answers how many it found.
 */
export async function activateAwaitingCertificates(recorder: ChangeRecorder, deviceId: string, actor: string): Promise<number> {
  const waiting = (await recorder.store.listDeviceCertificates(deviceId)).filter((certificate) => certificate.status === 'PENDING_ACTIVATION' && certificate.awaitingPreRegistration === true);
  if (waiting.length === 0) return 0;
  const cas = await fleetCasOf(await recorder.ca.getCaCertificates());
  for (const certificate of waiting) {
    // The CA that signed it: the current one, or a previous one still accepted (a device made before a CA rotation).
    const caCertificateId = (await issuingFleetCaOf(cas, certificate.certificatePem))?.caCertificateId ?? (cas[0] as FleetCa).caCertificateId;
    const outcome = await registerOnFirstConnect(
      recorder,
      { certificateId: certificate.certificateId, caCertificateId, timestamp: recorder.deps.clock.now().getTime(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '', certificateRegistrationTimestamp: certificate.createdAt },
      // A stable delivery id: the pre-registration's retry takes over its own claim at once.
      { actor, deliveryId: `pre-register:${deviceId}` },
    );
    // Someone else holds the activation: the pre-registration is not done until it is, so its retry looks again.
    if (outcome.outcome === 'IN_PROGRESS') throw new RequestInProgressError();
  }
  return waiting.length;
}

/**
 * The side effects of an activation, then the record; undone when the device stopped accepting certificates meanwhile.
 * The first attempt decides on the records as the claim left them (no re-read); a conflict re-reads them.
 */
async function activateClaimed(recorder: ChangeRecorder, facts: CertificateFacts, deviceId: string, actor: string, claim: Claim): Promise<RegistrationOutcome> {
  const { certificateId } = facts;
  const key = `jitr:${certificateId}`;
  let known: Claim | undefined = claim.device ? claim : undefined;
  await recorder.registry.ensureThing(deviceId, known?.device?.attributes ?? (await recorder.store.getDevice(deviceId))?.attributes ?? {});
  await recorder.registry.attachCertificate(deviceId, certificateId);
  await recorder.registry.updateCertificateStatus(certificateId, 'ACTIVE');

  return recorder.retryOnConflict(async (): Promise<RegistrationOutcome> => {
    const [currentDevice, currentCertificate] = known
      ? [known.device as Device, known.certificate]
      : await Promise.all([recorder.requireDevice(deviceId), recorder.store.getCertificate(certificateId)]);
    known = undefined;
    if (!currentCertificate) throw new ConflictError(`Certificate ${certificateId} claim disappeared.`);
    if (currentCertificate.status !== 'PENDING_ACTIVATION') return { outcome: 'ALREADY_PROCESSED', certificateId, status: currentCertificate.status };
    if (!deviceAcceptsNewCertificates(currentDevice.status)) {
      // Suspended or revoked while we activated: the certificate must not stay usable.
      const reason = `Device ${deviceId} became ${currentDevice.status} while its certificate was being activated.`;
      await recorder.revokeEverywhere(currentDevice.thingName, currentCertificate, 'PRIVILEGE_WITHDRAWN');
      await recorder.store.commit({
        certificates: [{ next: recorder.withStatus(currentCertificate, 'REVOKED', { ...noLease, revocationReason: 'PRIVILEGE_WITHDRAWN', statusReason: reason }), expectedVersion: currentCertificate.version }],
        events: [recorder.event('CERTIFICATE_REVOKED', actor, key, { deviceId, certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'REVOKED', reason })],
      });
      return { outcome: 'REJECTED', certificateId, reason, code: 'ENROLLMENT_REFUSED' };
    }
    await recorder.store.commit({
      device: { next: { ...recorder.touched(currentDevice), status: 'ACTIVE' }, expectedVersion: currentDevice.version },
      certificates: [{ next: recorder.withStatus(currentCertificate, 'ACTIVE', noLease), expectedVersion: currentCertificate.version }],
      events: [
        recorder.event('CERTIFICATE_ACTIVATED', actor, key, { deviceId, certificateId, fromStatus: 'PENDING_ACTIVATION', toStatus: 'ACTIVE' }),
        ...(currentDevice.status === 'REGISTERED' ? [recorder.event('DEVICE_ACTIVATED', actor, key, { deviceId, fromStatus: 'REGISTERED', toStatus: 'ACTIVE' })] : []),
      ],
    });
    return { outcome: 'ACTIVATED', deviceId, certificateId };
  });
}

/**
 * The answer when the certificate's record already decides it: processed before (a duplicate delivery), or claimed
 * by another delivery whose lease still runs. `undefined` when this delivery may go on (no record, a claim whose lease
 * ran out, our own claim, or a certificate waiting for its device's pre-registration).
 */
function settledOutcome(recorder: ChangeRecorder, certificateId: string, existing: CertificateRecord | undefined, delivery: Delivery): RegistrationOutcome | undefined {
  if (!existing) return undefined;
  if (existing.status !== 'PENDING_ACTIVATION') return { outcome: 'ALREADY_PROCESSED', certificateId, status: existing.status };
  const leaseIsLive = existing.activationLeaseUntil !== undefined && Date.parse(existing.activationLeaseUntil) > recorder.deps.clock.now().getTime();
  const leaseIsOurs = delivery.deliveryId !== undefined && existing.activationLeaseHolder === delivery.deliveryId;
  return leaseIsLive && !leaseIsOurs ? { outcome: 'IN_PROGRESS', certificateId } : undefined;
}

const noLease = { activationLeaseUntil: undefined, activationLeaseHolder: undefined, awaitingPreRegistration: undefined } as const;

/**
 * A claim whose certificate someone revoked or deactivated in AWS IoT before it was activated: the record follows
 * AWS IoT, so the certificate no longer counts as live. Losing a race here is fine (another delivery closed it).
 */
async function closeAbandonedClaim(recorder: ChangeRecorder, claim: CertificateRecord, to: 'REVOKED' | 'REJECTED', reason: string, actor: string): Promise<void> {
  // Recorded REVOKED means revoked at the CA too (its CRL), whoever revoked it in AWS IoT. Idempotent.
  if (to === 'REVOKED') await recorder.ca.revokeCertificate({ serialNumber: claim.serialNumber, reason: 'UNSPECIFIED', certificatePem: claim.certificatePem });
  await recorder.store
    .commit({
      certificates: [{ next: recorder.withStatus(claim, to, { ...noLease, statusReason: reason }), expectedVersion: claim.version }],
      events: [recorder.event(to === 'REVOKED' ? 'CERTIFICATE_REVOKED' : 'CERTIFICATE_REJECTED', actor, `jitr:${claim.certificateId}`, { deviceId: claim.deviceId, certificateId: claim.certificateId, fromStatus: claim.status, toStatus: to, reason })],
    })
    .catch((error: unknown) => {
      if (!(error instanceof ConflictError)) throw error;
    });
}

/** After a failure, ends our lease at once so the retry (or a duplicate) does not wait for it. Best effort. */
async function releaseClaim(recorder: ChangeRecorder, certificateId: string): Promise<void> {
  try {
    const claim = await recorder.store.getCertificate(certificateId);
    if (!claim || claim.status !== 'PENDING_ACTIVATION') return;
    await recorder.store.commit({
      certificates: [{ next: { ...claim, activationLeaseUntil: recorder.now(), activationLeaseHolder: undefined, updatedAt: recorder.now(), version: claim.version + 1 }, expectedVersion: claim.version }],
      events: [],
    });
  } catch {
    // The lease then simply runs out.
  }
}

function enrollmentRefusal(deviceId: string, device: Device | undefined): EnrollmentRefusedError | undefined {
  if (device && !deviceAcceptsNewCertificates(device.status)) {
    return new EnrollmentRefusedError(`Device ${deviceId} is ${device.status}: it cannot enroll a new certificate.`);
  }
  return undefined;
}

/**
 * Policy `preregistered`, device unknown: the certificate is recorded PENDING_ACTIVATION and left PENDING_ACTIVATION in
 * AWS IoT (whose connects it refuses), instead of being revoked for good. Pre-registering the device activates it.
 * If the device was pre-registered while we decided, the re-read after our write sees it and activates at once.
 */
async function awaitPreRegistration(recorder: ChangeRecorder, event: RegistrationEvent, facts: CertificateFacts, deviceId: string, existing: CertificateRecord | undefined, actor: string, delivery: Delivery): Promise<RegistrationOutcome> {
  const { certificateId } = facts;
  if (!existing) {
    try {
      await recorder.store.commit({
        certificates: [{ next: { ...recorder.newCertificateRecord(facts, deviceId, 'PENDING_ACTIVATION', 'JITR'), awaitingPreRegistration: true, statusReason: `Device ${deviceId} is not pre-registered yet; the certificate is activated when it is.` } }],
        events: [recorder.event('CERTIFICATE_REGISTERED', actor, `jitr:${certificateId}`, { deviceId, certificateId, toStatus: 'PENDING_ACTIVATION', reason: 'waiting for the device to be pre-registered' })],
      });
    } catch (error) {
      // A concurrent delivery recorded it first.
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  if (await recorder.store.getDevice(deviceId)) return registerOnFirstConnect(recorder, event, delivery);
  return { outcome: 'AWAITING_PRE_REGISTRATION', deviceId, certificateId };
}

/** The records as a claim wrote them (the device as read, when the claim did not write it). */
interface Claim {
  readonly device: Device | undefined;
  readonly certificate: CertificateRecord;
}

/**
 * Records the certificate as PENDING_ACTIVATION with a lease; `false` when another delivery holds it, the refusal when
 * the device stopped accepting certificates. `device` is the device as the caller just read it: the first attempt
 * decides on it, a conflict re-reads.
 */
async function claimActivation(recorder: ChangeRecorder, facts: CertificateFacts, deviceId: string, device: Device | undefined, existing: CertificateRecord | undefined, actor: string, holder: string | undefined): Promise<Claim | false | EnrollmentRefusedError> {
  const leaseUntil = new Date(recorder.deps.clock.now().getTime() + recorder.settings.activationLeaseSeconds * 1000).toISOString();
  const key = `jitr:${facts.certificateId}`;
  if (existing) {
    // A waiting certificate keeps its flag until its activation is recorded, so a failed activation is found again.
    const claimed: CertificateRecord = { ...existing, activationLeaseUntil: leaseUntil, activationLeaseHolder: holder, updatedAt: recorder.now(), version: existing.version + 1 };
    try {
      await recorder.store.commit({ certificates: [{ next: claimed, expectedVersion: existing.version }], events: [] });
      return { device, certificate: claimed };
    } catch (error) {
      if (error instanceof ConflictError) return false;
      throw error;
    }
  }
  let read: Device | undefined | null = device;
  try {
    return await recorder.retryOnConflict(async (): Promise<Claim> => {
      const current = read === null ? await recorder.store.getDevice(deviceId) : read;
      read = null;
      const refusal = enrollmentRefusal(deviceId, current);
      if (refusal) throw refusal;
      const now = recorder.now();
      // Written even when unchanged: a claim must lose to any concurrent change of the device (a suspension, say).
      const nextDevice: Device = current ? recorder.touched(current) : { deviceId, thingName: deviceId, status: 'REGISTERED', attributes: {}, createdAt: now, updatedAt: now, version: 1 };
      const certificate: CertificateRecord = { ...recorder.newCertificateRecord(facts, deviceId, 'PENDING_ACTIVATION', 'JITR'), activationLeaseUntil: leaseUntil, ...(holder ? { activationLeaseHolder: holder } : {}) };
      const change: StoreChange = {
        device: current ? { next: nextDevice, expectedVersion: current.version } : { next: nextDevice },
        certificates: [{ next: certificate }],
        events: [
          ...(current ? [] : [recorder.event('DEVICE_CREATED', actor, key, { deviceId, toStatus: 'REGISTERED', reason: 'first connect with a certificate from the fleet CA' })]),
          recorder.event('CERTIFICATE_REGISTERED', actor, key, { deviceId, certificateId: facts.certificateId, toStatus: 'PENDING_ACTIVATION' }),
        ],
      };
      try {
        await recorder.store.commit(change);
      } catch (error) {
        // The certificate item exists now: a concurrent delivery claimed it. Otherwise the device changed: decide again.
        if (error instanceof ConflictError && (await recorder.store.getCertificate(facts.certificateId))) throw new ClaimedElsewhere();
        throw error;
      }
      return { device: nextDevice, certificate };
    });
  } catch (error) {
    if (error instanceof ClaimedElsewhere) return false;
    if (error instanceof EnrollmentRefusedError) return error;
    throw error;
  }
}

class ClaimedElsewhere extends Error {}

async function rejectRegistration(recorder: ChangeRecorder, certificatePem: string, existing: CertificateRecord | undefined, reason: LifecycleError, actor: string): Promise<RegistrationOutcome> {
  const facts = await inspectCertificate(certificatePem);
  await recorder.registry.updateCertificateStatus(facts.certificateId, 'REVOKED');
  const deviceId = facts.commonName !== undefined && isValidDeviceId(facts.commonName) ? facts.commonName : undefined;
  const rejected: CertificateRecord = existing
    ? recorder.withStatus(existing, 'REJECTED', { ...noLease, statusReason: reason.message })
    : { ...recorder.newCertificateRecord(facts, deviceId, 'REJECTED', 'JITR'), statusReason: reason.message };
  try {
    await recorder.store.commit({
      certificates: [{ next: rejected, expectedVersion: existing?.version }],
      events: [recorder.event('CERTIFICATE_REJECTED', actor, `jitr:${facts.certificateId}`, { deviceId, certificateId: facts.certificateId, fromStatus: existing ? existing.status : undefined, toStatus: 'REJECTED', reason: reason.message })],
    });
  } catch (error) {
    // A concurrent duplicate recorded the rejection first.
    if (!(error instanceof ConflictError)) throw error;
  }
  return { outcome: 'REJECTED', certificateId: facts.certificateId, reason: reason.message, code: reason.code };
}
