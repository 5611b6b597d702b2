import {
  AddThingToThingGroupCommand as AddThingToThingGroupSdkCommand,
  AttachPolicyCommand as AttachPolicySdkCommand,
  AttachThingPrincipalCommand as AttachThingPrincipalSdkCommand,
  CertificateStateException,
  CreateThingCommand as CreateThingSdkCommand,
  DescribeCertificateCommand as DescribeCertificateSdkCommand,
  DetachPolicyCommand as DetachPolicySdkCommand,
  DetachThingPrincipalCommand as DetachThingPrincipalSdkCommand,
  InvalidRequestException,
  IoTClient,
  RegisterCertificateCommand as RegisterCertificateSdkCommand,
  RegisterCertificateWithoutCACommand as RegisterCertificateWithoutCASdkCommand,
  ResourceAlreadyExistsException,
  ResourceNotFoundException,
  ThrottlingException,
  UpdateCACertificateCommand as UpdateCACertificateSdkCommand,
  UpdateCertificateCommand as UpdateCertificateSdkCommand,
  type AddThingToThingGroupCommandInput,
  type AddThingToThingGroupCommandOutput,
  type AttachPolicyCommandInput,
  type AttachPolicyCommandOutput,
  type AttachThingPrincipalCommandInput,
  type AttachThingPrincipalCommandOutput,
  type CreateThingCommandInput,
  type CreateThingCommandOutput,
  type DescribeCertificateCommandInput,
  type DescribeCertificateCommandOutput,
  type DetachPolicyCommandInput,
  type DetachPolicyCommandOutput,
  type DetachThingPrincipalCommandInput,
  type DetachThingPrincipalCommandOutput,
  type RegisterCertificateCommandInput,
  type RegisterCertificateCommandOutput,
  type RegisterCertificateWithoutCACommandInput,
  type RegisterCertificateWithoutCACommandOutput,
  type UpdateCACertificateCommandInput,
  type UpdateCACertificateCommandOutput,
  type UpdateCertificateCommandInput,
  type UpdateCertificateCommandOutput,
} from '@aws-sdk/client-iot';
import type { AwsCommand } from 'aws-sdk-client-mock';
import { mockable, mockIotClient, type CommandOutput } from '../../support/iot-mock';
import { X509Certificate } from 'node:crypto';
import { IOT_REGISTRY_IAM_ACTIONS, IotDeviceRegistry, iotRegistryIamActions, type IotRegistryModes, type RegistryOperation } from '../../../functions/adapters/aws/iot-device-registry';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import type { RegistryCertificateStatus } from '../../../functions/core/ports';
import { makeCsr } from '../../support/pki';

// The IoT stub goes through the type bridge in test/support/iot-mock.ts.
const iot = mockIotClient();
const AddThingToThingGroupCommand = mockable<AddThingToThingGroupCommandInput, AddThingToThingGroupCommandOutput>(AddThingToThingGroupSdkCommand);
const AttachPolicyCommand = mockable<AttachPolicyCommandInput, AttachPolicyCommandOutput>(AttachPolicySdkCommand);
const AttachThingPrincipalCommand = mockable<AttachThingPrincipalCommandInput, AttachThingPrincipalCommandOutput>(AttachThingPrincipalSdkCommand);
const CreateThingCommand = mockable<CreateThingCommandInput, CreateThingCommandOutput>(CreateThingSdkCommand);
const DescribeCertificateCommand = mockable<DescribeCertificateCommandInput, DescribeCertificateCommandOutput>(DescribeCertificateSdkCommand);
const DetachPolicyCommand = mockable<DetachPolicyCommandInput, DetachPolicyCommandOutput>(DetachPolicySdkCommand);
const DetachThingPrincipalCommand = mockable<DetachThingPrincipalCommandInput, DetachThingPrincipalCommandOutput>(DetachThingPrincipalSdkCommand);
const RegisterCertificateCommand = mockable<RegisterCertificateCommandInput, RegisterCertificateCommandOutput>(RegisterCertificateSdkCommand);
const RegisterCertificateWithoutCACommand = mockable<RegisterCertificateWithoutCACommandInput, RegisterCertificateWithoutCACommandOutput>(RegisterCertificateWithoutCASdkCommand);
const UpdateCACertificateCommand = mockable<UpdateCACertificateCommandInput, UpdateCACertificateCommandOutput>(UpdateCACertificateSdkCommand);
const UpdateCertificateCommand = mockable<UpdateCertificateCommandInput, UpdateCertificateCommandOutput>(UpdateCertificateSdkCommand);

const THING_GROUP = 'fleet-devices';
const POLICY = 'fleet-device-policy';
const THING = 'sensor-0001';

