import type { IotDeviceRegistryOptions } from '../../functions/adapters/aws/iot-device-registry';
import type { PrivateCaCertificateAuthorityOptions } from '../../functions/adapters/aws/private-ca-certificate-authority';
import { apiDependencies } from '../../functions/handlers/api-wiring';
import { PRIVATE_CA_MAX_WAIT_MS } from '../../functions/handlers/aws-wiring';
import { REGISTRY_MODES } from '../../functions/handlers/config';
import { jitrDependencies } from '../../functions/handlers/jitr';
import { API_INTEGRATION_TIMEOUT } from '../../infra/device-api';

/*
 * The stack grants and times the functions for the way each handler wires its adapters (functions/handlers/aws-wiring.ts and the
 * handlers' own wiring). These tests build that wiring (nothing is sent to AWS) and record the options the adapters
 * receive, so a change on either side that the other does not follow fails here.
 */
const registryOptions: IotDeviceRegistryOptions[] = [];
const privateCaOptions: PrivateCaCertificateAuthorityOptions[] = [];

jest.mock('../../functions/adapters/aws/iot-device-registry', () => {
  const actual = jest.requireActual<typeof import('../../functions/adapters/aws/iot-device-registry')>('../../functions/adapters/aws/iot-device-registry');
  return {
    ...actual,
    IotDeviceRegistry: class extends actual.IotDeviceRegistry {
      public constructor(options: IotDeviceRegistryOptions) {
        super(options);
        registryOptions.push(options);
      }
    },
  };
});

jest.mock('../../functions/adapters/aws/private-ca-certificate-authority', () => {
  const actual = jest.requireActual<typeof import('../../functions/adapters/aws/private-ca-certificate-authority')>('../../functions/adapters/aws/private-ca-certificate-authority');
  return {
    ...actual,
    PrivateCaCertificateAuthority: class extends actual.PrivateCaCertificateAuthority {
      public constructor(options: PrivateCaCertificateAuthorityOptions) {
        super(options);
        privateCaOptions.push(options);
      }
    },
  };
});

const ENV = {
  AWS_REGION: 'eu-west-1',
  DEVICE_TABLE_NAME: 'devices',
  CA_ARN: 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9',
  CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
  CA_TEMPLATE_ARN: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
  THING_GROUP_NAME: 'iot-cert-lifecycle-devices',
  ENROLLMENT_POLICY: 'preregistered',
  CERTIFICATE_VALIDITY_DAYS: '365',
};

const saved = { ...process.env };
beforeEach(() => {
  registryOptions.length = 0;
  privateCaOptions.length = 0;
  Object.assign(process.env, ENV);
});
afterEach(() => {
  process.env = { ...saved };
});

test('the API function runs the IoT registry adapter in the modes the stack grants IAM actions for', () => {
  // Act
  apiDependencies();

  // Assess
  expect(registryOptions).toHaveLength(1);
  expect({ policyAttachment: registryOptions[0]?.policyAttachment, certificateRegistration: registryOptions[0]?.certificateRegistration }).toEqual(REGISTRY_MODES);
});

test.each([
  ['API', apiDependencies],
  ['JITR', jitrDependencies],
])('the %s function gives the IoT registry adapter its thing group and no policy name (the policy is attached to the group)', (_name, wire) => {
  // Act
  wire();

  // Assess
  expect(registryOptions[0]).toMatchObject({ policyAttachment: 'THING_GROUP', thingGroupName: ENV.THING_GROUP_NAME });
  expect(registryOptions[0]).not.toHaveProperty('policyName');
});

test('the JITR function runs the IoT registry adapter in THING_GROUP mode, so it never calls AttachPolicy (its role does not allow it)', () => {
  // Act
  jitrDependencies();

  // Assess
  expect(registryOptions[0]?.policyAttachment).toBe('THING_GROUP');
});

test('the API function stops waiting for AWS Private CA well before API Gateway gives up', () => {
  // Act
  apiDependencies();

  // Assess: at least 10 s left for DynamoDB and AWS IoT after the longest wait for the CA.
  const maxWaitMs = privateCaOptions[0]?.maxWaitMs;
  expect(maxWaitMs).toBe(PRIVATE_CA_MAX_WAIT_MS);
  expect(API_INTEGRATION_TIMEOUT.toMilliseconds() - (maxWaitMs ?? Infinity)).toBeGreaterThanOrEqual(10_000);
});
