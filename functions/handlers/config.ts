import * as z from 'zod/mini';
import './schema-messages';
import { ConfigurationError } from '../core/errors';
import type { CertificateAuthority, DeviceRegistry } from '../core/ports';
import { PRIVATE_CA_ARN_PATTERN, PRIVATE_CA_TEMPLATE_ARN_PATTERN } from '../adapters/aws/private-ca-arns';

/**
 * Every environment variable the functions read, with its meaning. The CDK construct sets
 * them (and grants what each needs) in one helper; the local mode sets the same names.
 */
export const ENVIRONMENT = {
  DEVICE_TABLE_NAME: 'the DynamoDB table of devices, certificates and audit events',
  CA_ARN: 'the AWS Private CA that signs device certificates',
  CA_SIGNING_ALGORITHM: 'the Private CA signing algorithm, e.g. SHA256WITHECDSA',
  CA_TEMPLATE_ARN: 'the Private CA template for device certificates (end-entity client auth)',
  PREVIOUS_CA_ARNS: 'comma-separated AWS Private CAs this stack replaced (a CA rotation): they sign nothing, their devices are still accepted; empty or absent: none',
  THING_GROUP_NAME: 'the thing group every device joins; the fleet IoT policy is attached to it',
  ENROLLMENT_POLICY: '"open" (any device with a certificate from our CA) or "preregistered"',
  CERTIFICATE_VALIDITY_DAYS: 'validity of certificates signed from CSRs, in days',
  EXPIRY_WARNING_DAYS: 'the expiry monitor reports device certificates with fewer whole days left than this',
  ROTATION_COMMIT_SECONDS: 'how long a device has to connect with its rotated certificate and commit it, in seconds, before the new certificate is withdrawn',
  RENEWAL_NOTICES_PER_SECOND: 'how many renewal notices (devices/<thing>/certificates/expiring) the expiry monitor publishes per second at most; 0: none',
  IOT_DATA_ENDPOINT: 'the account\'s AWS IoT data endpoint (iot:Data-ATS) host, where answers to devices are published; empty: asked of AWS IoT at the first answer',
  METRICS_SERVICE_NAME: 'the "service" dimension of the metrics the expiry monitor publishes: one value per deployment, so two fleets in an account never share an alarm',
} as const;

export type EnvironmentVariable = keyof typeof ENVIRONMENT;

const nonEmpty = z.string().check(z.trim(), z.minLength(1));

const configSchema = z.object({
  DEVICE_TABLE_NAME: nonEmpty,
  CA_ARN: z.string().check(z.regex(PRIVATE_CA_ARN_PATTERN, 'must be an AWS Private CA ARN')),
  CA_SIGNING_ALGORITHM: z.enum(['SHA256WITHECDSA', 'SHA384WITHECDSA', 'SHA512WITHECDSA', 'SHA256WITHRSA', 'SHA384WITHRSA', 'SHA512WITHRSA']),
  CA_TEMPLATE_ARN: z.string().check(z.regex(PRIVATE_CA_TEMPLATE_ARN_PATTERN, 'must be an AWS Private CA template ARN')),
  // Absent is the same as empty (no previous CA): a stack deployed before CA rotation existed sets no such variable.
  PREVIOUS_CA_ARNS: z.pipe(
    z.pipe(
      z._default(z.string(), ''),
      z.transform((value: string) => value.split(',').map((arn) => arn.trim()).filter((arn) => arn !== '')),
    ),
    z.array(z.string().check(z.regex(PRIVATE_CA_ARN_PATTERN, 'must be comma-separated AWS Private CA ARNs'))),
  ),
  THING_GROUP_NAME: z.string().check(z.regex(/^[a-zA-Z0-9:_-]{1,128}$/, 'must be a thing group name')),
  ENROLLMENT_POLICY: z.enum(['open', 'preregistered']),
  CERTIFICATE_VALIDITY_DAYS: z.coerce.number().check(z.int(), z.minimum(1), z.maximum(3650)),
  EXPIRY_WARNING_DAYS: z.coerce.number().check(z.int(), z.minimum(1), z.maximum(3650)),
  ROTATION_COMMIT_SECONDS: z.coerce.number().check(z.int(), z.minimum(60), z.maximum(30 * 86_400)),
  RENEWAL_NOTICES_PER_SECOND: z.coerce.number().check(z.minimum(0), z.maximum(1000)),
  IOT_DATA_ENDPOINT: z.union([z.optional(z.string().check(z.regex(/^([a-z0-9-]+\.)+[a-z]{2,}$/, 'must be a host name such as abc123-ats.iot.eu-west-1.amazonaws.com'))), z.literal('')]),
  METRICS_SERVICE_NAME: z.string().check(z.regex(/^[A-Za-z0-9._-]{1,255}$/, 'must be 1 to 255 letters, digits, ".", "_" and "-"')),
});

export type FunctionConfig = z.infer<typeof configSchema>;

/**
 * Reads and checks the variables `names` once per cold start. A missing or malformed
 * variable stops the start with a message naming it: there are no placeholder defaults.
 */
