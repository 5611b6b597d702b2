import { createLifecycleFixture } from '../../support/lifecycle-fixture';
import { makeCsr, makeForeignCa } from '../../support/pki';
import type { InMemoryDeviceStore } from '../../support/in-memory-store';
import type { LifecycleFixture } from '../../support/lifecycle-fixture';

/** A caller whose every spread is a new request (a fresh Idempotency-Key); a retry names its key itself. */
const actor = {
  actor: 'arn:aws:iam::123456789012:user/ops',
  get requestKey(): string {
    return globalThis.crypto.randomUUID();
  },
};

/** The next call of `method` never returns (an invocation that hung); resolves once that call is reached, so no test waits on wall time. */
function hangOnce<T extends object>(target: T, method: jest.FunctionPropertyNames<Required<T>>): Promise<void> {
  let reached!: () => void;
  const reachedCall = new Promise<void>((resolve) => (reached = resolve));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (jest.spyOn(target, method) as jest.SpyInstance<any>).mockImplementationOnce(() => {
    reached();
    return new Promise(() => undefined);
  });
  return reachedCall;
}

async function registeredByJitr(fixture: LifecycleFixture<InMemoryDeviceStore>, deviceId: string) {
  const pem = await fixture.mintCertificate(deviceId);
  const event = await fixture.firstConnect(pem);
  await fixture.lifecycle.registerOnFirstConnect(event);
  return event.certificateId;
}

