import 'reflect-metadata';
import { fleetCasOf } from '../../../functions/core/fleet-cas';
import type { CertificateStatus, DeviceStatus } from '../../../functions/core/model';
import { MAX_LISTED_DEVICES_OF_A_CA, usageOfCa } from '../../../functions/core/use-cases/deactivate-ca';
import { InMemoryDeviceStore } from '../../support/in-memory-store';
import { makeCa, type TestCa } from '../../support/pki';
import { certificateRecord, deviceRecord } from '../../support/records';

// Two CAs with the same name: only the signature places a certificate.
let oldCa: TestCa;
let newCa: TestCa;
beforeAll(async () => {
  [oldCa, newCa] = await Promise.all([makeCa('Fleet CA'), makeCa('Fleet CA')]);
});

const NOW = new Date('2026-11-30T12:00:00.000Z');
const FUTURE = new Date(NOW.getTime() + 30 * 86_400_000).toISOString();
const PAST = new Date(NOW.getTime() - 86_400_000).toISOString();

describe('what still depends on a CA before it is deactivated', () => {
  async function store(devices: { deviceId: string; status?: DeviceStatus; certificates: { ca: TestCa; status?: CertificateStatus; notAfter?: string; purpose?: 'BOOTSTRAP' }[] }[]) {
    const held = new InMemoryDeviceStore();
    for (const device of devices) {
      held.devices.set(device.deviceId, deviceRecord(device.deviceId, { status: device.status ?? 'ACTIVE' }));
      for (const [index, certificate] of device.certificates.entries()) {
        const id = `${device.deviceId}-${index}`.padEnd(64, '0');
        held.certificates.set(
          id,
          certificateRecord(id, device.deviceId, certificate.notAfter ?? FUTURE, {
            certificatePem: await certificate.ca.issue(device.deviceId),
            status: certificate.status ?? 'ACTIVE',
            ...(certificate.purpose ? { purpose: certificate.purpose } : {}),
          }),
        );
      }
    }
    return held;
  }

  async function usage(held: InMemoryDeviceStore, pageSize = 2) {
    const cas = await fleetCasOf({ certificatePem: newCa.certificatePem, certificateChainPem: '', previous: [{ certificatePem: oldCa.certificatePem, certificateChainPem: '' }] });
    return usageOfCa(held, cas, cas[1]!, NOW, { pageSize });
  }

  test('counts the unexpired ACTIVE, INACTIVE and PENDING_ACTIVATION certificates the CA signed for REGISTERED, ACTIVE and SUSPENDED devices, page by page', async () => {
    // Prepare
    const held = await store([
      { deviceId: 'active', certificates: [{ ca: oldCa }] },
      { deviceId: 'suspended', status: 'SUSPENDED', certificates: [{ ca: oldCa, status: 'INACTIVE' }] },
      { deviceId: 'registered', status: 'REGISTERED', certificates: [{ ca: oldCa, status: 'PENDING_ACTIVATION' }] },
      { deviceId: 'bootstrap-only', certificates: [{ ca: oldCa, purpose: 'BOOTSTRAP' }] },
      { deviceId: 'moved', certificates: [{ ca: oldCa, status: 'RETIRED' }, { ca: newCa }] },
      { deviceId: 'expired', certificates: [{ ca: oldCa, notAfter: PAST }] },
      { deviceId: 'revoked-device', status: 'REVOKED', certificates: [{ ca: oldCa, status: 'REVOKED' }] },
      { deviceId: 'decommissioned', status: 'DECOMMISSIONED', certificates: [{ ca: oldCa, status: 'INACTIVE' }] },
      { deviceId: 'on-new', certificates: [{ ca: newCa }] },
    ]);

    // Act
    const counted = await usage(held);

    // Assess
    expect(counted.liveCertificates).toBe(4);
    expect([...counted.deviceIds].sort()).toEqual(['active', 'bootstrap-only', 'registered', 'suspended']);
  });

  test('lists at most a few devices however many remain, and counts them all', async () => {
    // Prepare
    const many = Array.from({ length: MAX_LISTED_DEVICES_OF_A_CA + 5 }, (_, index) => ({ deviceId: `device-${String(index).padStart(2, '0')}`, certificates: [{ ca: oldCa }] }));
    const held = await store(many);

    // Act
    const counted = await usage(held, 4);

    // Assess
    expect(counted.liveCertificates).toBe(MAX_LISTED_DEVICES_OF_A_CA + 5);
    expect(counted.deviceIds).toHaveLength(MAX_LISTED_DEVICES_OF_A_CA);
  });

  test('counts nothing on a CA whose devices all rotated over', async () => {
    const held = await store([{ deviceId: 'moved', certificates: [{ ca: oldCa, status: 'RETIRED' }, { ca: newCa }] }]);

    expect(await usage(held)).toEqual({ liveCertificates: 0, deviceIds: [] });
  });
});
