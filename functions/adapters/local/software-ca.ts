import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { ValidationError } from '../../core/errors';
import type { RevocationReason } from '../../core/model';
import type { CaCertificates, CertificateAuthority, IssueCertificateRequest, IssuedCertificate, RevokeCertificateRequest } from '../../core/ports';
import { checkCsr } from '../../core/x509';

/** The issuance limits of the software CA, in one place. */
export const SOFTWARE_CA_LIMITS = {
  /** Like AWS Private CA (which backdates 60 minutes), tolerate device clocks that run behind. */
  backdateMinutes: 5,
  maxValidityDays: 825,
  serialNumberBytes: 16,
  caValidityDays: 3650,
  crlValidityHours: 24,
  /** A CRL is signed again once this much of its validity has passed, even with no new revocation: one served always has 12 hours left. */
  crlReissueAfterHours: 12,
} as const;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

const CRL_REASONS: Readonly<Record<RevocationReason, x509.X509CrlReason>> = {
  UNSPECIFIED: x509.X509CrlReason.unspecified,
  KEY_COMPROMISE: x509.X509CrlReason.keyCompromise,
  CERTIFICATE_AUTHORITY_COMPROMISE: x509.X509CrlReason.cACompromise,
  AFFILIATION_CHANGED: x509.X509CrlReason.affiliationChanged,
  SUPERSEDED: x509.X509CrlReason.superseded,
  CESSATION_OF_OPERATION: x509.X509CrlReason.cessationOfOperation,
  PRIVILEGE_WITHDRAWN: x509.X509CrlReason.privilegeWithdrawn,
  A_A_COMPROMISE: x509.X509CrlReason.aACompromise,
};

export interface RevocationEntry {
  readonly serialNumber: string;
  readonly reason: RevocationReason;
  readonly revokedAt: string;
}

/** Where the software CA keeps its revocations: one entry each, never one growing blob. */
export interface RevocationList {
  add(entry: RevocationEntry): Promise<void>;
  entries(): Promise<readonly RevocationEntry[]>;
  /** A number that grows whenever the entries change: the CA signs a new CRL then. */
  readonly revision: number;
}

export class InMemoryRevocationList implements RevocationList {
  private readonly bySerial = new Map<string, RevocationEntry>();
  private changes = 0;
  public get revision(): number {
    return this.changes;
  }
  public async add(entry: RevocationEntry): Promise<void> {
    if (this.bySerial.has(entry.serialNumber)) return;
    this.bySerial.set(entry.serialNumber, entry);
    this.changes += 1;
  }
  public async entries(): Promise<readonly RevocationEntry[]> {
    return [...this.bySerial.values()];
  }
}

/** The CA's key and certificate as PEM: what the local mode keeps under `.local/` (key file mode 0600). */
const LOCAL_ISSUANCE_PREFIX = 'local-ca:';

export interface SoftwareCaMaterial {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export interface SoftwareCaOptions {
  readonly revocations?: RevocationList;
  /** Put in each issued certificate as its CRL distribution point. */
  readonly crlUrl?: string;
  readonly now?: () => Date;
  /**
   * Certificates of CAs this one replaced (a CA rotation): they no longer sign, but `getCaCertificates` answers them
   * as `previous`, so JITR and rotation still accept their devices.
   * @default - none
   */
  readonly previousCaCertificatePems?: readonly string[];
}

const provider = webcrypto as unknown as Crypto;

function randomSerial(): string {
  const bytes = provider.getRandomValues(new Uint8Array(SOFTWARE_CA_LIMITS.serialNumberBytes));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive INTEGER
  bytes[0] = bytes[0] === 0 ? 1 : bytes[0]; // no leading zero byte to strip
  return Buffer.from(bytes).toString('hex');
}

/**
 * An in-process CA (ECDSA P-256) standing in for AWS Private CA in the local mode and the tests:
 * issues end-entity client certificates from CSRs, revokes, and publishes a CRL built from its revocation entries.
 */
export class SoftwareCertificateAuthority implements CertificateAuthority {
  private readonly issuedByToken = new Map<string, IssuedCertificate>();
  private readonly revocations: RevocationList;
  private readonly now: () => Date;
  /** The last CRL signed, with the revision of the revocation list it was built from. */
  private crl?: { readonly pem: string; readonly revision: number; readonly reissueAt: number };
  /** The CRL being signed, so concurrent requests wait for one signature instead of making their own. */
  private signingCrl?: { readonly revision: number; readonly pem: Promise<string> };
  /** The CA certificate as PEM, encoded once: every issuance answers it as the chain. */
  private readonly caCertificatePem: string;
  /** The authority key identifier every certificate this CA signs carries: the same for each, so computed once. */
  private authorityKeyIdentifier?: Promise<x509.AuthorityKeyIdentifierExtension>;
  /** The extensions that are the same in every client (or server) certificate: each built once (≈ 0.4 ms per issuance). */
  private readonly fixedExtensions = new Map<'client' | 'server', readonly x509.Extension[]>();

