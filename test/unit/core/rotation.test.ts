import { LifecycleError } from '../../../functions/core/errors';
import { createLifecycleFixture, type LifecycleFixture } from '../../support/lifecycle-fixture';
import type { InMemoryDeviceStore } from '../../support/in-memory-store';
import { makeCsr } from '../../support/pki';
import { errorOf } from '../../support/lifecycle-errors';

const actor = { actor: 'arn:aws:iam::123456789012:role/factory', requestKey: 'factory-key' };
const COMMIT_SECONDS = 3600;

/** A device onboarded through the API: ACTIVE with one certificate, and the key it was made with. */
async function onboarded(fixture: LifecycleFixture<InMemoryDeviceStore>, deviceId: string) {
  await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, actor: actor.actor, requestKey: `pre-${deviceId}` });
  const csr = await makeCsr(deviceId);
  const issued = await fixture.lifecycle.issueFromCsr({ deviceId, csrPem: csr.csrPem, actor: actor.actor, requestKey: `issue-${deviceId}` });
  return { certificateId: issued.certificateId, csrPem: csr.csrPem };
}

const sender = (thingName: string, principal: string) => ({ thingName, clientId: thingName, principal });

describe('rotation over MQTT: request', () => {
  let fixture: LifecycleFixture<InMemoryDeviceStore>;
  beforeEach(async () => {
    fixture = await createLifecycleFixture({ rotationCommitSeconds: COMMIT_SECONDS });
  });

  test('issues a second ACTIVE, attached certificate and keeps the previous one ACTIVE until the commit', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-1');
    const { csrPem } = await makeCsr('meter-1');

    const rotated = await fixture.lifecycle.requestRotation({ ...sender('meter-1', previous), requestId: 'r-1', csrPem });

    expect(rotated).toMatchObject({ requestId: 'r-1', commitDeadline: new Date(fixture.clock.now().getTime() + COMMIT_SECONDS * 1000).toISOString() });
    expect(rotated.certificateChainPem).toBe(fixture.caCertificatePem);
    expect(fixture.registry.findCertificate(rotated.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findCertificate(previous)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing('meter-1')?.principals).toEqual([previous, rotated.certificateId]);
    expect(fixture.store.devices.get('meter-1')?.rotation).toEqual({ state: 'PENDING', requestId: 'r-1', certificateId: rotated.certificateId, previousCertificateId: previous, commitDeadline: rotated.commitDeadline });
    expect(fixture.store.certificates.get(rotated.certificateId)).toMatchObject({ status: 'ACTIVE', source: 'ROTATION', rotatedFrom: previous });
  });

  test('the same requestId answers the same certificate, issued once', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-2');
    const { csrPem } = await makeCsr('meter-2');
    const request = { ...sender('meter-2', previous), requestId: 'r-2', csrPem };
    const first = await fixture.lifecycle.requestRotation(request);
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    const again = await fixture.lifecycle.requestRotation(request);

    expect(again).toEqual(first);
    expect(asked).not.toHaveBeenCalled();
    expect(fixture.registry.findThing('meter-2')?.principals).toHaveLength(2);
  });

  test('the same requestId with another CSR is refused, not answered', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-3');
    await fixture.lifecycle.requestRotation({ ...sender('meter-3', previous), requestId: 'r-3', csrPem: (await makeCsr('meter-3')).csrPem });

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender('meter-3', previous), requestId: 'r-3', csrPem: (await makeCsr('meter-3')).csrPem }));

    expect(error.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  test('a CSR with the current certificate\'s key is refused (re-key), and nothing is issued', async () => {
    const { certificateId: previous, csrPem } = await onboarded(fixture, 'meter-4');
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender('meter-4', previous), requestId: 'r-4', csrPem }));

    expect(error.code).toBe('INVALID_CSR');
    expect(error.message).toContain('new key pair');
    expect(asked).not.toHaveBeenCalled();
    expect(fixture.store.devices.get('meter-4')?.rotation).toBeUndefined();
  });

  test.each([
    ['SUSPENDED', (f: LifecycleFixture<InMemoryDeviceStore>, id: string) => f.lifecycle.suspendDevice({ deviceId: id, ...actor, requestKey: `s-${id}` })],
    ['REVOKED', (f: LifecycleFixture<InMemoryDeviceStore>, id: string) => f.lifecycle.revokeDevice({ deviceId: id, reason: 'KEY_COMPROMISE', ...actor, requestKey: `v-${id}` })],
  ])('a %s device is refused', async (status, change) => {
    const deviceId = `meter-${status.toLowerCase()}`;
    const { certificateId: previous } = await onboarded(fixture, deviceId);
    await change(fixture, deviceId);

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender(deviceId, previous), requestId: 'r-5', csrPem: (await makeCsr(deviceId)).csrPem }));

    expect(error.code).toBe('INVALID_TRANSITION');
    expect(fixture.store.devices.get(deviceId)?.rotation).toBeUndefined();
    expect(fixture.store.certificates.size).toBe(1);
    expect(fixture.store.certificates.has(previous)).toBe(true);
  });

  test('a request on another device\'s topic, or with another client id, is refused', async () => {
    const { certificateId: mine } = await onboarded(fixture, 'meter-6');
    await onboarded(fixture, 'meter-7');
    const csrPem = (await makeCsr('meter-7')).csrPem;

    const otherTopic = await errorOf(fixture.lifecycle.requestRotation({ ...sender('meter-7', mine), requestId: 'r-6', csrPem }));
    const otherClient = await errorOf(fixture.lifecycle.requestRotation({ thingName: 'meter-7', clientId: 'meter-6', principal: mine, requestId: 'r-6', csrPem }));

    expect(otherTopic.code).toBe('PRINCIPAL_NOT_ALLOWED');
    expect(otherClient.code).toBe('PRINCIPAL_NOT_ALLOWED');
    expect(fixture.store.devices.get('meter-7')?.rotation).toBeUndefined();
  });

  test('a second requestId while one is pending is refused with the seconds until its deadline', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-8');
    await fixture.lifecycle.requestRotation({ ...sender('meter-8', previous), requestId: 'r-8a', csrPem: (await makeCsr('meter-8')).csrPem });
    fixture.clock.advance(600_000);

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender('meter-8', previous), requestId: 'r-8b', csrPem: (await makeCsr('meter-8')).csrPem }));

    expect(error.code).toBe('ROTATION_IN_PROGRESS');
    expect(error.details).toMatchObject({ requestId: 'r-8a', retryAfter: COMMIT_SECONDS - 600 });
  });

  test('the loser of a rotation race gets retryAfter in every refusal, not only the first (the replay of a withdrawn request)', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-8r');
    // Request b gets the CA's certificate, then fails (AWS IoT down); the sweep withdraws its slot at the deadline.
    jest.spyOn(fixture.registry, 'registerCertificate').mockRejectedValueOnce(new LifecycleError('UPSTREAM_FAILURE', 'AWS IoT failed'));
    const requestB = { ...sender('meter-8r', previous), requestId: 'r-8r-b', csrPem: (await makeCsr('meter-8r')).csrPem };
    await errorOf(fixture.lifecycle.requestRotation(requestB));
    fixture.clock.advance((COMMIT_SECONDS + 1) * 1000);
    await fixture.lifecycle.sweepDueRotations();
    // Request a wins the device's rotation slot; b, retried, loses the race.
    await fixture.lifecycle.requestRotation({ ...sender('meter-8r', previous), requestId: 'r-8r-a', csrPem: (await makeCsr('meter-8r')).csrPem });
    fixture.clock.advance(600_000);

    const first = await errorOf(fixture.lifecycle.requestRotation(requestB));
    fixture.clock.advance(60_000);
    const replayed = await errorOf(fixture.lifecycle.requestRotation(requestB));

    expect(first.code).toBe('ROTATION_IN_PROGRESS');
    expect(first.details).toMatchObject({ requestId: 'r-8r-a', retryAfter: COMMIT_SECONDS - 600 });
    expect(replayed.code).toBe('ROTATION_IN_PROGRESS');
    expect(replayed.details).toMatchObject({ requestId: 'r-8r-a', retryAfter: COMMIT_SECONDS - 660 });
  });

  test('a malformed requestId is refused before anything is written', async () => {
    const { certificateId: previous } = await onboarded(fixture, 'meter-9');
    const operationsBefore = fixture.store.operations.size;

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender('meter-9', previous), requestId: 'has space', csrPem: (await makeCsr('meter-9')).csrPem }));

    expect(error.code).toBe('INVALID_REQUEST');
    expect(fixture.store.operations.size).toBe(operationsBefore);
  });
});

