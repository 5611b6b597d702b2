import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IoTClient } from '@aws-sdk/client-iot';
import { ACMPCAClient } from '@aws-sdk/client-acm-pca';
import { ChangeRecorder, DEFAULT_LIFECYCLE_SETTINGS, type LifecycleDependencies } from '../core/change-recorder';
import { DeviceLifecycle, randomIds, type LifecycleSettings } from '../core/lifecycle';
import { registerOnFirstConnect } from '../core/use-cases/register-on-first-connect';
import { commitRotation, requestRotation, sweepDueRotations } from '../core/use-cases/rotate-certificate';
import { runRotationCampaigns } from '../core/use-cases/rotation-campaign';
import { systemClock } from '../core/ports';
import { retryingClientConfig } from '../adapters/aws/aws-errors';
import { DynamoDbDeviceStore } from '../adapters/aws/dynamodb-device-store';
import { IotDeviceRegistry } from '../adapters/aws/iot-device-registry';
import { PrivateCaCertificateAuthority } from '../adapters/aws/private-ca-certificate-authority';
import { REGISTRY_MODES, type FunctionConfig } from './config';

/*
 * The AWS clients and adapters the functions are built from. Each handler wires itself from these, once per
 * cold start, reading only the variables it needs (so a missing one names itself at the first invocation):
 * `jitrDependencies` in jitr.ts, `apiDependencies` in api-wiring.ts, `expiryMonitorDependencies` in expiry-monitor.ts,
 * `rotationDependencies` in rotation-wiring.ts.
 */

/**
 * How long the Private CA adapter waits in all for an issued certificate. Well inside the API function's timeout
 * (API_INTEGRATION_TIMEOUT in infra/device-api.ts, also API Gateway's integration limit), so a slow issuance ends
 * in our UPSTREAM_FAILURE answer and its compensation, not in a killed invocation.
 */
export const PRIVATE_CA_MAX_WAIT_MS = 15_000;

/** The variables the lifecycle (the JITR and API functions) reads. */
export const LIFECYCLE_VARIABLES = ['DEVICE_TABLE_NAME', 'CA_ARN', 'CA_SIGNING_ALGORITHM', 'CA_TEMPLATE_ARN', 'PREVIOUS_CA_ARNS', 'THING_GROUP_NAME', 'ENROLLMENT_POLICY', 'CERTIFICATE_VALIDITY_DAYS'] as const;

type CaConfig = Pick<FunctionConfig, 'CA_ARN' | 'CA_SIGNING_ALGORITHM' | 'CA_TEMPLATE_ARN' | 'PREVIOUS_CA_ARNS'>;

type LifecycleConfig = Pick<FunctionConfig, (typeof LIFECYCLE_VARIABLES)[number]>;

/** The core's ports on DynamoDB, AWS IoT and AWS Private CA. */
function awsLifecycleDependencies(config: LifecycleConfig): LifecycleDependencies {
  return { store: awsDeviceStore(config.DEVICE_TABLE_NAME), registry: awsDeviceRegistry(config.THING_GROUP_NAME), ca: awsCertificateAuthority(config), clock: systemClock, ids: randomIds };
}

const lifecycleSettingsOf = (config: LifecycleConfig, settings: Partial<LifecycleSettings>): LifecycleSettings => ({
  ...DEFAULT_LIFECYCLE_SETTINGS,
  enrollmentPolicy: config.ENROLLMENT_POLICY,
  validityDays: config.CERTIFICATE_VALIDITY_DAYS,
  ...settings,
});

/** The core on DynamoDB, AWS IoT and AWS Private CA: what the API and rotation functions run. */
export function awsLifecycle(config: LifecycleConfig, settings: Partial<LifecycleSettings> = {}): DeviceLifecycle {
  return new DeviceLifecycle(awsLifecycleDependencies(config), lifecycleSettingsOf(config, settings));
}

/** What the JITR function runs of the lifecycle. */
export type Registration = Pick<DeviceLifecycle, 'registerOnFirstConnect'>;

/**
 * The JITR function's part of the core: the first-connect use case alone, on the same ports and settings as
 * {@link awsLifecycle}. Built without `DeviceLifecycle`, whose class holds every use case, so the JITR bundle
 * leaves out the ones it never runs (CSR issuance, rotation, campaigns, revocation: about 40 KB minified).
 */
export function awsRegistration(config: LifecycleConfig, settings: Partial<LifecycleSettings> = {}): Registration {
  const recorder = new ChangeRecorder(awsLifecycleDependencies(config), lifecycleSettingsOf(config, settings));
  return { registerOnFirstConnect: (event, delivery = {}) => registerOnFirstConnect(recorder, event, delivery) };
}

/** What the rotation function runs of the lifecycle. */
export type Rotation = Pick<DeviceLifecycle, 'requestRotation' | 'commitRotation' | 'sweepDueRotations' | 'runRotationCampaigns'>;

/**
 * The rotation function's part of the core: the two phases of a rotation, its sweep and the campaigns' job, on the
 * same ports and settings as {@link awsLifecycle}, without the use cases the function never runs (JITR, revocation,
 * suspension, CA retirement: about 20 KB minified).
 */
export function awsRotation(config: LifecycleConfig, settings: Partial<LifecycleSettings> = {}): Rotation {
  const recorder = new ChangeRecorder(awsLifecycleDependencies(config), lifecycleSettingsOf(config, settings));
  return {
    requestRotation: (request) => requestRotation(recorder, request),
    commitRotation: (commit) => commitRotation(recorder, commit),
    sweepDueRotations: (options) => sweepDueRotations(recorder, options),
    runRotationCampaigns: (options) => runRotationCampaigns(recorder.deps, options),
  };
}

export function awsDeviceStore(tableName: string): DynamoDbDeviceStore {
  const documentClient = DynamoDBDocumentClient.from(new DynamoDBClient(retryingClientConfig), { marshallOptions: { removeUndefinedValues: true } });
  return new DynamoDbDeviceStore({ tableName, documentClient });
}

/** In REGISTRY_MODES: the stack attached the fleet policy to the thing group, so devices never need AttachPolicy (15 TPS quota). */
export function awsDeviceRegistry(thingGroupName: string): IotDeviceRegistry {
  return new IotDeviceRegistry({ client: new IoTClient(retryingClientConfig), thingGroupName, ...REGISTRY_MODES });
}

export function awsCertificateAuthority(config: CaConfig): PrivateCaCertificateAuthority {
  return new PrivateCaCertificateAuthority({
    client: new ACMPCAClient(retryingClientConfig),
    certificateAuthorityArn: config.CA_ARN,
    previousCertificateAuthorityArns: config.PREVIOUS_CA_ARNS,
    signingAlgorithm: config.CA_SIGNING_ALGORITHM,
    templateArn: config.CA_TEMPLATE_ARN,
    maxWaitMs: PRIVATE_CA_MAX_WAIT_MS,
  });
}
