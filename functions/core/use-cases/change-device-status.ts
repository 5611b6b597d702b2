import { ConflictError, InvalidTransitionError, LifecycleError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { AuditEventType, CertificateRecord, Device, DeviceStatus, OperationType, RevocationReason } from '../model';
import { assertDeviceTransition } from '../state-machines';
import type { ChangeRecorder, DeviceCommand } from '../change-recorder';

export interface RevokeDeviceCommand extends DeviceCommand {
  readonly reason: RevocationReason;
}

interface StatusPlan {
  readonly operation: OperationType;
  /** The statuses the change starts from (besides `to` itself, which is answered unchanged). */
  readonly from: readonly DeviceStatus[];
  readonly to: Extract<DeviceStatus, 'ACTIVE' | 'SUSPENDED' | 'REVOKED'>;
  readonly eventType: AuditEventType;
  readonly reason?: RevocationReason;
}

/** How many times the certificates are brought in line with a device that keeps changing under us, before answering CONFLICT. */
const MAX_RECONCILE_ROUNDS = 5;
/** How many certificates are aligned between two saves of the operation's progress. */
const CHECKPOINT_EVERY = 25;

/**
 * Where an alignment got to for one device version, so the retry of an operation that failed part-way through a
 * device with many certificates (AWS IoT throttling, a timeout) goes on from there instead of starting over.
 */
export interface AlignmentCheckpoint {
  load(): { readonly version: number; readonly done: number } | undefined;
  save(version: number, done: number): Promise<void>;
}

export const suspendDevice = (recorder: ChangeRecorder, command: DeviceCommand): Promise<Device> =>
  changeDeviceStatus(recorder, command, { operation: 'SUSPEND_DEVICE', from: ['ACTIVE'], to: 'SUSPENDED', eventType: 'DEVICE_SUSPENDED' });

export const resumeDevice = (recorder: ChangeRecorder, command: DeviceCommand): Promise<Device> =>
  changeDeviceStatus(recorder, command, { operation: 'RESUME_DEVICE', from: ['SUSPENDED'], to: 'ACTIVE', eventType: 'DEVICE_RESUMED' });

export const revokeDevice = (recorder: ChangeRecorder, command: RevokeDeviceCommand): Promise<Device> =>
  changeDeviceStatus(recorder, command, { operation: 'REVOKE_DEVICE', from: ['REGISTERED', 'ACTIVE', 'SUSPENDED'], to: 'REVOKED', eventType: 'DEVICE_REVOKED', reason: command.reason });

/**
 * Suspension, resumption and device revocation. The store decides first: the device's new status is one
 * versioned write, so of concurrent changes exactly one order wins. Then the device's certificates are brought
 * in line with whatever status the device has now (not the one this request wanted), in AWS IoT first and then
 * on record, one certificate at a time, until a re-read shows the device did not change meanwhile. Nothing is
 * ever switched back: a failure leaves the operation PENDING, and its retry (or any later change of the device)
 * finishes the alignment. A device already in the wanted status is not an error: nothing changes, the
 * certificates are still aligned, and the device is answered.
 */
async function changeDeviceStatus(recorder: ChangeRecorder, command: DeviceCommand, plan: StatusPlan): Promise<Device> {
  assertValidDeviceId(command.deviceId);
  return recorder.operations.execute(
    {
      caller: command.actor,
      handle: command.requestKey,
      operation: plan.operation,
      target: command.deviceId,
      payload: { deviceId: command.deviceId, ...(plan.reason ? { reason: plan.reason } : {}) },
    },
    async (run) => {
      const key = run.record.operationId;
      // The device as this request left it (the status write's answer): the alignment starts from it without reading it again.
      let decided: Device | undefined;
      if (run.progress.statusDecided === undefined) {
        await recorder.retryOnConflict(async () => {
          const device = await recorder.requireDevice(command.deviceId);
          if (device.status === plan.to) {
            await run.saveProgress({ statusDecided: 'ALREADY' });
            decided = device;
            return;
          }
          assertDeviceTransition(device.status, plan.to);
          // A REGISTERED device was never activated: resuming it is no resumption.
          if (!plan.from.includes(device.status)) throw new InvalidTransitionError('DEVICE', device.status, plan.to, { details: { deviceId: device.deviceId } });
          const next: Device = {
            ...recorder.touched(device),
            status: plan.to,
            ...(plan.reason ? { revocationReason: plan.reason, statusReason: `revoked: ${plan.reason}` } : {}),
          };
          await run.commit(
            {
              device: { next, expectedVersion: device.version },
              events: [recorder.event(plan.eventType, command.actor, key, { deviceId: device.deviceId, fromStatus: device.status, toStatus: plan.to, reason: plan.reason })],
            },
            { progress: { ...run.progress, statusDecided: 'CHANGED' } },
          );
          decided = next;
        });
      }
      const checkpoint: AlignmentCheckpoint = {
        load: () => (run.progress.alignedVersion === undefined ? undefined : { version: Number(run.progress.alignedVersion), done: Number(run.progress.alignedCount ?? 0) }),
        save: (version, done) => run.saveProgress({ alignedVersion: String(version), alignedCount: String(done) }),
      };
      return alignDeviceCertificates(recorder, command.deviceId, command.actor, key, {
        checkpoint,
        ...(decided ? { known: decided } : {}),
        // The operation is DONE on condition that the device is still as the pass saw it: the check that ends the pass, in the same write.
        confirm: async (device) => run.finish({ deviceUnchanged: { deviceId: device.deviceId, version: device.version }, events: [] }, { device }),
      });
    },
    async (record) => {
      if (record.outcome?.device) return record.outcome.device;
      return recorder.requireDevice(command.deviceId);
    },
  );
}

type WantedCertificateStatus = 'ACTIVE' | 'INACTIVE' | 'REVOKED';

/** What a device's live certificates must be, given the device's status. */
function wantedCertificateStatus(status: DeviceStatus): WantedCertificateStatus {
  if (status === 'SUSPENDED') return 'INACTIVE';
  if (status === 'REVOKED' || status === 'DECOMMISSIONED') return 'REVOKED';
  return 'ACTIVE';
}

export interface AlignmentOptions {
  readonly checkpoint?: AlignmentCheckpoint;
  /** The device as the caller just read or wrote it: the first pass starts from it instead of reading it again. */
  readonly known?: Device;
  /**
   * Ends a pass that saw the device unchanged: must throw `ConflictError` if the device is no longer at the pass's
   * version (then another pass follows). @default - the device is read again and compared
   */
  readonly confirm?: (device: Device) => Promise<void>;
}

/**
 * Brings every certificate of the device in line with the device's current status, in AWS IoT and on record,
 * and answers the device as it was when a full pass saw it unchanged. Idempotent: every call is safe to repeat.
 */
export async function alignDeviceCertificates(recorder: ChangeRecorder, deviceId: string, actor: string, key: string, options: AlignmentOptions = {}): Promise<Device> {
  const { checkpoint } = options;
  let known = options.known;
  for (let round = 0; round < MAX_RECONCILE_ROUNDS; round += 1) {
    const device = known ?? (await recorder.requireDevice(deviceId));
    known = undefined;
    const wanted = wantedCertificateStatus(device.status);
    // Oldest first, and any new certificate changes the device's version: the first `done` are the ones aligned before.
    const certificates = await recorder.store.listDeviceCertificates(deviceId);
    const saved = checkpoint?.load();
    const start = saved && saved.version === device.version ? Math.min(saved.done, certificates.length) : 0;
    let interrupted = false;
    for (let index = start; index < certificates.length; index += 1) {
      // A pass acts only for the device status it read: another change of the device ends it (the next pass follows that change).
      // Not asked before the pass's first certificate: the device was read (or written) just before.
      if (index > start && (await recorder.requireDevice(deviceId)).version !== device.version) {
        interrupted = true;
        break;
      }
      const certificate = certificates[index] as CertificateRecord;
      // The certificate a decided commit is retiring stays out, whatever the device's status asks for.
      const retiring = device.rotation?.state === 'COMMITTING' && device.rotation.previousCertificateId === certificate.certificateId;
      try {
        if (wanted === 'REVOKED') await revokeCertificateOfRevokedDevice(recorder, device, certificate, actor, key);
        else await switchCertificate(recorder, device, certificate, retiring ? 'INACTIVE' : wanted, actor, key);
      } catch (error) {
        if (!(error instanceof DeviceChangedError)) throw error;
        interrupted = true;
        break;
      }
      if (checkpoint && (index + 1) % CHECKPOINT_EVERY === 0 && index + 1 < certificates.length) await checkpoint.save(device.version, index + 1);
    }
    if (interrupted) continue;
    if (options.confirm) {
      try {
        await options.confirm(device);
        return device;
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        continue;
      }
    }
    const after = await recorder.requireDevice(deviceId);
    if (after.version === device.version) return after;
  }
  throw new ConflictError(`Device ${deviceId} kept changing while its certificates were being updated; retry with the same Idempotency-Key.`);
}

/** ACTIVE or INACTIVE: the registry first (where it takes effect), then the record. A certificate revoked meanwhile is left to its revocation. */
async function switchCertificate(recorder: ChangeRecorder, device: Device, certificate: CertificateRecord, wanted: 'ACTIVE' | 'INACTIVE', actor: string, key: string): Promise<void> {
  if (certificate.status === 'PENDING_ACTIVATION' && wanted === 'INACTIVE') return deactivateHalfActivated(recorder, certificate);
  if (certificate.status !== 'ACTIVE' && certificate.status !== 'INACTIVE') return;
  // An expired certificate cannot authenticate anyway; AWS IoT need not hear of it.
  if (Date.parse(certificate.notAfter) <= recorder.deps.clock.now().getTime()) return;
  try {
    // Always sent, even when the record already agrees: a change that failed half-way may have left AWS IoT behind.
    await recorder.registry.updateCertificateStatus(certificate.certificateId, wanted);
  } catch (error) {
    if (await isRevokedInRegistry(recorder, certificate.certificateId, error)) return;
    throw error;
  }
  let current: CertificateRecord | undefined = certificate;
  await recorder.retryOnConflict(async () => {
    if (current === undefined || current.status === wanted || (current.status !== 'ACTIVE' && current.status !== 'INACTIVE')) return;
    const fromStatus = current.status;
    try {
      await recorder.store.commit({
        certificates: [{ next: recorder.withStatus(current, wanted), expectedVersion: current.version }],
        deviceUnchanged: { deviceId: device.deviceId, version: device.version },
        events: [
          recorder.event(wanted === 'INACTIVE' ? 'CERTIFICATE_SUSPENDED' : 'CERTIFICATE_RESUMED', actor, key, {
            deviceId: device.deviceId,
            certificateId: current.certificateId,
            fromStatus,
            toStatus: wanted,
          }),
        ],
      });
    } catch (error) {
      if (error instanceof ConflictError) {
        if ((await recorder.requireDevice(device.deviceId)).version !== device.version) throw new DeviceChangedError();
        current = await recorder.store.getCertificate(certificate.certificateId);
      }
      throw error;
    }
  });
}

/** The device changed while a pass aligned its certificates: the pass stops, and the next one follows the new status. */
class DeviceChangedError extends Error {}

/**
 * A first-connect activation that stopped between AWS IoT (ACTIVE) and the record (still PENDING_ACTIVATION) must not
 * leave a suspended device able to connect. Its JITR redelivery then sees the device SUSPENDED and revokes it.
 */
async function deactivateHalfActivated(recorder: ChangeRecorder, certificate: CertificateRecord): Promise<void> {
  const registered = await recorder.registry.describeCertificate(certificate.certificateId);
  if (registered.status === 'ACTIVE') await recorder.registry.updateCertificateStatus(certificate.certificateId, 'INACTIVE');
}

async function revokeCertificateOfRevokedDevice(recorder: ChangeRecorder, device: Device, certificate: CertificateRecord, actor: string, key: string): Promise<void> {
  // A retired certificate too: the device's keys are not to be trusted, whichever of them is still around.
  if (certificate.status !== 'ACTIVE' && certificate.status !== 'INACTIVE' && certificate.status !== 'PENDING_ACTIVATION' && certificate.status !== 'RETIRED') return;
  const reason = device.revocationReason ?? 'PRIVILEGE_WITHDRAWN';
  await recorder.revokeEverywhere(device.thingName, certificate, reason);
  let current: CertificateRecord | undefined = certificate;
  await recorder.retryOnConflict(async () => {
    if (current === undefined || current.status === 'REVOKED' || current.status === 'REJECTED') return;
    const fromStatus = current.status;
    try {
      await recorder.store.commit({
        certificates: [
          {
            next: recorder.withStatus(current, 'REVOKED', { revocationReason: reason, statusReason: `device ${device.deviceId} revoked`, activationLeaseUntil: undefined, activationLeaseHolder: undefined, awaitingPreRegistration: undefined }),
            expectedVersion: current.version,
          },
        ],
        events: [recorder.event('CERTIFICATE_REVOKED', actor, key, { deviceId: device.deviceId, certificateId: current.certificateId, fromStatus, toStatus: 'REVOKED', reason })],
      });
    } catch (error) {
      if (error instanceof ConflictError) current = await recorder.store.getCertificate(certificate.certificateId);
      throw error;
    }
  });
}

/** The registry refused the change: if it is because the certificate is REVOKED there (terminal), that is not our failure. */
async function isRevokedInRegistry(recorder: ChangeRecorder, certificateId: string, error: unknown): Promise<boolean> {
  if (!(error instanceof LifecycleError) || error.code !== 'INVALID_TRANSITION') return false;
  const registered = await recorder.registry.describeCertificate(certificateId);
  return registered.status === 'REVOKED';
}
