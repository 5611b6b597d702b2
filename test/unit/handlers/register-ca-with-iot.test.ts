import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { ACMPCAClient, GetCertificateAuthorityCertificateCommand, GetCertificateCommand, IssueCertificateCommand, RequestInProgressException } from '@aws-sdk/client-acm-pca';
import {
  CertificateStateException,
  DeleteCACertificateCommand as DeleteCACertificateSdkCommand,
  DescribeCACertificateCommand as DescribeCACertificateSdkCommand,
  GetRegistrationCodeCommand as GetRegistrationCodeSdkCommand,
  InvalidRequestException,
  IoTClient,
  RegisterCACertificateCommand as RegisterCACertificateSdkCommand,
  ResourceAlreadyExistsException,
  ResourceNotFoundException,
  UpdateCACertificateCommand as UpdateCACertificateSdkCommand,
  type DeleteCACertificateCommandInput,
  type DeleteCACertificateCommandOutput,
  type DescribeCACertificateCommandInput,
  type DescribeCACertificateCommandOutput,
  type GetRegistrationCodeCommandInput,
  type GetRegistrationCodeCommandOutput,
  type RegisterCACertificateCommandInput,
  type RegisterCACertificateCommandOutput,
  type UpdateCACertificateCommandInput,
  type UpdateCACertificateCommandOutput,
} from '@aws-sdk/client-iot';
import { Logger } from '@aws-lambda-powertools/logger';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { mockable, mockIotClient } from '../../support/iot-mock';
import { createRegisterCaHandler, type RegisterCaDependencies } from '../../../functions/handlers/register-ca-with-iot';
import { ISSUANCE_POLLING } from '../../../functions/adapters/aws/private-ca-issuance';
import { makeForeignCa } from '../../support/pki';
import { certificateIdOf } from '../../../functions/core/x509';

// The IoT stub goes through the type bridge in test/support/iot-mock.ts.
const iot = mockIotClient();
const DeleteCACertificateCommand = mockable<DeleteCACertificateCommandInput, DeleteCACertificateCommandOutput>(DeleteCACertificateSdkCommand);
const DescribeCACertificateCommand = mockable<DescribeCACertificateCommandInput, DescribeCACertificateCommandOutput>(DescribeCACertificateSdkCommand);
const GetRegistrationCodeCommand = mockable<GetRegistrationCodeCommandInput, GetRegistrationCodeCommandOutput>(GetRegistrationCodeSdkCommand);
const RegisterCACertificateCommand = mockable<RegisterCACertificateCommandInput, RegisterCACertificateCommandOutput>(RegisterCACertificateSdkCommand);
const UpdateCACertificateCommand = mockable<UpdateCACertificateCommandInput, UpdateCACertificateCommandOutput>(UpdateCACertificateSdkCommand);
const pca = mockClient(ACMPCAClient);

const CA_ARN = 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9';
const OTHER_CA_ARN = 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/99999999-4e5f-6071-8293-a4b5c6d7e8f9';
const TEMPLATE_ARN = 'arn:aws:acm-pca:::template/EndEntityCertificate/V1';
const VERIFICATION_ARN = `${CA_ARN}/certificate/0123456789abcdef`;
const REGISTRATION_CODE = 'a'.repeat(64);
const CA_CERTIFICATE_ID = 'b'.repeat(64);
const CA_CERTIFICATE_ARN = `arn:aws:iot:eu-west-1:111122223333:cacert/${CA_CERTIFICATE_ID}`;
const PROPERTIES = { ServiceToken: 'arn:aws:lambda:eu-west-1:111122223333:function:provider', CertificateAuthorityArn: CA_ARN, SigningAlgorithm: 'SHA256WITHECDSA', TemplateArn: TEMPLATE_ARN };
const metadata = { $metadata: {} };

const common = {
  ServiceToken: PROPERTIES.ServiceToken,
  ResponseURL: 'https://cloudformation-custom-resource-response.example/',
  StackId: 'arn:aws:cloudformation:eu-west-1:111122223333:stack/s/1',
  RequestId: '5d2f3c7e-0000-4000-8000-000000000000',
  LogicalResourceId: 'IotCaRegistration',
  ResourceType: 'Custom::IotCaRegistration',
};
const createEvent = (properties: Record<string, unknown> = PROPERTIES): CloudFormationCustomResourceEvent =>
  ({ ...common, RequestType: 'Create', ResourceProperties: properties }) as CloudFormationCustomResourceEvent;
