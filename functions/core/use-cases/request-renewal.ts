import { purposeOf } from '../certificate-purpose';
import { InvalidTransitionError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { RenewalNotice, RenewalNotifier } from '../expiry';
import type { ChangeRecorder, DeviceCommand } from '../change-recorder';

export interface RenewalRequested {
  readonly deviceId: string;
  /** One notice per ACTIVE, unexpired certificate of the device, each published to the device. */
  readonly notices: readonly RenewalNotice[];
}

/**
 * A backend asks a device to rotate now (a key it suspects, a CA it moves off, a policy change): the device's ACTIVE
 * certificates get the renewal notice the expiry monitor sends, with `renewBy` = now. Only an ACTIVE device can rotate,
 * so only it is told. The notices go out once per Idempotency-Key: a retry answers what was sent.
 */
export async function requestRenewal(recorder: ChangeRecorder, command: DeviceCommand, notify: RenewalNotifier): Promise<RenewalRequested> {
  assertValidDeviceId(command.deviceId);
  return recorder.operations.execute(
    { caller: command.actor, handle: command.requestKey, operation: 'REQUEST_RENEWAL', target: command.deviceId, payload: { deviceId: command.deviceId } },
    async (run) => {
      const device = await recorder.requireDevice(command.deviceId);
      if (device.status !== 'ACTIVE') {
        throw new InvalidTransitionError('DEVICE', device.status, 'ACTIVE', { details: { deviceId: device.deviceId, hint: 'Only an ACTIVE device can rotate its certificate.' } });
      }
      const now = recorder.deps.clock.now();
      const notices = (await recorder.store.listDeviceCertificates(device.deviceId))
        // A bootstrap certificate is not rotated over MQTT: it only serves recovery after expiry.
        .filter((certificate) => certificate.status === 'ACTIVE' && purposeOf(certificate) === 'OPERATIONAL' && Date.parse(certificate.notAfter) > now.getTime() && certificate.certificateId !== device.rotation?.certificateId)
        .map((certificate) => ({ certificateId: certificate.certificateId, notAfter: certificate.notAfter, renewBy: now.toISOString() }));
      // Publishing twice is harmless (a device rotates once: the same requestId, or ROTATION_IN_PROGRESS); the record keeps the answer.
      for (const notice of notices) await notify(device.deviceId, notice);
      await run.commit({ events: [] }, { status: 'DONE', progress: { notices: JSON.stringify(notices) } });
      return { deviceId: device.deviceId, notices };
    },
    async (record) => ({ deviceId: command.deviceId, notices: JSON.parse(record.progress?.notices ?? '[]') as RenewalNotice[] }),
  );
}
