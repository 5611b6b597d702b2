import type { SQSEvent } from 'aws-lambda';
import { createJitrHandler, jitrDependencies } from '../../../functions/handlers/jitr';
import { ruleMessageOf } from '../../../functions/handlers/mqtt/rotation-protocol';
import { createRotationHandler } from '../../../functions/handlers/rotation';
import { rotationDependencies } from '../../../functions/handlers/rotation-wiring';
import { dynamoDbEndpoint, createTestTable, type TestTable } from '../../support/dynamodb';
import { CA_ARN, createFakeAws, type FakeAws } from '../../support/fake-aws';
import { makeCsr } from '../../support/pki';

/*
 * The JITR and rotation functions wire only the use cases they run (functions/handlers/aws-wiring.ts `awsRegistration`,
 * `awsRotation`), not the whole DeviceLifecycle the other tests run. This runs that wiring as Lambda would, from the
 * functions' environment variables: DynamoDB Local through AWS_ENDPOINT_URL_DYNAMODB, AWS IoT and Private CA behind
 * aws-sdk-client-mock (the rotation's answers to devices are caught instead of published through AWS IoT).
 */

const silent = { info: () => undefined, error: () => undefined, addContext: () => undefined } as never;

let aws: FakeAws;
let table: TestTable;
const saved = { ...process.env };

beforeAll(async () => {
  aws = await createFakeAws();
  table = await createTestTable();
});
afterAll(async () => {
  aws.restore();
  await table.drop();
});
afterEach(() => {
  process.env = { ...saved };
});

function lambdaEnvironment(enrollmentPolicy: 'open' | 'preregistered'): void {
  Object.assign(process.env, {
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'AKIDLOCAL',
    AWS_SECRET_ACCESS_KEY: 'local',
    AWS_ENDPOINT_URL_DYNAMODB: dynamoDbEndpoint(),
    DEVICE_TABLE_NAME: table.tableName,
    CA_ARN,
    CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
    CA_TEMPLATE_ARN: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
    THING_GROUP_NAME: 'fleet',
    ENROLLMENT_POLICY: enrollmentPolicy,
    CERTIFICATE_VALIDITY_DAYS: '365',
    ROTATION_COMMIT_SECONDS: '3600',
    IOT_DATA_ENDPOINT: 'abc123-ats.iot.eu-west-1.amazonaws.com',
  });
}

/** The SQS batch the registration queue delivers for a device's first connect with a certificate our CA signed. */
async function firstConnectBatch(deviceId: string): Promise<{ batch: SQSEvent; certificateId: string }> {
  const certificatePem = await aws.ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
  const { certificateId } = await aws.registry.registerPendingActivation(certificatePem, aws.caCertificateId);
  const event = { certificateId, caCertificateId: aws.caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: String(Date.now()) };
  const record = { messageId: `m-${deviceId}`, body: JSON.stringify(event), eventSource: 'aws:sqs' };
  return { batch: { Records: [record] } as unknown as SQSEvent, certificateId };
}

test('the JITR function as wired from its environment activates a device on its first connect, in AWS IoT and in the table', async () => {
  // Prepare
  lambdaEnvironment('open');
  const { batch, certificateId } = await firstConnectBatch('wired-1');

  // Act
  const answer = await createJitrHandler({ ...jitrDependencies(), logger: silent })(batch);

  // Assess
  expect(answer).toEqual({ batchItemFailures: [] });
  expect(aws.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
  expect(aws.registry.findThing('wired-1')?.principals).toEqual([certificateId]);
  expect(await table.store.getDevice('wired-1')).toMatchObject({ status: 'ACTIVE' });
});

test('keeps an unknown device waiting when ENROLLMENT_POLICY is preregistered: the wiring passes the setting to the use case', async () => {
  // Prepare
  lambdaEnvironment('preregistered');
  const { batch, certificateId } = await firstConnectBatch('wired-unknown');

  // Act
  const answer = await createJitrHandler({ ...jitrDependencies(), logger: silent })(batch);

  // Assess: not activated (the open policy would have), recorded as waiting for its pre-registration
  expect(answer).toEqual({ batchItemFailures: [] });
  expect(aws.registry.findCertificate(certificateId)?.status).toBe('PENDING_ACTIVATION');
  expect(aws.registry.findThing('wired-unknown')).toBeUndefined();
  expect(await table.store.getDevice('wired-unknown')).toBeUndefined();
  expect(await table.store.getCertificate(certificateId)).toMatchObject({ status: 'PENDING_ACTIVATION', awaitingPreRegistration: true });
});

test('the rotation function as wired from its environment rotates a device: new certificate issued and registered, the old one retired at commit', async () => {
  // Prepare: a device onboarded by the JITR function
  lambdaEnvironment('open');
  const { batch, certificateId: first } = await firstConnectBatch('wired-rotating');
  await createJitrHandler({ ...jitrDependencies(), logger: silent })(batch);
  const published: { topic: string; message: Record<string, unknown> }[] = [];
  const rotation = createRotationHandler({ ...rotationDependencies(), messenger: { publish: async (topic, message) => void published.push({ topic, message: { ...message } }) }, logger: silent });

  // Act: phase one over the old certificate, phase two over the new one
  const csr = (await makeCsr('wired-rotating')).csrPem;
  await rotation(ruleMessageOf('rotate', { requestId: 'r-1', csr }, 'devices/wired-rotating/certificates/rotate', { clientId: 'wired-rotating', principal: first }));
  const rotated = String(published[0]?.message.certificateId);
  await rotation(ruleMessageOf('commit', { requestId: 'r-1', certificateId: rotated }, 'devices/wired-rotating/certificates/commit', { clientId: 'wired-rotating', principal: rotated }));

  // Assess
  expect(published.map((answer) => answer.topic)).toEqual(['devices/wired-rotating/certificates/rotate/accepted', 'devices/wired-rotating/certificates/commit/accepted']);
  expect(aws.registry.findCertificate(rotated)?.status).toBe('ACTIVE');
  expect(aws.registry.findCertificate(first)?.status).toBe('INACTIVE');
  expect(await table.store.getCertificate(first)).toMatchObject({ status: 'RETIRED' });
});
