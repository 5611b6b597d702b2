import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { ValidationError } from './errors';
import { isValidDeviceId } from './device-id';

/** Limits every certificate and CSR is checked against, in one place. */
export const CERTIFICATE_LIMITS = {
  /** A CSR for the keys we accept is well under 2 KiB; anything far larger is not a CSR we want to parse. */
  maxCsrPemBytes: 16 * 1024,
  minRsaModulusBits: 2048,
  maxRsaModulusBits: 4096,
  allowedCurves: ['P-256', 'P-384'] as readonly string[],
} as const;

/** CSR extension requests we accept; the CA's template sets key usage and EKU itself. */
const ALLOWED_CSR_EXTENSION_OIDS: ReadonlySet<string> = new Set([
  '2.5.29.17', // subjectAltName
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extendedKeyUsage
]);
const BASIC_CONSTRAINTS_OID = '2.5.29.19';

export interface CertificateFacts {
  readonly certificateId: string;
  readonly serialNumber: string;
  readonly subject: string;
  readonly issuer: string;
  readonly commonName?: string;
  readonly keyAlgorithm: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly certificatePem: string;
}

const toHex = (buffer: ArrayBuffer): string => Buffer.from(buffer).toString('hex');

function parseCertificate(pem: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (error) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate is not a well-formed PEM or DER X.509 certificate.', { cause: error });
  }
}

/** AWS IoT's certificate id: the SHA-256 fingerprint of the DER encoding, lower-case hex. */
export async function certificateIdOf(pem: string): Promise<string> {
  return toHex(await parseCertificate(pem).getThumbprint('SHA-256'));
}

/**
 * Describes the key, or throws when it is not one we accept:
 * EC P-256 / P-384, or RSA of 2048 to 4096 bits.
 */
export function describeAllowedKey(publicKey: x509.PublicKey, code: 'INVALID_CSR' | 'INVALID_CERTIFICATE'): string {
  const algorithm = publicKey.algorithm as { name: string; namedCurve?: string; modulusLength?: number };
  if (algorithm.name === 'ECDSA' || algorithm.name === 'ECDH') {
    if (algorithm.namedCurve && CERTIFICATE_LIMITS.allowedCurves.includes(algorithm.namedCurve)) return `EC_${algorithm.namedCurve.replace('-', '_')}`;
    throw new ValidationError(code, `EC key on curve ${algorithm.namedCurve ?? 'unknown'} is not allowed: use P-256 or P-384.`);
  }
  if (algorithm.name.startsWith('RSA')) {
    const bits = algorithm.modulusLength ?? 0;
    if (bits < CERTIFICATE_LIMITS.minRsaModulusBits || bits > CERTIFICATE_LIMITS.maxRsaModulusBits) {
      throw new ValidationError(code, `RSA key of ${bits} bits is not allowed: use ${CERTIFICATE_LIMITS.minRsaModulusBits} to ${CERTIFICATE_LIMITS.maxRsaModulusBits} bits.`);
    }
    return `RSA_${bits}`;
  }
  throw new ValidationError(code, `Key algorithm ${algorithm.name} is not allowed: use EC P-256, EC P-384 or RSA 2048+.`);
}

export async function inspectCertificate(pem: string): Promise<CertificateFacts> {
  const certificate = parseCertificate(pem);
  return {
    certificateId: toHex(await certificate.getThumbprint('SHA-256')),
    serialNumber: certificate.serialNumber.toLowerCase(),
    subject: certificate.subject,
    issuer: certificate.issuer,
    commonName: certificate.subjectName.getField('CN')[0],
    keyAlgorithm: describeAllowedKeyOrRaw(certificate.publicKey),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    certificatePem: certificate.toString('pem'),
  };
}

function describeAllowedKeyOrRaw(publicKey: x509.PublicKey): string {
  try {
    return describeAllowedKey(publicKey, 'INVALID_CERTIFICATE');
  } catch {
    return publicKey.algorithm.name;
  }
}

export interface DeviceCertificateCheck {
  readonly facts: CertificateFacts;
  readonly deviceId: string;
}

/**
 * The checks a device certificate must pass before it is activated:
 * signed by one of `trustedIssuerPems`, inside its validity window, subject CN a
 * well-formed device id, and a key we accept. Throws `INVALID_CERTIFICATE` naming the first failure.
 */
