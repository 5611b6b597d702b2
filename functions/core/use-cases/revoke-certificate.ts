import { ConflictError, NotFoundError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { CertificateRecord, RevocationReason } from '../model';
import { assertCertificateTransition } from '../state-machines';
import { deviceNotFound, type ChangeRecorder, type DeviceCommand } from '../change-recorder';
import { withdrawOrFinish } from './rotate-certificate';

export interface RevokeCertificateCommand extends DeviceCommand {
  readonly certificateId: string;
  readonly reason: RevocationReason;
}

/**
 * Revokes one certificate: REVOKED in AWS IoT (refused at the next connect), detached, revoked at the CA (on the
 * CRL), then REVOKED on record with reason and actor. Every step is idempotent, so a retry after any failure
 * repeats them and records once. A certificate already REVOKED is answered as it is, with nothing changed.
 */
export async function revokeCertificate(recorder: ChangeRecorder, command: RevokeCertificateCommand): Promise<CertificateRecord> {
  assertValidDeviceId(command.deviceId);
  return recorder.operations.execute(
    {
      caller: command.actor,
      handle: command.requestKey,
      operation: 'REVOKE_CERTIFICATE',
      target: `${command.deviceId}/${command.certificateId}`,
      payload: { deviceId: command.deviceId, certificateId: command.certificateId, reason: command.reason },
    },
    async (run) => {
      // Both in one round trip; the rotation check after the revocation reads the device again (a rotation may start meanwhile).
      const { device, certificate } = await recorder.store.getDeviceAndCertificate(command.deviceId, command.certificateId);
      if (!device) throw deviceNotFound(command.deviceId);
      if (!certificate || certificate.deviceId !== command.deviceId) {
        throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${command.certificateId} does not belong to device ${command.deviceId}.`, {
          details: { deviceId: command.deviceId, certificateId: command.certificateId },
        });
      }
      if (certificate.status !== 'REVOKED') {
        assertCertificateTransition(certificate.status, 'REVOKED');
        await recorder.revokeEverywhere(device.thingName, certificate, command.reason);
      } else {
        // Already REVOKED on record: make sure the CA has it too (a revocation that stopped before the CA, then recorded elsewhere).
        await recorder.ca.revokeCertificate({ serialNumber: certificate.serialNumber, reason: certificate.revocationReason ?? command.reason, certificatePem: certificate.certificatePem });
      }
      let current: CertificateRecord | undefined = certificate;
      const revokedRecord = await recorder.retryOnConflict(async () => {
        if (!current) throw new ConflictError(`Certificate ${command.certificateId} disappeared while it was being revoked.`);
        if (current.status === 'REVOKED') {
          await run.finish({ events: [] }, { certificateId: current.certificateId });
          return current;
        }
        const revoked = recorder.withStatus(current, 'REVOKED', {
          revocationReason: command.reason,
          activationLeaseUntil: undefined,
          activationLeaseHolder: undefined,
          awaitingPreRegistration: undefined,
        });
        try {
          await run.finish(
            {
              certificates: [{ next: revoked, expectedVersion: current.version }],
              events: [
                recorder.event('CERTIFICATE_REVOKED', command.actor, run.record.operationId, {
                  deviceId: device.deviceId,
                  certificateId: current.certificateId,
                  fromStatus: current.status,
                  toStatus: 'REVOKED',
                  reason: command.reason,
                }),
              ],
            },
            // The id, not the record: REVOKED is final, so a replay reads the same record, and the operation record stays
            // under 1 KB (its PEM would double the write units of this write and of every read of the operation).
            { certificateId: revoked.certificateId },
          );
        } catch (error) {
          if (error instanceof ConflictError) current = await recorder.store.getCertificate(command.certificateId);
          throw error;
        }
        return revoked;
      });
      await withdrawRotationOf(recorder, command.deviceId, command.certificateId);
      return revokedRecord;
    },
    async (record) => {
      // Operations finished by an earlier version carry the record itself.
      if (record.outcome?.certificate) return record.outcome.certificate;
      const certificate = await recorder.store.getCertificate(command.certificateId);
      if (!certificate) throw new NotFoundError('CERTIFICATE_NOT_FOUND', `Certificate ${command.certificateId} does not exist.`);
      return certificate;
    },
  );
}

/**
 * A revoked certificate ends the device's rotation it belongs to: revoking the new one leaves nothing to commit, and
 * revoking the one the rotation was requested over (its key compromised, say) must not leave whoever asked with a fresh
 * certificate. The rotation is withdrawn now (its new certificate revoked everywhere), unless a commit decided it already.
 */
async function withdrawRotationOf(recorder: ChangeRecorder, deviceId: string, certificateId: string): Promise<void> {
  const rotation = (await recorder.store.getDevice(deviceId))?.rotation;
  if (!rotation || rotation.state === 'COMMITTING') return;
  if (rotation.certificateId !== certificateId && rotation.previousCertificateId !== certificateId) return;
  await withdrawOrFinish(recorder, deviceId, rotation.requestId);
}
