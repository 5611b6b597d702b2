import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { BitString, fromBER, Sequence } from 'asn1js';
import { X509Certificate as NativeCertificate, createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import { ValidationError } from './errors';
import { isValidDeviceId } from './device-id';
import { purposeOfSubject, type CertificatePurpose } from './certificate-purpose';

/** Limits every certificate and CSR is checked against, in one place. */
export const CERTIFICATE_LIMITS = {
  /** A CSR for the keys we accept is well under 2 KiB; anything far larger is not a CSR we want to parse. */
  maxCsrPemBytes: 16 * 1024,
  minRsaModulusBits: 2048,
  maxRsaModulusBits: 4096,
  allowedCurves: ['P-256', 'P-384'] as readonly string[],
} as const;

const OID = {
  subjectAltName: '2.5.29.17',
  keyUsage: '2.5.29.15',
  extendedKeyUsage: '2.5.29.37',
  basicConstraints: '2.5.29.19',
  certificatePolicies: '2.5.29.32',
} as const;

/** CSR extension requests we accept; the CA's template sets key usage and EKU itself. */
const ALLOWED_CSR_EXTENSION_OIDS: ReadonlySet<string> = new Set([OID.subjectAltName, OID.keyUsage, OID.extendedKeyUsage, OID.basicConstraints]);

/**
 * The extensions a device identity may mark critical: the ones these rules read, plus certificate
 * policies (no policy is required of a device, so ignoring them is what RFC 5280 path validation does).
 * Any other critical extension is refused: RFC 5280 4.2 makes a verifier that does not know it refuse the certificate.
 */
const UNDERSTOOD_CRITICAL_EXTENSION_OIDS: ReadonlySet<string> = new Set([OID.subjectAltName, OID.keyUsage, OID.extendedKeyUsage, OID.basicConstraints, OID.certificatePolicies]);

/** Key usages only a CA may have. */
const CA_KEY_USAGES = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;

type X509ErrorCode = 'INVALID_CSR' | 'INVALID_CERTIFICATE';

/** How each path names what it checks, so one rule written once speaks each path's words. */
const WORDING: Readonly<Record<X509ErrorCode, { readonly noun: string; readonly has: string; readonly pemLabels: readonly string[] }>> = {
  INVALID_CSR: { noun: 'The CSR', has: 'requests', pemLabels: ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] },
  INVALID_CERTIFICATE: { noun: 'The certificate', has: 'has', pemLabels: ['CERTIFICATE'] },
};

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
  /** SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex: tells a re-key from a renewal with the same key. */
  readonly publicKeySha256: string;
  /** BOOTSTRAP when the subject's OU is `bootstrap` (see certificate-purpose.ts); OPERATIONAL otherwise. */
  readonly purpose: CertificatePurpose;
}

function parseCertificate(pem: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (error) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate is not a well-formed PEM or DER X.509 certificate.', { cause: error });
  }
}

const sha256Hex = (data: ArrayBuffer | Buffer): string => createHash('sha256').update(Buffer.from(data as ArrayBuffer)).digest('hex');

/**
 * AWS IoT's certificate id: the SHA-256 fingerprint of the DER encoding, lower-case hex. Read with node's native
 * parser (JITR computes it for every CA on every event; `@peculiar/x509` takes several times longer), falling back to
 * `@peculiar/x509` for what node does not read, so bad input still gets its `INVALID_CERTIFICATE`.
 */
export async function certificateIdOf(pem: string): Promise<string> {
  let raw: Buffer;
  try {
    raw = new NativeCertificate(pem).raw;
  } catch {
    return sha256Hex(parseCertificate(pem).rawData);
  }
  return sha256Hex(raw);
}

/** Issuer certificates as node reads them: a fleet has a handful of CAs, and every check is against one of them. */
interface NativeIssuer {
  readonly subject: string;
  readonly certificate: NativeCertificate;
  /** Its key, read once: node's `publicKey` makes a new KeyObject at each read. */
  readonly publicKey: KeyObject;
}
const nativeIssuers = new Map<string, NativeIssuer>();
const MAX_CACHED_ISSUERS = 64;