const metadata = { $metadata: {} };
const notFound = () => new ResourceNotFoundException({ message: 'The specified resource does not exist', ...metadata });
const throttled = () => new ThrottlingException({ message: 'Rate exceeded', ...metadata });

/**
 * The command was sent exactly once, with exactly this input: `toHaveReceivedCommandWith` alone
 * matches a subset, so a field sent by mistake would go unnoticed.
 */
const expectSentOnceWith = <I extends object, O extends CommandOutput>(command: new (input: I) => AwsCommand<I, O>, input: I) => {
  expect(iot).toHaveReceivedCommandTimes(command, 1);
  expect(iot).toHaveReceivedCommandWith(command, input);
  expect(iot.commandCalls(command)[0]?.args[0].input).toStrictEqual(input);
};

/** The adapter in these modes (THING_GROUP and WITH_CA unless told), given what its policy attachment needs: the group or the policy. */
const registry = ({ policyAttachment = 'THING_GROUP', certificateRegistration = 'WITH_CA' }: Partial<IotRegistryModes> = {}) =>
  new IotDeviceRegistry({
    client: new IoTClient({ region: 'us-east-1' }),
    certificateRegistration,
    ...(policyAttachment === 'THING_GROUP' ? { policyAttachment, thingGroupName: THING_GROUP } : { policyAttachment, policyName: POLICY }),
  });

/** The id AWS IoT gives a certificate, computed independently of the code under test: SHA-256 of the DER, lower-case hex. */
const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();
const arnOf = (certificateId: string) => `arn:aws:iot:us-east-1:123456789012:cert/${certificateId}`;

interface Issued {
  readonly certificatePem: string;
  readonly caCertificatePem: string;
  readonly certificateId: string;
  readonly certificateArn: string;
}

let issued: Issued;

beforeAll(async () => {
  const { ca, material } = await SoftwareCertificateAuthority.create('Adapter Test CA');
  const { csrPem } = await makeCsr(THING);
  const { certificatePem } = await ca.issueCertificate({ csrPem, validityDays: 30, idempotencyToken: 'iot-registry-test' });
  const certificateId = fingerprintOf(certificatePem);
  issued = { certificatePem, caCertificatePem: material.certificatePem, certificateId, certificateArn: arnOf(certificateId) };
});

/** Every AWS IoT operation any test made the adapter call, to check the IAM action list against. */
const operationsCalled = new Set<string>();

beforeEach(() => {
  iot.reset();
});

afterEach(() => {
  for (const call of iot.calls()) operationsCalled.add(call.args[0].constructor.name.replace(/Command$/, ''));
});

const describesAs = (status: RegistryCertificateStatus | 'PENDING_TRANSFER' | 'REGISTER_INACTIVE') =>
  iot.on(DescribeCertificateCommand, { certificateId: issued.certificateId }).resolves({
    certificateDescription: {
      certificateId: issued.certificateId,
      certificateArn: issued.certificateArn,
      certificatePem: issued.certificatePem,
      status,
      caCertificateId: 'ca0123',
    },
  });

describe('IotDeviceRegistry.describeCertificate', () => {
  it('answers the certificate AWS IoT describes', async () => {
    // Prepare
    describesAs('PENDING_ACTIVATION');

    // Act
    const certificate = await registry().describeCertificate(issued.certificateId);

    // Assess
    expect(certificate).toEqual({
      certificateId: issued.certificateId,
      certificatePem: issued.certificatePem,
      status: 'PENDING_ACTIVATION',
      caCertificateId: 'ca0123',
    });
    expectSentOnceWith(DescribeCertificateCommand, { certificateId: issued.certificateId });
    expect(iot.calls()).toHaveLength(1);
  });

  it.each<RegistryCertificateStatus>(['PENDING_ACTIVATION', 'ACTIVE', 'INACTIVE', 'REVOKED'])('answers the AWS IoT status %s as the same status of the port', async (status) => {
    // Prepare
    describesAs(status);

    // Act
    const certificate = await registry().describeCertificate(issued.certificateId);

    // Assess
    expect(certificate.status).toBe(status);
  });

  it.each(['PENDING_TRANSFER', 'REGISTER_INACTIVE'] as const)('rejects a certificate AWS IoT shows as %s with a non-retryable UPSTREAM_FAILURE', async (status) => {
    // Prepare
    describesAs(status);

    // Act
    const describing = registry().describeCertificate(issued.certificateId);

    // Assess
    await expect(describing).rejects.toMatchObject({
      name: 'UpstreamError',
      code: 'UPSTREAM_FAILURE',
      retryable: false,
      message: `AWS IoT shows certificate ${issued.certificateId} as ${status}, a status the lifecycle does not handle (only PENDING_ACTIVATION, ACTIVE, INACTIVE, REVOKED).`,
    });
  });

  it('fails with CERTIFICATE_NOT_FOUND when AWS IoT does not know the certificate', async () => {
    // Prepare
    iot.on(DescribeCertificateCommand).rejects(notFound());

    // Act
    const describing = registry().describeCertificate(issued.certificateId);

    // Assess
    await expect(describing).rejects.toMatchObject({
      name: 'NotFoundError',
      code: 'CERTIFICATE_NOT_FOUND',
      message: `Certificate ${issued.certificateId} is not registered with AWS IoT.`,
    });
  });

  it('fails with UPSTREAM_THROTTLED when AWS IoT still throttles after the SDK retries', async () => {
    // Prepare
    iot.on(DescribeCertificateCommand).rejects(throttled());

    // Act
    const describing = registry().describeCertificate(issued.certificateId);

    // Assess
    await expect(describing).rejects.toMatchObject({
      name: 'UpstreamError',
      code: 'UPSTREAM_THROTTLED',
      retryable: true,
      message: 'AWS IoT DescribeCertificate is throttled; try again later.',
    });
  });
});