const updateEvent = (properties: Record<string, unknown>, old: Record<string, unknown> = PROPERTIES): CloudFormationCustomResourceEvent =>
  ({ ...common, RequestType: 'Update', PhysicalResourceId: CA_CERTIFICATE_ID, ResourceProperties: properties, OldResourceProperties: old }) as CloudFormationCustomResourceEvent;
const deleteEvent = (physicalResourceId = CA_CERTIFICATE_ID, properties: Record<string, unknown> = PROPERTIES): CloudFormationCustomResourceEvent =>
  ({ ...common, RequestType: 'Delete', PhysicalResourceId: physicalResourceId, ResourceProperties: properties }) as CloudFormationCustomResourceEvent;

let caPem: string;
let caId: string;
let otherCaPem: string;
let otherCaId: string;
let verificationPem: string;
beforeAll(async () => {
  const ca = await makeForeignCa();
  caPem = ca.certificatePem;
  caId = await certificateIdOf(caPem);
  otherCaPem = (await makeForeignCa()).certificatePem;
  otherCaId = await certificateIdOf(otherCaPem);
  verificationPem = await ca.issue(REGISTRATION_CODE);
});

let waits: number[];
let logger: Logger;
const handler = (overrides: Partial<RegisterCaDependencies> = {}) =>
  createRegisterCaHandler({ iot: new IoTClient({}), pca: new ACMPCAClient({}), logger, sleep: async (ms) => void waits.push(ms), ...overrides });

beforeEach(() => {
  iot.reset();
  pca.reset();
  waits = [];
  logger = new Logger({ serviceName: 'test', logLevel: 'SILENT' });
  pca.on(GetCertificateAuthorityCertificateCommand).resolves({ Certificate: caPem });
  pca.on(IssueCertificateCommand).resolves({ CertificateArn: VERIFICATION_ARN });
  pca.on(GetCertificateCommand).resolves({ Certificate: verificationPem, CertificateChain: caPem });
  iot.on(GetRegistrationCodeCommand).resolves({ registrationCode: REGISTRATION_CODE });
  iot.on(RegisterCACertificateCommand).resolves({ certificateId: CA_CERTIFICATE_ID, certificateArn: CA_CERTIFICATE_ARN });
});

describe('on create', () => {
  test('registers the CA with auto-registration on and returns its IoT id', async () => {
    // Act
    const response = await handler()(createEvent());

    // Assess
    expect(response).toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID, Data: { CaCertificateId: CA_CERTIFICATE_ID, CaCertificateArn: CA_CERTIFICATE_ARN } });
    expect(pca).toHaveReceivedCommandWith(GetCertificateAuthorityCertificateCommand, { CertificateAuthorityArn: CA_ARN });
    expect(iot).toHaveReceivedCommandTimes(GetRegistrationCodeCommand, 1);
    expect(iot).toHaveReceivedCommandWith(RegisterCACertificateCommand, {
      caCertificate: caPem,
      verificationCertificate: verificationPem,
      setAsActive: true,
      allowAutoRegistration: true,
      certificateMode: 'DEFAULT',
    });
  });

  test('has the CA sign a one-day verification certificate with the verification template', async () => {
    await handler()(createEvent());

    expect(pca).toHaveReceivedCommandWith(IssueCertificateCommand, {
      CertificateAuthorityArn: CA_ARN,
      Csr: expect.any(Uint8Array),
      SigningAlgorithm: 'SHA256WITHECDSA',
      TemplateArn: TEMPLATE_ARN,
      Validity: { Type: 'DAYS', Value: 1 },
    });
    expect(pca).toHaveReceivedCommandWith(GetCertificateCommand, { CertificateAuthorityArn: CA_ARN, CertificateArn: VERIFICATION_ARN });
  });

  test('the verification CSR is a valid PKCS#10 request whose subject CN is the registration code', async () => {
    await handler()(createEvent());

    const csrBytes = pca.commandCalls(IssueCertificateCommand)[0]?.args[0].input.Csr as Uint8Array;
    const csr = new x509.Pkcs10CertificateRequest(new TextDecoder().decode(csrBytes));
    expect(csr.subject).toBe(`CN=${REGISTRATION_CODE}`);
    expect(await csr.verify(webcrypto as unknown as Crypto)).toBe(true);
  });

  test('polls GetCertificate until Private CA has issued the certificate', async () => {
    pca
      .on(GetCertificateCommand)
      .rejectsOnce(new RequestInProgressException({ message: 'in progress', ...metadata }))
      .rejectsOnce(new RequestInProgressException({ message: 'in progress', ...metadata }))
      .resolves({ Certificate: verificationPem });

    await handler()(createEvent());

    expect(pca).toHaveReceivedCommandTimes(GetCertificateCommand, 3);
    expect(waits).toEqual([ISSUANCE_POLLING.firstDelayMs, ISSUANCE_POLLING.firstDelayMs * 2]);
  });

  test('fails when the certificate is still being issued after the last poll', async () => {
    pca.on(GetCertificateCommand).rejects(new RequestInProgressException({ message: 'in progress', ...metadata }));

    await expect(handler({ maxWaitMs: 1000 })(createEvent())).rejects.toThrow(`The verification certificate ${VERIFICATION_ARN} was still being issued after 1000 ms.`);
    expect(iot).not.toHaveReceivedCommand(RegisterCACertificateCommand);
  });

  test('fails with the way out when the CA is already registered', async () => {
    iot.on(RegisterCACertificateCommand).rejects(new ResourceAlreadyExistsException({ message: 'exists', resourceId: CA_CERTIFICATE_ID, ...metadata }));

    await expect(handler()(createEvent())).rejects.toThrow(
      `The CA certificate of ${CA_ARN} is already registered with AWS IoT (perhaps left by an earlier stack). Find it with \`aws iot list-ca-certificates\``,
    );
  });

  test('fails when the CA has no certificate yet (a subordinate CA not yet activated)', async () => {
    pca.on(GetCertificateAuthorityCertificateCommand).resolves({});

    await expect(handler()(createEvent())).rejects.toThrow(`${CA_ARN} has no CA certificate yet: it must be ACTIVE before it can be registered with AWS IoT.`);
    expect(iot).not.toHaveReceivedCommand(GetRegistrationCodeCommand);
  });

  test('rejects malformed properties, naming them', async () => {
    await expect(handler()(createEvent({ ...PROPERTIES, CertificateAuthorityArn: 'my-ca', SigningAlgorithm: undefined }))).rejects.toThrow(
      'Invalid custom resource properties: CertificateAuthorityArn is missing or malformed (got "my-ca"); SigningAlgorithm is missing or malformed (got undefined).',
    );
    expect(pca).not.toHaveReceivedAnyCommand();
  });
});