function issuerOf(pem: string): NativeIssuer {
  let issuer = nativeIssuers.get(pem);
  if (!issuer) {
    const certificate = new NativeCertificate(pem);
    issuer = { subject: new x509.X509Certificate(pem).subject, certificate, publicKey: certificate.publicKey };
    if (nativeIssuers.size >= MAX_CACHED_ISSUERS) nativeIssuers.clear();
    nativeIssuers.set(pem, issuer);
  }
  return issuer;
}

/**
 * Whether the issuer certificate's key signed the certificate (the signature only), checked by OpenSSL (node's
 * `X509Certificate.verify`): a fraction of a millisecond where the WebCrypto path takes several, on the JITR hot path.
 */
export function isSignedBy(certificate: x509.X509Certificate, issuerPem: string): boolean {
  return new NativeCertificate(Buffer.from(certificate.rawData)).verify(issuerOf(issuerPem).publicKey);
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
  return factsOf(parseCertificate(pem));
}

async function factsOf(certificate: x509.X509Certificate): Promise<CertificateFacts> {
  return {
    certificateId: sha256Hex(certificate.rawData),
    serialNumber: certificate.serialNumber.toLowerCase(),
    subject: certificate.subject,
    issuer: certificate.issuer,
    commonName: certificate.subjectName.getField('CN')[0],
    keyAlgorithm: describeAllowedKeyOrRaw(certificate.publicKey),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    certificatePem: certificate.toString('pem'),
    publicKeySha256: sha256Hex(certificate.publicKey.rawData),
    purpose: purposeOrOperational(certificate.subjectName),
  };
}

/** Reading a certificate never fails on its OU (the identity checks refuse an ambiguous one where it matters). */
function purposeOrOperational(subject: x509.Name): CertificatePurpose {
  try {
    return purposeOfSubject(subject, 'INVALID_CERTIFICATE');
  } catch {
    return 'OPERATIONAL';
  }
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
 * The checks a device certificate (seen on its first connect) must pass before it is activated:
 * one PEM block holding one DER certificate and nothing after it, signed by one of `trustedIssuerPems`,
 * inside its validity window, and the device identity rules every CSR obeys too (`checkDeviceIdentity`).
 * Throws `INVALID_CERTIFICATE` naming the first failure.
 *
 * Left to others on purpose: revocation (the lifecycle knows each certificate's status; AWS IoT refuses
 * revoked ones), the signature algorithm (our CA chose it) and chain building (our CA issues directly).
 */
export async function checkDeviceCertificate(pem: string, trustedIssuerPems: readonly string[], now: Date): Promise<DeviceCertificateCheck> {
  const der = decodeSinglePem(pem, 'INVALID_CERTIFICATE');
  let certificate: DeviceCertificate;
  try {
    certificate = new DeviceCertificate(der);
  } catch (error) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate is not a well-formed X.509 certificate.', { cause: error });
  }
  const decoded = assertNothingAfterDer(der, 'INVALID_CERTIFICATE');
  assertCertificateStructure(decoded);
  const facts = await factsOf(certificate);
  if (!isSignedByAny(certificate, decoded, trustedIssuerPems)) {
    throw new ValidationError('INVALID_CERTIFICATE', `The certificate was not signed by this fleet's CA (issuer "${facts.issuer}").`);
  }
  if (now < facts.notBefore) throw new ValidationError('INVALID_CERTIFICATE', `The certificate is not valid before ${facts.notBefore.toISOString()}.`);
  if (now >= facts.notAfter) throw new ValidationError('INVALID_CERTIFICATE', `The certificate expired at ${facts.notAfter.toISOString()}.`);
  const { deviceId } = checkDeviceIdentity({ subjectName: certificate.subjectName, publicKey: certificate.publicKey, extensions: certificate.extensionFields() }, 'INVALID_CERTIFICATE');
  return { facts, deviceId };
}

