import * as x509 from '@peculiar/x509';
import { checkCsr, checkDeviceCertificate, certificateIdOf, CERTIFICATE_LIMITS } from '../../../functions/core/x509';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { deviceCertificateExtensions, makeCa, makeCsr, makeForeignCa, withBrokenSignature, withTrailingBytes } from '../../support/pki';
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

  // The signature is checked over the bytes as received, against the key of the CA the issuer name points to.
  test('rejects a certificate from a CA with the fleet CA\'s name but another key, and one whose signature was altered', async () => {
    const [fleetCa, impostor] = await Promise.all([makeCa('Fleet CA'), makeCa('Fleet CA')]);
    const genuine = await fleetCa.issue('sensor-1');
    const der = Buffer.from(x509.PemConverter.decodeFirst(genuine));
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const altered = x509.PemConverter.encode(der, 'CERTIFICATE');

    await expect(checkDeviceCertificate(genuine, [fleetCa.certificatePem], new Date())).resolves.toMatchObject({ deviceId: 'sensor-1' });
    for (const pem of [await impostor.issue('sensor-1'), altered]) {
      await expect(checkDeviceCertificate(pem, [fleetCa.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: expect.stringContaining("not signed by this fleet's CA") });
    }
  });

  test('checks the signature of an RSA fleet CA too, and refuses an RSA impostor of an EC fleet CA', async () => {
    const rsa = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
    const rsaKeys = (await crypto.subtle.generateKey(rsa, true, ['sign', 'verify'])) as CryptoKeyPair;
    const rsaCa = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=Fleet CA', keys: rsaKeys, signingAlgorithm: rsa, extensions: [new x509.BasicConstraintsExtension(true, 0, true)] });
    const deviceKeys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const signedByRsa = await x509.X509CertificateGenerator.create({
      subject: 'CN=sensor-1',
      issuer: rsaCa.subject,
      publicKey: deviceKeys.publicKey,
      signingKey: rsaKeys.privateKey,
      signingAlgorithm: rsa,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      extensions: deviceCertificateExtensions(),
    });
    const ecFleetCa = await makeCa('Fleet CA');

    await expect(checkDeviceCertificate(signedByRsa.toString('pem'), [rsaCa.toString('pem')], new Date())).resolves.toMatchObject({ deviceId: 'sensor-1' });
    await expect(checkDeviceCertificate(signedByRsa.toString('pem'), [ecFleetCa.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: expect.stringContaining("not signed by this fleet's CA") });
  });

  test('refuses a certificate whose basicConstraints does not decode, naming it', async () => {
    const fleetCa = await makeCa('Fleet CA');
    const malformed = new x509.Extension('2.5.29.19', true, new Uint8Array([0x05, 0x00]));
    const pem = await fleetCa.issue('sensor-1', { extensions: [malformed, ...deviceCertificateExtensions().filter((extension) => extension.type !== '2.5.29.19')] });

    await expect(checkDeviceCertificate(pem, [fleetCa.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: 'The certificate has a malformed basicConstraints extension.' });
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
    await expect(checkDeviceCertificate(pem.certificatePem, [material.certificatePem], new Date())).rejects.toMatchObject({
      code: 'INVALID_CERTIFICATE',
      message: 'The certificate subject common name "bad id with spaces" is not a valid device id: use 1 to 128 characters from a-z, A-Z, 0-9, ":", "_" and "-".',
    });
  });
});

describe('one set of device rules for CSR signing and JITR', () => {
  /** What a device identity is built from, on either path. */
  interface IdentitySpec {
    readonly subject?: string;
    /** CSR: the extensions it requests (default none). Certificate: the extensions the CA puts in (default a device certificate's). */
    readonly extensions?: x509.Extension[];
    /** Changes the PEM before it is checked. */
    readonly alter?: (pem: string) => string;
  }
  interface Wording {
    readonly noun: string;
    readonly has: string;
    readonly label: string;
  }

  const DEVICE_ID = 'dev-a';
  const unchanged = (pem: string): string => pem;

  const PATHS = [
    {
      path: 'CSR signing',
      code: 'INVALID_CSR',
      wording: { noun: 'The CSR', has: 'requests', label: 'CERTIFICATE REQUEST' },
      check: async (spec: IdentitySpec): Promise<unknown> => {
        const { csrPem } = await makeCsr(DEVICE_ID, { subject: spec.subject, extensions: spec.extensions });
        return checkCsr((spec.alter ?? unchanged)(csrPem), DEVICE_ID);
      },
    },
    {
      path: 'JITR',
      code: 'INVALID_CERTIFICATE',
      wording: { noun: 'The certificate', has: 'has', label: 'CERTIFICATE' },
      check: async (spec: IdentitySpec): Promise<unknown> => {
        const ca = await makeCa('Fleet CA');
        const pem = await ca.issue(DEVICE_ID, { subject: spec.subject, extensions: spec.extensions });
        return checkDeviceCertificate((spec.alter ?? unchanged)(pem), [ca.certificatePem], new Date());
      },
    },
  ] as const;

  const REFUSED: readonly [string, IdentitySpec, (wording: Wording) => string][] = [
    [
      'two common names (CN=dev-a, CN=dev-b)',
      { subject: 'CN=dev-a, CN=dev-b' },
      ({ noun }) => `${noun} subject must hold exactly one common name (CN), the device id; it holds 2: "dev-a", "dev-b".`,
    ],
    ['no common name', { subject: 'O=Fleet' }, ({ noun }) => `${noun} subject must hold exactly one common name (CN), the device id; it holds none.`],
    [
      'basicConstraints CA:TRUE',
      { extensions: [new x509.BasicConstraintsExtension(true, 0, true)] },
      ({ noun, has }) => `${noun} ${has} basicConstraints CA:TRUE: a device certificate is an end entity, never a CA; leave basicConstraints out or set CA:FALSE.`,
    ],
    [
      'an extended key usage without clientAuth',
      { extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])] },
      ({ noun, has }) => `${noun} ${has} extended key usage without clientAuth (1.3.6.1.5.5.7.3.2): a device authenticates as a TLS client; include clientAuth.`,
    ],
    [
      'key usage keyCertSign',
      { extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true)] },
      ({ noun, has }) => `${noun} ${has} key usage keyCertSign or cRLSign, which only a CA may have: leave them out.`,
    ],
    [
      'a key usage without digitalSignature',
      { extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyEncipherment, true)] },
      ({ noun, has }) => `${noun} ${has} key usage without digitalSignature: a device signs its TLS handshake with its key; include digitalSignature.`,
    ],
    [
      'a critical extension nobody understands',
      { extensions: [new x509.Extension('1.3.6.1.4.1.55555.1', true, new Uint8Array([0x05, 0x00]))] },
      ({ noun, has }) => `${noun} ${has} critical extension 1.3.6.1.4.1.55555.1, which devices' verifiers do not understand and must refuse: leave it out or make it non-critical.`,
    ],
    [
      'the same extension twice',
      { extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])] },
      ({ noun, has }) => `${noun} ${has} extension 2.5.29.37 more than once: each extension may appear once.`,
    ],
    [
      'bytes after the DER',
      { alter: (pem) => withTrailingBytes(pem) },
      ({ noun }) => `${noun} PEM block holds 2 byte(s) after its DER encoding: encode exactly one DER object in it, with nothing appended.`,
    ],
    ['two PEM blocks', { alter: (pem) => `${pem}\n${pem}` }, ({ noun, label }) => `${noun} PEM holds 2 blocks: send exactly one "-----BEGIN ${label}-----" block.`],
    [
      'a PEM block of another type',
      { alter: (pem) => pem.replace(/(BEGIN|END) [A-Z ]+-----/g, '$1 X509 CRL-----') },
      ({ noun, label }) => `${noun} must be PEM text starting with "-----BEGIN ${label}-----".`,
    ],
  ];

  describe.each(PATHS)('on the $path path', ({ code, wording, check }) => {
    test.each<[string, IdentitySpec]>([
      ['a single CN equal to the device id', {}],
      ['the extensions of a device certificate (CA:FALSE, digitalSignature, clientAuth)', { extensions: deviceCertificateExtensions() }],
      ['other subject attributes next to the one CN', { subject: `O=Fleet, OU=Line 1, CN=${DEVICE_ID}` }],
    ])('accepts %s', async (_name, spec) => {
      // Act
      const checking = check(spec);

      // Assess
      await expect(checking).resolves.toBeDefined();
    });

    test.each(REFUSED)('refuses %s', async (_name, spec, message) => {
      // Act
      const checking = check(spec);

      // Assess
      await expect(checking).rejects.toMatchObject({ name: 'ValidationError', code, message: message(wording) });
    });
  });

  test('CSR signing still takes the "NEW CERTIFICATE REQUEST" label some tools write', async () => {
    const { csrPem } = await makeCsr(DEVICE_ID);
    await expect(checkCsr(csrPem.replace(/CERTIFICATE REQUEST/g, 'NEW CERTIFICATE REQUEST'), DEVICE_ID)).resolves.toMatchObject({ keyAlgorithm: 'EC_P_256' });
  });

  test('JITR names the device from the one CN of a certificate with more subject attributes', async () => {
    const ca = await makeCa('Fleet CA');
    const pem = await ca.issue(DEVICE_ID, { subject: `O=Fleet, CN=${DEVICE_ID}` });
    await expect(checkDeviceCertificate(pem, [ca.certificatePem], new Date())).resolves.toMatchObject({ deviceId: DEVICE_ID });
  });
});