  private constructor(
    private readonly caCertificate: x509.X509Certificate,
    private readonly caKeys: CryptoKeyPair,
    private readonly options: SoftwareCaOptions,
  ) {
    this.revocations = options.revocations ?? new InMemoryRevocationList();
    this.now = options.now ?? (() => new Date());
    this.caCertificatePem = caCertificate.toString('pem');
  }

  public static async create(commonName: string, options: SoftwareCaOptions = {}): Promise<{ ca: SoftwareCertificateAuthority; material: SoftwareCaMaterial }> {
    const keys = (await provider.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = options.now?.() ?? new Date();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: randomSerial(),
        name: `CN=${commonName}`,
        notBefore: new Date(now.getTime() - SOFTWARE_CA_LIMITS.backdateMinutes * 60_000),
        notAfter: new Date(now.getTime() + SOFTWARE_CA_LIMITS.caValidityDays * 86_400_000),
        keys,
        signingAlgorithm: SIGNING,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
        ],
      },
      provider,
    );
    const pkcs8 = await provider.subtle.exportKey('pkcs8', keys.privateKey);
    const material = { certificatePem: certificate.toString('pem'), privateKeyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
    return { ca: new SoftwareCertificateAuthority(certificate, keys, options), material };
  }

  public static async load(material: SoftwareCaMaterial, options: SoftwareCaOptions = {}): Promise<SoftwareCertificateAuthority> {
    const certificate = new x509.X509Certificate(material.certificatePem);
    const privateKey = await provider.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(material.privateKeyPem), EC_P256, true, ['sign']);
    const publicKey = await certificate.publicKey.export(EC_P256, ['verify'], provider);
    return new SoftwareCertificateAuthority(certificate, { privateKey, publicKey }, options);
  }

  public async getCaCertificates(): Promise<CaCertificates> {
    const previous = (this.options.previousCaCertificatePems ?? []).map((certificatePem) => ({ certificatePem, certificateChainPem: '' }));
    return { certificatePem: this.caCertificatePem, certificateChainPem: '', ...(previous.length > 0 ? { previous } : {}) };
  }

  /**
   * This CA signs at once, so the issuance id carries the certificate itself (its DER, base64url): it can be collected
   * after a restart, with nothing else kept.
   */
  public async requestCertificate(request: IssueCertificateRequest): Promise<{ readonly issuanceId: string }> {
    const { certificatePem } = await this.issueCertificate(request);
    return { issuanceId: `${LOCAL_ISSUANCE_PREFIX}${Buffer.from(x509.PemConverter.decodeFirst(certificatePem)).toString('base64url')}` };
  }

  public async collectCertificate(issuanceId: string): Promise<IssuedCertificate> {
    if (!issuanceId.startsWith(LOCAL_ISSUANCE_PREFIX)) throw new ValidationError('INVALID_REQUEST', `Issuance ${issuanceId.slice(0, 40)} was not made by this CA.`);
    const certificate = new x509.X509Certificate(Buffer.from(issuanceId.slice(LOCAL_ISSUANCE_PREFIX.length), 'base64url'));
    return { certificatePem: certificate.toString('pem'), certificateChainPem: this.caCertificatePem };
  }

  public async issueCertificate(request: IssueCertificateRequest): Promise<IssuedCertificate> {
    const previous = this.issuedByToken.get(request.idempotencyToken);
    if (previous) return previous;
    // The core checked this CSR (checkCsr: signature, key, subject, extensions) before asking any CA: not verified twice.
    const csr = new x509.Pkcs10CertificateRequest(request.csrPem);
    const certificate = await this.sign(csr.subject, csr.publicKey, request.validityDays, 'client');
    const issued = { certificatePem: certificate.toString('pem'), certificateChainPem: this.caCertificatePem };
    this.issuedByToken.set(request.idempotencyToken, issued);
    return issued;
  }

  /** What a factory does: signs a device's public key directly, without registering anything. Same limits as `issueCertificate`. */
  public async mintDeviceCertificate(deviceId: string, csrPem: string, validityDays: number): Promise<string> {
    await checkCsr(csrPem, deviceId);
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    return (await this.sign(csr.subject, csr.publicKey, validityDays, 'client')).toString('pem');
  }

  /** A TLS server certificate for the local MQTT endpoint. */
  public async issueServerCertificate(hostnames: readonly string[], publicKey: CryptoKey, validityDays: number): Promise<string> {
    return (await this.sign(`CN=${hostnames[0] ?? 'localhost'}`, publicKey, validityDays, 'server', hostnames)).toString('pem');
  }

  public async revokeCertificate(request: RevokeCertificateRequest): Promise<void> {
    await this.revocations.add({ serialNumber: request.serialNumber.toLowerCase(), reason: request.reason, revokedAt: this.now().toISOString() });
  }

  public async isRevoked(serialNumber: string): Promise<boolean> {
    return (await this.revocations.entries()).some((entry) => entry.serialNumber === serialNumber.toLowerCase());
  }

  /**
   * The CRL (PEM, `-----BEGIN X509 CRL-----`) listing every revocation. It is signed once per change of the
   * revocation list (and again once `crlReissueAfterHours` have passed), then served as it is: signing on
   * every request would let anyone who can reach the CRL URL keep the CA busy.
   */
  public async generateCrlPem(): Promise<string> {
    const { revision } = this.revocations;
    if (this.crl && this.crl.revision === revision && this.now().getTime() < this.crl.reissueAt) return this.crl.pem;
    if (this.signingCrl?.revision === revision) return this.signingCrl.pem;
    const signing = { revision, pem: this.signCrl(revision) };
    this.signingCrl = signing;
    try {
      return await signing.pem;
    } finally {
      if (this.signingCrl === signing) this.signingCrl = undefined;
    }
  }

  /** Signs a CRL of every revocation; `revision` is the list's, read before its entries (a change meanwhile makes the next call sign again). */
  private async signCrl(revision: number): Promise<string> {
    const now = this.now();
    const crl = await x509.X509CrlGenerator.create(
      {
        issuer: this.caCertificate.subject,
        thisUpdate: now,
        nextUpdate: new Date(now.getTime() + SOFTWARE_CA_LIMITS.crlValidityHours * 3_600_000),
        signingAlgorithm: SIGNING,
        signingKey: this.caKeys.privateKey,
        extensions: [await this.authorityKeyIdentifierExtension()],
        entries: (await this.revocations.entries()).map((entry) => ({
          serialNumber: entry.serialNumber,
          revocationDate: new Date(entry.revokedAt),
          reason: CRL_REASONS[entry.reason],
        })),
      },
      provider,
    );
    // RFC 7468 labels a CRL "X509 CRL" (what openssl reads); @peculiar/x509's own PEM says "CRL".
    const pem = x509.PemConverter.encode(crl.rawData, 'X509 CRL');
    const reissueAt = now.getTime() + SOFTWARE_CA_LIMITS.crlReissueAfterHours * 3_600_000;
    // A slower signature started before a newer one must not replace it.
    if (!this.crl || this.crl.revision <= revision) this.crl = { pem, revision, reissueAt };
    return pem;
  }

  /**
   * The validity limits, checked in one place for every certificate this CA signs: 1 to
   * `SOFTWARE_CA_LIMITS.maxValidityDays` whole days, and never past the CA's own expiry (refused, like
   * AWS Private CA does, rather than silently cut short).
   */
  private checkValidity(validityDays: number): void {
    if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > SOFTWARE_CA_LIMITS.maxValidityDays) {
      throw new ValidationError('INVALID_REQUEST', `Validity must be 1 to ${SOFTWARE_CA_LIMITS.maxValidityDays} days (asked: ${validityDays}).`);
    }
    const notAfter = this.now().getTime() + validityDays * 86_400_000;
    if (notAfter > this.caCertificate.notAfter.getTime()) {
      throw new ValidationError(
        'INVALID_REQUEST',
        `Validity of ${validityDays} days would end after the CA certificate expires (${this.caCertificate.notAfter.toISOString()}): ask for fewer days, or rotate the CA.`,
      );
    }
  }

  private fixedExtensionsFor(usage: 'client' | 'server'): readonly x509.Extension[] {
    let extensions = this.fixedExtensions.get(usage);
    if (!extensions) {
      extensions = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth]),
        ...(this.options.crlUrl ? [new x509.CRLDistributionPointsExtension([this.options.crlUrl])] : []),
      ];
      this.fixedExtensions.set(usage, extensions);
    }
    return extensions;
  }

  private authorityKeyIdentifierExtension(): Promise<x509.AuthorityKeyIdentifierExtension> {
    this.authorityKeyIdentifier ??= x509.AuthorityKeyIdentifierExtension.create(this.caKeys.publicKey, false, provider);
    return this.authorityKeyIdentifier;
  }

  /** The one signing path: every certificate (client or server) passes `checkValidity` here. */
  private async sign(subject: string, publicKey: x509.PublicKey | CryptoKey, validityDays: number, usage: 'client' | 'server', dnsNames: readonly string[] = []): Promise<x509.X509Certificate> {
    this.checkValidity(validityDays);
    const now = this.now();
    const notAfter = new Date(now.getTime() + validityDays * 86_400_000);
    const extensions: x509.Extension[] = [...this.fixedExtensionsFor(usage), await x509.SubjectKeyIdentifierExtension.create(publicKey, false, provider), await this.authorityKeyIdentifierExtension()];
    if (dnsNames.length > 0) {
      extensions.push(
        new x509.SubjectAlternativeNameExtension(dnsNames.map((name) => (/^[\d.]+$/.test(name) ? { type: 'ip' as const, value: name } : { type: 'dns' as const, value: name }))),
      );
    }
    return x509.X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        subject,
        issuer: this.caCertificate.subject,
        notBefore: new Date(now.getTime() - SOFTWARE_CA_LIMITS.backdateMinutes * 60_000),
        notAfter,
        publicKey,
        signingKey: this.caKeys.privateKey,
        signingAlgorithm: SIGNING,
        extensions,
      },
      provider,
    );
  }
}