/**
 * A certificate whose extensions can also be read as they were decoded with it (OID, critical, value), each
 * re-encoded only when a rule reads its content: `X509Certificate.extensions` re-encodes every extension and parses
 * it twice over (ExtensionFactory), ≈ 1 ms per device certificate on the JITR path for extensions no rule reads
 * (subject and authority key identifiers, CRL distribution points).
 */
class DeviceCertificate extends x509.X509Certificate {
  public extensionFields(): ExtensionField[] {
    return (this.asn.tbsCertificate.extensions ?? []).map(({ extnID, critical, extnValue }) => ({
      type: extnID,
      critical,
      get rawData(): ArrayBuffer {
        return new x509.Extension(extnID, critical, extnValue.buffer).rawData;
      },
    }));
  }
}

/**
 * What OpenSSL (node's and AWS IoT's TLS) requires of a certificate's unsigned parts and the signature check below
 * does not see by itself: exactly tbsCertificate, signatureAlgorithm and signatureValue; the outer signatureAlgorithm
 * identical to the one the signed part names (RFC 5280 4.1.1.2); a signature of whole bytes. Else a genuine certificate
 * altered after signing (another certificate id, the same signature), or one whose signer named another algorithm than
 * it used, would pass a check OpenSSL fails.
 */
function assertCertificateStructure(decoded: DecodedDer): void {
  const outer = decoded.result instanceof Sequence ? decoded.result.valueBlock.value : [];
  const [tbs, signatureAlgorithm, signatureValue] = outer;
  const tbsFields = tbs instanceof Sequence ? tbs.valueBlock.value : [];
  // The version, when present, is the context-specific [0] before the serial number; the signature algorithm follows.
  const versioned = tbsFields[0]?.idBlock.tagClass === 3 && tbsFields[0].idBlock.tagNumber === 0;
  const signedAlgorithm = tbsFields[versioned ? 2 : 1];
  if (outer.length !== 3 || signatureAlgorithm === undefined || signedAlgorithm === undefined) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate is not a well-formed X.509 certificate: it must hold exactly tbsCertificate, signatureAlgorithm and signatureValue.');
  }
  // The signature's bytes are read without the BIT STRING's count of unused bits: any count but 0 would pass unseen.
  if (!(signatureValue instanceof BitString) || signatureValue.valueBlock.unusedBits !== 0) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate is not a well-formed X.509 certificate: its signatureValue must be a BIT STRING of whole bytes.');
  }
  if (Buffer.compare(signatureAlgorithm.valueBeforeDecodeView, signedAlgorithm.valueBeforeDecodeView) !== 0) {
    throw new ValidationError('INVALID_CERTIFICATE', 'The certificate names another signature algorithm outside its signed part than inside it (RFC 5280 4.1.1.2 requires the same): it is not a valid certificate.');
  }
}

/**
 * Whether one of the issuers signed the certificate: its signature over the to-be-signed bytes as received (the DER
 * just decoded), checked by node:crypto against the issuer's key read once; for a signature algorithm that check does
 * not cover, by node's `X509Certificate.verify` (which reads the whole certificate again, ≈ 1 ms more).
 */
function isSignedByAny(certificate: x509.X509Certificate, decoded: DecodedDer, issuerPems: readonly string[]): boolean {
  return issuerPems.some((issuerPem) => {
    const issuer = issuerOf(issuerPem);
    if (certificate.issuer !== issuer.subject) return false;
    try {
      return verifyNatively(certificate, decoded, () => issuer.publicKey) ?? isSignedBy(certificate, issuerPem);
    } catch {
      // A key of another type than the signature algorithm names (an RSA issuer, an ECDSA signature): not its signature.
      return false;
    }
  });
}

export interface CheckedCsr {
  readonly csrPem: string;
  readonly keyAlgorithm: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo, as in `CertificateFacts.publicKeySha256`. */
  readonly publicKeySha256: string;
  /** The purpose the certificate will have (OU=bootstrap: BOOTSTRAP). */
  readonly purpose: CertificatePurpose;
}