describe('IotDeviceRegistry.registerCertificate', () => {
  it('registers the certificate as ACTIVE with its CA and answers its id', async () => {
    // Prepare
    iot.on(RegisterCertificateCommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });

    // Act
    const answer = await registry({ certificateRegistration: 'WITH_CA' }).registerCertificate({
      certificatePem: issued.certificatePem,
      caCertificatePem: issued.caCertificatePem,
    });

    // Assess
    expect(answer).toEqual({ certificateId: issued.certificateId, alreadyRegistered: false });
    expectSentOnceWith(RegisterCertificateCommand, {
      certificatePem: issued.certificatePem,
      caCertificatePem: issued.caCertificatePem,
      status: 'ACTIVE',
    });
    expect(iot).not.toHaveReceivedCommand(RegisterCertificateWithoutCACommand);
    expect(iot.calls()).toHaveLength(1);
  });

  it('registers the certificate as ACTIVE without a CA in WITHOUT_CA mode', async () => {
    // Prepare
    iot.on(RegisterCertificateWithoutCACommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });

    // Act
    const answer = await registry({ certificateRegistration: 'WITHOUT_CA' }).registerCertificate({
      certificatePem: issued.certificatePem,
      caCertificatePem: issued.caCertificatePem,
    });

    // Assess
    expect(answer).toEqual({ certificateId: issued.certificateId, alreadyRegistered: false });
    expectSentOnceWith(RegisterCertificateWithoutCACommand, { certificatePem: issued.certificatePem, status: 'ACTIVE' });
    expect(iot).not.toHaveReceivedCommand(RegisterCertificateCommand);
    expect(iot.calls()).toHaveLength(1);
  });

  it('answers the existing id when the certificate was registered before', async () => {
    // Prepare
    iot
      .on(RegisterCertificateCommand)
      .rejects(new ResourceAlreadyExistsException({ message: 'The certificate is already provisioned or registered', resourceId: issued.certificateId, ...metadata }));

    // Act
    const answer = await registry().registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem: issued.caCertificatePem });

    // Assess
    expect(answer).toEqual({ certificateId: issued.certificateId, alreadyRegistered: true });
    expect(iot.calls()).toHaveLength(1);
  });

  it('computes the id from the certificate when the already-exists answer does not carry it', async () => {
    // Prepare
    iot.on(RegisterCertificateWithoutCACommand).rejects(new ResourceAlreadyExistsException({ message: 'The certificate is already provisioned or registered', ...metadata }));

    // Act
    const answer = await registry({ certificateRegistration: 'WITHOUT_CA' }).registerCertificate({
      certificatePem: issued.certificatePem,
      caCertificatePem: issued.caCertificatePem,
    });

    // Assess
    expect(answer).toEqual({ certificateId: fingerprintOf(issued.certificatePem), alreadyRegistered: true });
    expect(iot.calls()).toHaveLength(1);
  });

  it('attaches a certificate it registered without describing it again', async () => {
    // Prepare
    iot.on(RegisterCertificateCommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });
    iot.on(AttachThingPrincipalCommand).resolves({});
    const adapter = registry();

    // Act
    const { certificateId } = await adapter.registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem: issued.caCertificatePem });
    await adapter.attachCertificate(THING, certificateId);

    // Assess
    expect(iot).toHaveReceivedCommandWith(AttachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expect(iot).not.toHaveReceivedCommand(DescribeCertificateCommand);
    expect(iot.calls()).toHaveLength(2);
  });

  it('fails with UPSTREAM_FAILURE when AWS IoT refuses the registration', async () => {
    // Prepare
    iot.on(RegisterCertificateCommand).rejects(new InvalidRequestException({ message: 'The CA certificate is not registered', ...metadata }));

    // Act
    const registering = registry().registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem: issued.caCertificatePem });

    // Assess
    await expect(registering).rejects.toMatchObject({
      code: 'UPSTREAM_FAILURE',
      retryable: false,
      message: 'AWS IoT RegisterCertificate failed (InvalidRequestException).',
    });
  });
});

