import {
  ACMPCAClient,
  ACMPCAServiceException,
  GetCertificateAuthorityCertificateCommand,
  GetCertificateCommand,
  InvalidArgsException,
  IssueCertificateCommand,
  MalformedCSRException,
  RequestAlreadyProcessedException,
  RequestFailedException,
  RequestInProgressException,
  RevokeCertificateCommand,
} from '@aws-sdk/client-acm-pca';
import { mockClient, type AwsCommand } from 'aws-sdk-client-mock';
import { X509Certificate } from 'node:crypto';
import {
  PRIVATE_CA_IAM_ACTIONS,
  privateCaIamActions,
  PrivateCaCertificateAuthority,
  toPcaSerial,
  type PrivateCaCertificateAuthorityOptions,
} from '../../../functions/adapters/aws/private-ca-certificate-authority';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { REVOCATION_REASONS, type RevocationReason } from '../../../functions/core/model';
import { inspectCertificate } from '../../../functions/core/x509';
import { makeCsr } from '../../support/pki';

const pca = mockClient(ACMPCAClient);

const CA_ARN = 'arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555';
const CERTIFICATE_ARN = `${CA_ARN}/certificate/286535153982981100925020015808220737245`;
const DEVICE = 'sensor-0001';

const metadata = { $metadata: {} };
const inProgress = () => new RequestInProgressException({ message: 'The request is in progress', ...metadata });
const throttled = () => new ACMPCAServiceException({ name: 'ThrottlingException', $fault: 'client', message: 'Rate exceeded', ...metadata });

/** Records the waits instead of waiting. */
const fakeSleep = () => {
  const waits: number[] = [];
  return { waits, sleep: async (ms: number) => void waits.push(ms) };
};

/**
 * The command was sent exactly once, with exactly this input: `toHaveReceivedCommandWith` alone
 * matches a subset, so a field sent by mistake would go unnoticed.
 */
const expectSentOnceWith = <I extends object, O extends { readonly $metadata: object }>(command: new (input: I) => AwsCommand<I, O>, input: I) => {
  expect(pca).toHaveReceivedCommandTimes(command, 1);
  expect(pca).toHaveReceivedCommandWith(command, input);
  expect(pca.commandCalls(command)[0]?.args[0].input).toStrictEqual(input);
};

const authority = (overrides: Partial<PrivateCaCertificateAuthorityOptions> = {}) =>
  new PrivateCaCertificateAuthority({
    client: new ACMPCAClient({ region: 'us-east-1' }),
    certificateAuthorityArn: CA_ARN,
    signingAlgorithm: 'SHA256WITHECDSA',
    sleep: fakeSleep().sleep,
    ...overrides,
  });

interface Fixture {
  readonly csrPem: string;
  readonly certificatePem: string;
  readonly caCertificatePem: string;
  readonly serialNumber: string;
}

let fixture: Fixture;

beforeAll(async () => {
  // Real PEMs: a CSR, and the certificate and CA certificate a CA would answer for it.
  const { ca, material } = await SoftwareCertificateAuthority.create('Adapter Test CA');
  const { csrPem } = await makeCsr(DEVICE);
  const { certificatePem } = await ca.issueCertificate({ csrPem, validityDays: 30, idempotencyToken: 'pca-test' });
  const { serialNumber } = await inspectCertificate(certificatePem);
  fixture = { csrPem, certificatePem, caCertificatePem: material.certificatePem, serialNumber };
});

/** Every Private CA operation any test made the adapter call, to check the IAM action list against. */
const operationsCalled = new Set<string>();

beforeEach(() => {
  pca.reset();
});

afterEach(() => {
  for (const call of pca.calls()) operationsCalled.add(call.args[0].constructor.name.replace(/Command$/, ''));
});

const issueRequest = () => ({ csrPem: fixture.csrPem, validityDays: 30, idempotencyToken: 'b1946ac92492d2347c6235b4d2611184a1b2' });

