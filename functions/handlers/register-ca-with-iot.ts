import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { ACMPCAClient, GetCertificateAuthorityCertificateCommand, IssueCertificateCommand, type SigningAlgorithm } from '@aws-sdk/client-acm-pca';
import { DeleteCACertificateCommand, DescribeCACertificateCommand, GetRegistrationCodeCommand, IoTClient, RegisterCACertificateCommand, UpdateCACertificateCommand } from '@aws-sdk/client-iot';
import { Logger } from '@aws-lambda-powertools/logger';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { errorName, retryingClientConfig } from '../adapters/aws/aws-errors';
import { PRIVATE_CA_ARN_PATTERN, PRIVATE_CA_TEMPLATE_ARN_PATTERN } from '../adapters/aws/private-ca-arns';
import { collectIssuedCertificate, IssuanceStillInProgressError } from '../adapters/aws/private-ca-issuance';

/*
 * CloudFormation custom resource (run by the CDK Provider framework): registers an AWS Private CA
 * with AWS IoT for just-in-time registration. AWS IoT wants proof that we hold the CA: a
 * verification certificate whose subject CN is the account's registration code, signed by the CA.
 * Data.CaCertificateId: the current CA's certificate id in AWS IoT. Physical resource id: the id of the
 * first CA this resource registered, kept when the CA is replaced, so CloudFormation never deletes the
 * replaced CA's registration: it stays ACTIVE, with auto-registration on, while its devices rotate over
 * (a CA rotation: docs/deploy.md, "Rotating the CA"). An operator deactivates it once no live certificate
 * remains on it, through the API (POST /certificate-authorities/{caCertificateId}/deactivate,
 * functions/core/use-cases/deactivate-ca.ts), which refuses while some remain unless forced.
 */

/** The verification certificate only has to exist while IoT checks it. */
export const VERIFICATION_VALIDITY_DAYS = 1;
const CA_ID_PATTERN = /^[0-9a-f]{64}$/;

/** The custom resource properties the construct sets (infra/iot-ca-registration.ts). */
export interface RegistrationProperties {
  readonly CertificateAuthorityArn: string;
  readonly SigningAlgorithm: string;
  readonly TemplateArn: string;
  /** CAs this stack replaced and still accepts: deregistered with the stack. @default - none */
  readonly PreviousCertificateAuthorityArns?: readonly string[];
}

// Checked with plain patterns rather than a schema library, to keep this bundle small.
const PROPERTY_PATTERNS: Readonly<Record<Exclude<keyof RegistrationProperties, 'PreviousCertificateAuthorityArns'>, RegExp>> = {
  CertificateAuthorityArn: PRIVATE_CA_ARN_PATTERN,
  SigningAlgorithm: /^SHA(256|384|512)WITH(ECDSA|RSA)$/,
  TemplateArn: PRIVATE_CA_TEMPLATE_ARN_PATTERN,
};

/** What the Provider framework hands back to CloudFormation. */
export interface CustomResourceResponse {
  readonly PhysicalResourceId: string;
  readonly Data?: { readonly CaCertificateId: string; readonly CaCertificateArn: string };
}

/** The registration could not be made; the message says why and what to do. */
export class CaRegistrationError extends Error {
  public override readonly name = 'CaRegistrationError';
  public readonly certificateAuthorityArn?: string;
  public constructor(message: string, options: { cause?: unknown; certificateAuthorityArn?: string } = {}) {
    super(message, { cause: options.cause });
    this.certificateAuthorityArn = options.certificateAuthorityArn;
  }
}

export interface RegisterCaDependencies {
  readonly iot: IoTClient;
  readonly pca: ACMPCAClient;
  readonly logger?: Logger;
  /** Waits between GetCertificate polls (IssueCertificate is asynchronous). */
  readonly sleep?: (milliseconds: number) => Promise<void>;
  /** How long to wait for the verification certificate in all. @default 60 000 (the custom resource's function has minutes) */
  readonly maxWaitMs?: number;
}

const crypto = webcrypto as unknown as Crypto;
const VERIFICATION_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const VERIFICATION_SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

function parseProperties(properties: Record<string, unknown>): RegistrationProperties {
  const problems = Object.entries(PROPERTY_PATTERNS)
    .filter(([name, pattern]) => typeof properties[name] !== 'string' || !pattern.test(properties[name] as string))
    .map(([name]) => `${name} is missing or malformed (got ${JSON.stringify(properties[name])})`);
  const previous = properties.PreviousCertificateAuthorityArns;
  if (previous !== undefined && (!Array.isArray(previous) || !previous.every((arn) => typeof arn === 'string' && PRIVATE_CA_ARN_PATTERN.test(arn)))) {
    problems.push(`PreviousCertificateAuthorityArns must be a list of AWS Private CA ARNs (got ${JSON.stringify(previous)})`);
  }
  if (problems.length > 0) throw new CaRegistrationError(`Invalid custom resource properties: ${problems.join('; ')}.`);
  return properties as unknown as RegistrationProperties;
}

