import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IoTClient } from '@aws-sdk/client-iot';
import { ACMPCAClient } from '@aws-sdk/client-acm-pca';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { ExpiryMonitor } from '../core/expiry';
import { DeviceLifecycle, randomIds } from '../core/lifecycle';
import { systemClock } from '../core/ports';
import { retryingClientConfig } from '../adapters/aws/aws-errors';
import { DynamoDbDeviceStore } from '../adapters/aws/dynamodb-device-store';
import { IotDeviceRegistry } from '../adapters/aws/iot-device-registry';
import { PrivateCaCertificateAuthority } from '../adapters/aws/private-ca-certificate-authority';
import { EXPIRY_METRICS, readConfig, REGISTRY_MODES, type FunctionConfig } from './config';
import type { ApiDependencies } from './api';
import type { ExpiryMonitorHandlerDependencies } from './expiry-monitor';
import type { JitrDependencies } from './jitr';

/*
 * The AWS wiring of each function, built once per cold start. Each function reads only
 * the variables it needs, so a missing one names itself at the first invocation.
 */

const documentClient = () => DynamoDBDocumentClient.from(new DynamoDBClient(retryingClientConfig), { marshallOptions: { removeUndefinedValues: true } });

const LIFECYCLE_VARIABLES = ['DEVICE_TABLE_NAME', 'CA_ARN', 'CA_SIGNING_ALGORITHM', 'CA_TEMPLATE_ARN', 'THING_GROUP_NAME', 'ENROLLMENT_POLICY', 'CERTIFICATE_VALIDITY_DAYS'] as const;

/** The core on DynamoDB, AWS IoT and AWS Private CA: what both functions run. */
function awsLifecycle(config: Pick<FunctionConfig, (typeof LIFECYCLE_VARIABLES)[number]>): DeviceLifecycle {
  return new DeviceLifecycle(
    {
      store: new DynamoDbDeviceStore({ tableName: config.DEVICE_TABLE_NAME, documentClient: documentClient() }),
      registry: iotRegistry(config.THING_GROUP_NAME),
      ca: privateCa(config),
      clock: systemClock,
      ids: randomIds,
    },
    { enrollmentPolicy: config.ENROLLMENT_POLICY, validityDays: config.CERTIFICATE_VALIDITY_DAYS },
  );
}

export function jitrDependencies(): JitrDependencies {
  return { lifecycle: awsLifecycle(readConfig(LIFECYCLE_VARIABLES)) };
}

export function apiDependencies(): ApiDependencies {
  return { lifecycle: awsLifecycle(readConfig(LIFECYCLE_VARIABLES)), clock: systemClock };
}

/**
 * The expiry monitor reads only: the device table's expiry index and the CA's certificates. It shares the
 * Private CA wiring with the lifecycle (the stack grants it GetCertificateAuthorityCertificate alone).
 */
export function expiryMonitorDependencies(): ExpiryMonitorHandlerDependencies {
  const config = readConfig(['DEVICE_TABLE_NAME', 'CA_ARN', 'CA_SIGNING_ALGORITHM', 'CA_TEMPLATE_ARN', 'EXPIRY_WARNING_DAYS', 'METRICS_SERVICE_NAME']);
  return {
    monitor: new ExpiryMonitor(
      { store: new DynamoDbDeviceStore({ tableName: config.DEVICE_TABLE_NAME, documentClient: documentClient() }), ca: privateCa(config), clock: systemClock },
      { warningDays: config.EXPIRY_WARNING_DAYS },
    ),
    metrics: new Metrics({ namespace: EXPIRY_METRICS.namespace, serviceName: config.METRICS_SERVICE_NAME }),
  };
}

function iotRegistry(thingGroupName: string): IotDeviceRegistry {
  // The policy is attached to the thing group by the stack, so devices never need AttachPolicy (15 TPS quota).
  return new IotDeviceRegistry({
    client: new IoTClient(retryingClientConfig),
    thingGroupName,
    policyName: '',
    ...REGISTRY_MODES,
  });
}

function privateCa(config: { CA_ARN: string; CA_SIGNING_ALGORITHM: string; CA_TEMPLATE_ARN: string }): PrivateCaCertificateAuthority {
  return new PrivateCaCertificateAuthority({
    client: new ACMPCAClient(retryingClientConfig),
    certificateAuthorityArn: config.CA_ARN,
    signingAlgorithm: config.CA_SIGNING_ALGORITHM as ConstructorParameters<typeof PrivateCaCertificateAuthority>[0]['signingAlgorithm'],
    templateArn: config.CA_TEMPLATE_ARN,
    // Well inside the API function's 29 s timeout (and API Gateway's 29 s integration limit), so a slow issuance
    // ends in our UPSTREAM_FAILURE answer and its compensation, not in a killed invocation.
    maxWaitMs: 15_000,
  });
}