describe('rotation over MQTT: commit and timeout', () => {
  let fixture: LifecycleFixture<InMemoryDeviceStore>;
  beforeEach(async () => {
    fixture = await createLifecycleFixture({ rotationCommitSeconds: COMMIT_SECONDS });
  });

  async function pending(deviceId: string) {
    const { certificateId: previous } = await onboarded(fixture, deviceId);
    const rotated = await fixture.lifecycle.requestRotation({ ...sender(deviceId, previous), requestId: `r-${deviceId}`, csrPem: (await makeCsr(deviceId)).csrPem });
    return { previous, rotated };
  }

  test('a commit over the new certificate retires the previous one: INACTIVE and detached in AWS IoT, RETIRED on record', async () => {
    const { previous, rotated } = await pending('pump-1');

    const committed = await fixture.lifecycle.commitRotation({ ...sender('pump-1', rotated.certificateId), requestId: 'r-pump-1', certificateId: rotated.certificateId });

    expect(committed).toEqual({ requestId: 'r-pump-1', certificateId: rotated.certificateId, retiredCertificateId: previous });
    expect(fixture.registry.findCertificate(previous)?.status).toBe('INACTIVE');
    expect(fixture.registry.findThing('pump-1')?.principals).toEqual([rotated.certificateId]);
    expect(fixture.store.certificates.get(previous)?.status).toBe('RETIRED');
    expect(fixture.store.devices.get('pump-1')?.rotation).toBeUndefined();
    expect(await fixture.ca.isRevoked(fixture.store.certificates.get(previous)?.serialNumber as string)).toBe(false);
    const types = fixture.store.events.filter((e) => e.deviceId === 'pump-1').map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['ROTATION_STARTED', 'ROTATION_COMMITTED', 'CERTIFICATE_RETIRED']));
  });

  test('a repeated commit gets the same answer', async () => {
    const { rotated } = await pending('pump-2');
    const commit = { ...sender('pump-2', rotated.certificateId), requestId: 'r-pump-2', certificateId: rotated.certificateId };
    const first = await fixture.lifecycle.commitRotation(commit);

    expect(await fixture.lifecycle.commitRotation(commit)).toEqual(first);
  });

  test('a commit sent over the old certificate is refused and changes nothing', async () => {
    const { previous, rotated } = await pending('pump-3');

    const error = await errorOf(fixture.lifecycle.commitRotation({ ...sender('pump-3', previous), requestId: 'r-pump-3', certificateId: rotated.certificateId }));

    expect(error.code).toBe('PRINCIPAL_NOT_ALLOWED');
    expect(fixture.store.devices.get('pump-3')?.rotation?.state).toBe('PENDING');
    expect(fixture.registry.findCertificate(previous)?.status).toBe('ACTIVE');
  });

  test('no commit before the deadline: the sweep withdraws the new certificate, the previous one stays ACTIVE, a late commit is refused', async () => {
    const { previous, rotated } = await pending('pump-4');
    expect(await fixture.lifecycle.sweepDueRotations()).toEqual({ withdrawn: 0, committed: 0, failed: 0 });
    fixture.clock.advance(COMMIT_SECONDS * 1000);

    expect(await fixture.lifecycle.sweepDueRotations()).toEqual({ withdrawn: 1, committed: 0, failed: 0 });

    expect(fixture.registry.findCertificate(rotated.certificateId)?.status).toBe('REVOKED');
    expect(fixture.store.certificates.get(rotated.certificateId)?.status).toBe('REVOKED');
    expect(await fixture.ca.isRevoked(fixture.store.certificates.get(rotated.certificateId)?.serialNumber as string)).toBe(true);
    expect(fixture.registry.findCertificate(previous)?.status).toBe('ACTIVE');
    expect(fixture.store.devices.get('pump-4')?.rotation).toBeUndefined();
    const late = await errorOf(fixture.lifecycle.commitRotation({ ...sender('pump-4', rotated.certificateId), requestId: 'r-pump-4', certificateId: rotated.certificateId }));
    expect(late.code).toBe('CERTIFICATE_WITHDRAWN');
    // The device may rotate again.
    const again = await fixture.lifecycle.requestRotation({ ...sender('pump-4', previous), requestId: 'r-pump-4b', csrPem: (await makeCsr('pump-4')).csrPem });
    expect(again.certificateId).not.toBe(rotated.certificateId);
  });

  test('a commit decided before the deadline wins over the sweep, even when its AWS IoT step failed: the sweep finishes it and the retried commit is answered', async () => {
    const { previous, rotated } = await pending('pump-5');
    jest.spyOn(fixture.registry, 'updateCertificateStatus').mockRejectedValueOnce(new Error('UpdateCertificate throttled'));
    const commit = { ...sender('pump-5', rotated.certificateId), requestId: 'r-pump-5', certificateId: rotated.certificateId };
    await expect(fixture.lifecycle.commitRotation(commit)).rejects.toThrow('throttled');
    fixture.clock.advance(COMMIT_SECONDS * 1000);

    expect(await fixture.lifecycle.sweepDueRotations()).toEqual({ withdrawn: 0, committed: 1, failed: 0 });

    expect(fixture.registry.findCertificate(rotated.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findCertificate(previous)?.status).toBe('INACTIVE');
    expect(await fixture.lifecycle.commitRotation(commit)).toEqual({ requestId: 'r-pump-5', certificateId: rotated.certificateId, retiredCertificateId: previous });
  });

  test('a request that fails after the CA signed and is never sent again: the sweep withdraws what it issued at the deadline, and the device may rotate again', async () => {
    const { previous } = await pending('pump-8').then(async (first) => {
      // Commit the first rotation, then abandon a second one half-way.
      await fixture.lifecycle.commitRotation({ ...sender('pump-8', first.rotated.certificateId), requestId: 'r-pump-8', certificateId: first.rotated.certificateId });
      return { previous: first.rotated.certificateId };
    });
    jest.spyOn(fixture.registry, 'attachCertificate').mockRejectedValue(new Error('AttachThingPrincipal keeps failing'));
    const lostCsr = (await makeCsr('pump-8')).csrPem;
    await expect(fixture.lifecycle.requestRotation({ ...sender('pump-8', previous), requestId: 'lost-1', csrPem: lostCsr })).rejects.toThrow('keeps failing');
    jest.restoreAllMocks();
    const registeredButUnrecorded = fixture.registry.snapshot().certificates.filter((c) => !fixture.store.certificates.has(c.certificateId));
    expect(registeredButUnrecorded.map((c) => c.status)).toEqual(['ACTIVE']);
    expect(fixture.store.devices.get('pump-8')?.rotation).toMatchObject({ state: 'ISSUING', requestId: 'lost-1' });

    fixture.clock.advance(COMMIT_SECONDS * 1000);
    expect(await fixture.lifecycle.sweepDueRotations()).toEqual({ withdrawn: 1, committed: 0, failed: 0 });

    const leaked = registeredButUnrecorded[0]?.certificateId as string;
    expect(fixture.registry.findCertificate(leaked)?.status).toBe('REVOKED');
    expect(fixture.registry.findThing('pump-8')?.principals).toEqual([previous]);
    expect(fixture.store.devices.get('pump-8')?.rotation).toBeUndefined();
    expect(fixture.registry.findCertificate(previous)?.status).toBe('ACTIVE');
    // The lost request, sent again after all, is refused: its certificate was withdrawn.
    expect((await errorOf(fixture.lifecycle.requestRotation({ ...sender('pump-8', previous), requestId: 'lost-1', csrPem: lostCsr }))).code).toBe('CERTIFICATE_WITHDRAWN');
    expect(fixture.registry.findCertificate(leaked)?.status).toBe('REVOKED');
    const again = await fixture.lifecycle.requestRotation({ ...sender('pump-8', previous), requestId: 'next-1', csrPem: (await makeCsr('pump-8')).csrPem });
    expect(fixture.registry.findCertificate(again.certificateId)?.status).toBe('ACTIVE');
  });

  test('a suspended device cannot commit; once resumed it commits, and its previous certificate stays out', async () => {
    const { previous, rotated } = await pending('pump-6');
    await fixture.lifecycle.suspendDevice({ deviceId: 'pump-6', ...actor, requestKey: 's-pump-6' });
    const commit = { ...sender('pump-6', rotated.certificateId), requestId: 'r-pump-6', certificateId: rotated.certificateId };

    expect((await errorOf(fixture.lifecycle.commitRotation(commit))).code).toBe('INVALID_TRANSITION');
    await fixture.lifecycle.resumeDevice({ deviceId: 'pump-6', ...actor, requestKey: 'r-pump-6-resume' });
    await fixture.lifecycle.commitRotation(commit);

    expect(fixture.registry.findCertificate(rotated.certificateId)?.status).toBe('ACTIVE');
    expect(fixture.registry.findCertificate(previous)?.status).toBe('INACTIVE');
    await fixture.lifecycle.suspendDevice({ deviceId: 'pump-6', ...actor, requestKey: 's2-pump-6' });
    await fixture.lifecycle.resumeDevice({ deviceId: 'pump-6', ...actor, requestKey: 'r2-pump-6' });
    expect(fixture.registry.findCertificate(previous)?.status).toBe('INACTIVE');
  });

  test('a device revoked during its rotation keeps nothing: both certificates revoked, and the sweep clears the rotation', async () => {
    const { previous, rotated } = await pending('pump-7');
    await fixture.lifecycle.revokeDevice({ deviceId: 'pump-7', reason: 'KEY_COMPROMISE', ...actor, requestKey: 'v-pump-7' });
    fixture.clock.advance(COMMIT_SECONDS * 1000);

    await fixture.lifecycle.sweepDueRotations();

    expect(fixture.registry.findCertificate(rotated.certificateId)?.status).toBe('REVOKED');
    expect(fixture.registry.findCertificate(previous)?.status).toBe('REVOKED');
    expect(fixture.store.devices.get('pump-7')).toMatchObject({ status: 'REVOKED' });
    expect(fixture.store.devices.get('pump-7')?.rotation).toBeUndefined();
  });

  test('commit and sweep racing at the deadline: exactly one decides, and the device ends with exactly one usable certificate', async () => {
    for (let round = 0; round < 10; round += 1) {
      const deviceId = `race-${round}`;
      const { previous, rotated } = await pending(deviceId);
      fixture.clock.advance(COMMIT_SECONDS * 1000);
      const commit = fixture.lifecycle.commitRotation({ ...sender(deviceId, rotated.certificateId), requestId: `r-${deviceId}`, certificateId: rotated.certificateId }).then(
        () => 'committed',
        (error: LifecycleError) => error.code,
      );
      const [outcome] = await Promise.all([commit, fixture.lifecycle.sweepDueRotations()]);

      const statuses = [previous, rotated.certificateId].map((id) => fixture.registry.findCertificate(id)?.status);
      expect(statuses).toEqual(outcome === 'committed' ? ['INACTIVE', 'ACTIVE'] : ['ACTIVE', 'REVOKED']);
      if (outcome !== 'committed') expect(outcome).toBe('CERTIFICATE_WITHDRAWN');
      expect(fixture.store.devices.get(deviceId)?.rotation).toBeUndefined();
    }
  });
});