describe('PrivateCaCertificateAuthority.issueCertificate', () => {
  it('issues from the CSR and answers the certificate and its chain', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca.on(GetCertificateCommand).resolves({ Certificate: fixture.certificatePem, CertificateChain: fixture.caCertificatePem });
    const { waits, sleep } = fakeSleep();

    // Act
    const issued = await authority({ sleep }).issueCertificate(issueRequest());

    // Assess
    expect(issued).toEqual({ certificatePem: fixture.certificatePem, certificateChainPem: fixture.caCertificatePem });
    expectSentOnceWith(IssueCertificateCommand, {
      CertificateAuthorityArn: CA_ARN,
      Csr: new TextEncoder().encode(fixture.csrPem),
      SigningAlgorithm: 'SHA256WITHECDSA',
      TemplateArn: 'arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1',
      Validity: { Type: 'DAYS', Value: 30 },
      IdempotencyToken: 'b1946ac92492d2347c6235b4d2611184a1b2',
    });
    expect(Buffer.from(pca.commandCalls(IssueCertificateCommand)[0]?.args[0].input.Csr ?? []).toString('utf8')).toBe(fixture.csrPem);
    expectSentOnceWith(GetCertificateCommand, { CertificateAuthorityArn: CA_ARN, CertificateArn: CERTIFICATE_ARN });
    expect(pca).toHaveReceivedNthCommandWith(2, GetCertificateCommand, { CertificateAuthorityArn: CA_ARN, CertificateArn: CERTIFICATE_ARN });
    expect(pca.calls()).toHaveLength(2);
    expect(waits).toEqual([]);
  });

  it('uses the template and signing algorithm it is configured with', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca.on(GetCertificateCommand).resolves({ Certificate: fixture.certificatePem, CertificateChain: fixture.caCertificatePem });
    const templateArn = 'arn:aws:acm-pca:::template/BlankEndEntityCertificate_APIPassthrough/V1';

    // Act
    await authority({ templateArn, signingAlgorithm: 'SHA384WITHRSA' }).issueCertificate(issueRequest());

    // Assess
    expect(pca).toHaveReceivedCommandWith(IssueCertificateCommand, { TemplateArn: templateArn, SigningAlgorithm: 'SHA384WITHRSA' });
  });

  it('polls GetCertificate with exponential backoff while the CA is still signing', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca
      .on(GetCertificateCommand)
      .rejectsOnce(inProgress())
      .rejectsOnce(inProgress())
      .resolves({ Certificate: fixture.certificatePem, CertificateChain: fixture.caCertificatePem });
    const { waits, sleep } = fakeSleep();

    // Act
    const issued = await authority({ sleep }).issueCertificate(issueRequest());

    // Assess
    expect(issued.certificatePem).toBe(fixture.certificatePem);
    expect(waits).toEqual([200, 400]);
    expect(pca).toHaveReceivedCommandTimes(GetCertificateCommand, 3);
    expect(pca).toHaveReceivedCommandTimes(IssueCertificateCommand, 1);
    expect(pca.calls()).toHaveLength(4);
  });

  it('fails with a retryable UPSTREAM_FAILURE once maxWaitMs of waiting is spent', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca.on(GetCertificateCommand).rejects(inProgress());
    const { waits, sleep } = fakeSleep();

    // Act
    const issuing = authority({ sleep, maxWaitMs: 1000 }).issueCertificate(issueRequest());

    // Assess
    await expect(issuing).rejects.toMatchObject({
      name: 'UpstreamError',
      code: 'UPSTREAM_FAILURE',
      retryable: true,
      message: `AWS Private CA had not finished issuing certificate ${CERTIFICATE_ARN} after 1000 ms; retry with the same idempotency token to collect it.`,
    });
    expect(waits).toEqual([200, 400, 400]);
    expect(pca).toHaveReceivedCommandTimes(GetCertificateCommand, 4);
    expect(pca).toHaveReceivedCommandTimes(IssueCertificateCommand, 1);
  });

  it('waits 30 s at most by default, doubling from 200 ms to 2 s between polls', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca.on(GetCertificateCommand).rejects(inProgress());
    const { waits, sleep } = fakeSleep();

    // Act
    const issuing = authority({ sleep }).issueCertificate(issueRequest());

    // Assess
    await expect(issuing).rejects.toMatchObject({ code: 'UPSTREAM_FAILURE', retryable: true });
    expect(waits.slice(0, 6)).toEqual([200, 400, 800, 1600, 2000, 2000]);
    expect(Math.max(...waits)).toBe(2000);
    expect(waits.reduce((sum, ms) => sum + ms, 0)).toBe(30_000);
    expect(pca).toHaveReceivedCommandTimes(GetCertificateCommand, waits.length + 1);
  });

  it.each([
    ['MalformedCSRException', () => new MalformedCSRException({ message: 'The CSR could not be parsed', ...metadata }), 'AWS Private CA refused the CSR as malformed: The CSR could not be parsed'],
    [
      'InvalidArgsException',
      () => new InvalidArgsException({ message: 'Validity exceeds the CA certificate expiration', ...metadata }),
      'AWS Private CA refused to sign the CSR for 30 days: Validity exceeds the CA certificate expiration',
    ],
  ])('rejects with INVALID_CSR when IssueCertificate answers %s', async (_name, error, message) => {
    // Prepare
    pca.on(IssueCertificateCommand).rejects(error());

    // Act
    const issuing = authority().issueCertificate(issueRequest());

    // Assess
    await expect(issuing).rejects.toMatchObject({ name: 'ValidationError', code: 'INVALID_CSR', message });
    expect(pca).not.toHaveReceivedCommand(GetCertificateCommand);
    expect(pca.calls()).toHaveLength(1);
  });

  it('fails with UPSTREAM_THROTTLED when IssueCertificate stays throttled', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).rejects(throttled());

    // Act
    const issuing = authority().issueCertificate(issueRequest());

    // Assess
    await expect(issuing).rejects.toMatchObject({
      code: 'UPSTREAM_THROTTLED',
      retryable: true,
      message: 'AWS Private CA IssueCertificate is throttled; try again later.',
    });
    expect(pca).not.toHaveReceivedCommand(GetCertificateCommand);
  });

  it('fails with UPSTREAM_FAILURE when the CA could not issue the certificate', async () => {
    // Prepare
    pca.on(IssueCertificateCommand).resolves({ CertificateArn: CERTIFICATE_ARN });
    pca.on(GetCertificateCommand).rejects(new RequestFailedException({ message: 'The certificate could not be issued', ...metadata }));

    // Act
    const issuing = authority().issueCertificate(issueRequest());

    // Assess
    await expect(issuing).rejects.toMatchObject({
      code: 'UPSTREAM_FAILURE',
      retryable: false,
      message: 'AWS Private CA GetCertificate failed (RequestFailedException).',
    });
    expect(pca).toHaveReceivedCommandTimes(GetCertificateCommand, 1);
  });
});

