import { ConflictError, DeviceAlreadyExistsError } from '../errors';
import { assertValidDeviceId } from '../device-id';
import type { Device } from '../model';
import type { ChangeRecorder, DeviceCommand } from '../change-recorder';
import { activateAwaitingCertificates } from './register-on-first-connect';

export interface PreRegisterDeviceCommand extends DeviceCommand {
  readonly attributes: Readonly<Record<string, string>>;
}

/**
 * Creates the device record (status REGISTERED), then activates any certificate of the device that connected
 * before it was pre-registered (enrollment policy `preregistered`), so the device's next connect succeeds.
 * The same request retried answers the device again; another request for an existing device is refused.
 */
export async function preRegisterDevice(recorder: ChangeRecorder, command: PreRegisterDeviceCommand): Promise<Device> {
  assertValidDeviceId(command.deviceId);
  return recorder.operations.execute(
    { caller: command.actor, handle: command.requestKey, operation: 'PRE_REGISTER_DEVICE', target: command.deviceId, payload: { deviceId: command.deviceId, attributes: command.attributes } },
    async (run) => {
      let created: Device | undefined;
      if (run.progress.created === undefined) {
        const now = recorder.now();
        const device: Device = { deviceId: command.deviceId, thingName: command.deviceId, status: 'REGISTERED', attributes: { ...command.attributes }, createdAt: now, updatedAt: now, version: 1 };
        // No read first: the write is conditioned on the device not existing, and its refusal says so.
        try {
          await run.commit(
            { device: { next: device }, events: [recorder.event('DEVICE_PREREGISTERED', command.actor, run.record.operationId, { deviceId: device.deviceId, toStatus: 'REGISTERED' })] },
            { progress: { created: 'yes' } },
          );
          created = device;
        } catch (error) {
          if (error instanceof ConflictError) throw new DeviceAlreadyExistsError(command.deviceId);
          throw error;
        }
      }
      const activated = await activateAwaitingCertificates(recorder, command.deviceId, command.actor);
      // Nothing activated: the device is the one this request just wrote. Else (or on a retry) it is read as it is now.
      const device = created && activated === 0 ? created : await recorder.requireDevice(command.deviceId);
      await run.finish({ events: [] }, { device });
      return device;
    },
    async (record) => record.outcome?.device ?? recorder.requireDevice(command.deviceId),
  );
}