describe('just-in-time registration', () => {
  test('activates a new device on first connect: thing, group, principal, ACTIVE certificate, audit trail', async () => {
    const fixture = await createLifecycleFixture();
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-1'));

    const outcome = await fixture.lifecycle.registerOnFirstConnect(event);

    expect(outcome).toEqual({ outcome: 'ACTIVATED', deviceId: 'sensor-1', certificateId: event.certificateId });
    expect(fixture.registry.findCertificate(event.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing('sensor-1')).toMatchObject({ thingGroups: ['fleet'], principals: [event.certificateId] });
    const view = await fixture.lifecycle.getDevice('sensor-1');
    expect(view.device).toMatchObject({ status: 'ACTIVE' });
    expect(view.certificates.map((c) => c.certificateId)).toEqual([event.certificateId]);
    expect(view.certificates).toEqual([expect.objectContaining({ status: 'ACTIVE', source: 'JITR' })]);
    expect(view.events.map((e) => e.type).sort()).toEqual(['CERTIFICATE_ACTIVATED', 'CERTIFICATE_REGISTERED', 'DEVICE_ACTIVATED', 'DEVICE_CREATED']);
  });

  test('the same event delivered twice in a row activates once and the second answers ALREADY_PROCESSED', async () => {
    const fixture = await createLifecycleFixture();
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-2'));
    const activations = jest.spyOn(fixture.registry, 'updateCertificateStatus');

    await fixture.lifecycle.registerOnFirstConnect(event);
    const second = await fixture.lifecycle.registerOnFirstConnect(event);

    expect(second).toEqual({ outcome: 'ALREADY_PROCESSED', certificateId: event.certificateId, status: 'ACTIVE' });
    expect(activations).toHaveBeenCalledTimes(1);
    expect(fixture.store.events.filter((e) => e.type === 'CERTIFICATE_ACTIVATED')).toHaveLength(1);
  });

  test('ten concurrent deliveries of one event make one activation, one record and one audit entry per change', async () => {
    const fixture = await createLifecycleFixture();
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-3'));
    const activations = jest.spyOn(fixture.registry, 'updateCertificateStatus');

    const outcomes = await Promise.all(Array.from({ length: 10 }, () => fixture.lifecycle.registerOnFirstConnect(event)));

    expect(outcomes.filter((o) => o.outcome === 'ACTIVATED')).toHaveLength(1);
    expect(outcomes.every((o) => ['ACTIVATED', 'IN_PROGRESS', 'ALREADY_PROCESSED'].includes(o.outcome))).toBe(true);
    expect(activations).toHaveBeenCalledTimes(1);
    expect([...fixture.store.certificates.values()]).toHaveLength(1);
    for (const type of ['DEVICE_CREATED', 'CERTIFICATE_REGISTERED', 'CERTIFICATE_ACTIVATED', 'DEVICE_ACTIVATED']) {
      expect(fixture.store.events.filter((e) => e.type === type)).toHaveLength(1);
    }
  });

  test('a redelivery after the claiming invocation hung takes over once the lease ends', async () => {
    const fixture = await createLifecycleFixture({ activationLeaseSeconds: 60 });
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-4'));
    const hung = hangOnce(fixture.registry, 'attachCertificate');
    const attach = jest.spyOn(fixture.registry, 'attachCertificate');

    void fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-1' });
    await hung;
    expect(await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-2' })).toEqual({ outcome: 'IN_PROGRESS', certificateId: event.certificateId });
    fixture.clock.advance(61_000);
    const retried = await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-2' });

    expect(retried.outcome).toBe('ACTIVATED');
    expect(attach).toHaveBeenCalledTimes(2);
    expect(fixture.store.certificates.get(event.certificateId)?.status).toBe('ACTIVE');
  });

  test('a delivery that failed releases its claim, so the next delivery activates at once', async () => {
    const fixture = await createLifecycleFixture({ activationLeaseSeconds: 600 });
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-4b'));
    jest.spyOn(fixture.registry, 'attachCertificate').mockRejectedValueOnce(new Error('AttachThingPrincipal failed'));

    await expect(fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-1' })).rejects.toThrow('AttachThingPrincipal failed');

    expect(await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-2' })).toMatchObject({ outcome: 'ACTIVATED' });
  });

  test('ignores an event for another CA registered in the account: nothing read, written or revoked', async () => {
    const fixture = await createLifecycleFixture();
    const foreign = await makeForeignCa();
    const event = { ...(await fixture.firstConnect(await foreign.issue('other-team-1'))), caCertificateId: 'a'.repeat(64) };
    const describe = jest.spyOn(fixture.registry, 'describeCertificate');

    const outcome = await fixture.lifecycle.registerOnFirstConnect(event);

    expect(outcome).toMatchObject({ outcome: 'IGNORED', reason: expect.stringContaining("not this fleet's CA") });
    expect(describe).not.toHaveBeenCalled();
    expect(fixture.registry.findCertificate(event.certificateId)?.status).toBe('PENDING_ACTIVATION');
    expect(fixture.store.certificates.size + fixture.store.events.length).toBe(0);
  });

  test('revokes, instead of activating, a certificate whose device is suspended while it is being activated', async () => {
    const fixture = await createLifecycleFixture();
    await registeredByJitr(fixture, 'sensor-16');
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-16'));
    const ensureThing = fixture.registry.ensureThing.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'ensureThing').mockImplementationOnce(async (name, attributes) => {
      await fixture.lifecycle.suspendDevice({ deviceId: 'sensor-16', actor: 'ops', requestKey: 'suspend-during-jitr' });
      await ensureThing(name, attributes);
    });

    const outcome = await fixture.lifecycle.registerOnFirstConnect(event);

    expect(outcome).toMatchObject({ outcome: 'REJECTED', code: 'ENROLLMENT_REFUSED' });
    expect(fixture.registry.findCertificate(event.certificateId)?.status).toBe('REVOKED');
    expect(fixture.store.certificates.get(event.certificateId)).toMatchObject({ status: 'REVOKED', revocationReason: 'PRIVILEGE_WITHDRAWN' });
    expect(await fixture.ca.isRevoked(fixture.store.certificates.get(event.certificateId)?.serialNumber as string)).toBe(true);
    expect(fixture.store.devices.get('sensor-16')?.status).toBe('SUSPENDED');
  });

  test('the retry of a delivery that could not release its claim takes it over at once; another delivery waits', async () => {
    const fixture = await createLifecycleFixture({ activationLeaseSeconds: 600 });
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-17'));
    jest.spyOn(fixture.registry, 'updateCertificateStatus').mockRejectedValueOnce(new Error('IoT unavailable'));
    const commit = fixture.store.commit.bind(fixture.store);
    jest.spyOn(fixture.store, 'commit').mockImplementation(async (change) => {
      if (change.events.length === 0 && change.certificates?.some((c) => c.next.status === 'PENDING_ACTIVATION' && c.next.activationLeaseHolder === undefined)) throw new Error('table unreachable');
      return commit(change);
    });

    await expect(fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-1' })).rejects.toThrow('IoT unavailable');

    expect(await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-2' })).toEqual({ outcome: 'IN_PROGRESS', certificateId: event.certificateId });
    expect(await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-1' })).toMatchObject({ outcome: 'ACTIVATED' });
  });

  test('rejects a certificate from another CA: REVOKED in the registry, REJECTED with its reason in the store', async () => {
    const fixture = await createLifecycleFixture();
    const foreign = await makeForeignCa();
    const event = await fixture.firstConnect(await foreign.issue('sensor-5'));

    const outcome = await fixture.lifecycle.registerOnFirstConnect(event);

    expect(outcome).toMatchObject({ outcome: 'REJECTED', code: 'INVALID_CERTIFICATE' });
    expect(fixture.registry.findCertificate(event.certificateId)?.status).toBe('REVOKED');
    expect(fixture.store.certificates.get(event.certificateId)).toMatchObject({ status: 'REJECTED', statusReason: expect.stringContaining("not signed by this fleet's CA") });
    expect(fixture.store.devices.size).toBe(0);
    expect(fixture.registry.findThing('sensor-5')).toBeUndefined();
  });

  test('with the preregistered policy, refuses an unknown device and accepts a pre-registered one', async () => {
    const fixture = await createLifecycleFixture({ enrollmentPolicy: 'preregistered' });
    const unknown = await fixture.firstConnect(await fixture.mintCertificate('stranger'));
    expect(await fixture.lifecycle.registerOnFirstConnect(unknown)).toMatchObject({ outcome: 'AWAITING_PRE_REGISTRATION', deviceId: 'stranger' });
    expect(fixture.registry.findCertificate(unknown.certificateId)?.status).toBe('PENDING_ACTIVATION');

    await fixture.lifecycle.preRegisterDevice({ deviceId: 'known-1', attributes: { line: 'b' }, ...actor });
    const known = await fixture.firstConnect(await fixture.mintCertificate('known-1'));
    expect(await fixture.lifecycle.registerOnFirstConnect(known)).toMatchObject({ outcome: 'ACTIVATED' });
    expect(fixture.registry.findThing('known-1')?.attributes).toEqual({ line: 'b' });
  });

  test('refuses a new certificate for a suspended device', async () => {
    const fixture = await createLifecycleFixture();
    await registeredByJitr(fixture, 'sensor-6');
    await fixture.lifecycle.suspendDevice({ deviceId: 'sensor-6', ...actor });

    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-6'));

    expect(await fixture.lifecycle.registerOnFirstConnect(event)).toMatchObject({ outcome: 'REJECTED', code: 'ENROLLMENT_REFUSED', reason: 'Device sensor-6 is SUSPENDED: it cannot enroll a new certificate.' });
  });

  test('closes a pending claim whose certificate was revoked in AWS IoT before it was activated', async () => {
    const fixture = await createLifecycleFixture({ activationLeaseSeconds: 60 });
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-22'));
    const hung = hangOnce(fixture.registry, 'attachCertificate');
    void fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-1' });
    await hung;
    await fixture.registry.updateCertificateStatus(event.certificateId, 'REVOKED');
    fixture.clock.advance(61_000);

    const outcome = await fixture.lifecycle.registerOnFirstConnect(event, { deliveryId: 'message-2' });

    expect(outcome).toMatchObject({ outcome: 'IGNORED' });
    expect(fixture.store.certificates.get(event.certificateId)).toMatchObject({ status: 'REVOKED', statusReason: 'AWS IoT shows the certificate REVOKED, not PENDING_ACTIVATION.' });
  });

  test('ignores an event for a certificate someone already revoked in AWS IoT', async () => {
    const fixture = await createLifecycleFixture();
    const event = await fixture.firstConnect(await fixture.mintCertificate('sensor-7'));
    await fixture.registry.updateCertificateStatus(event.certificateId, 'REVOKED');

    expect(await fixture.lifecycle.registerOnFirstConnect(event)).toMatchObject({ outcome: 'IGNORED' });
    expect(fixture.store.certificates.size).toBe(0);
  });
});

describe('signing CSRs', () => {
  test('issues a certificate for a pre-registered device, registers it ACTIVE, attaches it, and activates the device', async () => {
    const fixture = await createLifecycleFixture({ validityDays: 30 });
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'factory-1', attributes: {}, ...actor });
    const { csrPem } = await makeCsr('factory-1');

    const issued = await fixture.lifecycle.issueFromCsr({ deviceId: 'factory-1', csrPem, ...actor });

    expect(issued.certificatePem).toContain('BEGIN CERTIFICATE');
    expect(issued.certificateChainPem).toBe(fixture.caCertificatePem);
    expect(fixture.registry.findCertificate(issued.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing('factory-1')?.principals).toEqual([issued.certificateId]);
    const days = (Date.parse(issued.notAfter) - fixture.clock.now().getTime()) / 86_400_000;
    expect(Math.round(days)).toBe(30);
    expect((await fixture.lifecycle.getDevice('factory-1')).device.status).toBe('ACTIVE');
  });

  test('answers the same certificate to a retry with the same request key, without issuing again', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'factory-2', attributes: {}, ...actor });
    const { csrPem } = await makeCsr('factory-2');
    const first = await fixture.lifecycle.issueFromCsr({ deviceId: 'factory-2', csrPem, actor: actor.actor, requestKey: 'issue-2' });
    const issue = jest.spyOn(fixture.ca, 'issueCertificate');

    const again = await fixture.lifecycle.issueFromCsr({ deviceId: 'factory-2', csrPem, actor: actor.actor, requestKey: 'issue-2' });

    expect(again).toEqual(first);
    expect(issue).not.toHaveBeenCalled();
    expect(fixture.registry.findThing('factory-2')?.principals).toEqual([first.certificateId]);
  });

  test('a failure after issuance undoes nothing: the retry with the same key finishes with the same certificate, issued once', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'factory-3', attributes: {}, ...actor });
    const { csrPem } = await makeCsr('factory-3');
    jest.spyOn(fixture.registry, 'attachCertificate').mockRejectedValueOnce(new Error('AttachThingPrincipal failed'));
    const issue = jest.spyOn(fixture.ca, 'issueCertificate');
    const request = { deviceId: 'factory-3', csrPem, actor: actor.actor, requestKey: 'issue-3' };

    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toThrow('AttachThingPrincipal failed');
    const issued = await fixture.lifecycle.issueFromCsr(request);

    expect(issue).toHaveBeenCalledTimes(1);
    expect(fixture.registry.snapshot().certificates.map((c) => [c.certificateId, c.status])).toEqual([[issued.certificateId, 'ACTIVE']]);
    expect(fixture.store.certificates.get(issued.certificateId)?.status).toBe('ACTIVE');
    expect(await fixture.ca.isRevoked(fixture.store.certificates.get(issued.certificateId)?.serialNumber as string)).toBe(false);
  });

  test('a certificate revoked after it was handed out is never answered again to its key: 410 CERTIFICATE_WITHDRAWN', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'factory-5', attributes: {}, ...actor });
    const request = { deviceId: 'factory-5', csrPem: (await makeCsr('factory-5')).csrPem, actor: actor.actor, requestKey: 'issue-5' };
    const issued = await fixture.lifecycle.issueFromCsr(request);
    await fixture.lifecycle.revokeCertificate({ deviceId: 'factory-5', certificateId: issued.certificateId, reason: 'KEY_COMPROMISE', ...actor });

    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'CERTIFICATE_WITHDRAWN', message: expect.stringContaining('new Idempotency-Key') });
  });

  test('fails with DEVICE_NOT_FOUND for a device that does not exist, and issues nothing', async () => {
    const fixture = await createLifecycleFixture();
    const issue = jest.spyOn(fixture.ca, 'issueCertificate');
    await expect(fixture.lifecycle.issueFromCsr({ deviceId: 'ghost', csrPem: (await makeCsr('ghost')).csrPem, ...actor })).rejects.toMatchObject({ code: 'DEVICE_NOT_FOUND' });
    expect(issue).not.toHaveBeenCalled();
  });

  test('fails with INVALID_TRANSITION for a suspended device', async () => {
    const fixture = await createLifecycleFixture();
    await registeredByJitr(fixture, 'sensor-8');
    await fixture.lifecycle.suspendDevice({ deviceId: 'sensor-8', ...actor });
    await expect(fixture.lifecycle.issueFromCsr({ deviceId: 'sensor-8', csrPem: (await makeCsr('sensor-8')).csrPem, ...actor })).rejects.toMatchObject({ code: 'INVALID_TRANSITION' });
  });

  test('revokes the new certificate again when the device is revoked while it was being issued', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'race-2', attributes: {}, ...actor });
    const attach = fixture.registry.attachCertificate.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'attachCertificate').mockImplementationOnce(async (thing, id) => {
      await attach(thing, id);
      await fixture.lifecycle.revokeDevice({ deviceId: 'race-2', reason: 'KEY_COMPROMISE', actor: 'ops', requestKey: 'other' });
    });

    const issuing = fixture.lifecycle.issueFromCsr({ deviceId: 'race-2', csrPem: (await makeCsr('race-2')).csrPem, ...actor });

    await expect(issuing).rejects.toMatchObject({ code: 'INVALID_TRANSITION' });
    const [certificate] = fixture.registry.snapshot().certificates;
    expect(certificate?.status).toBe('REVOKED');
    expect(fixture.registry.findThing('race-2')?.principals).toEqual([]);
  });
});