describe('PrivateCaCertificateAuthority.collectCertificate', () => {
  const PREVIOUS_CA_ARN = 'arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/99999999-8888-7777-6666-555555555555';
  const OTHER_CA_ARN = 'arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/00000000-0000-0000-0000-000000000000';

  // An issuance requested before a CA rotation, whose operation is retried (or whose rotation the sweep withdraws)
  // after it: the operation keeps only the certificate ARN, and the certificate is collected again from that ARN.
  it('collects a certificate issued by a previous CA from that CA, not from the current one', async () => {
    // Prepare
    const issuedBefore = `${PREVIOUS_CA_ARN}/certificate/286535153982981100925020015808220737245`;
    pca.on(GetCertificateCommand).resolves({ Certificate: fixture.certificatePem, CertificateChain: fixture.caCertificatePem });

    // Act
    const collected = await authority({ previousCertificateAuthorityArns: [PREVIOUS_CA_ARN] }).collectCertificate(issuedBefore);

    // Assess
    expect(collected).toEqual({ certificatePem: fixture.certificatePem, certificateChainPem: fixture.caCertificatePem });
    expectSentOnceWith(GetCertificateCommand, { CertificateAuthorityArn: PREVIOUS_CA_ARN, CertificateArn: issuedBefore });
  });

  it('asks the current CA for an ARN of a CA this stack does not know, so Private CA answers the refusal', async () => {
    // Prepare
    const foreign = `${OTHER_CA_ARN}/certificate/1`;
    pca.on(GetCertificateCommand).rejects(new ACMPCAServiceException({ name: 'InvalidArnException', $fault: 'client', message: 'bad ARN', ...metadata }));

    // Act
    const failure = await authority({ previousCertificateAuthorityArns: [PREVIOUS_CA_ARN] }).collectCertificate(foreign).catch((error: unknown) => error);

    // Assess
    expect(failure).toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'AWS Private CA GetCertificate failed (InvalidArnException).' });
    expectSentOnceWith(GetCertificateCommand, { CertificateAuthorityArn: CA_ARN, CertificateArn: foreign });
  });
});

