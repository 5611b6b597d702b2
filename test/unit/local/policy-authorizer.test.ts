import { LocalDeviceRegistry } from '../../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { fleetPolicyDocument } from '../../../functions/policy/fleet-policy';
import { PolicyAuthorizer } from '../../../local/iot-core/policy-authorizer';
import { makeCsr } from '../../support/pki';

async function fixture() {
  const { ca, material } = await SoftwareCertificateAuthority.create('Authorizer test CA');
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
  await registry.registerCaCertificate(material.certificatePem, { autoRegistration: true });
  await registry.putPolicy('fleet-policy', fleetPolicyDocument({ region: 'local', accountId: '000000000000' }));
  await registry.attachPolicyToThingGroup('fleet-policy', 'fleet');
  const onboard = async (deviceId: string, subject?: string) => {
    const pem = await ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId, subject === undefined ? {} : { subject })).csrPem, 30);
    const { certificateId } = await registry.registerCertificate({ certificatePem: pem, caCertificatePem: material.certificatePem });
    await registry.ensureThing(deviceId, {});
    await registry.attachCertificate(deviceId, certificateId);
    return certificateId;
  };
  const certA = await onboard('dev-a');
  const certB = await onboard('dev-b');
  return { registry, authorizer: new PolicyAuthorizer(registry, { region: 'local', accountId: '000000000000' }), certA, certB, onboard };
}

describe('PolicyAuthorizer (the fleet policy through the thing group)', () => {
  test('builds the connection context: thing name = client id when that thing is attached to the certificate', async () => {
    const { authorizer, certA } = await fixture();

    expect(authorizer.context({ certificateId: certA, clientId: 'dev-a' })).toEqual({
      region: 'local',
      accountId: '000000000000',
      clientId: 'dev-a',
      thingName: 'dev-a',
      thingAttached: true,
      certificateId: certA,
      subjectOrganizationalUnits: [],
    });
    expect(authorizer.context({ certificateId: certA, clientId: 'dev-b' })).toEqual({
      region: 'local',
      accountId: '000000000000',
      clientId: 'dev-b',
      thingAttached: false,
      certificateId: certA,
      subjectOrganizationalUnits: [],
    });
  });

  test('reads the subject OU from the registered certificate: a bootstrap certificate of dev-a may only rotate', async () => {
    const { authorizer, onboard } = await fixture();
    const bootstrap = await onboard('dev-a', 'CN=dev-a, OU=bootstrap');
    const identity = { certificateId: bootstrap, clientId: 'dev-a' };

    expect(authorizer.context(identity).subjectOrganizationalUnits).toEqual(['bootstrap']);
    expect(authorizer.authorize('iot:Connect', 'dev-a', identity).allowed).toBe(true);
    expect(authorizer.authorize('iot:Publish', 'devices/dev-a/certificates/rotate', identity).allowed).toBe(true);
    expect(authorizer.authorize('iot:Subscribe', 'devices/dev-a/certificates/rotate/+', identity).allowed).toBe(true);
    expect(authorizer.authorize('iot:Receive', 'devices/dev-a/certificates/rotate/accepted', identity).allowed).toBe(true);
    expect(authorizer.authorize('iot:Publish', 'devices/dev-a/telemetry', identity)).toMatchObject({ allowed: false, reason: expect.stringContaining('explicitly denied') });
    expect(authorizer.authorize('iot:Subscribe', 'devices/dev-a/#', identity).allowed).toBe(false);
  });

  test.each([
    ['iot:Connect', 'dev-a', 'dev-a', true],
    ['iot:Connect', 'dev-b', 'dev-b', false],
    ['iot:Connect', 'someone', 'someone', false],
    ['iot:Publish', 'dev-a', 'devices/dev-a/telemetry', true],
    ['iot:Publish', 'dev-a', 'devices/dev-b/telemetry', false],
    ['iot:Publish', 'dev-a', 'devices/dev-a', false],
    ['iot:Subscribe', 'dev-a', 'devices/dev-a/#', true],
    ['iot:Subscribe', 'dev-a', 'devices/dev-a/+/x', true],
    ['iot:Subscribe', 'dev-a', 'devices/#', false],
    ['iot:Subscribe', 'dev-a', 'devices/+/telemetry', false],
    ['iot:Subscribe', 'dev-a', '#', false],
    ['iot:Receive', 'dev-a', 'devices/dev-a/commands', true],
    ['iot:Receive', 'dev-a', 'devices/dev-b/commands', false],
  ] as const)('%s by certificate A with client id %s on %s: allowed %s', async (action, clientId, resource, allowed) => {
    const { authorizer, certA } = await fixture();

    expect(authorizer.authorize(action, resource, { certificateId: certA, clientId }).allowed).toBe(allowed);
  });

  test('refuses everything once the certificate is detached from the thing (no thing, no policy)', async () => {
    const { registry, authorizer, certA } = await fixture();
    await registry.detachCertificate('dev-a', certA);

    const decision = authorizer.authorize('iot:Publish', 'devices/dev-a/telemetry', { certificateId: certA, clientId: 'dev-a' });

    expect(decision).toEqual({ allowed: false, reason: expect.stringContaining('no thing named "dev-a" is attached to this certificate') });
  });

  test('refuses everything once the certificate is not ACTIVE', async () => {
    const { registry, authorizer, certA } = await fixture();
    await registry.updateCertificateStatus(certA, 'REVOKED');

    const decision = authorizer.authorize('iot:Receive', 'devices/dev-a/commands', { certificateId: certA, clientId: 'dev-a' });

    expect(decision).toEqual({ allowed: false, reason: 'iot:Receive refused: the certificate is REVOKED' });
  });

  test('says which statement allowed an action', async () => {
    const { authorizer, certB } = await fixture();

    const decision = authorizer.authorize('iot:Connect', 'dev-b', { certificateId: certB, clientId: 'dev-b' });

    expect(decision.allowed).toBe(true);
    expect(decision.reason).toContain('allowed by policy[0].Statement[0]');
  });
});