describe('IotDeviceRegistry.updateCertificateStatus', () => {
  it.each(['ACTIVE', 'INACTIVE', 'REVOKED'] as const)('sets the status %s', async (status) => {
    // Prepare
    iot.on(UpdateCertificateCommand).resolves({});

    // Act
    await registry().updateCertificateStatus(issued.certificateId, status);

    // Assess
    expectSentOnceWith(UpdateCertificateCommand, { certificateId: issued.certificateId, newStatus: status });
    expect(iot.calls()).toHaveLength(1);
  });

  it('succeeds when AWS IoT refuses the change because the certificate already has that status', async () => {
    // Prepare
    iot.on(UpdateCertificateCommand).rejects(new CertificateStateException({ message: 'Certificate is already revoked', ...metadata }));
    describesAs('REVOKED');

    // Act
    await registry().updateCertificateStatus(issued.certificateId, 'REVOKED');

    // Assess
    expectSentOnceWith(UpdateCertificateCommand, { certificateId: issued.certificateId, newStatus: 'REVOKED' });
    expectSentOnceWith(DescribeCertificateCommand, { certificateId: issued.certificateId });
    expect(iot.calls()).toHaveLength(2);
  });

  it('fails with INVALID_TRANSITION when a revoked certificate is to become ACTIVE', async () => {
    // Prepare
    iot.on(UpdateCertificateCommand).rejects(new CertificateStateException({ message: 'Cannot change the status of a revoked certificate', ...metadata }));
    describesAs('REVOKED');

    // Act
    const updating = registry().updateCertificateStatus(issued.certificateId, 'ACTIVE');

    // Assess
    await expect(updating).rejects.toMatchObject({
      name: 'LifecycleError',
      code: 'INVALID_TRANSITION',
      message: `Certificate ${issued.certificateId} is REVOKED in AWS IoT and cannot become ACTIVE.`,
      details: { certificateId: issued.certificateId, from: 'REVOKED', to: 'ACTIVE' },
    });
    expect(iot.calls()).toHaveLength(2);
  });

  it('fails with CERTIFICATE_NOT_FOUND when the certificate is not registered', async () => {
    // Prepare
    iot.on(UpdateCertificateCommand).rejects(notFound());

    // Act
    const updating = registry().updateCertificateStatus(issued.certificateId, 'INACTIVE');

    // Assess
    await expect(updating).rejects.toMatchObject({ code: 'CERTIFICATE_NOT_FOUND' });
    expect(iot.calls()).toHaveLength(1);
  });

  it('fails with UPSTREAM_THROTTLED when UpdateCertificate stays throttled', async () => {
    // Prepare
    iot.on(UpdateCertificateCommand).rejects(throttled());

    // Act
    const updating = registry().updateCertificateStatus(issued.certificateId, 'ACTIVE');

    // Assess
    await expect(updating).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED', message: 'AWS IoT UpdateCertificate is throttled; try again later.' });
    expect(iot.calls()).toHaveLength(1);
  });
});

const CA_ID = 'c'.repeat(64);

describe('IotDeviceRegistry.setCaCertificateStatus', () => {
  it('sets the CA INACTIVE with auto-registration off, in one call', async () => {
    // Prepare
    iot.on(UpdateCACertificateCommand).resolves({});

    // Act
    await registry().setCaCertificateStatus(CA_ID, 'INACTIVE');

    // Assess
    expectSentOnceWith(UpdateCACertificateCommand, { certificateId: CA_ID, newStatus: 'INACTIVE', newAutoRegistrationStatus: 'DISABLE' });
    expect(iot.calls()).toHaveLength(1);
  });

  it('fails with CA_NOT_FOUND when AWS IoT has no such CA', async () => {
    // Prepare
    iot.on(UpdateCACertificateCommand).rejects(new ResourceNotFoundException({ message: 'CA not found', ...metadata }));

    // Act
    const updating = registry().setCaCertificateStatus(CA_ID, 'INACTIVE');

    // Assess
    await expect(updating).rejects.toMatchObject({ code: 'CA_NOT_FOUND', message: `CA ${CA_ID} is not registered with AWS IoT.` });
  });

  it('fails with a retryable UPSTREAM_THROTTLED when AWS IoT throttles', async () => {
    // Prepare
    iot.on(UpdateCACertificateCommand).rejects(new ThrottlingException({ message: 'Rate exceeded', ...metadata }));

    // Act
    const updating = registry().setCaCertificateStatus(CA_ID, 'INACTIVE');

    // Assess
    await expect(updating).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED', retryable: true });
  });
});