describe('revocation and suspension', () => {
  test('revoking a certificate revokes it in the registry and at the CA, detaches it, and records reason and actor', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-9');
    const serial = fixture.store.certificates.get(certificateId)?.serialNumber as string;

    const revoked = await fixture.lifecycle.revokeCertificate({ deviceId: 'sensor-9', certificateId, reason: 'KEY_COMPROMISE', ...actor });

    expect(revoked).toMatchObject({ status: 'REVOKED', revocationReason: 'KEY_COMPROMISE' });
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('REVOKED');
    expect(fixture.registry.findThing('sensor-9')?.principals).toEqual([]);
    expect(await fixture.ca.isRevoked(serial)).toBe(true);
    expect(fixture.store.events.find((e) => e.type === 'CERTIFICATE_REVOKED')).toMatchObject({ actor: actor.actor, reason: 'KEY_COMPROMISE', fromStatus: 'ACTIVE', toStatus: 'REVOKED' });
  });

  test('revoking a certificate that is already REVOKED answers it as it is, with nothing changed and no second audit entry', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-10');
    const first = await fixture.lifecycle.revokeCertificate({ deviceId: 'sensor-10', certificateId, reason: 'SUPERSEDED', ...actor });
    await expect(fixture.lifecycle.revokeCertificate({ deviceId: 'sensor-10', certificateId, reason: 'KEY_COMPROMISE', actor: 'x', requestKey: 'r2' })).resolves.toEqual(first);
    expect(fixture.store.events.filter((e) => e.type === 'CERTIFICATE_REVOKED')).toHaveLength(1);
  });

  test('fails with CERTIFICATE_NOT_FOUND for a certificate of another device', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-11');
    await registeredByJitr(fixture, 'sensor-12');
    await expect(fixture.lifecycle.revokeCertificate({ deviceId: 'sensor-12', certificateId, reason: 'UNSPECIFIED', ...actor })).rejects.toMatchObject({ code: 'CERTIFICATE_NOT_FOUND' });
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
  });

  test('suspending makes every active certificate INACTIVE; resuming makes them ACTIVE again', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-13');

    await fixture.lifecycle.suspendDevice({ deviceId: 'sensor-13', ...actor });
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('INACTIVE');
    expect(fixture.store.devices.get('sensor-13')?.status).toBe('SUSPENDED');

    await fixture.lifecycle.resumeDevice({ deviceId: 'sensor-13', actor: 'ops', requestKey: 'resume-1' });
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
    expect(fixture.store.certificates.get(certificateId)?.status).toBe('ACTIVE');
    expect(fixture.store.devices.get('sensor-13')?.status).toBe('ACTIVE');
  });

  test('revoking a device revokes all its live certificates and the device', async () => {
    const fixture = await createLifecycleFixture();
    const first = await registeredByJitr(fixture, 'sensor-14');
    const second = (await fixture.lifecycle.issueFromCsr({ deviceId: 'sensor-14', csrPem: (await makeCsr('sensor-14')).csrPem, ...actor })).certificateId;

    const device = await fixture.lifecycle.revokeDevice({ deviceId: 'sensor-14', reason: 'CESSATION_OF_OPERATION', actor: 'ops', requestKey: 'revoke-all' });

    expect(device.status).toBe('REVOKED');
    for (const id of [first, second]) {
      expect(fixture.registry.findCertificate(id)?.status).toBe('REVOKED');
      expect(fixture.store.certificates.get(id)?.status).toBe('REVOKED');
    }
  });

  test('a suspension that failed part-way in AWS IoT switches nothing back; its retry finishes: device SUSPENDED, every certificate INACTIVE', async () => {
    const fixture = await createLifecycleFixture();
    const first = await registeredByJitr(fixture, 'sensor-18');
    const second = (await fixture.lifecycle.issueFromCsr({ deviceId: 'sensor-18', csrPem: (await makeCsr('sensor-18')).csrPem, ...actor })).certificateId;
    const update = fixture.registry.updateCertificateStatus.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'updateCertificateStatus').mockImplementation(async (id, status) => {
      if (id === second && status === 'INACTIVE') throw new Error('UpdateCertificate failed');
      return update(id, status);
    });
    const suspend = { deviceId: 'sensor-18', actor: 'ops', requestKey: 'suspend-1' };

    await expect(fixture.lifecycle.suspendDevice(suspend)).rejects.toThrow('UpdateCertificate failed');
    expect(fixture.registry.findCertificate(first)?.status).toBe('INACTIVE');
    jest.mocked(fixture.registry.updateCertificateStatus).mockRestore();
    await expect(fixture.lifecycle.suspendDevice(suspend)).resolves.toMatchObject({ status: 'SUSPENDED' });

    expect([first, second].map((id) => fixture.registry.findCertificate(id)?.status)).toEqual(['INACTIVE', 'INACTIVE']);
    expect([first, second].map((id) => fixture.store.certificates.get(id)?.status)).toEqual(['INACTIVE', 'INACTIVE']);
    expect(fixture.store.events.filter((e) => e.type === 'DEVICE_SUSPENDED')).toHaveLength(1);
    expect(fixture.store.events.filter((e) => e.type === 'CERTIFICATE_SUSPENDED')).toHaveLength(2);
  });

  test('a suspension whose decision was written but answered with an error is not undone: the retry finishes it', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-20');
    const commit = fixture.store.commit.bind(fixture.store);
    jest.spyOn(fixture.store, 'commit').mockImplementation(async (change) => {
      await commit(change);
      if (change.device?.next.status === 'SUSPENDED') throw new Error('socket timeout after the write');
    });
    const suspend = { deviceId: 'sensor-20', actor: 'ops', requestKey: 'suspend-timeout' };

    await expect(fixture.lifecycle.suspendDevice(suspend)).rejects.toThrow('socket timeout');
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
    const device = await fixture.lifecycle.suspendDevice(suspend);

    expect(device.status).toBe('SUSPENDED');
    expect(fixture.registry.findCertificate(certificateId)?.status).toBe('INACTIVE');
    expect(fixture.store.certificates.get(certificateId)?.status).toBe('INACTIVE');
    expect(fixture.store.events.filter((e) => e.type === 'DEVICE_SUSPENDED')).toHaveLength(1);
  });

  test('answers a retried suspension or revocation with the same request key with the state it left, not an error', async () => {
    const fixture = await createLifecycleFixture();
    const certificateId = await registeredByJitr(fixture, 'sensor-21');
    const suspend = { deviceId: 'sensor-21', actor: 'ops', requestKey: 'same-key' };
    await fixture.lifecycle.suspendDevice(suspend);
    await expect(fixture.lifecycle.suspendDevice(suspend)).resolves.toMatchObject({ status: 'SUSPENDED' });
    const revoke = { deviceId: 'sensor-21', certificateId, reason: 'KEY_COMPROMISE' as const, actor: 'ops', requestKey: 'revoke-key' };
    await fixture.lifecycle.revokeCertificate(revoke);
    await expect(fixture.lifecycle.revokeCertificate(revoke)).resolves.toMatchObject({ status: 'REVOKED' });
    expect(fixture.store.events.filter((e) => e.type === 'CERTIFICATE_REVOKED')).toHaveLength(1);
  });

  test('a second execution with the same key while the first still runs answers REQUEST_IN_PROGRESS, then the first certificate', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'factory-4', attributes: {}, ...actor });
    const { csrPem } = await makeCsr('factory-4');
    let proceed!: () => void;
    const gate = new Promise<void>((resolve) => (proceed = resolve));
    let reached!: () => void;
    const attaching = new Promise<void>((resolve) => (reached = resolve));
    const attach = fixture.registry.attachCertificate.bind(fixture.registry);
    jest.spyOn(fixture.registry, 'attachCertificate').mockImplementationOnce(async (thing, id) => {
      reached();
      await gate;
      return attach(thing, id);
    });

    const request = { deviceId: 'factory-4', csrPem, actor: actor.actor, requestKey: 'issue-4' };
    const first = fixture.lifecycle.issueFromCsr(request);
    await attaching;
    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'REQUEST_IN_PROGRESS' });
    proceed();
    const answered = await first;

    await expect(fixture.lifecycle.issueFromCsr(request)).resolves.toEqual(expect.objectContaining({ certificateId: answered.certificateId }));
    expect(fixture.registry.snapshot().certificates.filter((c) => c.status === 'ACTIVE')).toHaveLength(1);
  });

  test('a device revocation that failed part-way records what it revoked, and a retry finishes it', async () => {
    const fixture = await createLifecycleFixture();
    const first = await registeredByJitr(fixture, 'sensor-19');
    const second = (await fixture.lifecycle.issueFromCsr({ deviceId: 'sensor-19', csrPem: (await makeCsr('sensor-19')).csrPem, ...actor })).certificateId;
    jest.spyOn(fixture.ca, 'revokeCertificate').mockResolvedValueOnce(undefined).mockRejectedValueOnce(new Error('RevokeCertificate throttled'));

    await expect(fixture.lifecycle.revokeDevice({ deviceId: 'sensor-19', reason: 'KEY_COMPROMISE', actor: 'ops', requestKey: 'r-1' })).rejects.toThrow('throttled');
    expect(fixture.store.certificates.get(first)?.status).toBe('REVOKED');
    // Decided first, so nothing can enroll meanwhile; the other certificate is already refused by AWS IoT.
    expect(fixture.store.devices.get('sensor-19')?.status).toBe('REVOKED');
    expect(fixture.registry.findCertificate(second)?.status).toBe('REVOKED');

    const device = await fixture.lifecycle.revokeDevice({ deviceId: 'sensor-19', reason: 'KEY_COMPROMISE', actor: 'ops', requestKey: 'r-2' });
    expect(device.status).toBe('REVOKED');
    expect(fixture.store.certificates.get(second)?.status).toBe('REVOKED');
    expect(fixture.registry.findCertificate(second)?.status).toBe('REVOKED');
  });

  test('resuming a device that is already ACTIVE answers it with nothing changed; resuming a REVOKED one fails with INVALID_TRANSITION', async () => {
    const fixture = await createLifecycleFixture();
    await registeredByJitr(fixture, 'sensor-15');
    const before = fixture.store.devices.get('sensor-15');
    await expect(fixture.lifecycle.resumeDevice({ deviceId: 'sensor-15', ...actor })).resolves.toEqual(before);
    expect(fixture.store.devices.get('sensor-15')).toEqual(before);
    await fixture.lifecycle.revokeDevice({ deviceId: 'sensor-15', reason: 'KEY_COMPROMISE', ...actor });
    await expect(fixture.lifecycle.resumeDevice({ deviceId: 'sensor-15', ...actor })).rejects.toMatchObject({ code: 'INVALID_TRANSITION', message: 'A device in state REVOKED cannot move to ACTIVE.' });
  });
});

