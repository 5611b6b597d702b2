import { DRIFT_CHECK_CALLER, DRIFT_CURSOR_OPERATION_ID, DriftCheck, decideDrift, type DriftCheckSettings, type DriftKind, type RegistryObservation } from '../../../functions/core/drift';
import { UpstreamError, ValidationError } from '../../../functions/core/errors';
import type { CertificateRecord, CertificateStatus, Device, DeviceStatus } from '../../../functions/core/model';
import type { RegistryCertificateStatus } from '../../../functions/core/ports';
import { createLifecycleFixture, type LifecycleFixture } from '../../support/lifecycle-fixture';
import type { InMemoryDeviceStore } from '../../support/in-memory-store';
import { makeCsr } from '../../support/pki';

const actor = { actor: 'arn:aws:iam::123456789012:role/operator' };
const DAY_MS = 86_400_000;

type Fixture = LifecycleFixture<InMemoryDeviceStore>;

/** A device onboarded through the API: ACTIVE, with one ACTIVE certificate on record and in the registry. */
async function onboarded(fixture: Fixture, deviceId: string): Promise<string> {
  await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, ...actor, requestKey: `pre-${deviceId}` });
  const issued = await fixture.lifecycle.issueFromCsr({ deviceId, csrPem: (await makeCsr(deviceId)).csrPem, ...actor, requestKey: `issue-${deviceId}` });
  return issued.certificateId;
}

/** What a person does in the AWS IoT console (or a step that never reached AWS IoT leaves): the registry alone changes. */
function setInRegistry(fixture: Fixture, certificateId: string, status: RegistryCertificateStatus): void {
  const certificate = fixture.registry.findCertificate(certificateId);
  if (!certificate) throw new Error(`${certificateId} is not in the registry`);
  certificate.status = status;
}

/** What a change that stopped half-way leaves: the record alone changes (a new version, as any write). */
function setOnRecord(fixture: Fixture, certificateId: string, overrides: Partial<CertificateRecord>): void {
  const current = fixture.store.certificates.get(certificateId);
  if (!current) throw new Error(`${certificateId} is not on record`);
  fixture.store.certificates.set(certificateId, { ...current, ...overrides, version: current.version + 1 });
}

function setDevice(fixture: Fixture, deviceId: string, overrides: Partial<Device>): void {
  const current = fixture.store.devices.get(deviceId);
  if (!current) throw new Error(`${deviceId} is not on record`);
  fixture.store.devices.set(deviceId, { ...current, ...overrides, version: current.version + 1 });
}

const registryStatus = (fixture: Fixture, certificateId: string) => fixture.registry.findCertificate(certificateId)?.status;
const driftCheck = (fixture: Fixture, settings: DriftCheckSettings = {}) => new DriftCheck({ store: fixture.store, registry: fixture.registry, clock: fixture.clock }, settings);

