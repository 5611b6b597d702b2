import {
  ACMPCAClient,
  GetCertificateAuthorityCertificateCommand,
  IssueCertificateCommand,
  RevokeCertificateCommand,
  type GetCertificateCommandOutput,
  type RevocationReason as PcaRevocationReason,
  type SigningAlgorithm,
} from '@aws-sdk/client-acm-pca';
import { UpstreamError, ValidationError } from '../../core/errors';
import type { RevocationReason } from '../../core/model';
import type { CaCertificates, CertificateAuthority, IssueCertificateRequest, IssuedCertificate, RevokeCertificateRequest } from '../../core/ports';
import { fleetCasOf, issuingFleetCaOf } from '../../core/fleet-cas';
import { errorName, retryingClientConfig, toUpstreamError } from './aws-errors';
import { collectIssuedCertificate, ISSUANCE_POLLING, IssuanceStillInProgressError } from './private-ca-issuance';

/** The AWS Private CA actions this adapter can call; {@link privateCaIamActions} narrows them to the operations one function uses. */
export const PRIVATE_CA_IAM_ACTIONS = [
  'acm-pca:IssueCertificate',
  'acm-pca:GetCertificate',
  'acm-pca:RevokeCertificate',
  'acm-pca:GetCertificateAuthorityCertificate',
] as const;
export type PrivateCaIamAction = (typeof PRIVATE_CA_IAM_ACTIONS)[number];
export type CertificateAuthorityOperation = keyof CertificateAuthority;

/** What each operation of the port calls, written next to the code that calls it. */
const ACTIONS_BY_OPERATION: Readonly<Record<CertificateAuthorityOperation, readonly PrivateCaIamAction[]>> = {
  requestCertificate: ['acm-pca:IssueCertificate'],
  collectCertificate: ['acm-pca:GetCertificate'],
  revokeCertificate: ['acm-pca:RevokeCertificate'],
  getCaCertificates: ['acm-pca:GetCertificateAuthorityCertificate'],
};

/** The Private CA actions a function needs for the operations it uses: what the CDK stack grants its role. */
export function privateCaIamActions(operations: readonly CertificateAuthorityOperation[]): readonly PrivateCaIamAction[] {
  const needed = new Set(operations.flatMap((operation) => ACTIONS_BY_OPERATION[operation]));
  return PRIVATE_CA_IAM_ACTIONS.filter((action) => needed.has(action));
}

/** End-entity certificate with key usage digitalSignature and extended key usage clientAuth: what a device presents to AWS IoT. */
export const DEFAULT_DEVICE_TEMPLATE_ARN = 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1';

/** RFC 5280 reasons → AWS Private CA's enum (they happen to share names; the map keeps the vendor enum here). */
export const PCA_REVOCATION_REASONS: Readonly<Record<RevocationReason, PcaRevocationReason>> = {
  UNSPECIFIED: 'UNSPECIFIED',
  KEY_COMPROMISE: 'KEY_COMPROMISE',
  CERTIFICATE_AUTHORITY_COMPROMISE: 'CERTIFICATE_AUTHORITY_COMPROMISE',
  AFFILIATION_CHANGED: 'AFFILIATION_CHANGED',
  SUPERSEDED: 'SUPERSEDED',
  CESSATION_OF_OPERATION: 'CESSATION_OF_OPERATION',
  PRIVILEGE_WITHDRAWN: 'PRIVILEGE_WITHDRAWN',
  A_A_COMPROMISE: 'A_A_COMPROMISE',
};

export interface PrivateCaCertificateAuthorityOptions {
  /**
   * The AWS Private CA client to use.
   * @default - a client built with `retryingClientConfig` (adaptive retries absorb throttling)
   */
  readonly client?: ACMPCAClient;
  /** The CA that signs device certificates. */
  readonly certificateAuthorityArn: string;
  /**
   * CAs this one replaced (a CA rotation): they sign nothing any more, but their certificates are still accepted
   * (`getCaCertificates` answers them as `previous`) and a certificate one of them issued is revoked there.
   * @default - none
   */
  readonly previousCertificateAuthorityArns?: readonly string[];
  /** Must suit the CA's key: `SHA256WITHECDSA` for an EC CA, `SHA256WITHRSA` for an RSA CA. */
  readonly signingAlgorithm: SigningAlgorithm;
  /**
   * The certificate template that sets key usage and extended key usage.
   * @default 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1'
   */
  readonly templateArn?: string;
  /**
   * How long `issueCertificate` waits in all for an issued certificate to be ready before giving up.
   * @default 30000
   */
  readonly maxWaitMs?: number;
  /**
   * Waits between `GetCertificate` polls; tests inject a fake.
   * @default - a `setTimeout` timer
   */
  readonly sleep?: (ms: number) => Promise<void>;
}