/**
 * Checks a PKCS#10 request before it reaches the CA: size, one PEM block holding one DER request and
 * nothing after it, signature (proof of possession), the device identity rules every device certificate
 * obeys too (`checkDeviceIdentity`) with the CN equal to `deviceId`, and no extension request other
 * than SAN, key usage, extended key usage and basic constraints.
 */
export async function checkCsr(csrPem: string, deviceId: string): Promise<CheckedCsr> {
  if (Buffer.byteLength(csrPem, 'utf8') > CERTIFICATE_LIMITS.maxCsrPemBytes) {
    throw new ValidationError('INVALID_CSR', `The CSR is larger than ${CERTIFICATE_LIMITS.maxCsrPemBytes} bytes.`);
  }
  const der = decodeSinglePem(csrPem, 'INVALID_CSR');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch (error) {
    throw new ValidationError('INVALID_CSR', 'The CSR is not a well-formed PKCS#10 request.', { cause: error });
  }
  const decoded = assertNothingAfterDer(der, 'INVALID_CSR');
  let signatureValid: boolean;
  try {
    signatureValid = verifyNatively(csr, decoded, () => createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' })) ?? (await csr.verify());
  } catch (error) {
    throw new ValidationError('INVALID_CSR', 'The CSR signature could not be checked: unsupported signature algorithm or key.', { cause: error });
  }
  if (!signatureValid) throw new ValidationError('INVALID_CSR', 'The CSR signature does not verify: it was not signed by the key it carries.');
  const { keyAlgorithm, purpose } = checkDeviceIdentity(csr, 'INVALID_CSR', deviceId);
  for (const extension of csr.extensions) {
    if (!ALLOWED_CSR_EXTENSION_OIDS.has(extension.type)) {
      throw new ValidationError('INVALID_CSR', `The CSR requests extension ${extension.type}, which is not allowed: request only subjectAltName, keyUsage, extendedKeyUsage or basicConstraints.`);
    }
  }
  return { csrPem: csr.toString('pem'), keyAlgorithm, purpose, publicKeySha256: sha256Hex(csr.publicKey.rawData) };
}

/** Node's names of the digests CSR and certificate signatures use. */
const NODE_DIGESTS: Readonly<Record<string, string>> = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };

/**
 * A signature (a CSR's, by its own key; a certificate's, by its issuer's) checked by node:crypto (OpenSSL) for the
 * algorithms devices and CAs use: ECDSA and RSA PKCS#1 v1.5 with SHA-2. Several times faster than the WebCrypto path
 * (`csr.verify()`, which imports the key as a CryptoKey and converts the signature first); `undefined` for any other
 * algorithm, which the caller then checks another way.
 */
function verifyNatively(signed: { readonly signatureAlgorithm: x509.HashedAlgorithm; readonly signature: ArrayBuffer }, decoded: DecodedDer, key: () => KeyObject): boolean | undefined {
  const { name, hash } = signed.signatureAlgorithm as { name: string; hash?: { name?: string } };
  const digest = hash?.name === undefined ? undefined : NODE_DIGESTS[hash.name];
  // The signed bytes: the first element of the outer SEQUENCE (certificationRequestInfo, tbsCertificate), as received.
  const tbs = decoded.result instanceof Sequence ? decoded.result.valueBlock.value[0]?.valueBeforeDecodeView : undefined;
  if (digest === undefined || tbs === undefined || (name !== 'ECDSA' && name !== 'RSASSA-PKCS1-v1_5')) return undefined;
  // An ECDSA signature in a CSR or a certificate is DER (ECDSA-Sig-Value): node's default `dsaEncoding`.
  return verifySignature(digest, tbs, key(), Buffer.from(signed.signature));
}

/** An extension as the identity rules read it: an `x509.Extension`, or one read only when a rule needs its content. */
interface ExtensionField {
  readonly type: string;
  readonly critical: boolean;
  /** The DER of the whole extension, as `x509.Extension.rawData`. */
  readonly rawData: ArrayBuffer;
}

