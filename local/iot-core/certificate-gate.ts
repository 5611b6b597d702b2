import { X509Certificate, createHash } from 'node:crypto';
import type { RegistrationEvent } from '../../functions/core/lifecycle';
import type { LocalCaCertificate, LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';

/** The topic AWS IoT Core publishes a certificate registration on: `$aws/events/certificates/registered/<caCertificateId>`. */
export const registrationTopic = (caCertificateId: string): string => `$aws/events/certificates/registered/${caCertificateId}`;

/** What AWS IoT Core decides about a client certificate that passed the TLS handshake. */
export type Admission =
  | { readonly kind: 'ACCEPT'; readonly certificateId: string }
  | {
      readonly kind: 'REFUSE';
      readonly certificateId: string;
      readonly reason: string;
      /** Set when the certificate is (still) PENDING_ACTIVATION: the registration event to publish. */
      readonly registration?: RegistrationEvent;
    };

export interface CertificateGateOptions {
  readonly accountId: string;
  readonly now?: () => Date;
}

/**
 * The registry side of an mTLS connect, as AWS IoT Core does it. The TLS layer has already checked
 * the chain to a registered CA and the validity window; here the registry status decides:
 * ACTIVE connects; an unknown certificate from a CA with auto-registration is registered
 * PENDING_ACTIVATION and refused (its registration event goes to the rules); everything else is refused.
 *
 * Unlike AWS IoT Core, a PENDING_ACTIVATION certificate that connects again gets its registration
 * event again (the rule's delivery is deduplicated while one is in flight), so a JITR delivery that
 * failed or was cut short by a crash cannot strand a device: its next connect retries it.
 */
export class CertificateGate {
  private readonly caCache = new Map<string, X509Certificate>();
  private readonly now: () => Date;

  public constructor(
    private readonly registry: LocalDeviceRegistry,
    private readonly options: CertificateGateOptions,
  ) {
    this.now = options.now ?? (() => new Date());
  }

  public async admit(certificateDer: Buffer): Promise<Admission> {
    const certificateId = createHash('sha256').update(certificateDer).digest('hex');
    const known = this.registry.findCertificate(certificateId);
    if (!known) return this.autoRegister(certificateId, certificateDer);

    const ca = known.caCertificateId === undefined ? undefined : this.registry.findCaCertificate(known.caCertificateId);
    if (ca && ca.status !== 'ACTIVE') return { kind: 'REFUSE', certificateId, reason: `its CA ${short(ca.caCertificateId)} is ${ca.status}` };
    switch (known.status) {
      case 'ACTIVE':
        return { kind: 'ACCEPT', certificateId };
      case 'PENDING_ACTIVATION':
        return {
          kind: 'REFUSE',
          certificateId,
          reason: 'the certificate is PENDING_ACTIVATION (just-in-time registration in progress)',
          ...(known.caCertificateId === undefined ? {} : { registration: this.registrationEvent(certificateId, known.caCertificateId, known.createdAt) }),
        };
      default:
        return { kind: 'REFUSE', certificateId, reason: `the certificate is ${known.status}` };
    }
  }

  /** The registration event of every certificate left PENDING_ACTIVATION (e.g. by a crash): delivered again at start. */
  public pendingRegistrations(): RegistrationEvent[] {
    return this.registry
      .snapshot()
      .certificates.filter((certificate) => certificate.status === 'PENDING_ACTIVATION' && certificate.caCertificateId !== undefined)
      .map((certificate) => this.registrationEvent(certificate.certificateId, certificate.caCertificateId as string, certificate.createdAt));
  }

  /** The registration event of a registered certificate that came from a registered CA (undefined otherwise). */
  public registrationEventOf(certificateId: string): RegistrationEvent | undefined {
    const certificate = this.registry.findCertificate(certificateId);
    if (!certificate?.caCertificateId) return undefined;
    return this.registrationEvent(certificate.certificateId, certificate.caCertificateId, certificate.createdAt);
  }

  private async autoRegister(certificateId: string, certificateDer: Buffer): Promise<Admission> {
    const certificate = new X509Certificate(certificateDer);
    const ca = this.issuingCa(certificate);
    if (!ca) return { kind: 'REFUSE', certificateId, reason: 'the certificate is not registered and no registered CA signed it' };
    if (ca.autoRegistrationStatus !== 'ENABLE') {
      return { kind: 'REFUSE', certificateId, reason: `the certificate is not registered and its CA ${short(ca.caCertificateId)} has auto-registration off` };
    }
    const registered = await this.registry.registerPendingActivation(certificate.toString(), ca.caCertificateId);
    if (registered.status !== 'PENDING_ACTIVATION') {
      // Registered concurrently (another connection with the same certificate): decide on its status.
      return registered.status === 'ACTIVE' ? { kind: 'ACCEPT', certificateId } : { kind: 'REFUSE', certificateId, reason: `the certificate is ${registered.status}` };
    }
    return {
      kind: 'REFUSE',
      certificateId,
      reason: 'unknown certificate from a CA with auto-registration: registered PENDING_ACTIVATION (just-in-time registration)',
      registration: this.registrationEvent(certificateId, ca.caCertificateId, registered.createdAt),
    };
  }

  /** The ACTIVE registered CA that signed `certificate` (issuer name and signature both checked). */
  private issuingCa(certificate: X509Certificate): LocalCaCertificate | undefined {
    for (const ca of this.registry.activeCaCertificates()) {
      const caCertificate = this.parsedCa(ca);
      if (certificate.checkIssued(caCertificate) && certificate.verify(caCertificate.publicKey)) return ca;
    }
    return undefined;
  }

  private parsedCa(ca: LocalCaCertificate): X509Certificate {
    let parsed = this.caCache.get(ca.caCertificateId);
    if (!parsed) {
      parsed = new X509Certificate(ca.certificatePem);
      this.caCache.set(ca.caCertificateId, parsed);
    }
    return parsed;
  }

  private registrationEvent(certificateId: string, caCertificateId: string, registeredAt: string): RegistrationEvent {
    return {
      certificateId,
      caCertificateId,
      timestamp: this.now().getTime(),
      certificateStatus: 'PENDING_ACTIVATION',
      awsAccountId: this.options.accountId,
      certificateRegistrationTimestamp: String(Date.parse(registeredAt)),
    };
  }
}

export const short = (id: string): string => `${id.slice(0, 12)}…`;