describe('PrivateCaCertificateAuthority.revokeCertificate', () => {
  /** What RevokeCertificate expects, spelled out here rather than imported from the adapter. */
  const EXPECTED_PCA_REASONS: Record<RevocationReason, string> = {
    UNSPECIFIED: 'UNSPECIFIED',
    KEY_COMPROMISE: 'KEY_COMPROMISE',
    CERTIFICATE_AUTHORITY_COMPROMISE: 'CERTIFICATE_AUTHORITY_COMPROMISE',
    AFFILIATION_CHANGED: 'AFFILIATION_CHANGED',
    SUPERSEDED: 'SUPERSEDED',
    CESSATION_OF_OPERATION: 'CESSATION_OF_OPERATION',
    PRIVILEGE_WITHDRAWN: 'PRIVILEGE_WITHDRAWN',
    A_A_COMPROMISE: 'A_A_COMPROMISE',
  };

  /** The serial as openssl prints it: colon-separated lower-case hex bytes (node reports it upper-case, without colons). */
  const opensslSerial = (pem: string) => (new X509Certificate(pem).serialNumber.toLowerCase().match(/../g) ?? []).join(':');

  it('revokes by colon-separated hex serial', async () => {
    // Prepare
    pca.on(RevokeCertificateCommand).resolves({});

    // Act
    await authority().revokeCertificate({ serialNumber: fixture.serialNumber, reason: 'KEY_COMPROMISE', certificatePem: fixture.certificatePem });

    // Assess
    expectSentOnceWith(RevokeCertificateCommand, {
      CertificateAuthorityArn: CA_ARN,
      CertificateSerial: opensslSerial(fixture.certificatePem),
      RevocationReason: 'KEY_COMPROMISE',
    });
    expect(pca.calls()).toHaveLength(1);
  });

  it('has an expected PCA reason for every revocation reason of the model', () => {
    expect(Object.keys(EXPECTED_PCA_REASONS).sort()).toEqual([...REVOCATION_REASONS].sort());
  });

  it.each(REVOCATION_REASONS.map((reason) => [reason, EXPECTED_PCA_REASONS[reason]]))('maps reason %s to %s', async (reason, pcaReason) => {
    // Prepare
    pca.on(RevokeCertificateCommand).resolves({});

    // Act
    await authority().revokeCertificate({ serialNumber: fixture.serialNumber, reason, certificatePem: fixture.certificatePem });

    // Assess
    expect(pca).toHaveReceivedCommandWith(RevokeCertificateCommand, { RevocationReason: pcaReason });
  });

  it.each([
    ['RequestAlreadyProcessedException', () => new RequestAlreadyProcessedException({ message: 'The certificate is already revoked', ...metadata })],
    ['RequestInProgressException', inProgress],
  ])('succeeds when RevokeCertificate answers %s', async (_name, error) => {
    // Prepare
    pca.on(RevokeCertificateCommand).rejects(error());

    // Act
    await authority().revokeCertificate({ serialNumber: fixture.serialNumber, reason: 'SUPERSEDED', certificatePem: fixture.certificatePem });

    // Assess
    expect(pca).toHaveReceivedCommandTimes(RevokeCertificateCommand, 1);
    expect(pca.calls()).toHaveLength(1);
  });

  it('rejects a reason AWS Private CA does not support without calling it', async () => {
    // Act
    const revoking = authority().revokeCertificate({
      serialNumber: fixture.serialNumber,
      reason: 'REMOVE_FROM_CRL' as RevocationReason,
      certificatePem: fixture.certificatePem,
    });

    // Assess
    await expect(revoking).rejects.toMatchObject({ code: 'INVALID_REQUEST', message: 'Revocation reason REMOVE_FROM_CRL is not supported by AWS Private CA.' });
    expect(pca.calls()).toHaveLength(0);
  });

  it('fails with UPSTREAM_THROTTLED when RevokeCertificate stays throttled', async () => {
    // Prepare
    pca.on(RevokeCertificateCommand).rejects(throttled());

    // Act
    const revoking = authority().revokeCertificate({ serialNumber: fixture.serialNumber, reason: 'UNSPECIFIED', certificatePem: fixture.certificatePem });

    // Assess
    await expect(revoking).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED', message: 'AWS Private CA RevokeCertificate is throttled; try again later.' });
  });
});

