import * as x509 from '@peculiar/x509';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509';
import { X509Certificate as NativeCertificate, createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { checkDeviceCertificate } from '../../../functions/core/x509';
import { deviceCertificateExtensions } from '../../support/pki';

/**
 * The JITR signature check runs on node:crypto over the signed bytes (not through node's X509Certificate): it must
 * refuse every certificate OpenSSL (node's and AWS IoT's TLS) refuses, and accept none that is not our CA's.
 * Hostile certificates are built by hand here: a genuine certificate taken apart and put back together.
 */
const EC_SHA256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const ECDSA_WITH_SHA384 = '1.2.840.10045.4.3.3';

interface SigningCa {
  readonly certificatePem: string;
  readonly privateKey: KeyObject;
  issue(commonName: string): Promise<x509.X509Certificate>;
}

async function makeSigningCa(commonName: string): Promise<SigningCa> {
  const keys = (await crypto.subtle.generateKey(EC_SHA256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({ name: `CN=${commonName}`, keys, signingAlgorithm: EC_SHA256, extensions: [new x509.BasicConstraintsExtension(true, 0, true)] });
  return {
    certificatePem: ca.toString('pem'),
    privateKey: createPrivateKey({ key: Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)), format: 'der', type: 'pkcs8' }),
    issue: async (deviceCommonName) => {
      const deviceKeys = (await crypto.subtle.generateKey(EC_SHA256, true, ['sign', 'verify'])) as CryptoKeyPair;
      return x509.X509CertificateGenerator.create({
        subject: `CN=${deviceCommonName}`,
        issuer: ca.subject,
        publicKey: deviceKeys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: EC_SHA256,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 86_400_000),
        extensions: deviceCertificateExtensions(),
      });
    },
  };
}

const pemOf = (der: Buffer): string => x509.PemConverter.encode(new Uint8Array(der), 'CERTIFICATE');
const openSslAccepts = (der: Buffer, caPem: string): boolean => {
  try {
    return new NativeCertificate(der).verify(new NativeCertificate(caPem).publicKey);
  } catch {
    return false; // OpenSSL does not even read it
  }
};

