import { createLifecycleFixture, type LifecycleFixture } from '../../support/lifecycle-fixture';
import type { InMemoryDeviceStore } from '../../support/in-memory-store';
import { makeCsr } from '../../support/pki';
import { errorOf } from '../../support/lifecycle-errors';

const actor = { actor: 'arn:aws:iam::123456789012:role/factory', requestKey: 'factory-key' };
const COMMIT_SECONDS = 3600;

const sender = (thingName: string, principal: string) => ({ thingName, clientId: thingName, principal });

describe('recovery after expiry: bootstrap certificates', () => {
  let fixture: LifecycleFixture<InMemoryDeviceStore>;
  beforeEach(async () => {
    fixture = await createLifecycleFixture({ rotationCommitSeconds: COMMIT_SECONDS });
  });

  /** A device made at the factory: an operational certificate and a bootstrap certificate (OU=bootstrap), both ACTIVE and attached. */
  async function manufactured(deviceId: string, options: { readonly operational?: boolean } = {}) {
    await fixture.lifecycle.preRegisterDevice({ deviceId, attributes: {}, actor: actor.actor, requestKey: `pre-${deviceId}` });
    const issue = async (subject: string, key: string) =>
      (await fixture.lifecycle.issueFromCsr({ deviceId, csrPem: (await makeCsr(deviceId, { subject })).csrPem, actor: actor.actor, requestKey: `${key}-${deviceId}` })).certificateId;
    const bootstrap = await issue(`CN=${deviceId}, OU=bootstrap`, 'bootstrap');
    const operational = options.operational === false ? undefined : await issue(`CN=${deviceId}`, 'operational');
    return { bootstrap, operational };
  }

  test('JITR registers a factory-made bootstrap certificate like any other, recorded BOOTSTRAP, and it can recover the device', async () => {
    const operational = await fixture.firstConnect(await fixture.mintCertificate('valve-jitr'));
    await fixture.lifecycle.registerOnFirstConnect(operational);
    const bootstrapPem = await fixture.ca.mintDeviceCertificate('valve-jitr', (await makeCsr('valve-jitr', { subject: 'CN=valve-jitr, OU=bootstrap' })).csrPem, 825);
    const bootstrap = await fixture.firstConnect(bootstrapPem);

    const outcome = await fixture.lifecycle.registerOnFirstConnect(bootstrap);

    expect(outcome).toMatchObject({ outcome: 'ACTIVATED', certificateId: bootstrap.certificateId });
    expect(fixture.store.certificates.get(bootstrap.certificateId)).toMatchObject({ purpose: 'BOOTSTRAP', status: 'ACTIVE', source: 'JITR' });
    expect(fixture.store.certificates.get(operational.certificateId)?.purpose).toBe('OPERATIONAL');
    const rotated = await fixture.lifecycle.requestRotation({ ...sender('valve-jitr', bootstrap.certificateId), requestId: 'recover-1', csrPem: (await makeCsr('valve-jitr')).csrPem });
    expect(fixture.store.devices.get('valve-jitr')?.rotation?.previousCertificateId).toBe(operational.certificateId);
    expect(rotated.certificateId).not.toBe(bootstrap.certificateId);
  });

  test('the API signs a CSR with OU=bootstrap and records the certificate as BOOTSTRAP; one without an OU is OPERATIONAL', async () => {
    const { bootstrap, operational } = await manufactured('valve-1');

    expect(fixture.store.certificates.get(bootstrap)).toMatchObject({ purpose: 'BOOTSTRAP', status: 'ACTIVE', source: 'CSR' });
    expect(fixture.store.certificates.get(operational as string)).toMatchObject({ purpose: 'OPERATIONAL', status: 'ACTIVE' });
    expect(fixture.registry.findThing('valve-1')?.principals).toEqual([bootstrap, operational]);
  });

  test.each([
    ['two OUs (AWS IoT reads only the first)', 'CN=valve-2, OU=meters, OU=bootstrap', 'organizational units'],
    ['OU=Bootstrap (the policy compares case-sensitively)', 'CN=valve-2, OU=Bootstrap', 'is not "bootstrap"'],
  ])('rejects a CSR with %s, and nothing is issued', async (_case, subject, message) => {
    await fixture.lifecycle.preRegisterDevice({ deviceId: 'valve-2', attributes: {}, actor: actor.actor, requestKey: 'pre-valve-2' });
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    const error = await errorOf(fixture.lifecycle.issueFromCsr({ deviceId: 'valve-2', csrPem: (await makeCsr('valve-2', { subject })).csrPem, ...actor }));

    expect(error.code).toBe('INVALID_CSR');
    expect(error.message).toContain(message);
    expect(asked).not.toHaveBeenCalled();
  });

  test('rejects a rotation CSR that asks for OU=bootstrap: the bootstrap certificate is never made or replaced over MQTT', async () => {
    const { operational, bootstrap } = await manufactured('valve-3');
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    for (const principal of [operational as string, bootstrap]) {
      const error = await errorOf(
        fixture.lifecycle.requestRotation({ ...sender('valve-3', principal), requestId: `r-${principal.slice(0, 8)}`, csrPem: (await makeCsr('valve-3', { subject: 'CN=valve-3, OU=bootstrap' })).csrPem }),
      );
      expect(error.code).toBe('INVALID_CSR');
      expect(error.message).toContain('must not ask for OU=bootstrap');
    }
    expect(asked).not.toHaveBeenCalled();
  });

  test('rotate-now notices name the operational certificate only: a bootstrap certificate cannot be rotated over MQTT', async () => {
    const { operational } = await manufactured('valve-notice');
    const sent: string[] = [];
    const answer = await fixture.lifecycle.requestRenewal({ deviceId: 'valve-notice', ...actor, requestKey: 'renew-notice' }, async (_deviceId, notice) => {
      sent.push(notice.certificateId);
    });

    expect(sent).toEqual([operational]);
    expect(answer.notices.map((notice) => notice.certificateId)).toEqual([operational]);
  });

  test('a rotation asked over the bootstrap certificate replaces the operational certificate; the commit retires it and the bootstrap stays ACTIVE', async () => {
    const { bootstrap, operational } = await manufactured('valve-4');
    const rotated = await fixture.lifecycle.requestRotation({ ...sender('valve-4', bootstrap), requestId: 'recover-1', csrPem: (await makeCsr('valve-4')).csrPem });

    expect(fixture.store.devices.get('valve-4')?.rotation).toMatchObject({ state: 'PENDING', certificateId: rotated.certificateId, previousCertificateId: operational });
    expect(fixture.store.certificates.get(rotated.certificateId)).toMatchObject({ purpose: 'OPERATIONAL', source: 'ROTATION', rotatedFrom: operational });

    const committed = await fixture.lifecycle.commitRotation({ ...sender('valve-4', rotated.certificateId), requestId: 'recover-1', certificateId: rotated.certificateId });

    expect(committed).toEqual({ requestId: 'recover-1', certificateId: rotated.certificateId, retiredCertificateId: operational });
    expect(fixture.store.certificates.get(operational as string)?.status).toBe('RETIRED');
    expect(fixture.registry.findCertificate(operational as string)?.status).toBe('INACTIVE');
    expect(fixture.store.certificates.get(bootstrap)?.status).toBe('ACTIVE');
    expect(fixture.registry.findCertificate(bootstrap)?.status).toBe('ACTIVE');
    expect(fixture.registry.findThing('valve-4')?.principals).toEqual([bootstrap, rotated.certificateId]);
  });

  test('the bootstrap certificate recovers a device again and again: the second recovery replaces the certificate the first one made', async () => {
    const { bootstrap } = await manufactured('valve-5');
    const recover = async (requestId: string) => {
      const rotated = await fixture.lifecycle.requestRotation({ ...sender('valve-5', bootstrap), requestId, csrPem: (await makeCsr('valve-5')).csrPem });
      return fixture.lifecycle.commitRotation({ ...sender('valve-5', rotated.certificateId), requestId, certificateId: rotated.certificateId });
    };
    const first = await recover('recover-a');

    const second = await recover('recover-b');

    expect(second.retiredCertificateId).toBe(first.certificateId);
    expect(fixture.store.certificates.get(bootstrap)?.status).toBe('ACTIVE');
  });

  test('rejects a rotation over a bootstrap certificate when the device has no ACTIVE operational certificate, and issues nothing', async () => {
    const { bootstrap } = await manufactured('valve-6', { operational: false });
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender('valve-6', bootstrap), requestId: 'recover-1', csrPem: (await makeCsr('valve-6')).csrPem }));

    expect(error.code).toBe('PRINCIPAL_NOT_ALLOWED');
    expect(error.message).toContain('no ACTIVE one');
    expect(asked).not.toHaveBeenCalled();
    expect(fixture.store.devices.get('valve-6')?.rotation).toBeUndefined();
  });

  test.each([
    ['suspended', 'INACTIVE'],
    ['revoked', 'REVOKED'],
  ] as const)('a %s device never recovers: its bootstrap certificate is %s with the rest, and a rotation over it is refused', async (change, bootstrapStatus) => {
    const { bootstrap, operational } = await manufactured(`valve-${change}`);
    const deviceId = `valve-${change}`;
    if (change === 'suspended') await fixture.lifecycle.suspendDevice({ deviceId, ...actor, requestKey: `s-${deviceId}` });
    else await fixture.lifecycle.revokeDevice({ deviceId, reason: 'KEY_COMPROMISE', ...actor, requestKey: `v-${deviceId}` });
    const asked = jest.spyOn(fixture.ca, 'requestCertificate');

    const error = await errorOf(fixture.lifecycle.requestRotation({ ...sender(deviceId, bootstrap), requestId: 'recover-1', csrPem: (await makeCsr(deviceId)).csrPem }));

    expect(error.code).toBe('INVALID_TRANSITION');
    expect(asked).not.toHaveBeenCalled();
    expect(fixture.registry.findCertificate(bootstrap)?.status).toBe(bootstrapStatus);
    expect(fixture.store.certificates.get(bootstrap)?.status).toBe(bootstrapStatus);
    expect(fixture.registry.findCertificate(operational as string)?.status).toBe(bootstrapStatus);
  });
});
