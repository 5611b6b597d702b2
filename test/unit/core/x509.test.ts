import * as x509 from '@peculiar/x509';
import { checkCsr, checkDeviceCertificate, certificateIdOf, CERTIFICATE_LIMITS } from '../../../functions/core/x509';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { makeCsr, makeForeignCa, withBrokenSignature } from '../../support/pki';
import { createHash } from 'node:crypto';

describe('checkCsr', () => {
  test.each(['EC_P256', 'EC_P384', 'RSA_2048'] as const)('accepts a %s CSR whose CN is the device id', async (keySpec) => {
    const { csrPem } = await makeCsr('sensor-1', { keySpec });
    await expect(checkCsr(csrPem, 'sensor-1')).resolves.toMatchObject({ keyAlgorithm: keySpec === 'RSA_2048' ? 'RSA_2048' : keySpec.replace('EC_P', 'EC_P_') });
  });

  test('rejects garbage that is not PEM', async () => {
    await expect(checkCsr('hello', 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: 'The CSR must be PEM text starting with "-----BEGIN CERTIFICATE REQUEST-----".' });
  });

  test('rejects a PEM block whose content is not a PKCS#10 request', async () => {
    await expect(checkCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----', 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR' });
  });

  test('rejects a CSR whose signature does not verify', async () => {
    const { csrPem } = await makeCsr('sensor-1');
    await expect(checkCsr(withBrokenSignature(csrPem), 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: expect.stringContaining('signature') });
  });

  test('rejects RSA-1024 with the sizes it accepts', async () => {
    const { csrPem } = await makeCsr('sensor-1', { keySpec: 'RSA_1024' });
    await expect(checkCsr(csrPem, 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: 'RSA key of 1024 bits is not allowed: use 2048 to 4096 bits.' });
  });

  test('rejects EC P-521', async () => {
    const { csrPem } = await makeCsr('sensor-1', { keySpec: 'EC_P521' });
    await expect(checkCsr(csrPem, 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: 'EC key on curve P-521 is not allowed: use P-256 or P-384.' });
  });

  test('rejects a CN that is not the device id', async () => {
    const { csrPem } = await makeCsr('sensor-2');
    await expect(checkCsr(csrPem, 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: 'The CSR subject common name must be exactly the device id "sensor-1" (found "sensor-2").' });
  });

  test('rejects a CSR asking to be a CA', async () => {
    const { csrPem } = await makeCsr('sensor-1', { extensions: [new x509.BasicConstraintsExtension(true, 0, true)] });
    await expect(checkCsr(csrPem, 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: expect.stringContaining('CA:TRUE') });
  });

  test('rejects a CSR larger than the limit before parsing it', async () => {
    await expect(checkCsr('x'.repeat(CERTIFICATE_LIMITS.maxCsrPemBytes + 1), 'sensor-1')).rejects.toMatchObject({ code: 'INVALID_CSR', message: `The CSR is larger than ${CERTIFICATE_LIMITS.maxCsrPemBytes} bytes.` });
  });
});

describe('checkDeviceCertificate', () => {
  test('accepts a certificate from our CA and names the device from its CN; its id is the SHA-256 of the DER', async () => {
    const { ca, material } = await SoftwareCertificateAuthority.create('Fleet CA');
    const pem = await ca.mintDeviceCertificate('sensor-1', (await makeCsr('sensor-1')).csrPem, 30);

    const check = await checkDeviceCertificate(pem, [material.certificatePem], new Date());

    expect(check.deviceId).toBe('sensor-1');
    const der = Buffer.from(x509.PemConverter.decodeFirst(pem));
    expect(check.facts.certificateId).toBe(createHash('sha256').update(der).digest('hex'));
    expect(await certificateIdOf(pem)).toBe(check.facts.certificateId);
  });

  test('rejects a certificate from another CA', async () => {
    const { material } = await SoftwareCertificateAuthority.create('Fleet CA');
    const foreign = await makeForeignCa();
    await expect(checkDeviceCertificate(await foreign.issue('sensor-1'), [material.certificatePem], new Date())).rejects.toMatchObject({
      code: 'INVALID_CERTIFICATE',
      message: expect.stringContaining("not signed by this fleet's CA"),
    });
  });

  test('rejects a certificate outside its validity window', async () => {
    const { ca, material } = await SoftwareCertificateAuthority.create('Fleet CA');
    const pem = await ca.mintDeviceCertificate('sensor-1', (await makeCsr('sensor-1')).csrPem, 1);
    await expect(checkDeviceCertificate(pem, [material.certificatePem], new Date(Date.now() + 2 * 86_400_000))).rejects.toMatchObject({ message: expect.stringContaining('expired') });
    await expect(checkDeviceCertificate(pem, [material.certificatePem], new Date(Date.now() - 86_400_000))).rejects.toMatchObject({ message: expect.stringContaining('not valid before') });
  });

  test('rejects a CN that is not a well-formed device id', async () => {
    const { ca, material } = await SoftwareCertificateAuthority.create('Fleet CA');
    const { csrPem } = await makeCsr('x', { subject: 'CN=bad id with spaces' });
    const pem = await ca.issueCertificate({ csrPem, validityDays: 10, idempotencyToken: 't1' });
    await expect(checkDeviceCertificate(pem.certificatePem, [material.certificatePem], new Date())).rejects.toMatchObject({ message: 'The subject common name "bad id with spaces" is not a valid device id.' });
  });
});