describe('JITR signature check against hostile certificates', () => {
  let ca: SigningCa;
  let genuine: x509.X509Certificate;
  beforeAll(async () => {
    ca = await makeSigningCa('Fleet CA');
    genuine = await ca.issue('sensor-1');
  });

  test('the genuine certificate passes, and OpenSSL agrees', async () => {
    expect(openSslAccepts(Buffer.from(genuine.rawData), ca.certificatePem)).toBe(true);
    await expect(checkDeviceCertificate(genuine.toString('pem'), [ca.certificatePem], new Date())).resolves.toMatchObject({ deviceId: 'sensor-1' });
  });

  // The outer signatureAlgorithm is not signed: the CA's key signed the TBS with SHA-384 while the TBS names SHA-256.
  // Checked under the outer algorithm alone the signature is valid; OpenSSL refuses the mismatch (RFC 5280 4.1.1.2).
  test('rejects a certificate whose outer signature algorithm is not the one its signed part names, as OpenSSL does', async () => {
    const parsed = AsnConvert.parse(genuine.rawData, Certificate);
    const signedPart = Buffer.from(AsnConvert.serialize(parsed.tbsCertificate));
    const hostile = new Certificate({
      tbsCertificate: parsed.tbsCertificate,
      signatureAlgorithm: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA384 }),
      signatureValue: new Uint8Array(sign('sha384', signedPart, ca.privateKey)).buffer,
    });
    const der = Buffer.from(AsnConvert.serialize(hostile));

    expect(openSslAccepts(der, ca.certificatePem)).toBe(false);
    await expect(checkDeviceCertificate(pemOf(der), [ca.certificatePem], new Date())).rejects.toMatchObject({
      code: 'INVALID_CERTIFICATE',
      message: 'The certificate names another signature algorithm outside its signed part than inside it (RFC 5280 4.1.1.2 requires the same): it is not a valid certificate.',
    });
  });

  // Another certificate (another SHA-256, so another AWS IoT certificate id) made of a genuine one without the CA's key.
  test('rejects a genuine certificate with an element added to its outer SEQUENCE, which OpenSSL cannot read', async () => {
    const original = Buffer.from(genuine.rawData);
    expect(original.subarray(0, 2)).toEqual(Buffer.from([0x30, 0x82])); // a SEQUENCE with a two-byte length
    const content = Buffer.concat([original.subarray(4), Buffer.from([0x05, 0x00])]);
    const der = Buffer.concat([Buffer.from([0x30, 0x82, content.length >> 8, content.length & 0xff]), content]);

    expect(openSslAccepts(der, ca.certificatePem)).toBe(false);
    await expect(checkDeviceCertificate(pemOf(der), [ca.certificatePem], new Date())).rejects.toMatchObject({
      code: 'INVALID_CERTIFICATE',
      message: 'The certificate is not a well-formed X.509 certificate: it must hold exactly tbsCertificate, signatureAlgorithm and signatureValue.',
    });
  });

  // The signature bytes are the same; only the BIT STRING's count of unused bits (not signed) says 1 instead of 0.
  test('rejects a genuine certificate whose signature BIT STRING claims unused bits, which OpenSSL refuses', async () => {
    const parsed = AsnConvert.parse(genuine.rawData, Certificate);
    const encoded = Buffer.from(AsnConvert.serialize(parsed));
    const signature = Buffer.from(parsed.signatureValue);
    // The signatureValue ends the DER: tag 03, its length, the unused-bits byte, then the signature.
    const unusedBitsAt = encoded.length - signature.length - 1;
    expect(encoded[unusedBitsAt]).toBe(0x00);
    expect(encoded.subarray(unusedBitsAt + 1).equals(signature)).toBe(true);
    const der = Buffer.from(encoded);
    der[unusedBitsAt] = 0x01;

    expect(openSslAccepts(der, ca.certificatePem)).toBe(false);
    await expect(checkDeviceCertificate(pemOf(der), [ca.certificatePem], new Date())).rejects.toMatchObject({
      code: 'INVALID_CERTIFICATE',
      message: 'The certificate is not a well-formed X.509 certificate: its signatureValue must be a BIT STRING of whole bytes.',
    });
  });

  test('rejects a certificate whose signature was made over other bytes than its signed part (a field changed after signing)', async () => {
    const parsed = AsnConvert.parse(genuine.rawData, Certificate);
    const other = AsnConvert.parse((await ca.issue('sensor-2')).rawData, Certificate);
    // sensor-2's signed part under sensor-1's signature: every byte is genuine, the pair is not.
    const der = Buffer.from(AsnConvert.serialize(new Certificate({ tbsCertificate: other.tbsCertificate, signatureAlgorithm: parsed.signatureAlgorithm, signatureValue: parsed.signatureValue })));

    expect(openSslAccepts(der, ca.certificatePem)).toBe(false);
    await expect(checkDeviceCertificate(pemOf(der), [ca.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: expect.stringContaining("not signed by this fleet's CA") });
  });

  // A CA rotation that keeps the CA's name: the issuer names match, the keys do not. The issuers read before stay
  // cached in a warm process: each is found by its certificate, never by its name.
  test("a previous CA's certificate passes while that CA is trusted beside the current one, and is refused once it is not", async () => {
    const current = await makeSigningCa('Fleet CA');
    const ofPrevious = genuine.toString('pem');
    const ofCurrent = (await current.issue('sensor-3')).toString('pem');

    await expect(checkDeviceCertificate(ofPrevious, [current.certificatePem, ca.certificatePem], new Date())).resolves.toMatchObject({ deviceId: 'sensor-1' });
    await expect(checkDeviceCertificate(ofCurrent, [current.certificatePem, ca.certificatePem], new Date())).resolves.toMatchObject({ deviceId: 'sensor-3' });
    await expect(checkDeviceCertificate(ofPrevious, [current.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: expect.stringContaining("not signed by this fleet's CA") });
    await expect(checkDeviceCertificate(ofCurrent, [ca.certificatePem], new Date())).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE', message: expect.stringContaining("not signed by this fleet's CA") });
  });
});