export async function checkDeviceCertificate(pem: string, trustedIssuerPems: readonly string[], now: Date): Promise<DeviceCertificateCheck> {
  const certificate = parseCertificate(pem);
  const facts = await inspectCertificate(pem);
  if (!(await isSignedByAny(certificate, trustedIssuerPems))) {
    throw new ValidationError('INVALID_CERTIFICATE', `The certificate was not signed by this fleet's CA (issuer "${facts.issuer}").`);
  }
  if (now < facts.notBefore) throw new ValidationError('INVALID_CERTIFICATE', `The certificate is not valid before ${facts.notBefore.toISOString()}.`);
  if (now >= facts.notAfter) throw new ValidationError('INVALID_CERTIFICATE', `The certificate expired at ${facts.notAfter.toISOString()}.`);
  const deviceId = facts.commonName;
  if (deviceId === undefined || !isValidDeviceId(deviceId)) {
    throw new ValidationError('INVALID_CERTIFICATE', `The subject common name "${deviceId ?? ''}" is not a valid device id.`);
  }
  describeAllowedKey(certificate.publicKey, 'INVALID_CERTIFICATE');
  return { facts, deviceId };
}

async function isSignedByAny(certificate: x509.X509Certificate, issuerPems: readonly string[]): Promise<boolean> {
  for (const issuerPem of issuerPems) {
    const issuer = new x509.X509Certificate(issuerPem);
    if (certificate.issuer !== issuer.subject) continue;
    if (await certificate.verify({ publicKey: issuer.publicKey, signatureOnly: true })) return true;
  }
  return false;
}

export interface CheckedCsr {
  readonly csrPem: string;
  readonly keyAlgorithm: string;
}

/**
 * Checks a PKCS#10 request before it reaches the CA: size, PEM form, signature
 * (proof of possession), key algorithm and size, CN equal to the device id, and
 * no extension request other than SAN, key usage and extended key usage.
 */
export async function checkCsr(csrPem: string, deviceId: string): Promise<CheckedCsr> {
  if (Buffer.byteLength(csrPem, 'utf8') > CERTIFICATE_LIMITS.maxCsrPemBytes) {
    throw new ValidationError('INVALID_CSR', `The CSR is larger than ${CERTIFICATE_LIMITS.maxCsrPemBytes} bytes.`);
  }
  if (!/-----BEGIN (NEW )?CERTIFICATE REQUEST-----/.test(csrPem)) {
    throw new ValidationError('INVALID_CSR', 'The CSR must be PEM text starting with "-----BEGIN CERTIFICATE REQUEST-----".');
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem.replace(/NEW CERTIFICATE REQUEST/g, 'CERTIFICATE REQUEST'));
  } catch (error) {
    throw new ValidationError('INVALID_CSR', 'The CSR is not a well-formed PKCS#10 request.', { cause: error });
  }
  let signatureValid: boolean;
  try {
    signatureValid = await csr.verify();
  } catch (error) {
    throw new ValidationError('INVALID_CSR', 'The CSR signature could not be checked: unsupported signature algorithm or key.', { cause: error });
  }
  if (!signatureValid) throw new ValidationError('INVALID_CSR', 'The CSR signature does not verify: it was not signed by the key it carries.');
  const keyAlgorithm = describeAllowedKey(csr.publicKey, 'INVALID_CSR');
  const commonNames = csr.subjectName.getField('CN');
  if (commonNames.length !== 1 || commonNames[0] !== deviceId) {
    throw new ValidationError('INVALID_CSR', `The CSR subject common name must be exactly the device id "${deviceId}" (found "${commonNames.join(', ')}").`);
  }
  for (const extension of csr.extensions) {
    if (extension.type === BASIC_CONSTRAINTS_OID) {
      const basic = new x509.BasicConstraintsExtension(extension.rawData);
      if (basic.ca) throw new ValidationError('INVALID_CSR', 'The CSR asks for a CA certificate (basicConstraints CA:TRUE); device certificates are end-entity.');
      continue;
    }
    if (!ALLOWED_CSR_EXTENSION_OIDS.has(extension.type)) {
      throw new ValidationError('INVALID_CSR', `The CSR requests extension ${extension.type}, which is not allowed.`);
    }
  }
  return { csrPem: csr.toString('pem'), keyAlgorithm };
}

/** The certificates of a PEM bundle (a CA chain), each as PEM, in the order given. */
export function splitPemChain(chainPem: string): string[] {
  if (chainPem.trim() === '') return [];
  return x509.PemConverter.decode(chainPem).map((der) => new x509.X509Certificate(der).toString('pem'));
}