describe('toPcaSerial', () => {
  it.each([
    ['6707447683a9b7f4055627ffd55cebcc', '67:07:44:76:83:a9:b7:f4:05:56:27:ff:d5:5c:eb:cc'],
    ['80a1', '80:a1'],
    ['0080a1', '80:a1'],
    ['abc', '0a:bc'],
    ['AB:CD', 'ab:cd'],
    ['00', '00'],
  ])('turns %s into %s', (serial, expected) => {
    expect(toPcaSerial(serial)).toBe(expected);
  });

  it.each(['', 'xyz', '12-34'])('rejects the non-hexadecimal serial "%s"', (serial) => {
    expect(() => toPcaSerial(serial)).toThrow(`Serial number "${serial}" is not hexadecimal.`);
  });
});

describe('PrivateCaCertificateAuthority.getCaCertificates', () => {
  it('answers the CA certificate and its chain, asking AWS once per instance', async () => {
    // Prepare
    pca.on(GetCertificateAuthorityCertificateCommand).resolves({ Certificate: fixture.caCertificatePem, CertificateChain: fixture.caCertificatePem });
    const ca = authority();

    // Act
    const first = await ca.getCaCertificates();
    const second = await ca.getCaCertificates();

    // Assess
    expect(first).toEqual({ certificatePem: fixture.caCertificatePem, certificateChainPem: fixture.caCertificatePem });
    expect(second).toEqual(first);
    expectSentOnceWith(GetCertificateAuthorityCertificateCommand, { CertificateAuthorityArn: CA_ARN });
    expect(pca.calls()).toHaveLength(1);
  });

  it('answers an empty chain for a root CA', async () => {
    // Prepare
    pca.on(GetCertificateAuthorityCertificateCommand).resolves({ Certificate: fixture.caCertificatePem });

    // Act
    const certificates = await authority().getCaCertificates();

    // Assess
    expect(certificates).toEqual({ certificatePem: fixture.caCertificatePem, certificateChainPem: '' });
  });

  it('does not keep a failure: the next call asks again', async () => {
    // Prepare
    pca.on(GetCertificateAuthorityCertificateCommand).rejectsOnce(throttled()).resolves({ Certificate: fixture.caCertificatePem });
    const ca = authority();

    // Act
    const failing = ca.getCaCertificates();
    await expect(failing).rejects.toMatchObject({ code: 'UPSTREAM_THROTTLED', message: 'AWS Private CA GetCertificateAuthorityCertificate is throttled; try again later.' });
    const certificates = await ca.getCaCertificates();

    // Assess
    expect(certificates.certificatePem).toBe(fixture.caCertificatePem);
    expect(pca).toHaveReceivedCommandTimes(GetCertificateAuthorityCertificateCommand, 2);
  });
});

describe('PRIVATE_CA_IAM_ACTIONS', () => {
  it('covers every operation the tests above made the adapter call', () => {
    const granted: readonly string[] = PRIVATE_CA_IAM_ACTIONS;
    for (const operation of operationsCalled) expect(granted).toContain(`acm-pca:${operation}`);
  });

  it.each([
    [['requestCertificate', 'collectCertificate'], ['acm-pca:IssueCertificate', 'acm-pca:GetCertificate']],
    [['getCaCertificates', 'revokeCertificate'], ['acm-pca:RevokeCertificate', 'acm-pca:GetCertificateAuthorityCertificate']],
    [['getCaCertificates'], ['acm-pca:GetCertificateAuthorityCertificate']],
  ] as const)('narrows to what the operations %j call', (operations, actions) => {
    expect(privateCaIamActions(operations)).toEqual(actions);
  });

  it('lists exactly the AWS Private CA actions the adapter calls', () => {
    expect([...PRIVATE_CA_IAM_ACTIONS].sort()).toEqual(
      ['acm-pca:GetCertificate', 'acm-pca:GetCertificateAuthorityCertificate', 'acm-pca:IssueCertificate', 'acm-pca:RevokeCertificate'].sort(),
    );
  });
});