export function readConfig<K extends EnvironmentVariable>(names: readonly K[], env: NodeJS.ProcessEnv = process.env): Pick<FunctionConfig, K> {
  const picked = Object.fromEntries(names.map((name) => [name, true])) as Record<K, true>;
  const result = z.pick(configSchema, picked as never).safeParse(Object.fromEntries(names.map((name) => [name, env[name]])));
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const name = String(issue.path[0]);
      const value = env[name];
      return value === undefined || value === ''
        ? `${name} is not set (${ENVIRONMENT[name as EnvironmentVariable]})`
        : `${name} is invalid: ${issue.message}`;
    });
    throw new ConfigurationError(`Configuration error: ${problems.join('; ')}.`);
  }
  return result.data as unknown as Pick<FunctionConfig, K>;
}

/**
 * How the functions use AWS IoT: the fleet policy is attached to the thing group (never per certificate, which
 * would hit the 15 TPS AttachPolicy quota) and certificates are registered with the CA registered for JITR.
 * The CDK construct grants each function the IoT actions these modes need for its {@link REGISTRY_OPERATIONS}.
 */
export const REGISTRY_MODES = { policyAttachment: 'THING_GROUP', certificateRegistration: 'WITH_CA' } as const;

/**
 * The registry operations each function's flows call. The CDK construct grants a function's role the IoT actions
 * the adapter declares for exactly these (`iotRegistryIamActions` in functions/adapters/aws/iot-device-registry.ts).
 */
export const REGISTRY_OPERATIONS = {
  /**
   * First connect: reads the certificate AWS IoT registered, creates the thing and links them, activates or refuses
   * the certificate, and unlinks it again when the activation is withdrawn. It never registers a certificate.
   */
  jitr: ['describeCertificate', 'ensureThing', 'attachCertificate', 'updateCertificateStatus', 'detachCertificate'],
  /**
   * Every flow of the API; signing a CSR also registers the certificate it issued, and retiring a previous CA
   * (POST /certificate-authorities/{caCertificateId}/deactivate) sets its registration INACTIVE.
   */
  api: ['describeCertificate', 'registerCertificate', 'ensureThing', 'attachCertificate', 'updateCertificateStatus', 'detachCertificate', 'setCaCertificateStatus'],
  /** Rotation: registers and attaches the new certificate (read back), retires the previous one or withdraws the new one. */
  rotation: ['describeCertificate', 'registerCertificate', 'ensureThing', 'attachCertificate', 'updateCertificateStatus', 'detachCertificate'],
  /** The drift check: reads each certificate's status, and repairs the ones the record decides (functions/core/drift.ts). */
  expiryMonitor: ['describeCertificate', 'updateCertificateStatus'],
} as const satisfies Readonly<Record<string, readonly (keyof DeviceRegistry)[]>>;

/**
 * The certificate authority operations each function's flows call; the CDK construct grants a function's role the
 * Private CA actions the adapter declares for exactly these (`privateCaIamActions`).
 */
export const CA_OPERATIONS = {
  /** First connect: checks the issuer against the CA's certificates, and revokes at the CA what it closes as revoked. */
  jitr: ['getCaCertificates', 'revokeCertificate'],
  /** Every flow of the API: signing (request, collect), revocation, and the CA chain in answers. */
  api: ['requestCertificate', 'collectCertificate', 'revokeCertificate', 'getCaCertificates'],
  /** Rotation: signs the new certificate, revokes one the device did not commit in time, and answers the chain. */
  rotation: ['requestCertificate', 'collectCertificate', 'revokeCertificate', 'getCaCertificates'],
  /** Reads the CA's certificates to report their expiry. */
  expiryMonitor: ['getCaCertificates'],
} as const satisfies Readonly<Record<string, readonly (keyof CertificateAuthority)[]>>;

/**
 * The CloudWatch metrics the expiry monitor publishes (Powertools Metrics, embedded metric format), with the
 * `service` dimension set to METRICS_SERVICE_NAME. The CDK construct alarms on exactly these names.
 */
export const EXPIRY_METRICS = {
  namespace: 'IotCertificateLifecycle',
  /** Whole days until the CA certificate, or the certificate of its chain that ends first, expires; negative once it has. */
  caDaysToExpiry: 'CaDaysToExpiry',
  /** Live device certificates with fewer than EXPIRY_WARNING_DAYS days left. */
  deviceCertificatesExpiringSoon: 'DeviceCertificatesExpiringSoon',
  /** Certificates whose status on record and in AWS IoT disagree, found by the run's drift check (repaired or not). */
  certificateDrift: 'CertificateDrift',
  /** Of those, the ones the run repaired in AWS IoT. */
  certificateDriftRepaired: 'CertificateDriftRepaired',
  /**
   * ACTIVE certificates of ACTIVE devices still issued by each fleet CA, one data point per CA with the dimensions
   * `CaRole` ("current" or "previous") and `CaCertificateId`: how far a CA rotation has come.
   */
  liveCertificatesByCa: 'LiveCertificatesByCa',
  /** The same, summed over the previous CAs (service dimension only): 0 once every device has rotated over. */
  liveCertificatesOnPreviousCas: 'LiveCertificatesOnPreviousCas',
  /** Whole days left to the soonest-expiring previous CA that still has live certificates (absent when none has): they strand then. */
  previousCaDaysToExpiry: 'PreviousCaDaysToExpiry',
  /** ACTIVE devices whose every live operational certificate is past its notAfter: they expired without rotating. */
  devicesExpiredWithoutRotation: 'DevicesExpiredWithoutRotation',
  /** The dimension Powertools Metrics adds to every metric. */
  serviceDimension: 'service',
} as const;
