import { X509Certificate } from 'node:crypto';
import { LocalDeviceRegistry } from '../../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { CertificateGate, registrationTopic } from '../../../local/iot-core/certificate-gate';
import { makeCsr } from '../../support/pki';

const NOW = new Date('2026-06-01T12:00:00.000Z');

async function fixture(options: { autoRegistration?: boolean } = {}) {
  const { ca, material } = await SoftwareCertificateAuthority.create('Gate test CA');
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet', now: () => NOW });
  const registeredCa = await registry.registerCaCertificate(material.certificatePem, { autoRegistration: options.autoRegistration ?? true });
  const gate = new CertificateGate(registry, { accountId: '000000000000', now: () => NOW });
  const mint = async (deviceId: string) => {
    const pem = await ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 30);
    return { pem, der: new X509Certificate(pem).raw };
  };
  return { registry, gate, mint, caCertificateId: registeredCa.caCertificateId };
}

describe('CertificateGate (what AWS IoT Core decides about a client certificate after TLS)', () => {
  test('registers an unknown certificate from a CA with auto-registration PENDING_ACTIVATION, refuses it, and answers the registration event', async () => {
    const { registry, gate, mint, caCertificateId } = await fixture();
    const device = await mint('gate-1');

    const admission = await gate.admit(device.der);

    expect(admission).toEqual({
      kind: 'REFUSE',
      certificateId: expect.stringMatching(/^[0-9a-f]{64}$/),
      reason: expect.stringContaining('registered PENDING_ACTIVATION'),
      registration: {
        certificateId: admission.certificateId,
        caCertificateId,
        timestamp: NOW.getTime(),
        certificateStatus: 'PENDING_ACTIVATION',
        awsAccountId: '000000000000',
        certificateRegistrationTimestamp: String(NOW.getTime()),
      },
    });
    expect(registry.findCertificate(admission.certificateId)).toMatchObject({ status: 'PENDING_ACTIVATION', caCertificateId });
    expect(registry.findCertificate(admission.certificateId)?.certificatePem.trim()).toBe(device.pem.trim());
    expect(registrationTopic(caCertificateId)).toBe(`$aws/events/certificates/registered/${caCertificateId}`);
  });

  test('refuses a PENDING_ACTIVATION certificate again with its registration event (a redelivery), then accepts it once ACTIVE', async () => {
    const { registry, gate, mint } = await fixture();
    const device = await mint('gate-2');
    const first = await gate.admit(device.der);

    const second = await gate.admit(device.der);
    await registry.updateCertificateStatus(first.certificateId, 'ACTIVE');
    const third = await gate.admit(device.der);

    expect(second).toMatchObject({ kind: 'REFUSE', reason: expect.stringContaining('PENDING_ACTIVATION'), registration: { certificateId: first.certificateId } });
    expect(third).toEqual({ kind: 'ACCEPT', certificateId: first.certificateId });
    expect(gate.pendingRegistrations()).toEqual([]);
  });

  test.each(['INACTIVE', 'REVOKED'] as const)('refuses a %s certificate without a registration event', async (status) => {
    const { registry, gate, mint } = await fixture();
    const device = await mint('gate-3');
    const { certificateId } = await gate.admit(device.der);
    await registry.updateCertificateStatus(certificateId, status);

    const admission = await gate.admit(device.der);

    expect(admission).toEqual({ kind: 'REFUSE', certificateId, reason: `the certificate is ${status}` });
  });

  test('refuses every certificate of a CA set INACTIVE (deactivated): an ACTIVE one, and an unknown one it no longer registers', async () => {
    const { registry, gate, mint, caCertificateId } = await fixture();
    const known = await mint('gate-ca-1');
    const { certificateId } = await gate.admit(known.der);
    await registry.updateCertificateStatus(certificateId, 'ACTIVE');
    const unknown = await mint('gate-ca-2');

    await registry.setCaCertificateStatus(caCertificateId, 'INACTIVE');
    const admissions = [await gate.admit(known.der), await gate.admit(unknown.der)];

    expect(admissions[0]).toEqual({ kind: 'REFUSE', certificateId, reason: expect.stringContaining('is INACTIVE') });
    expect(admissions[1]).toMatchObject({ kind: 'REFUSE', reason: 'the certificate is not registered and no registered CA signed it' });
    expect(registry.findCertificate(admissions[1]!.certificateId)).toBeUndefined();
  });

  test('refuses an unknown certificate when its CA has auto-registration off, and registers nothing', async () => {
    const { registry, gate, mint } = await fixture({ autoRegistration: false });
    const device = await mint('gate-4');

    const admission = await gate.admit(device.der);

    expect(admission).toMatchObject({ kind: 'REFUSE', reason: expect.stringContaining('auto-registration off') });
    expect(admission).not.toHaveProperty('registration');
    expect(registry.findCertificate(admission.certificateId)).toBeUndefined();
  });

  test('refuses an unknown certificate no registered CA signed, and registers nothing', async () => {
    const { registry, gate } = await fixture();
    const other = await SoftwareCertificateAuthority.create('Gate test CA'); // same name, other key
    const pem = await other.ca.mintDeviceCertificate('gate-5', (await makeCsr('gate-5')).csrPem, 30);

    const admission = await gate.admit(new X509Certificate(pem).raw);

    expect(admission).toMatchObject({ kind: 'REFUSE', reason: 'the certificate is not registered and no registered CA signed it' });
    expect(registry.findCertificate(admission.certificateId)).toBeUndefined();
  });

  test('lists the registrations left pending (delivered again at start)', async () => {
    const { gate, mint } = await fixture();
    const first = await gate.admit((await mint('gate-6')).der);
    const second = await gate.admit((await mint('gate-7')).der);

    expect(gate.pendingRegistrations().map((event) => event.certificateId).sort()).toEqual([first.certificateId, second.certificateId].sort());
  });
});