/** What a device identity is made of, in a CSR and in a certificate alike. */
interface DeviceIdentitySource {
  readonly subjectName: x509.Name;
  readonly publicKey: x509.PublicKey;
  readonly extensions: readonly ExtensionField[];
}

/** At most this much of a value read from a certificate or CSR goes into a message. */
const MAX_QUOTED_LENGTH = 140;
const quote = (value: string): string => `"${value.length > MAX_QUOTED_LENGTH ? `${value.slice(0, MAX_QUOTED_LENGTH)}...` : value}"`;

/**
 * The one set of rules a device identity obeys, whether it arrives as a CSR to sign or as a
 * certificate our CA signed (JITR):
 * - the subject holds exactly one common name (CN), a well-formed device id, and `expectedDeviceId` when given;
 * - it is an end entity: no basicConstraints CA:TRUE (a CA certificate is never a device);
 * - key usage, when present, includes digitalSignature (a device signs its TLS handshake) and neither
 *   keyCertSign nor cRLSign (which only a CA may have);
 * - extended key usage, when present, includes clientAuth (a device is a TLS client);
 * - no extension twice (RFC 5280 4.2), and no critical extension outside `UNDERSTOOD_CRITICAL_EXTENSION_OIDS`;
 * - a key `describeAllowedKey` accepts;
 * - at most one OU, and `bootstrap` only in lower case (`purposeOfSubject`).
 * Throws `code` naming the first failure and what to change.
 */
function checkDeviceIdentity(source: DeviceIdentitySource, code: X509ErrorCode, expectedDeviceId?: string): { deviceId: string; keyAlgorithm: string; purpose: CertificatePurpose } {
  const { noun, has } = WORDING[code];
  const commonNames = source.subjectName.getField('CN');
  const [deviceId] = commonNames;
  if (commonNames.length !== 1 || deviceId === undefined) {
    const found = commonNames.length === 0 ? 'none' : `${commonNames.length}: ${commonNames.map(quote).join(', ')}`;
    throw new ValidationError(code, `${noun} subject must hold exactly one common name (CN), the device id; it holds ${found}.`);
  }
  if (expectedDeviceId !== undefined && deviceId !== expectedDeviceId) {
    throw new ValidationError(code, `${noun} subject common name must be exactly the device id ${quote(expectedDeviceId)} (found ${quote(deviceId)}).`);
  }
  if (!isValidDeviceId(deviceId)) {
    throw new ValidationError(code, `${noun} subject common name ${quote(deviceId)} is not a valid device id: use 1 to 128 characters from a-z, A-Z, 0-9, ":", "_" and "-".`);
  }
  const seen = new Set<string>();
  for (const extension of source.extensions) {
    if (seen.has(extension.type)) throw new ValidationError(code, `${noun} ${has} extension ${extension.type} more than once: each extension may appear once.`);
    seen.add(extension.type);
    if (extension.critical && !UNDERSTOOD_CRITICAL_EXTENSION_OIDS.has(extension.type)) {
      throw new ValidationError(code, `${noun} ${has} critical extension ${extension.type}, which devices' verifiers do not understand and must refuse: leave it out or make it non-critical.`);
    }
    checkExtension(extension, code);
  }
  const purpose = purposeOfSubject(source.subjectName, code);
  return { deviceId, keyAlgorithm: describeAllowedKey(source.publicKey, code), purpose };
}

