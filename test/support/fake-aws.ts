import { mockClient } from 'aws-sdk-client-mock';
import {
  AddThingToThingGroupCommand,
  AttachThingPrincipalCommand,
  CreateThingCommand,
  DescribeCertificateCommand,
  DetachThingPrincipalCommand,
  IoTClient,
  RegisterCertificateCommand,
  ResourceAlreadyExistsException,
  ResourceNotFoundException,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import {
  ACMPCAClient,
  GetCertificateAuthorityCertificateCommand,
  GetCertificateCommand,
  IssueCertificateCommand,
  RequestInProgressException,
  RevokeCertificateCommand,
} from '@aws-sdk/client-acm-pca';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { certificateIdOf } from '../../functions/core/x509';

/* eslint-disable @typescript-eslint/no-explicit-any */
interface LooseStub {
  on(command: unknown): { callsFake(fake: (input: any) => unknown): unknown; resolves(output: unknown): unknown };
  restore(): void;
  commandCalls(command: unknown): { args: [{ input: any }] }[];
  calls(): unknown[];
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export const CA_ARN = 'arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555';
const CERT_ARN_PREFIX = 'arn:aws:iot:eu-west-1:123456789012:cert/';

/**
 * AWS IoT and AWS Private CA behind aws-sdk-client-mock: the SDK clients the adapters
 * really use, answered by a software CA and an in-memory registry, so handler tests run
 * the real adapters and core end to end without AWS. The first GetCertificate of each
 * certificate answers RequestInProgressException, as Private CA does.
 */
export async function createFakeAws() {
  const { ca, material } = await SoftwareCertificateAuthority.create('Fake Private CA');
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
  const caCertificateId = await certificateIdOf(material.certificatePem);
  // client-iot (@smithy/types 4) and client-acm-pca 3.523 (@smithy/types 2, the newest on the registry) do not share
  // Command types, so one typed stub cannot serve both; the stubs are the real aws-sdk-client-mock ones, typed loosely here.
  const iot = mockClient(IoTClient as unknown as Parameters<typeof mockClient>[0]) as unknown as LooseStub;
  const pca = mockClient(ACMPCAClient) as unknown as LooseStub;
  const issued = new Map<string, { pem: string; polled: boolean }>();
  const revokedSerials: { serial: string; reason: string }[] = [];
  let serial = 0;

  const idFromArn = (arn: string) => arn.slice(CERT_ARN_PREFIX.length);

  iot.on(DescribeCertificateCommand).callsFake(async ({ certificateId }) => {
    const found = registry.findCertificate(certificateId);
    if (!found) throw new ResourceNotFoundException({ message: `cert ${certificateId} not found`, $metadata: {} });
    return {
      certificateDescription: {
        certificateId,
        certificateArn: `${CERT_ARN_PREFIX}${certificateId}`,
        certificatePem: found.certificatePem,
        status: found.status,
        caCertificateId: found.caCertificateId,
      },
    };
  });
  iot.on(RegisterCertificateCommand).callsFake(async ({ certificatePem, caCertificatePem }) => {
    const { certificateId, alreadyRegistered } = await registry.registerCertificate({ certificatePem, caCertificatePem });
    // What AWS IoT answers for a certificate it already has.
    if (alreadyRegistered) throw new ResourceAlreadyExistsException({ message: 'The certificate is already provisioned or registered', resourceId: certificateId, resourceArn: `${CERT_ARN_PREFIX}${certificateId}`, $metadata: {} });
    return { certificateId, certificateArn: `${CERT_ARN_PREFIX}${certificateId}` };
  });
  iot.on(UpdateCertificateCommand).callsFake(async ({ certificateId, newStatus }) => registry.updateCertificateStatus(certificateId, newStatus));
  iot.on(CreateThingCommand).callsFake(async ({ thingName, attributePayload }) => {
    await registry.ensureThing(thingName, attributePayload?.attributes ?? {});
    return { thingName };
  });
  iot.on(AddThingToThingGroupCommand).resolves({});
  iot.on(AttachThingPrincipalCommand).callsFake(async ({ thingName, principal }) => registry.attachCertificate(thingName, idFromArn(principal)));
  iot.on(DetachThingPrincipalCommand).callsFake(async ({ thingName, principal }) => registry.detachCertificate(thingName, idFromArn(principal)));

  pca.on(IssueCertificateCommand).callsFake(async ({ Csr, Validity, IdempotencyToken }) => {
    const result = await ca.issueCertificate({ csrPem: Buffer.from(Csr).toString('utf8'), validityDays: Validity.Value, idempotencyToken: IdempotencyToken ?? `token-${(serial += 1)}` });
    const arn = `${CA_ARN}/certificate/${await certificateIdOf(result.certificatePem)}`;
    issued.set(arn, { pem: result.certificatePem, polled: false });
    return { CertificateArn: arn };
  });
  pca.on(GetCertificateCommand).callsFake(async ({ CertificateArn }) => {
    const found = issued.get(CertificateArn);
    if (!found) throw new Error(`unknown certificate ${CertificateArn}`);
    if (!found.polled) {
      found.polled = true;
      throw new RequestInProgressException({ message: 'The request is in progress', $metadata: {} });
    }
    return { Certificate: found.pem, CertificateChain: material.certificatePem };
  });
  pca.on(RevokeCertificateCommand).callsFake(async ({ CertificateSerial, RevocationReason }) => {
    revokedSerials.push({ serial: CertificateSerial, reason: RevocationReason });
    return {};
  });
  pca.on(GetCertificateAuthorityCertificateCommand).resolves({ Certificate: material.certificatePem });

  return {
    iot,
    pca,
    registry,
    ca,
    caCertificatePem: material.certificatePem,
    /** The fleet CA's key too, to sign what our CA never would (two CNs, CA:TRUE) and check JITR refuses it. */
    caMaterial: material,
    caCertificateId,
    revokedSerials,
    pcaIssueCommand: IssueCertificateCommand,
    iotClient: new IoTClient({ region: 'eu-west-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } }),
    pcaClient: new ACMPCAClient({ region: 'eu-west-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } }),
    restore: () => {
      iot.restore();
      pca.restore();
    },
  };
}

export type FakeAws = Awaited<ReturnType<typeof createFakeAws>>;