describe('IotDeviceRegistry.ensureThing', () => {
  const attributes = { model: 'th-100', line: 'a' };

  it('creates the thing with its attributes and adds it to the fleet thing group', async () => {
    // Prepare
    iot.on(CreateThingCommand).resolves({ thingName: THING });
    iot.on(AddThingToThingGroupCommand).resolves({});

    // Act
    await registry({ policyAttachment: 'THING_GROUP' }).ensureThing(THING, attributes);

    // Assess
    expectSentOnceWith(CreateThingCommand, { thingName: THING, attributePayload: { attributes } });
    expectSentOnceWith(AddThingToThingGroupCommand, { thingGroupName: THING_GROUP, thingName: THING });
    expect(iot).toHaveReceivedNthCommandWith(2, AddThingToThingGroupCommand, { thingGroupName: THING_GROUP, thingName: THING });
    expect(iot.calls()).toHaveLength(2);
  });

  it('accepts a thing that already exists and still adds it to the group', async () => {
    // Prepare
    iot.on(CreateThingCommand).rejects(new ResourceAlreadyExistsException({ message: 'Thing sensor-0001 already exists in account with different attributes', ...metadata }));
    iot.on(AddThingToThingGroupCommand).resolves({});

    // Act
    await registry().ensureThing(THING, attributes);

    // Assess
    expect(iot).toHaveReceivedCommandWith(AddThingToThingGroupCommand, { thingGroupName: THING_GROUP, thingName: THING });
    expect(iot.calls()).toHaveLength(2);
  });

  it('does not touch thing groups when the policy is attached per certificate', async () => {
    // Prepare
    iot.on(CreateThingCommand).resolves({ thingName: THING });

    // Act
    await registry({ policyAttachment: 'CERTIFICATE' }).ensureThing(THING, attributes);

    // Assess
    expect(iot).toHaveReceivedCommandTimes(CreateThingCommand, 1);
    expect(iot).not.toHaveReceivedCommand(AddThingToThingGroupCommand);
    expect(iot.calls()).toHaveLength(1);
  });

  it('fails with UPSTREAM_FAILURE and adds nothing to the group when AWS IoT refuses the thing', async () => {
    // Prepare
    iot.on(CreateThingCommand).rejects(new InvalidRequestException({ message: 'Invalid attribute', ...metadata }));

    // Act
    const ensuring = registry().ensureThing(THING, attributes);

    // Assess
    await expect(ensuring).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'AWS IoT CreateThing failed (InvalidRequestException).' });
    expect(iot).not.toHaveReceivedCommand(AddThingToThingGroupCommand);
  });

  it('fails with UPSTREAM_FAILURE when the fleet thing group does not exist', async () => {
    // Prepare
    iot.on(CreateThingCommand).resolves({ thingName: THING });
    iot.on(AddThingToThingGroupCommand).rejects(notFound());

    // Act
    const ensuring = registry().ensureThing(THING, attributes);

    // Assess
    await expect(ensuring).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'AWS IoT AddThingToThingGroup failed (ResourceNotFoundException).' });
  });
});