export function createRegisterCaHandler(dependencies: RegisterCaDependencies): (event: CloudFormationCustomResourceEvent) => Promise<CustomResourceResponse> {
  const { iot, pca } = dependencies;
  const logger = dependencies.logger ?? new Logger({ serviceName: 'register-ca-with-iot' });
  const sleep = dependencies.sleep ?? ((milliseconds: number) => new Promise<void>((resolve) => setTimeout(resolve, milliseconds)));
  const maxWaitMs = dependencies.maxWaitMs ?? 60_000;

  async function issueVerificationCertificate(properties: RegistrationProperties, registrationCode: string): Promise<string> {
    const keys = (await crypto.subtle.generateKey(VERIFICATION_KEY, false, ['sign', 'verify'])) as CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${registrationCode}`, keys, signingAlgorithm: VERIFICATION_SIGNING }, crypto);
    const { CertificateArn } = await pca.send(
      new IssueCertificateCommand({
        CertificateAuthorityArn: properties.CertificateAuthorityArn,
        Csr: new TextEncoder().encode(csr.toString('pem')),
        SigningAlgorithm: properties.SigningAlgorithm as SigningAlgorithm,
        TemplateArn: properties.TemplateArn,
        Validity: { Type: 'DAYS', Value: VERIFICATION_VALIDITY_DAYS },
      }),
    );
    if (!CertificateArn) throw new CaRegistrationError('AWS Private CA issued no certificate ARN for the verification certificate.', { certificateAuthorityArn: properties.CertificateAuthorityArn });
    try {
      const { Certificate } = await collectIssuedCertificate(pca, { certificateAuthorityArn: properties.CertificateAuthorityArn, certificateArn: CertificateArn, maxWaitMs, sleep });
      if (!Certificate) throw new CaRegistrationError(`AWS Private CA returned no PEM for ${CertificateArn}.`, { certificateAuthorityArn: properties.CertificateAuthorityArn });
      return Certificate;
    } catch (error) {
      if (!(error instanceof IssuanceStillInProgressError)) throw error;
      throw new CaRegistrationError(`The verification certificate ${CertificateArn} was still being issued after ${error.waitedMs} ms.`, { cause: error, certificateAuthorityArn: properties.CertificateAuthorityArn });
    }
  }

  async function register(properties: RegistrationProperties): Promise<CustomResourceResponse> {
    const { Certificate: caCertificate } = await pca.send(new GetCertificateAuthorityCertificateCommand({ CertificateAuthorityArn: properties.CertificateAuthorityArn }));
    if (!caCertificate) {
      throw new CaRegistrationError(`${properties.CertificateAuthorityArn} has no CA certificate yet: it must be ACTIVE before it can be registered with AWS IoT.`, {
        certificateAuthorityArn: properties.CertificateAuthorityArn,
      });
    }
    const { registrationCode } = await iot.send(new GetRegistrationCodeCommand({}));
    if (!registrationCode) throw new CaRegistrationError('AWS IoT returned no registration code.');
    const verificationCertificate = await issueVerificationCertificate(properties, registrationCode);
    try {
      const registered = await iot.send(
        new RegisterCACertificateCommand({
          caCertificate,
          verificationCertificate,
          setAsActive: true,
          allowAutoRegistration: true,
          certificateMode: 'DEFAULT',
        }),
      );
      if (!registered.certificateId || !registered.certificateArn) throw new CaRegistrationError('AWS IoT registered the CA but returned no certificate id.');
      logger.info('CA registered with AWS IoT', { caCertificateId: registered.certificateId, certificateAuthorityArn: properties.CertificateAuthorityArn });
      return { PhysicalResourceId: registered.certificateId, Data: { CaCertificateId: registered.certificateId, CaCertificateArn: registered.certificateArn } };
    } catch (error) {
      if (errorName(error) === 'ResourceAlreadyExistsException') {
        throw new CaRegistrationError(
          `The CA certificate of ${properties.CertificateAuthorityArn} is already registered with AWS IoT (perhaps left by an earlier stack). ` +
            'Find it with `aws iot list-ca-certificates`, set it INACTIVE and delete it (`aws iot update-ca-certificate --new-status INACTIVE`, `aws iot delete-ca-certificate`), then deploy again.',
          { cause: error, certificateAuthorityArn: properties.CertificateAuthorityArn },
        );
      }
      throw error;
    }
  }

  /** AWS IoT's id of a Private CA's certificate (SHA-256 of its DER), read from the CA. */
  async function caCertificateIdOf(certificateAuthorityArn: string): Promise<string> {
    const { Certificate } = await pca.send(new GetCertificateAuthorityCertificateCommand({ CertificateAuthorityArn: certificateAuthorityArn }));
    if (!Certificate) throw new CaRegistrationError(`${certificateAuthorityArn} has no CA certificate.`, { certificateAuthorityArn });
    return Buffer.from(await new x509.X509Certificate(Certificate).getThumbprint('SHA-256', crypto)).toString('hex');
  }

  /** The registration still exists and is the one for these properties: keep it (under the resource's physical id). */
  async function describe(physicalResourceId: string, caCertificateId: string): Promise<CustomResourceResponse | undefined> {
    try {
      const { certificateDescription } = await iot.send(new DescribeCACertificateCommand({ certificateId: caCertificateId }));
      if (!certificateDescription?.certificateArn) return undefined;
      return { PhysicalResourceId: physicalResourceId, Data: { CaCertificateId: caCertificateId, CaCertificateArn: certificateDescription.certificateArn } };
    } catch (error) {
      if (errorName(error) === 'ResourceNotFoundException') return undefined;
      throw error;
    }
  }

  /**
   * The stack goes (or a create failed): every registration it made goes with it. The physical id names the first CA;
   * the current and previous CAs named in the properties are the others (a CA that cannot be read any more is
   * reported, not fatal: the stack stays deletable).
   */
  async function deregisterAll(physicalResourceId: string, properties: Record<string, unknown>): Promise<CustomResourceResponse> {
    if (!CA_ID_PATTERN.test(physicalResourceId)) {
      // Nothing was registered (e.g. the create failed before AWS IoT answered).
      logger.info('nothing to deregister', { physicalResourceId });
      return { PhysicalResourceId: physicalResourceId };
    }
    const arns = [properties.CertificateAuthorityArn, ...(Array.isArray(properties.PreviousCertificateAuthorityArns) ? properties.PreviousCertificateAuthorityArns : [])].filter(
      (arn): arn is string => typeof arn === 'string' && PRIVATE_CA_ARN_PATTERN.test(arn),
    );
    const ids = new Set([physicalResourceId]);
    for (const arn of arns) {
      try {
        ids.add(await caCertificateIdOf(arn));
      } catch (error) {
        logger.warn('could not read a CA certificate to deregister it; deregister it by hand if it is still registered', { certificateAuthorityArn: arn, error: error as Error });
      }
    }
    for (const id of ids) await deregister(id);
    return { PhysicalResourceId: physicalResourceId };
  }

  async function deregister(caCertificateId: string): Promise<void> {
    try {
      await iot.send(new UpdateCACertificateCommand({ certificateId: caCertificateId, newStatus: 'INACTIVE', newAutoRegistrationStatus: 'DISABLE' }));
      await iot.send(new DeleteCACertificateCommand({ certificateId: caCertificateId }));
      logger.info('CA deregistered from AWS IoT', { caCertificateId });
    } catch (error) {
      const name = errorName(error);
      if (name === 'ResourceNotFoundException') {
        logger.info('CA registration already gone', { caCertificateId });
      } else if (name === 'CertificateStateException') {
        // It is INACTIVE with auto-registration off: no device can use it. Keep the stack deletable.
        logger.warn('CA registration set INACTIVE but AWS IoT refused to delete it; delete it by hand', { caCertificateId, error: error as Error });
      } else {
        throw error;
      }
    }
  }

  return async (event) => {
    logger.info('custom resource event', { requestType: event.RequestType, logicalResourceId: event.LogicalResourceId });
    switch (event.RequestType) {
      case 'Create':
        return register(parseProperties(event.ResourceProperties));
      case 'Update': {
        const properties = parseProperties(event.ResourceProperties);
        const caCertificateId = await caCertificateIdOf(properties.CertificateAuthorityArn);
        const current = await describe(event.PhysicalResourceId, caCertificateId);
        if (current) return current;
        // Another CA (or the registration vanished): register it under the same physical id, so CloudFormation sends
        // no delete for the replaced CA's registration. It stays ACTIVE with auto-registration on: devices on it keep
        // connecting and rotating, and devices a factory made with it before the switch still register on first connect.
        const registered = await register(properties);
        if (event.OldResourceProperties.CertificateAuthorityArn !== properties.CertificateAuthorityArn) {
          logger.info('CA replaced: the previous registration stays ACTIVE with auto-registration on until an operator deactivates it', {
            previousCertificateAuthorityArn: event.OldResourceProperties.CertificateAuthorityArn,
            certificateAuthorityArn: properties.CertificateAuthorityArn,
          });
        }
        return { ...registered, PhysicalResourceId: event.PhysicalResourceId };
      }
      case 'Delete':
        return deregisterAll(event.PhysicalResourceId, event.ResourceProperties);
    }
  };
}

let awsHandler: ReturnType<typeof createRegisterCaHandler> | undefined;

export const handler = async (event: CloudFormationCustomResourceEvent): Promise<CustomResourceResponse> => {
  awsHandler ??= createRegisterCaHandler({ iot: new IoTClient(retryingClientConfig), pca: new ACMPCAClient(retryingClientConfig) });
  return awsHandler(event);
};