const SERVICE = 'AWS Private CA';

/** How long a fetched CA certificate and chain are reused. */
export const CA_CERTIFICATE_CACHE_MS = 5 * 60_000;

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The serial number as `RevokeCertificate` wants it: hexadecimal bytes separated by colons, as
 * `openssl x509 -text` prints it (`67:07:44:...:cc` in the AWS CLI's example). Ours is plain lower-case
 * hex (`6707...cc`); leading `00` bytes (the DER sign padding) are dropped like openssl does.
 */
export function toPcaSerial(serialNumber: string): string {
  const hex = serialNumber.replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex)) {
    throw new ValidationError('INVALID_REQUEST', `Serial number "${serialNumber}" is not hexadecimal.`);
  }
  const even = hex.length % 2 === 0 ? hex : `0${hex}`;
  const bytes = even.match(/../g) as string[];
  while (bytes.length > 1 && bytes[0] === '00') bytes.shift();
  return bytes.join(':');
}

/**
 * The certificate authority on AWS Private CA: issues device certificates from CSRs
 * (`IssueCertificate`, then `GetCertificate` until ready), revokes them, and serves the CA's certificates.
 */
export class PrivateCaCertificateAuthority implements CertificateAuthority {
  private readonly client: ACMPCAClient;
  private readonly templateArn: string;
  private readonly maxWaitMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private caCertificates?: { readonly answer: Promise<CaCertificates>; readonly fetchedAt: number };

  public constructor(private readonly options: PrivateCaCertificateAuthorityOptions) {
    this.client = options.client ?? new ACMPCAClient(retryingClientConfig);
    this.templateArn = options.templateArn ?? DEFAULT_DEVICE_TEMPLATE_ARN;
    this.maxWaitMs = options.maxWaitMs ?? ISSUANCE_POLLING.defaultMaxWaitMs;
    this.sleep = options.sleep ?? defaultSleep;
  }

  /** The issuance id is the certificate's ARN. */
  public async requestCertificate(request: IssueCertificateRequest): Promise<{ readonly issuanceId: string }> {
    return { issuanceId: await this.requestIssuance(request) };
  }

  public async collectCertificate(certificateArn: string): Promise<IssuedCertificate> {
    const { Certificate, CertificateChain } = await this.waitForCertificate(certificateArn);
    if (!Certificate) throw new UpstreamError('UPSTREAM_FAILURE', `${SERVICE} GetCertificate answered without the certificate ${certificateArn}.`, false);
    return { certificatePem: Certificate, certificateChainPem: CertificateChain ?? '' };
  }

  /** Request and collect in one call (the CA registration and tests). */
  public async issueCertificate(request: IssueCertificateRequest): Promise<IssuedCertificate> {
    return this.collectCertificate((await this.requestCertificate(request)).issuanceId);
  }

  public async revokeCertificate(request: RevokeCertificateRequest): Promise<void> {
    if (!Object.hasOwn(PCA_REVOCATION_REASONS, request.reason)) {
      throw new ValidationError('INVALID_REQUEST', `Revocation reason ${request.reason} is not supported by AWS Private CA.`);
    }
    const command = new RevokeCertificateCommand({
      CertificateAuthorityArn: await this.issuingCaArnOf(request.certificatePem),
      CertificateSerial: toPcaSerial(request.serialNumber),
      RevocationReason: PCA_REVOCATION_REASONS[request.reason],
    });
    try {
      await this.client.send(command);
    } catch (error) {
      // Already revoked: what we wanted. In progress: a concurrent revocation of the same certificate is finishing it.
      const name = errorName(error);
      if (name === 'RequestAlreadyProcessedException' || name === 'RequestInProgressException') return;
      throw toUpstreamError(error, SERVICE, 'RevokeCertificate');
    }
  }

  /**
   * Asked on every JITR event; the CA certificate changes only when the CA is renewed. Kept for
   * `CA_CERTIFICATE_CACHE_MS`, so a renewed CA certificate is seen within minutes (a stale one would make
   * JITR reject, and revoke, certificates the renewed CA signed).
   */
  public async getCaCertificates(): Promise<CaCertificates> {
    const now = Date.now();
    if (!this.caCertificates || now - this.caCertificates.fetchedAt > CA_CERTIFICATE_CACHE_MS) {
      const answer = this.fetchCaCertificates().catch((error: unknown) => {
        this.caCertificates = undefined;
        throw error;
      });
      this.caCertificates = { answer, fetchedAt: now };
    }
    return this.caCertificates.answer;
  }