describe('on update', () => {
  test('keeps the registration when the CA is the same', async () => {
    iot.on(DescribeCACertificateCommand).resolves({ certificateDescription: { certificateId: caId, certificateArn: CA_CERTIFICATE_ARN } });

    const response = await handler()(updateEvent({ ...PROPERTIES, SigningAlgorithm: 'SHA384WITHECDSA' }));

    expect(response).toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID, Data: { CaCertificateId: caId, CaCertificateArn: CA_CERTIFICATE_ARN } });
    expect(iot).toHaveReceivedCommandWith(DescribeCACertificateCommand, { certificateId: caId });
    expect(iot).not.toHaveReceivedCommand(RegisterCACertificateCommand);
  });

  test('registers again when the registration has vanished', async () => {
    iot.on(DescribeCACertificateCommand).rejects(new ResourceNotFoundException({ message: 'gone', ...metadata }));

    await handler()(updateEvent(PROPERTIES));

    expect(iot).toHaveReceivedCommandTimes(RegisterCACertificateCommand, 1);
  });

  test('registers the new CA when the CA changes and keeps the physical id, so the previous registration is not deleted', async () => {
    // Prepare: the new CA is not registered yet
    const newId = 'c'.repeat(64);
    iot.on(DescribeCACertificateCommand).rejects(new ResourceNotFoundException({ message: 'not registered', ...metadata }));
    iot.on(RegisterCACertificateCommand).resolves({ certificateId: newId, certificateArn: `arn:aws:iot:eu-west-1:111122223333:cacert/${newId}` });

    // Act
    const response = await handler()(updateEvent({ ...PROPERTIES, CertificateAuthorityArn: OTHER_CA_ARN }));

    // Assess: CloudFormation sees the same physical id (no delete of the old one), the functions see the new CA
    expect(response).toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID, Data: { CaCertificateId: newId, CaCertificateArn: `arn:aws:iot:eu-west-1:111122223333:cacert/${newId}` } });
    expect(pca).toHaveReceivedCommandWith(GetCertificateAuthorityCertificateCommand, { CertificateAuthorityArn: OTHER_CA_ARN });
    expect(iot).toHaveReceivedCommandWith(RegisterCACertificateCommand, { setAsActive: true, allowAutoRegistration: true });
    expect(iot).not.toHaveReceivedCommand(UpdateCACertificateCommand);
    expect(iot).not.toHaveReceivedCommand(DeleteCACertificateCommand);
  });

  test('adopts the new CA when it is already registered (switching back to a previous CA)', async () => {
    iot.on(DescribeCACertificateCommand).resolves({ certificateDescription: { certificateId: caId, certificateArn: CA_CERTIFICATE_ARN } });

    const response = await handler()(updateEvent(PROPERTIES, { ...PROPERTIES, CertificateAuthorityArn: OTHER_CA_ARN }));

    expect(response.Data?.CaCertificateId).toBe(caId);
    expect(iot).not.toHaveReceivedCommand(RegisterCACertificateCommand);
    expect(iot).not.toHaveReceivedCommand(UpdateCACertificateCommand);
  });

  test('rejects a malformed list of previous CAs, naming it', async () => {
    await expect(handler()(updateEvent({ ...PROPERTIES, PreviousCertificateAuthorityArns: ['my-old-ca'] }))).rejects.toThrow(
      'Invalid custom resource properties: PreviousCertificateAuthorityArns must be a list of AWS Private CA ARNs (got ["my-old-ca"]).',
    );
    expect(iot).not.toHaveReceivedAnyCommand();
  });
});

