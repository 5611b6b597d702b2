import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { daysLeft, FleetCaCensus } from '../../../functions/core/expiry';
import { fleetCaOfRegistration, fleetCasOf, issuingFleetCaOf } from '../../../functions/core/fleet-cas';
import type { CaCertificates } from '../../../functions/core/ports';
import { certificateIdOf } from '../../../functions/core/x509';
import { InMemoryDeviceStore } from '../../support/in-memory-store';
import { makeCa, type TestCa } from '../../support/pki';
import { certificateRecord, deviceRecord } from '../../support/records';

// Two CAs with the same name (as a CA rotation that keeps the subject does): only the signature tells them apart.
let oldCa: TestCa;
let newCa: TestCa;
let foreignCa: TestCa;
let cas: CaCertificates;
beforeAll(async () => {
  [oldCa, newCa, foreignCa] = await Promise.all([makeCa('Fleet CA'), makeCa('Fleet CA'), makeCa('Fleet CA')]);
  cas = { certificatePem: newCa.certificatePem, certificateChainPem: '', previous: [{ certificatePem: oldCa.certificatePem, certificateChainPem: '' }] };
});

describe('the fleet CAs', () => {
  test('lists the signing CA first, then the previous ones, each once', async () => {
    const listed = await fleetCasOf({ ...cas, previous: [...(cas.previous ?? []), { certificatePem: newCa.certificatePem, certificateChainPem: '' }] });

    expect(listed.map((ca) => ca.role)).toEqual(['current', 'previous']);
    expect(listed.map((ca) => ca.caCertificateId)).toEqual([await certificateIdOf(newCa.certificatePem), await certificateIdOf(oldCa.certificatePem)]);
  });

  test('a registration event for the previous CA is one of ours; one for another CA is not', async () => {
    const listed = await fleetCasOf(cas);

    expect((await fleetCaOfRegistration(listed, await certificateIdOf(oldCa.certificatePem)))?.role).toBe('previous');
    expect(await fleetCaOfRegistration(listed, await certificateIdOf(foreignCa.certificatePem))).toBeUndefined();
  });

  test('places a certificate on the CA that signed it, by signature, even when the CAs share a name', async () => {
    const listed = await fleetCasOf(cas);

    expect((await issuingFleetCaOf(listed, await oldCa.issue('device-1')))?.role).toBe('previous');
    expect((await issuingFleetCaOf(listed, await newCa.issue('device-1')))?.role).toBe('current');
    expect(await issuingFleetCaOf(listed, await foreignCa.issue('device-1'))).toBeUndefined();
  });

  // The CAs are read once per set of certificates (fleet-cas.ts): a rotation must still be seen at once.
  test('a CA rotation is seen by the next call, and an answer changed by its caller does not change the next one', async () => {
    const before = await fleetCasOf(cas);
    before.pop();
    expect((await fleetCasOf(cas)).map((ca) => ca.role)).toEqual(['current', 'previous']);

    const rotated = await fleetCasOf({ certificatePem: foreignCa.certificatePem, certificateChainPem: '', previous: [{ certificatePem: newCa.certificatePem, certificateChainPem: '' }] });

    expect(rotated.map((ca) => ca.caCertificateId)).toEqual([await certificateIdOf(foreignCa.certificatePem), await certificateIdOf(newCa.certificatePem)]);
    expect(await fleetCaOfRegistration(rotated, await certificateIdOf(oldCa.certificatePem))).toBeUndefined();
    expect((await fleetCaOfRegistration(rotated, await certificateIdOf(foreignCa.certificatePem)))?.role).toBe('current');
  });

  test('a CA of the chain above the signing CA counts as that CA, every time it is asked', async () => {
    const listed = await fleetCasOf({ certificatePem: newCa.certificatePem, certificateChainPem: foreignCa.certificatePem });

    for (let attempt = 0; attempt < 2; attempt += 1) {
      expect((await fleetCaOfRegistration(listed, await certificateIdOf(foreignCa.certificatePem)))?.caCertificateId).toBe(await certificateIdOf(newCa.certificatePem));
      expect(await fleetCaOfRegistration(listed, await certificateIdOf(oldCa.certificatePem))).toBeUndefined();
    }
  });
});

describe('the census of the fleet CAs', () => {
  const NOW = new Date();
  const FUTURE = new Date(NOW.getTime() + 30 * 86_400_000).toISOString();
  const PAST = new Date(NOW.getTime() - 86_400_000).toISOString();

  async function fleet() {
    const store = new InMemoryDeviceStore();
    const add = async (deviceId: string, certificates: { ca: TestCa; notAfter?: string; status?: 'ACTIVE' | 'RETIRED'; subject?: string }[], deviceStatus: 'ACTIVE' | 'SUSPENDED' = 'ACTIVE') => {
      store.devices.set(deviceId, deviceRecord(deviceId, { status: deviceStatus }));
      for (const [index, certificate] of certificates.entries()) {
        const pem = await certificate.ca.issue(deviceId);
        const id = `${deviceId}-${index}`.padEnd(64, '0');
        store.certificates.set(
          id,
          certificateRecord(id, deviceId, certificate.notAfter ?? FUTURE, { certificatePem: pem, status: certificate.status ?? 'ACTIVE', createdAt: `2026-01-0${index + 1}T00:00:00.000Z`, ...(certificate.subject ? { subject: certificate.subject, purpose: 'BOOTSTRAP' as const } : {}) }),
        );
      }
    };
    await add('on-old', [{ ca: oldCa }]);
    await add('moved', [{ ca: oldCa, status: 'RETIRED' }, { ca: newCa }]);
    await add('on-new', [{ ca: newCa }]);
    await add('suspended-on-old', [{ ca: oldCa }], 'SUSPENDED');
    await add('expired', [{ ca: oldCa, notAfter: PAST }]);
    await add('expired-with-bootstrap', [{ ca: newCa, notAfter: PAST }, { ca: newCa, subject: 'CN=expired-with-bootstrap, OU=bootstrap' }]);
    await add('rotated-in-time', [{ ca: oldCa, notAfter: PAST }, { ca: newCa }]);
    await add('foreign', [{ ca: foreignCa }]);
    return store;
  }

  test('counts the ACTIVE certificates of ACTIVE devices per CA, page by page, and the devices that expired without rotating', async () => {
    // Prepare
    const store = await fleet();
    const census = new FleetCaCensus({ store, ca: { getCaCertificates: async () => cas }, clock: { now: () => NOW } }, { pageSize: 2 });

    // Act
    const report = await census.run();

    // Assess: the expired certificates are still ACTIVE on record, so they count on their CA
    const [current, previous] = report.cas;
    expect(current).toMatchObject({ role: 'current', liveCertificates: 4 /* a bootstrap certificate is not counted */ });
    expect([...(current?.deviceIds ?? [])].sort()).toEqual(['expired-with-bootstrap', 'moved', 'on-new', 'rotated-in-time']);
    expect(previous).toMatchObject({ role: 'previous', liveCertificates: 3 });
    expect([...(previous?.deviceIds ?? [])].sort()).toEqual(['expired', 'on-old', 'rotated-in-time']);
    expect(report.unknownIssuer).toBe(1);
    expect(report.devicesExpiredWithoutRotation).toBe(2);
    expect([...report.expiredDeviceIds].sort()).toEqual(['expired', 'expired-with-bootstrap']);
    expect(report.devicesChecked).toBe(7 /* every ACTIVE device */);
    expect(previous?.daysLeft).toBe(daysLeft(new x509.X509Certificate(oldCa.certificatePem).notAfter, NOW));
  });
});
