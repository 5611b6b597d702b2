import type { Actor, ChangeRecorder } from '../change-recorder';
import { CENSUS_LIMITS } from '../expiry';
import { LifecycleError, NotFoundError } from '../errors';
import { fleetCasOf, issuingFleetCaOf, type FleetCa } from '../fleet-cas';
import type { DeviceStatus } from '../model';
import type { DeviceStore } from '../ports';
import { isLiveCertificateStatus } from '../state-machines';

export interface DeactivateCaCommand extends Actor {
  /** AWS IoT's id of the CA certificate (SHA-256 of its DER, lower-case hex). */
  readonly caCertificateId: string;
  /** Deactivate even though live certificates remain on the CA: they can no longer connect. @default false */
  readonly force?: boolean;
}

export interface CaDeactivated {
  readonly caCertificateId: string;
  readonly status: 'INACTIVE';
  readonly autoRegistrationStatus: 'DISABLE';
  /** Live certificates the CA still had when it was deactivated (0 unless forced). */
  readonly liveCertificates: number;
  /** The same count when forced: the certificates this deactivation stranded (their devices must get a certificate from the current CA). */
  readonly strandedCertificates: number;
  /** A few of the devices holding them. */
  readonly deviceIds: readonly string[];
  readonly forced: boolean;
  readonly deactivatedAt: string;
}

/** What still depends on a CA: the live certificates it signed and a few of their devices. */
export interface CaUsage {
  readonly liveCertificates: number;
  readonly deviceIds: readonly string[];
}

/**
 * The devices whose certificates still count on a CA: every device that may connect now or again later (a
 * REGISTERED device's certificate awaiting activation, an ACTIVE one, a SUSPENDED one that may be resumed).
 * REVOKED and DECOMMISSIONED devices never connect again.
 */
export const DEVICE_STATUSES_USING_A_CA: readonly DeviceStatus[] = ['REGISTERED', 'ACTIVE', 'SUSPENDED'];

/** How many device ids a refusal or an answer lists. */
export const MAX_LISTED_DEVICES_OF_A_CA = 10;

/**
 * Counts the live certificates (ACTIVE, INACTIVE or PENDING_ACTIVATION, not yet past `notAfter`, of any purpose:
 * a bootstrap certificate is a device's way back after expiry) that `ca` signed, over the devices in
 * {@link DEVICE_STATUSES_USING_A_CA}, page by page and a few devices at a time, like the census.
 */
export async function usageOfCa(
  store: Pick<DeviceStore, 'listDevices' | 'listDeviceCertificates'>,
  cas: readonly FleetCa[],
  ca: FleetCa,
  now: Date,
  settings: { readonly pageSize?: number } = {},
): Promise<CaUsage> {
  let liveCertificates = 0;
  const deviceIds = new Set<string>();
  const countDevice = async (deviceId: string): Promise<void> => {
    for (const certificate of await store.listDeviceCertificates(deviceId)) {
      if (!isLiveCertificateStatus(certificate.status) || Date.parse(certificate.notAfter) <= now.getTime()) continue;
      const issuer = await issuingFleetCaOf(cas, certificate.certificatePem).catch(() => undefined);
      if (issuer?.caCertificateId !== ca.caCertificateId) continue;
      liveCertificates += 1;
      if (deviceIds.size < MAX_LISTED_DEVICES_OF_A_CA) deviceIds.add(deviceId);
    }
  };
  for (const status of DEVICE_STATUSES_USING_A_CA) {
    let nextToken: string | undefined;
    do {
      const page = await store.listDevices({ status, limit: settings.pageSize ?? CENSUS_LIMITS.pageSize, ...(nextToken ? { nextToken } : {}) });
      const devices = [...page.items];
      for (let start = 0; start < devices.length; start += CENSUS_LIMITS.concurrency) {
        await Promise.all(devices.slice(start, start + CENSUS_LIMITS.concurrency).map((device) => countDevice(device.deviceId)));
      }
      nextToken = page.nextToken;
    } while (nextToken);
  }
  return { liveCertificates, deviceIds: [...deviceIds] };
}

/**
 * Retires a previous fleet CA once its devices have rotated over (a CA rotation's last step): its registration in
 * AWS IoT becomes INACTIVE with auto-registration off, so no certificate it signed connects or registers any more.
 * Refused for the current (signing) CA and for a CA that is not the fleet's; refused while live certificates remain
 * on it, unless forced (the answer then says how many it stranded). Nothing is written before the registry has
 * changed: a failure leaves no record, and a retry with the same key decides again and converges. The deactivation
 * is recorded as an audit event (under the CA's id) and its answer kept with the operation, for every retry.
 */
export async function deactivateCa(recorder: ChangeRecorder, command: DeactivateCaCommand, settings: { readonly pageSize?: number } = {}): Promise<CaDeactivated> {
  const force = command.force ?? false;
  return recorder.operations.execute(
    { caller: command.actor, handle: command.requestKey, operation: 'DEACTIVATE_CA', target: `ca/${command.caCertificateId}`, payload: { caCertificateId: command.caCertificateId, force } },
    async (run) => {
      const cas = await fleetCasOf(await recorder.ca.getCaCertificates());
      const ca = cas.find((one) => one.caCertificateId === command.caCertificateId);
      if (!ca) {
        throw new NotFoundError('CA_NOT_FOUND', `${command.caCertificateId} is not one of the fleet's CAs (the current CA or a previous one still accepted).`, {
          details: { caCertificateId: command.caCertificateId, fleetCaCertificateIds: cas.map((one) => one.caCertificateId) },
        });
      }
      if (ca.role === 'current') {
        throw new LifecycleError(
          'CA_IS_CURRENT',
          `${ca.caCertificateId} is the CA that signs the fleet's certificates: switch the stack to a new CA first (docs/deploy.md, "Rotating the CA"), let the devices rotate over, then deactivate this one.`,
          { details: { caCertificateId: ca.caCertificateId } },
        );
      }
      const now = recorder.deps.clock.now();
      const usage = await usageOfCa(recorder.store, cas, ca, now, settings);
      if (usage.liveCertificates > 0 && !force) {
        throw new LifecycleError(
          'CA_STILL_IN_USE',
          `${usage.liveCertificates} live certificate(s) signed by CA ${ca.caCertificateId} remain: let their devices rotate to the current CA (POST /devices/{deviceId}/rotate, or a rotation campaign), or send {"force": true} to strand them.`,
          { details: { caCertificateId: ca.caCertificateId, liveCertificates: usage.liveCertificates, deviceIds: usage.deviceIds } },
        );
      }
      await recorder.registry.setCaCertificateStatus(ca.caCertificateId, 'INACTIVE');
      const answer: CaDeactivated = {
        caCertificateId: ca.caCertificateId,
        status: 'INACTIVE',
        autoRegistrationStatus: 'DISABLE',
        liveCertificates: usage.liveCertificates,
        strandedCertificates: usage.liveCertificates,
        deviceIds: usage.deviceIds,
        forced: force,
        deactivatedAt: now.toISOString(),
      };
      const reason = force ? `deactivated with force: ${usage.liveCertificates} live certificate(s) stranded` : 'deactivated: no live certificate left on it';
      await run.commit(
        { events: [recorder.event('CA_DEACTIVATED', command.actor, run.record.operationId, { certificateId: ca.caCertificateId, fromStatus: 'ACTIVE', toStatus: 'INACTIVE', reason })] },
        { status: 'DONE', progress: { answer: JSON.stringify(answer) } },
      );
      return answer;
    },
    async (record) => JSON.parse(record.progress?.answer ?? '{}') as CaDeactivated,
  );
}