describe('decideDrift: who decides a disagreement', () => {
  test.each<[DeviceStatus, CertificateStatus, RegistryObservation, DriftKind, 'INACTIVE' | 'REVOKED' | undefined]>([
    // The record decides: repaired in AWS IoT.
    ['ACTIVE', 'REVOKED', 'ACTIVE', 'REVOKED_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['ACTIVE', 'REVOKED', 'INACTIVE', 'REVOKED_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['SUSPENDED', 'REVOKED', 'PENDING_ACTIVATION', 'REVOKED_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['ACTIVE', 'RETIRED', 'ACTIVE', 'RETIRED_CERTIFICATE_ACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'INACTIVE', 'ACTIVE', 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'ACTIVE', 'ACTIVE', 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'PENDING_ACTIVATION', 'ACTIVE', 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', 'INACTIVE'],
    ['REVOKED', 'ACTIVE', 'ACTIVE', 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['REVOKED', 'INACTIVE', 'INACTIVE', 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['REVOKED', 'PENDING_ACTIVATION', 'PENDING_ACTIVATION', 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    ['DECOMMISSIONED', 'ACTIVE', 'ACTIVE', 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', 'REVOKED'],
    // AWS IoT holds what someone did there: reported only.
    ['ACTIVE', 'ACTIVE', 'INACTIVE', 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE', undefined],
    ['ACTIVE', 'ACTIVE', 'REVOKED', 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE', undefined],
    ['REGISTERED', 'ACTIVE', 'REVOKED', 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE', undefined],
    ['SUSPENDED', 'INACTIVE', 'REVOKED', 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE', undefined],
    ['ACTIVE', 'ACTIVE', 'NOT_FOUND', 'CERTIFICATE_NOT_IN_REGISTRY', undefined],
    ['SUSPENDED', 'INACTIVE', 'NOT_FOUND', 'CERTIFICATE_NOT_IN_REGISTRY', undefined],
    ['ACTIVE', 'ACTIVE', 'PENDING_ACTIVATION', 'STATUS_MISMATCH', undefined],
    ['ACTIVE', 'PENDING_ACTIVATION', 'ACTIVE', 'STATUS_MISMATCH', undefined],
    ['ACTIVE', 'RETIRED', 'PENDING_ACTIVATION', 'STATUS_MISMATCH', undefined],
    ['ACTIVE', 'REJECTED', 'ACTIVE', 'STATUS_MISMATCH', undefined],
  ])('device %s, record %s, AWS IoT %s: %s, repair %s', (device, record, registry, kind, repair) => {
    expect(decideDrift(device, record, registry)).toEqual(repair ? { kind, repair } : { kind });
  });

  test.each<[DeviceStatus, CertificateStatus, RegistryObservation]>([
    ['ACTIVE', 'ACTIVE', 'ACTIVE'],
    ['REGISTERED', 'PENDING_ACTIVATION', 'PENDING_ACTIVATION'],
    // A resume on its way: AWS IoT first, then the record.
    ['ACTIVE', 'INACTIVE', 'ACTIVE'],
    ['ACTIVE', 'INACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'ACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'INACTIVE', 'INACTIVE'],
    ['SUSPENDED', 'PENDING_ACTIVATION', 'PENDING_ACTIVATION'],
    ['REVOKED', 'ACTIVE', 'REVOKED'],
    ['ACTIVE', 'REVOKED', 'REVOKED'],
    ['ACTIVE', 'RETIRED', 'INACTIVE'],
    ['ACTIVE', 'RETIRED', 'REVOKED'],
    ['ACTIVE', 'REJECTED', 'REVOKED'],
    // Not live on record, unknown to AWS IoT: it cannot connect either way (an issuance withdrawn before its registration).
    ['ACTIVE', 'REVOKED', 'NOT_FOUND'],
    ['ACTIVE', 'RETIRED', 'NOT_FOUND'],
  ])('device %s, record %s, AWS IoT %s: they agree', (device, record, registry) => {
    expect(decideDrift(device, record, registry)).toBeUndefined();
  });
});

describe('the drift check: repairs', () => {
  let fixture: Fixture;
  beforeEach(async () => {
    fixture = await createLifecycleFixture();
  });

  test('a healthy fleet: every certificate checked, nothing found, nothing changed', async () => {
    for (const id of ['meter-1', 'meter-2', 'meter-3']) await onboarded(fixture, id);
    const updates = jest.spyOn(fixture.registry, 'updateCertificateStatus');

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 3, findings: [], repaired: 0, failures: 0, skipped: 0, stoppedBy: 'PASS_COMPLETED' });
    expect(updates).not.toHaveBeenCalled();
  });

  test.each<RegistryCertificateStatus>(['ACTIVE', 'INACTIVE', 'PENDING_ACTIVATION'])('a certificate REVOKED on record but %s in AWS IoT is revoked there (Device Defender: revoked certificate still active)', async (status) => {
    const certificateId = await onboarded(fixture, 'meter-1');
    setOnRecord(fixture, certificateId, { status: 'REVOKED', revocationReason: 'KEY_COMPROMISE' });
    setInRegistry(fixture, certificateId, status);

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([
      { deviceId: 'meter-1', certificateId, deviceStatus: 'ACTIVE', recordStatus: 'REVOKED', registryStatus: status, kind: 'REVOKED_CERTIFICATE_NOT_REVOKED', repair: 'REVOKED', repaired: true },
    ]);
    expect(report.repaired).toBe(1);
    expect(registryStatus(fixture, certificateId)).toBe('REVOKED');
  });

  test('a certificate a committed rotation RETIRED, set ACTIVE again in AWS IoT, is deactivated', async () => {
    const previous = await onboarded(fixture, 'meter-1');
    const sender = { thingName: 'meter-1', clientId: 'meter-1' };
    const rotated = await fixture.lifecycle.requestRotation({ ...sender, principal: previous, requestId: 'r-1', csrPem: (await makeCsr('meter-1')).csrPem });
    await fixture.lifecycle.commitRotation({ ...sender, principal: rotated.certificateId, requestId: 'r-1', certificateId: rotated.certificateId });
    expect(fixture.store.certificates.get(previous)?.status).toBe('RETIRED');
    setInRegistry(fixture, previous, 'ACTIVE');

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([expect.objectContaining({ certificateId: previous, recordStatus: 'RETIRED', registryStatus: 'ACTIVE', kind: 'RETIRED_CERTIFICATE_ACTIVE', repair: 'INACTIVE', repaired: true })]);
    expect(registryStatus(fixture, previous)).toBe('INACTIVE');
    expect(registryStatus(fixture, rotated.certificateId)).toBe('ACTIVE');
  });

  test('a suspended device whose certificate was set ACTIVE again in AWS IoT gets it deactivated', async () => {
    const certificateId = await onboarded(fixture, 'meter-1');
    await fixture.lifecycle.suspendDevice({ deviceId: 'meter-1', ...actor, requestKey: 'suspend-1' });
    expect(fixture.store.certificates.get(certificateId)?.status).toBe('INACTIVE');
    setInRegistry(fixture, certificateId, 'ACTIVE');

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([expect.objectContaining({ deviceStatus: 'SUSPENDED', recordStatus: 'INACTIVE', registryStatus: 'ACTIVE', kind: 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', repair: 'INACTIVE', repaired: true })]);
    expect(registryStatus(fixture, certificateId)).toBe('INACTIVE');
  });

  test('a suspension that stopped before the certificate (device SUSPENDED, certificate still ACTIVE everywhere) is finished in AWS IoT', async () => {
    const certificateId = await onboarded(fixture, 'meter-1');
    setDevice(fixture, 'meter-1', { status: 'SUSPENDED' });

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([expect.objectContaining({ recordStatus: 'ACTIVE', kind: 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', repaired: true })]);
    expect(registryStatus(fixture, certificateId)).toBe('INACTIVE');
  });

  test('a revoked device whose revocation stopped before a certificate: that certificate is revoked in AWS IoT; the record is left to the revocation\'s retry', async () => {
    const certificateId = await onboarded(fixture, 'meter-1');
    setDevice(fixture, 'meter-1', { status: 'REVOKED', revocationReason: 'KEY_COMPROMISE' });

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([expect.objectContaining({ deviceStatus: 'REVOKED', recordStatus: 'ACTIVE', registryStatus: 'ACTIVE', kind: 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', repair: 'REVOKED', repaired: true })]);
    expect(registryStatus(fixture, certificateId)).toBe('REVOKED');
    expect(fixture.store.certificates.get(certificateId)?.status).toBe('ACTIVE');
  });

  test('a repair AWS IoT refuses is reported not repaired, with why, and the run goes on', async () => {
    const first = await onboarded(fixture, 'meter-1');
    const second = await onboarded(fixture, 'meter-2');
    for (const id of [first, second]) setOnRecord(fixture, id, { status: 'REVOKED' });
    jest.spyOn(fixture.registry, 'updateCertificateStatus').mockRejectedValueOnce(new UpstreamError('UPSTREAM_THROTTLED', 'AWS IoT UpdateCertificate was throttled.', true));

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([
      expect.objectContaining({ certificateId: first, repaired: false, error: 'AWS IoT UpdateCertificate was throttled.' }),
      expect.objectContaining({ certificateId: second, repaired: true }),
    ]);
    expect(report).toMatchObject({ repaired: 1, failures: 1, stoppedBy: 'PASS_COMPLETED' });
  });
});

describe('the drift check: reported only', () => {
  let fixture: Fixture;
  beforeEach(async () => {
    fixture = await createLifecycleFixture();
  });

  test.each<RegistryCertificateStatus>(['INACTIVE', 'REVOKED'])('an ACTIVE certificate of an ACTIVE device set %s in the AWS IoT console is reported, not touched', async (status) => {
    const certificateId = await onboarded(fixture, 'meter-1');
    setInRegistry(fixture, certificateId, status);
    const updates = jest.spyOn(fixture.registry, 'updateCertificateStatus');

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([
      { deviceId: 'meter-1', certificateId, deviceStatus: 'ACTIVE', recordStatus: 'ACTIVE', registryStatus: status, kind: 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE', repaired: false },
    ]);
    expect(report.repaired).toBe(0);
    expect(updates).not.toHaveBeenCalled();
    expect(registryStatus(fixture, certificateId)).toBe(status);
  });

  test('a live certificate AWS IoT does not know is reported', async () => {
    await onboarded(fixture, 'meter-1');
    const unknown = 'f'.repeat(64);
    const template = [...fixture.store.certificates.values()][0] as CertificateRecord;
    fixture.store.certificates.set(unknown, { ...template, certificateId: unknown, createdAt: new Date(fixture.clock.now().getTime() + 1).toISOString() });

    const report = await driftCheck(fixture).run();

    expect(report.findings).toEqual([expect.objectContaining({ certificateId: unknown, registryStatus: 'NOT_FOUND', kind: 'CERTIFICATE_NOT_IN_REGISTRY', repaired: false })]);
    expect(report.failures).toBe(0);
  });
});

describe('the drift check: what it leaves alone', () => {
  let fixture: Fixture;
  beforeEach(async () => {
    fixture = await createLifecycleFixture();
  });

  test.each<'COMMITTING' | 'WITHDRAWING'>(['COMMITTING', 'WITHDRAWING'])('the two certificates of a rotation %s are skipped: the rotation\'s own steps finish them', async (state) => {
    const previous = await onboarded(fixture, 'meter-1');
    const rotated = await fixture.lifecycle.requestRotation({ thingName: 'meter-1', clientId: 'meter-1', principal: previous, requestId: 'r-1', csrPem: (await makeCsr('meter-1')).csrPem });
    const device = fixture.store.devices.get('meter-1') as Device;
    setDevice(fixture, 'meter-1', { rotation: { ...(device.rotation as NonNullable<Device['rotation']>), state } });
    // Half-way: the record already says what the rotation decided, AWS IoT not yet.
    setOnRecord(fixture, previous, { status: 'RETIRED' });
    setOnRecord(fixture, rotated.certificateId, { status: 'REVOKED' });
    const described = jest.spyOn(fixture.registry, 'describeCertificate');

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 0, findings: [], skipped: 2 });
    expect(described).not.toHaveBeenCalled();
    expect(registryStatus(fixture, previous)).toBe('ACTIVE');
  });

  test('a rotation still waiting for its commit is checked like any other', async () => {
    const previous = await onboarded(fixture, 'meter-1');
    await fixture.lifecycle.requestRotation({ thingName: 'meter-1', clientId: 'meter-1', principal: previous, requestId: 'r-1', csrPem: (await makeCsr('meter-1')).csrPem });

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 2, findings: [], skipped: 0 });
  });

  test('a first connect whose activation lease still runs is skipped; once the lease is over, the half-done activation is reported', async () => {
    const certificateId = await onboarded(fixture, 'meter-1');
    const leaseUntil = new Date(fixture.clock.now().getTime() + 60_000).toISOString();
    setOnRecord(fixture, certificateId, { status: 'PENDING_ACTIVATION', activationLeaseUntil: leaseUntil, activationLeaseHolder: 'delivery-1' });

    expect(await driftCheck(fixture).run()).toMatchObject({ checked: 0, skipped: 1, findings: [] });

    fixture.clock.advance(120_000);
    const later = await driftCheck(fixture).run();
    expect(later.findings).toEqual([expect.objectContaining({ recordStatus: 'PENDING_ACTIVATION', registryStatus: 'ACTIVE', kind: 'STATUS_MISMATCH', repaired: false })]);
  });

  test('expired and REJECTED certificates are not asked of AWS IoT', async () => {
    const expired = await onboarded(fixture, 'meter-1');
    const rejected = await onboarded(fixture, 'meter-2');
    setOnRecord(fixture, expired, { notAfter: new Date(fixture.clock.now().getTime() - 1).toISOString() });
    setOnRecord(fixture, rejected, { status: 'REJECTED' });
    const described = jest.spyOn(fixture.registry, 'describeCertificate');

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 0, findings: [], skipped: 0, stoppedBy: 'PASS_COMPLETED' });
    expect(described).not.toHaveBeenCalled();
  });

  test('a disagreement whose device changed on record while AWS IoT was read is left to the change in progress (re-read, then decide)', async () => {
    const certificateId = await onboarded(fixture, 'meter-1');
    setDevice(fixture, 'meter-1', { status: 'SUSPENDED' });
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    // A resume lands between the walk's read and AWS IoT's answer: the store first, then AWS IoT ACTIVE.
    jest.spyOn(fixture.registry, 'describeCertificate').mockImplementationOnce(async (id) => {
      setDevice(fixture, 'meter-1', { status: 'ACTIVE' });
      return describe(id);
    });

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 1, findings: [], skipped: 1 });
    expect(registryStatus(fixture, certificateId)).toBe('ACTIVE');
  });
});

describe('the drift check: a bounded slice per run, continued by the next', () => {
  let fixture: Fixture;
  beforeEach(async () => {
    fixture = await createLifecycleFixture();
  });

  test('checks at most maxCertificatesPerRun certificates a run, and the next runs go on where it stopped until the pass is complete', async () => {
    const ids: string[] = [];
    for (const device of ['meter-1', 'meter-2', 'meter-3', 'meter-4', 'meter-5']) ids.push(await onboarded(fixture, device));
    for (const id of ids) setOnRecord(fixture, id, { status: 'REVOKED' });
    const described: string[] = [];
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'describeCertificate').mockImplementation(async (id) => {
      described.push(id);
      return describe(id);
    });
    const check = driftCheck(fixture, { maxCertificatesPerRun: 2, devicesPerPage: 2 });

    const runs = [await check.run(), await check.run(), await check.run()];

    expect(runs.map((run) => [run.checked, run.stoppedBy])).toEqual([
      [2, 'LIMIT_REACHED'],
      [2, 'LIMIT_REACHED'],
      [1, 'PASS_COMPLETED'],
    ]);
    // Every certificate once, in the store's order: nothing skipped, nothing twice.
    expect(described).toEqual(ids);
    expect(runs.flatMap((run) => run.findings.map((finding) => finding.certificateId))).toEqual(ids);
    expect(new Set(runs.map((run) => run.passStartedAt)).size).toBe(1);
    for (const id of ids) expect(registryStatus(fixture, id)).toBe('REVOKED');

    // The next run starts a new pass, from the first device.
    fixture.clock.advance(DAY_MS);
    const next = await check.run();
    expect(next).toMatchObject({ checked: 2, findings: [], stoppedBy: 'LIMIT_REACHED', passStartedAt: fixture.clock.now().toISOString() });
    expect(described.slice(5)).toEqual(ids.slice(0, 2));
  });

  test('stops inside a device with several certificates and goes on with its next certificate', async () => {
    const previous = await onboarded(fixture, 'meter-1');
    const rotated = await fixture.lifecycle.requestRotation({ thingName: 'meter-1', clientId: 'meter-1', principal: previous, requestId: 'r-1', csrPem: (await makeCsr('meter-1')).csrPem });
    const other = await onboarded(fixture, 'meter-2');
    const described = jest.spyOn(fixture.registry, 'describeCertificate');
    const check = driftCheck(fixture, { maxCertificatesPerRun: 1 });

    for (let run = 0; run < 3; run += 1) await check.run();

    expect(described.mock.calls.map(([id]) => id)).toEqual([previous, rotated.certificateId, other]);
  });

  test('keeps its cursor in an operation record of its own caller, written on condition of its version', async () => {
    for (const device of ['meter-1', 'meter-2', 'meter-3']) await onboarded(fixture, device);

    await driftCheck(fixture, { maxCertificatesPerRun: 1, devicesPerPage: 2 }).run();

    const record = fixture.store.operations.get(DRIFT_CURSOR_OPERATION_ID);
    expect(record).toMatchObject({ caller: DRIFT_CHECK_CALLER, handle: 'cursor', status: 'PENDING', progress: { deviceId: 'meter-2', passStartedAt: fixture.clock.now().toISOString() } });
    expect(record?.progress).not.toHaveProperty('pageToken');
    expect(record?.progress).not.toHaveProperty('afterCertificateId');
  });

  test('a run whose cursor another run moved meanwhile stops (superseded) instead of writing over it', async () => {
    for (const device of ['meter-1', 'meter-2', 'meter-3']) await onboarded(fixture, device);
    await driftCheck(fixture, { maxCertificatesPerRun: 1 }).run();
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'describeCertificate').mockImplementationOnce(async (id) => {
      // Another run saves its cursor while this one is checking.
      const stored = fixture.store.operations.get(DRIFT_CURSOR_OPERATION_ID);
      if (stored) fixture.store.operations.set(DRIFT_CURSOR_OPERATION_ID, { ...stored, version: stored.version + 1 });
      return describe(id);
    });

    const report = await driftCheck(fixture, { maxCertificatesPerRun: 1 }).run();

    expect(report).toMatchObject({ checked: 1, stoppedBy: 'SUPERSEDED' });
  });

  test('stops at its deadline and the next run goes on from there', async () => {
    const ids = [await onboarded(fixture, 'meter-1'), await onboarded(fixture, 'meter-2')];
    const deadline = new Date(fixture.clock.now().getTime() + 1000);
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    const described = jest.spyOn(fixture.registry, 'describeCertificate').mockImplementation(async (id) => {
      fixture.clock.advance(1000);
      return describe(id);
    });

    const first = await driftCheck(fixture).run({ deadline });
    const second = await driftCheck(fixture).run();

    expect([first.checked, first.stoppedBy, second.checked, second.stoppedBy]).toEqual([1, 'DEADLINE', 1, 'PASS_COMPLETED']);
    expect(described.mock.calls.map(([id]) => id)).toEqual(ids);
  });

  test('a saved page token the store no longer accepts starts the pass over instead of stopping the check for good', async () => {
    const ids: string[] = [];
    for (const device of ['meter-1', 'meter-2', 'meter-3']) ids.push(await onboarded(fixture, device));
    await driftCheck(fixture, { maxCertificatesPerRun: 2, devicesPerPage: 2 }).run();
    expect(fixture.store.operations.get(DRIFT_CURSOR_OPERATION_ID)?.progress).toHaveProperty('pageToken');
    const list = fixture.store.listDevices.bind(fixture.store);
    jest.spyOn(fixture.store, 'listDevices').mockImplementationOnce(async () => {
      throw new ValidationError('INVALID_REQUEST', 'nextToken is not valid for this query: pass the token from the previous page of the same query.');
    });
    jest.spyOn(fixture.store, 'listDevices').mockImplementation(list);
    const described = jest.spyOn(fixture.registry, 'describeCertificate');

    const report = await driftCheck(fixture, { devicesPerPage: 2 }).run();

    expect(report).toMatchObject({ checked: 3, stoppedBy: 'PASS_COMPLETED' });
    expect(described.mock.calls.map(([id]) => id)).toEqual(ids);
  });

  test.each([{ maxCertificatesPerRun: 0 }, { devicesPerPage: 1.5 }, { maxConsecutiveFailures: -1 }])('rejects the setting %j', (settings) => {
    expect(() => driftCheck(fixture, settings)).toThrow(/must be a whole number of at least 1/);
  });
});

describe('the drift check: registry failures', () => {
  let fixture: Fixture;
  beforeEach(async () => {
    fixture = await createLifecycleFixture();
  });

  test('a certificate AWS IoT fails to describe is counted and named, and the run goes on with the others', async () => {
    const ids = [await onboarded(fixture, 'meter-1'), await onboarded(fixture, 'meter-2'), await onboarded(fixture, 'meter-3')];
    for (const id of ids) setOnRecord(fixture, id, { status: 'REVOKED' });
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'describeCertificate').mockImplementation(async (id) => {
      if (id === ids[1]) throw new UpstreamError('UPSTREAM_THROTTLED', 'AWS IoT DescribeCertificate was throttled.', true);
      return describe(id);
    });

    const report = await driftCheck(fixture).run();

    expect(report).toMatchObject({ checked: 3, repaired: 2, failures: 1, stoppedBy: 'PASS_COMPLETED' });
    expect(report.failureSamples).toEqual([{ deviceId: 'meter-2', certificateId: ids[1], error: 'AWS IoT DescribeCertificate was throttled.' }]);
    expect(report.findings.map((finding) => finding.certificateId)).toEqual([ids[0], ids[2]]);
  });

  test('stops after maxConsecutiveFailures failures in a row, and the next run starts again at the first of them', async () => {
    const ids: string[] = [];
    for (const device of ['meter-1', 'meter-2', 'meter-3', 'meter-4']) ids.push(await onboarded(fixture, device));
    const describe = fixture.registry.describeCertificate.bind(fixture.registry);
    const described = jest.spyOn(fixture.registry, 'describeCertificate').mockImplementation(async (id) => {
      if (id !== ids[0]) throw new UpstreamError('UPSTREAM_FAILURE', 'AWS IoT DescribeCertificate failed (AccessDeniedException).', false);
      return describe(id);
    });

    const report = await driftCheck(fixture, { maxConsecutiveFailures: 2 }).run();

    expect(report).toMatchObject({ checked: 3, failures: 2, stoppedBy: 'FAILURES' });
    described.mockImplementation(describe);
    described.mockClear();
    await driftCheck(fixture).run();
    expect(described.mock.calls.map(([id]) => id)).toEqual(ids.slice(1));
  });
});