/** The rules for the extensions `checkDeviceIdentity` reads; a malformed one is refused, not skipped. */
function checkExtension(extension: ExtensionField, code: X509ErrorCode): void {
  const { noun, has } = WORDING[code];
  const read = <T>(parse: () => T, name: string): T => {
    try {
      return parse();
    } catch (error) {
      throw new ValidationError(code, `${noun} ${has} a malformed ${name} extension.`, { cause: error });
    }
  };
  switch (extension.type) {
    case OID.basicConstraints: {
      if (read(() => new x509.BasicConstraintsExtension(extension.rawData), 'basicConstraints').ca) {
        throw new ValidationError(code, `${noun} ${has} basicConstraints CA:TRUE: a device certificate is an end entity, never a CA; leave basicConstraints out or set CA:FALSE.`);
      }
      return;
    }
    case OID.keyUsage: {
      const usages = read(() => new x509.KeyUsagesExtension(extension.rawData), 'keyUsage').usages;
      if ((usages & CA_KEY_USAGES) !== 0) {
        throw new ValidationError(code, `${noun} ${has} key usage keyCertSign or cRLSign, which only a CA may have: leave them out.`);
      }
      if ((usages & x509.KeyUsageFlags.digitalSignature) === 0) {
        throw new ValidationError(code, `${noun} ${has} key usage without digitalSignature: a device signs its TLS handshake with its key; include digitalSignature.`);
      }
      return;
    }
    case OID.extendedKeyUsage: {
      const usages = read(() => new x509.ExtendedKeyUsageExtension(extension.rawData), 'extendedKeyUsage').usages;
      if (!usages.some((usage) => usage === x509.ExtendedKeyUsage.clientAuth)) {
        throw new ValidationError(code, `${noun} ${has} extended key usage without clientAuth (${x509.ExtendedKeyUsage.clientAuth}): a device authenticates as a TLS client; include clientAuth.`);
      }
      return;
    }
    default:
      return;
  }
}

/**
 * The DER of the one PEM block `text` must hold, of the type `code` expects. More than one block is
 * refused rather than reading the first and ignoring the rest.
 */
function decodeSinglePem(text: string, code: X509ErrorCode): ArrayBuffer {
  const { noun, pemLabels } = WORDING[code];
  const expected = `"-----BEGIN ${pemLabels[0] ?? ''}-----"`;
  const begins = text.match(/-----BEGIN /g)?.length ?? 0;
  if (begins > 1) throw new ValidationError(code, `${noun} PEM holds ${begins} blocks: send exactly one ${expected} block.`);
  let blocks: ReturnType<typeof x509.PemConverter.decodeWithHeaders>;
  try {
    blocks = x509.PemConverter.decodeWithHeaders(text);
  } catch (error) {
    throw new ValidationError(code, `${noun} must be PEM text starting with ${expected}.`, { cause: error });
  }
  const [block] = blocks;
  if (blocks.length !== 1 || block === undefined || !pemLabels.includes(block.type)) {
    throw new ValidationError(code, `${noun} must be PEM text starting with ${expected}.`);
  }
  return block.rawData;
}

/**
 * Refuses bytes after the DER object: parsers (ours included) read the first object and ignore the rest,
 * so they would travel unchecked, and a certificate's id (the SHA-256 of its bytes) would not be AWS IoT's.
 * asn1js, the DER parser under @peculiar/x509, says where the first object ends.
 */
function assertNothingAfterDer(der: ArrayBuffer, code: X509ErrorCode): DecodedDer {
  const decoded = fromBER(der);
  const { offset } = decoded;
  if (offset !== der.byteLength) {
    const { noun } = WORDING[code];
    const extra = offset < 0 ? 'bytes that are not DER' : `${der.byteLength - offset} byte(s) after its DER encoding`;
    throw new ValidationError(code, `${noun} PEM block holds ${extra}: encode exactly one DER object in it, with nothing appended.`);
  }
  return decoded;
}

type DecodedDer = ReturnType<typeof fromBER>;

/** CA chains as split: a fleet has a few, and issuance splits one per request (≈ 1 ms of parsing each time). */
const splitChains = new Map<string, readonly string[]>();
const MAX_CACHED_CHAINS = 64;

/** The certificates of a PEM bundle (a CA chain), each as PEM, in the order given. */
export function splitPemChain(chainPem: string): string[] {
  if (chainPem.trim() === '') return [];
  let pems = splitChains.get(chainPem);
  if (!pems) {
    pems = Object.freeze(x509.PemConverter.decode(chainPem).map((der) => new x509.X509Certificate(der).toString('pem')));
    if (splitChains.size >= MAX_CACHED_CHAINS) splitChains.clear();
    splitChains.set(chainPem, pems);
  }
  return [...pems];
}