  /**
   * The CA to revoke a certificate at: the previous CA that signed it, or the current one (which also answers for a
   * certificate none of them signed, so Private CA's own refusal reaches the caller).
   */
  private async issuingCaArnOf(certificatePem: string): Promise<string> {
    const previousArns = this.options.previousCertificateAuthorityArns ?? [];
    if (previousArns.length === 0 || certificatePem === '') return this.options.certificateAuthorityArn;
    const cas = await fleetCasOf(await this.getCaCertificates());
    const issuing = await issuingFleetCaOf(cas, certificatePem).catch(() => undefined);
    if (!issuing || issuing.role === 'current') return this.options.certificateAuthorityArn;
    // `fleetCasOf` keeps the order of `previous`, which is the order of the ARNs (the current CA first).
    const index = cas.findIndex((ca) => ca.caCertificateId === issuing.caCertificateId) - 1;
    return previousArns[index] ?? this.options.certificateAuthorityArn;
  }

  private async fetchCaCertificates(): Promise<CaCertificates> {
    const [current, ...previous] = await Promise.all([this.options.certificateAuthorityArn, ...(this.options.previousCertificateAuthorityArns ?? [])].map((arn) => this.fetchCaCertificate(arn)));
    return { ...(current as Omit<CaCertificates, 'previous'>), ...(previous.length > 0 ? { previous } : {}) };
  }

  private async fetchCaCertificate(certificateAuthorityArn: string): Promise<Omit<CaCertificates, 'previous'>> {
    let answer;
    try {
      answer = await this.client.send(new GetCertificateAuthorityCertificateCommand({ CertificateAuthorityArn: certificateAuthorityArn }));
    } catch (error) {
      throw toUpstreamError(error, SERVICE, 'GetCertificateAuthorityCertificate');
    }
    if (!answer.Certificate) {
      throw new UpstreamError('UPSTREAM_FAILURE', `${SERVICE} has no certificate for CA ${certificateAuthorityArn} yet: is it activated?`, false);
    }
    return { certificatePem: answer.Certificate, certificateChainPem: answer.CertificateChain ?? '' };
  }

  private async requestIssuance(request: IssueCertificateRequest): Promise<string> {
    let certificateArn: string | undefined;
    try {
      ({ CertificateArn: certificateArn } = await this.client.send(
        new IssueCertificateCommand({
          CertificateAuthorityArn: this.options.certificateAuthorityArn,
          Csr: new TextEncoder().encode(request.csrPem),
          SigningAlgorithm: this.options.signingAlgorithm,
          TemplateArn: this.templateArn,
          Validity: { Type: 'DAYS', Value: request.validityDays },
          IdempotencyToken: request.idempotencyToken,
        }),
      ));
    } catch (error) {
      const name = errorName(error);
      const reason = error instanceof Error && error.message ? error.message : name;
      if (name === 'MalformedCSRException') {
        throw new ValidationError('INVALID_CSR', `AWS Private CA refused the CSR as malformed: ${reason}`, { cause: error });
      }
      if (name === 'InvalidArgsException') {
        throw new ValidationError('INVALID_CSR', `AWS Private CA refused to sign the CSR for ${request.validityDays} days: ${reason}`, {
          cause: error,
        });
      }
      throw toUpstreamError(error, SERVICE, 'IssueCertificate');
    }
    if (!certificateArn) throw new UpstreamError('UPSTREAM_FAILURE', `${SERVICE} IssueCertificate answered without a certificate ARN.`, false);
    return certificateArn;
  }

  /**
   * The CA a certificate ARN (`<CA ARN>/certificate/<serial>`) was issued by, when it is this stack's current or a
   * previous CA: an issuance requested before a CA rotation is collected from the CA that made it (a retry, or the
   * rotation sweep withdrawing it, may come after the rotation). Any other ARN goes to the current CA, whose refusal
   * then reaches the caller.
   */
  private issuingCaArnOfIssuance(certificateArn: string): string {
    const issuingArn = certificateArn.split('/certificate/')[0];
    const previous = this.options.previousCertificateAuthorityArns ?? [];
    return issuingArn !== undefined && previous.includes(issuingArn) ? issuingArn : this.options.certificateAuthorityArn;
  }

  private async waitForCertificate(certificateArn: string): Promise<GetCertificateCommandOutput> {
    try {
      const certificateAuthorityArn = this.issuingCaArnOfIssuance(certificateArn);
      return await collectIssuedCertificate(this.client, { certificateAuthorityArn, certificateArn, maxWaitMs: this.maxWaitMs, sleep: this.sleep });
    } catch (error) {
      if (error instanceof IssuanceStillInProgressError) {
        throw new UpstreamError('UPSTREAM_FAILURE', `${error.message.replace(/\.$/, '')}; retry with the same idempotency token to collect it.`, true, { cause: error, details: { certificateArn } });
      }
      throw toUpstreamError(error, SERVICE, 'GetCertificate');
    }
  }
}