describe('pre-registration', () => {
  test('fails with DEVICE_ALREADY_EXISTS for an existing device', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'dup-1', attributes: {}, ...actor });
    await expect(fixture.lifecycle.preRegisterDevice({ deviceId: 'dup-1', attributes: {}, actor: 'x', requestKey: 'other' })).rejects.toMatchObject({ code: 'DEVICE_ALREADY_EXISTS' });
  });

  test('fails with INVALID_DEVICE_ID for a malformed id', async () => {
    const fixture = await createLifecycleFixture();
    await expect(fixture.lifecycle.preRegisterDevice({ deviceId: 'has space', attributes: {}, ...actor })).rejects.toMatchObject({ code: 'INVALID_DEVICE_ID' });
  });
});

describe('operation records', () => {
  test('an assumed role is one caller whatever its session name: a retry from another session answers the same certificate', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'sessions-1', attributes: {}, ...actor });
    const csrPem = (await makeCsr('sessions-1')).csrPem;
    const role = 'arn:aws:sts::123456789012:assumed-role/factory-line';

    const first = await fixture.lifecycle.issueFromCsr({ deviceId: 'sessions-1', csrPem, actor: `${role}/worker-a`, requestKey: 'issue-sessions' });
    const retried = await fixture.lifecycle.issueFromCsr({ deviceId: 'sessions-1', csrPem, actor: `${role}/worker-b`, requestKey: 'issue-sessions' });
    const otherRole = await fixture.lifecycle.issueFromCsr({ deviceId: 'sessions-1', csrPem, actor: 'arn:aws:sts::123456789012:assumed-role/backend/worker-a', requestKey: 'issue-sessions' });

    expect(retried.certificateId).toBe(first.certificateId);
    expect(otherRole.certificateId).not.toBe(first.certificateId);
  });

  test('a replay of an issuance whose device is now suspended answers 409, not 410: the certificate comes back on resume', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'replay-suspended', attributes: {}, ...actor });
    const request = { deviceId: 'replay-suspended', csrPem: (await makeCsr('replay-suspended')).csrPem, actor: actor.actor, requestKey: 'issue-replay-suspended' };
    const issued = await fixture.lifecycle.issueFromCsr(request);
    await fixture.lifecycle.suspendDevice({ deviceId: 'replay-suspended', ...actor });

    await expect(fixture.lifecycle.issueFromCsr(request)).rejects.toMatchObject({ code: 'INVALID_TRANSITION', message: expect.stringContaining('resume the device') });
    await fixture.lifecycle.resumeDevice({ deviceId: 'replay-suspended', ...actor });
    await expect(fixture.lifecycle.issueFromCsr(request)).resolves.toMatchObject({ certificateId: issued.certificateId });
  });

  test('a resume of a device never activated (REGISTERED) fails with INVALID_TRANSITION and writes nothing', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'never-active', attributes: {}, ...actor });
    const events = fixture.store.events.length;
    await expect(fixture.lifecycle.resumeDevice({ deviceId: 'never-active', ...actor })).rejects.toMatchObject({ code: 'INVALID_TRANSITION', message: 'A device in state REGISTERED cannot move to ACTIVE.' });
    expect(fixture.store.devices.get('never-active')?.status).toBe('REGISTERED');
    expect(fixture.store.events.length).toBe(events);
  });
});