describe('asking a device to rotate now', () => {
  test('publishes the renewal notice of each ACTIVE certificate once per request key, and refuses a device that cannot rotate', async () => {
    const fixture = await createLifecycleFixture();
    const { certificateId } = await onboarded(fixture, 'gauge-1');
    await onboarded(fixture, 'gauge-2');
    await fixture.lifecycle.suspendDevice({ deviceId: 'gauge-2', ...actor, requestKey: 's-gauge-2' });
    const sent: [string, string][] = [];
    const notify = async (deviceId: string, notice: { certificateId: string }) => void sent.push([deviceId, notice.certificateId]);

    const first = await fixture.lifecycle.requestRenewal({ deviceId: 'gauge-1', ...actor, requestKey: 'renew-1' }, notify);
    const again = await fixture.lifecycle.requestRenewal({ deviceId: 'gauge-1', ...actor, requestKey: 'renew-1' }, notify);
    const suspended = await errorOf(fixture.lifecycle.requestRenewal({ deviceId: 'gauge-2', ...actor, requestKey: 'renew-2' }, notify));

    expect(first).toEqual({ deviceId: 'gauge-1', notices: [{ certificateId, notAfter: expect.any(String), renewBy: fixture.clock.now().toISOString() }] });
    expect(again).toEqual(first);
    expect(sent).toEqual([['gauge-1', certificateId]]);
    expect(suspended.code).toBe('INVALID_TRANSITION');
  });
});