describe('IotDeviceRegistry.attachCertificate', () => {
  it('attaches the certificate ARN to the thing and leaves the policy to the thing group', async () => {
    // Prepare
    describesAs('ACTIVE');
    iot.on(AttachThingPrincipalCommand).resolves({});

    // Act
    await registry({ policyAttachment: 'THING_GROUP' }).attachCertificate(THING, issued.certificateId);

    // Assess
    expectSentOnceWith(DescribeCertificateCommand, { certificateId: issued.certificateId });
    expectSentOnceWith(AttachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expect(iot).toHaveReceivedNthCommandWith(2, AttachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expect(iot).not.toHaveReceivedCommand(AttachPolicyCommand);
    expect(iot.calls()).toHaveLength(2);
  });

  it('also attaches the fleet policy to the certificate in CERTIFICATE mode', async () => {
    // Prepare
    describesAs('ACTIVE');
    iot.on(AttachThingPrincipalCommand).resolves({});
    iot.on(AttachPolicyCommand).resolves({});

    // Act
    await registry({ policyAttachment: 'CERTIFICATE' }).attachCertificate(THING, issued.certificateId);

    // Assess
    expectSentOnceWith(AttachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expectSentOnceWith(AttachPolicyCommand, { policyName: POLICY, target: issued.certificateArn });
    expect(iot.calls()).toHaveLength(3);
  });

  it('describes a certificate once and reuses its ARN', async () => {
    // Prepare
    describesAs('ACTIVE');
    iot.on(AttachThingPrincipalCommand).resolves({});
    const adapter = registry();

    // Act
    await adapter.attachCertificate(THING, issued.certificateId);
    await adapter.attachCertificate(THING, issued.certificateId);

    // Assess
    expect(iot).toHaveReceivedCommandTimes(DescribeCertificateCommand, 1);
    expect(iot).toHaveReceivedCommandTimes(AttachThingPrincipalCommand, 2);
    expect(iot.calls()).toHaveLength(3);
  });

  it('reuses the ARN of a certificate it described before (the JITR path)', async () => {
    // Prepare
    describesAs('PENDING_ACTIVATION');
    iot.on(AttachThingPrincipalCommand).resolves({});
    const adapter = registry();

    // Act
    await adapter.describeCertificate(issued.certificateId);
    await adapter.attachCertificate(THING, issued.certificateId);

    // Assess
    expect(iot).toHaveReceivedCommandTimes(DescribeCertificateCommand, 1);
    expect(iot.calls()).toHaveLength(2);
  });

  it('fails with CERTIFICATE_NOT_FOUND and attaches nothing when the certificate is not registered', async () => {
    // Prepare
    iot.on(DescribeCertificateCommand).rejects(notFound());

    // Act
    const attaching = registry().attachCertificate(THING, issued.certificateId);

    // Assess
    await expect(attaching).rejects.toMatchObject({ code: 'CERTIFICATE_NOT_FOUND' });
    expect(iot).not.toHaveReceivedCommand(AttachThingPrincipalCommand);
    expect(iot.calls()).toHaveLength(1);
  });

  it('fails with DEVICE_NOT_FOUND when the thing does not exist', async () => {
    // Prepare
    describesAs('ACTIVE');
    iot.on(AttachThingPrincipalCommand).rejects(notFound());

    // Act
    const attaching = registry({ policyAttachment: 'CERTIFICATE' }).attachCertificate(THING, issued.certificateId);

    // Assess
    await expect(attaching).rejects.toMatchObject({ name: 'NotFoundError', code: 'DEVICE_NOT_FOUND', message: `Thing ${THING} does not exist in AWS IoT.` });
    expect(iot).not.toHaveReceivedCommand(AttachPolicyCommand);
  });

  it('fails with UPSTREAM_THROTTLED when AttachPolicy stays throttled', async () => {
    // Prepare
    describesAs('ACTIVE');
    iot.on(AttachThingPrincipalCommand).resolves({});
    iot.on(AttachPolicyCommand).rejects(throttled());

    // Act
    const attaching = registry({ policyAttachment: 'CERTIFICATE' }).attachCertificate(THING, issued.certificateId);

    // Assess
    await expect(attaching).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED', retryable: true, message: 'AWS IoT AttachPolicy is throttled; try again later.' });
  });
});

describe('IotDeviceRegistry.detachCertificate', () => {
  it('detaches the certificate from the thing', async () => {
    // Prepare
    describesAs('REVOKED');
    iot.on(DetachThingPrincipalCommand).resolves({});

    // Act
    await registry({ policyAttachment: 'THING_GROUP' }).detachCertificate(THING, issued.certificateId);

    // Assess
    expectSentOnceWith(DetachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expect(iot).not.toHaveReceivedCommand(DetachPolicyCommand);
    expect(iot.calls()).toHaveLength(2);
  });

  it('also detaches the fleet policy from the certificate in CERTIFICATE mode', async () => {
    // Prepare
    describesAs('REVOKED');
    iot.on(DetachThingPrincipalCommand).resolves({});
    iot.on(DetachPolicyCommand).resolves({});

    // Act
    await registry({ policyAttachment: 'CERTIFICATE' }).detachCertificate(THING, issued.certificateId);

    // Assess
    expectSentOnceWith(DetachThingPrincipalCommand, { thingName: THING, principal: issued.certificateArn });
    expectSentOnceWith(DetachPolicyCommand, { policyName: POLICY, target: issued.certificateArn });
    expect(iot.calls()).toHaveLength(3);
  });

  it('succeeds when the links are already gone', async () => {
    // Prepare
    describesAs('REVOKED');
    iot.on(DetachThingPrincipalCommand).rejects(notFound());
    iot.on(DetachPolicyCommand).rejects(notFound());

    // Act
    await registry({ policyAttachment: 'CERTIFICATE' }).detachCertificate(THING, issued.certificateId);

    // Assess
    expect(iot).toHaveReceivedCommandTimes(DetachThingPrincipalCommand, 1);
    expect(iot).toHaveReceivedCommandTimes(DetachPolicyCommand, 1);
  });

  it('succeeds without detaching anything when the certificate is not registered', async () => {
    // Prepare
    iot.on(DescribeCertificateCommand).rejects(notFound());

    // Act
    await registry({ policyAttachment: 'CERTIFICATE' }).detachCertificate(THING, issued.certificateId);

    // Assess
    expect(iot).not.toHaveReceivedCommand(DetachThingPrincipalCommand);
    expect(iot).not.toHaveReceivedCommand(DetachPolicyCommand);
    expect(iot.calls()).toHaveLength(1);
  });

  it('fails with UPSTREAM_FAILURE on any other error', async () => {
    // Prepare
    describesAs('REVOKED');
    iot.on(DetachThingPrincipalCommand).rejects(new InvalidRequestException({ message: 'Invalid principal', ...metadata }));

    // Act
    const detaching = registry().detachCertificate(THING, issued.certificateId);

    // Assess
    await expect(detaching).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'AWS IoT DetachThingPrincipal failed (InvalidRequestException).' });
  });
});

describe('IOT_REGISTRY_IAM_ACTIONS', () => {
  it('covers every operation the tests above made the adapter call', () => {
    const granted: readonly string[] = IOT_REGISTRY_IAM_ACTIONS;
    for (const operation of operationsCalled) expect(granted).toContain(`iot:${operation}`);
  });

  it('lists exactly the AWS IoT actions the adapter calls', () => {
    expect([...IOT_REGISTRY_IAM_ACTIONS].sort()).toEqual(
      [
        'iot:AddThingToThingGroup',
        'iot:AttachPolicy',
        'iot:AttachThingPrincipal',
        'iot:CreateThing',
        'iot:DescribeCertificate',
        'iot:DetachPolicy',
        'iot:DetachThingPrincipal',
        'iot:RegisterCertificate',
        'iot:RegisterCertificateWithoutCA',
        'iot:UpdateCACertificate',
        'iot:UpdateCertificate',
      ].sort(),
    );
  });
});

describe('iotRegistryIamActions', () => {
  type Modes = IotRegistryModes;

  /** Runs every method of the adapter in these modes against a stub that accepts everything, and answers the AWS IoT actions it needed. */
  const actionsCalledIn = async (modes: Modes): Promise<string[]> => {
    describesAs('ACTIVE');
    iot.on(RegisterCertificateCommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });
    iot.on(RegisterCertificateWithoutCACommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });
    for (const command of [UpdateCertificateCommand, UpdateCACertificateCommand, CreateThingCommand, AddThingToThingGroupCommand, AttachThingPrincipalCommand, DetachThingPrincipalCommand, AttachPolicyCommand, DetachPolicyCommand]) {
      iot.on(command as new (input: object) => AwsCommand<object, CommandOutput>).resolves({});
    }
    const adapter = registry(modes);
    await adapter.describeCertificate(issued.certificateId);
    await adapter.registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem: issued.caCertificatePem });
    await adapter.updateCertificateStatus(issued.certificateId, 'ACTIVE');
    await adapter.ensureThing(THING, {});
    await adapter.attachCertificate(THING, issued.certificateId);
    await adapter.detachCertificate(THING, issued.certificateId);
    await adapter.setCaCertificateStatus(CA_ID, 'INACTIVE');
    return [...new Set(iot.calls().map((call) => `iot:${(call.args[0] as object).constructor.name.replace(/Command$/, '')}`))].sort();
  };

  test.each<Modes & { readonly expected: readonly string[] }>([
    {
      policyAttachment: 'THING_GROUP',
      certificateRegistration: 'WITH_CA',
      expected: ['iot:AddThingToThingGroup', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachThingPrincipal', 'iot:RegisterCertificate', 'iot:UpdateCACertificate', 'iot:UpdateCertificate'],
    },
    {
      policyAttachment: 'THING_GROUP',
      certificateRegistration: 'WITHOUT_CA',
      expected: ['iot:AddThingToThingGroup', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachThingPrincipal', 'iot:RegisterCertificateWithoutCA', 'iot:UpdateCACertificate', 'iot:UpdateCertificate'],
    },
    {
      policyAttachment: 'CERTIFICATE',
      certificateRegistration: 'WITH_CA',
      expected: ['iot:AttachPolicy', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachPolicy', 'iot:DetachThingPrincipal', 'iot:RegisterCertificate', 'iot:UpdateCACertificate', 'iot:UpdateCertificate'],
    },
    {
      policyAttachment: 'CERTIFICATE',
      certificateRegistration: 'WITHOUT_CA',
      expected: ['iot:AttachPolicy', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachPolicy', 'iot:DetachThingPrincipal', 'iot:RegisterCertificateWithoutCA', 'iot:UpdateCACertificate', 'iot:UpdateCertificate'],
    },
  ])('answers exactly the actions the adapter calls in $policyAttachment and $certificateRegistration mode', async ({ policyAttachment, certificateRegistration, expected }) => {
    // Act
    const called = await actionsCalledIn({ policyAttachment, certificateRegistration });

    // Assess
    expect([...iotRegistryIamActions({ policyAttachment, certificateRegistration })].sort()).toEqual(expected);
    expect(called).toEqual(expected);
  });

  it('never grants AttachPolicy, DetachPolicy or RegisterCertificateWithoutCA to a THING_GROUP, WITH_CA function', () => {
    expect(iotRegistryIamActions({ policyAttachment: 'THING_GROUP', certificateRegistration: 'WITH_CA' })).not.toEqual(
      expect.arrayContaining([expect.stringMatching(/^iot:(AttachPolicy|DetachPolicy|RegisterCertificateWithoutCA)$/)]),
    );
  });

  /** Stubs every AWS IoT call to succeed, runs one operation on a fresh adapter (nothing cached) and answers the actions it called. */
  const actionsOfOperation = async (modes: Modes, operation: RegistryOperation): Promise<string[]> => {
    describesAs('ACTIVE');
    iot.on(RegisterCertificateCommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });
    iot.on(RegisterCertificateWithoutCACommand).resolves({ certificateId: issued.certificateId, certificateArn: issued.certificateArn });
    for (const command of [UpdateCertificateCommand, UpdateCACertificateCommand, CreateThingCommand, AddThingToThingGroupCommand, AttachThingPrincipalCommand, DetachThingPrincipalCommand, AttachPolicyCommand, DetachPolicyCommand]) {
      iot.on(command as new (input: object) => AwsCommand<object, CommandOutput>).resolves({});
    }
    const adapter = registry(modes);
    const run: Record<RegistryOperation, () => Promise<unknown>> = {
      describeCertificate: () => adapter.describeCertificate(issued.certificateId),
      registerCertificate: () => adapter.registerCertificate({ certificatePem: issued.certificatePem, caCertificatePem: issued.caCertificatePem }),
      updateCertificateStatus: () => adapter.updateCertificateStatus(issued.certificateId, 'ACTIVE'),
      ensureThing: () => adapter.ensureThing(THING, {}),
      attachCertificate: () => adapter.attachCertificate(THING, issued.certificateId),
      detachCertificate: () => adapter.detachCertificate(THING, issued.certificateId),
      setCaCertificateStatus: () => adapter.setCaCertificateStatus(CA_ID, 'INACTIVE'),
    };
    await run[operation]();
    return [...new Set(iot.calls().map((call) => `iot:${(call.args[0] as object).constructor.name.replace(/Command$/, '')}`))];
  };

  const ALL_MODES: readonly Modes[] = (['THING_GROUP', 'CERTIFICATE'] as const).flatMap((policyAttachment) =>
    (['WITH_CA', 'WITHOUT_CA'] as const).map((certificateRegistration) => ({ policyAttachment, certificateRegistration })),
  );
  const OPERATIONS: readonly RegistryOperation[] = ['describeCertificate', 'registerCertificate', 'updateCertificateStatus', 'ensureThing', 'attachCertificate', 'detachCertificate', 'setCaCertificateStatus'];

  test.each(ALL_MODES.flatMap((modes) => OPERATIONS.map((operation) => ({ ...modes, operation }))))(
    'declares every action $operation calls in $policyAttachment and $certificateRegistration mode',
    async ({ operation, ...modes }) => {
      // Act
      const called = await actionsOfOperation(modes, operation);

      // Assess
      expect(iotRegistryIamActions({ ...modes, operations: [operation] })).toEqual(expect.arrayContaining(called));
    },
  );

  it('answers, for every operation but registerCertificate, every THING_GROUP and WITH_CA action but RegisterCertificate, in the order of IOT_REGISTRY_IAM_ACTIONS', () => {
    expect(iotRegistryIamActions({ policyAttachment: 'THING_GROUP', certificateRegistration: 'WITH_CA', operations: ['describeCertificate', 'ensureThing', 'attachCertificate', 'updateCertificateStatus', 'detachCertificate'] })).toEqual([
      'iot:DescribeCertificate',
      'iot:UpdateCertificate',
      'iot:CreateThing',
      'iot:AddThingToThingGroup',
      'iot:AttachThingPrincipal',
      'iot:DetachThingPrincipal',
    ]);
  });

  it('is, over all modes, exactly IOT_REGISTRY_IAM_ACTIONS', () => {
    const union = new Set(
      (['THING_GROUP', 'CERTIFICATE'] as const).flatMap((policyAttachment) =>
        (['WITH_CA', 'WITHOUT_CA'] as const).flatMap((certificateRegistration) => iotRegistryIamActions({ policyAttachment, certificateRegistration })),
      ),
    );
    expect([...union].sort()).toEqual([...IOT_REGISTRY_IAM_ACTIONS].sort());
  });
});