describe('devices with many certificates', () => {
  test('the retry of a suspension that failed part-way through 60 certificates goes on from its last checkpoint, and ends consistent', async () => {
    const fixture = await createLifecycleFixture();
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'many-1', attributes: {}, ...actor });
    const csrPem = (await makeCsr('many-1')).csrPem;
    const certificates: string[] = [];
    for (let i = 0; i < 60; i += 1) certificates.push((await fixture.lifecycle.issueFromCsr({ deviceId: 'many-1', csrPem, ...actor })).certificateId);
    const update = fixture.registry.updateCertificateStatus.bind(fixture.registry);
    let calls = 0;
    const spy = jest.spyOn(fixture.registry, 'updateCertificateStatus').mockImplementation(async (id, status) => {
      calls += 1;
      if (calls === 40) throw new Error('UpdateCertificate: ThrottlingException');
      return update(id, status);
    });
    const suspend = { deviceId: 'many-1', actor: 'ops', requestKey: 'suspend-many' };

    await expect(fixture.lifecycle.suspendDevice(suspend)).rejects.toThrow('ThrottlingException');
    calls = 0;
    spy.mockImplementation(async (id, status) => {
      calls += 1;
      return update(id, status);
    });
    await expect(fixture.lifecycle.suspendDevice(suspend)).resolves.toMatchObject({ status: 'SUSPENDED' });

    expect(calls).toBe(60 - 25);
    expect(new Set(certificates.map((id) => fixture.registry.findCertificate(id)?.status))).toEqual(new Set(['INACTIVE']));
    expect(new Set(certificates.map((id) => fixture.store.certificates.get(id)?.status))).toEqual(new Set(['INACTIVE']));
    expect(fixture.store.events.filter((e) => e.type === 'CERTIFICATE_SUSPENDED')).toHaveLength(60);
  });
});

describe('store calls per flow (deterministic; issue 12 tracks the budget)', () => {
  test('a first-connect onboarding reads the device and the certificate together once and writes twice (claim, activation)', async () => {
    const fixture = await createLifecycleFixture();
    const event = await fixture.firstConnect(await fixture.mintCertificate('calls-1'));
    const calls: string[] = [];
    for (const method of ['getDevice', 'getCertificate', 'getDeviceAndCertificate', 'commit', 'getOperation', 'listDeviceCertificates', 'getDeviceView'] as const) {
      const original = fixture.store[method].bind(fixture.store) as (...args: unknown[]) => unknown;
      jest.spyOn(fixture.store, method).mockImplementation(((...args: unknown[]) => {
        calls.push(method);
        return original(...args);
      }) as never);
    }

    await expect(fixture.lifecycle.registerOnFirstConnect(event)).resolves.toMatchObject({ outcome: 'ACTIVATED' });

    expect(calls).toEqual(['getDeviceAndCertificate', 'commit', 'commit']);
  });
});