describe('on delete', () => {
  test('sets the registration INACTIVE with auto-registration off, then deletes it', async () => {
    const response = await handler()(deleteEvent());

    expect(response).toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID });
    expect(iot).toHaveReceivedNthCommandWith(1, UpdateCACertificateCommand, { certificateId: CA_CERTIFICATE_ID, newStatus: 'INACTIVE', newAutoRegistrationStatus: 'DISABLE' });
    expect(iot).toHaveReceivedNthCommandWith(2, DeleteCACertificateCommand, { certificateId: CA_CERTIFICATE_ID });
  });

  test('deregisters the current CA and every previous CA too, after a CA rotation', async () => {
    // Prepare: the physical id names the first CA; the current one and a previous one are named by ARN
    pca.on(GetCertificateAuthorityCertificateCommand, { CertificateAuthorityArn: OTHER_CA_ARN }).resolves({ Certificate: otherCaPem });

    await handler()(deleteEvent(CA_CERTIFICATE_ID, { ...PROPERTIES, PreviousCertificateAuthorityArns: [OTHER_CA_ARN] }));

    const deactivated = iot.commandCalls(UpdateCACertificateCommand).map((call) => call.args[0].input);
    expect(deactivated).toEqual([CA_CERTIFICATE_ID, caId, otherCaId].map((certificateId) => ({ certificateId, newStatus: 'INACTIVE', newAutoRegistrationStatus: 'DISABLE' })));
    expect(iot).toHaveReceivedCommandTimes(DeleteCACertificateCommand, 3);
  });

  test('does nothing when nothing was registered (the create failed)', async () => {
    const response = await handler()(deleteEvent('AWSCDK::CustomResourceProviderFramework::CREATE_FAILED'));

    expect(response).toEqual({ PhysicalResourceId: 'AWSCDK::CustomResourceProviderFramework::CREATE_FAILED' });
    expect(iot).not.toHaveReceivedAnyCommand();
  });

  test('succeeds when the registration is already gone', async () => {
    iot.on(UpdateCACertificateCommand).rejects(new ResourceNotFoundException({ message: 'gone', ...metadata }));

    await expect(handler()(deleteEvent())).resolves.toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID });
    expect(iot).not.toHaveReceivedCommand(DeleteCACertificateCommand);
  });

  test('leaves the registration INACTIVE and warns when AWS IoT refuses to delete it, so the stack stays deletable', async () => {
    iot.on(DeleteCACertificateCommand).rejects(new CertificateStateException({ message: 'certificates still registered', ...metadata }));
    const warn = jest.spyOn(logger, 'warn');

    await expect(handler()(deleteEvent())).resolves.toEqual({ PhysicalResourceId: CA_CERTIFICATE_ID });
    expect(warn).toHaveBeenCalledWith('CA registration set INACTIVE but AWS IoT refused to delete it; delete it by hand', expect.objectContaining({ caCertificateId: CA_CERTIFICATE_ID }));
  });

  test('fails on any other error, so CloudFormation reports it', async () => {
    iot.on(UpdateCACertificateCommand).rejects(new InvalidRequestException({ message: 'bad request', ...metadata }));

    await expect(handler()(deleteEvent())).rejects.toThrow('bad request');
  });
});
