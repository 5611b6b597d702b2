import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { App, Stack } from 'aws-cdk-lib';
import * as acmpca from 'aws-cdk-lib/aws-acmpca';
import { Match } from 'aws-cdk-lib/assertions';
import { DeviceCertificateLifecycle, type DeviceCertificateLifecycleProps } from '../../infra/device-certificate-lifecycle';
import { CaKeyAlgorithm, CaType, CaUsageMode } from '../../infra/settings';
import { EXISTING_CA_ARN, buildStack, functionLogicalId, type SynthesizedStack } from './stacks';

const crypto = webcrypto as unknown as Crypto;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A parent root and a subordinate CA certificate it signed (and, for the failure cases, a leaf). */
async function makeHierarchy() {
  const rootKeys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const root = await x509.X509CertificateGenerator.createSelfSigned(
    { name: 'CN=Parent root', keys: rootKeys, signingAlgorithm: SIGN, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 365 * 86_400_000), extensions: [new x509.BasicConstraintsExtension(true, 1, true)] },
    crypto,
  );
  const issue = async (subject: string, ca: boolean) => {
    const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
    return x509.X509CertificateGenerator.create(
      {
        subject,
        issuer: root.subject,
        publicKey: keys.publicKey,
        signingKey: rootKeys.privateKey,
        signingAlgorithm: SIGN,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 180 * 86_400_000),
        extensions: [new x509.BasicConstraintsExtension(ca, ca ? 0 : undefined, true)],
      },
      crypto,
    );
  };
  return { root: root.toString('pem'), subordinate: (await issue('CN=Device issuing CA', true)).toString('pem'), leaf: (await issue('CN=not-a-ca', false)).toString('pem') };
}

let hierarchy: Awaited<ReturnType<typeof makeHierarchy>>;
beforeAll(async () => {
  hierarchy = await makeHierarchy();
});

describe('an existing CA in short-lived certificate mode', () => {
  let built: SynthesizedStack;
  beforeAll(() => {
    built = buildStack({ existingCaArn: EXISTING_CA_ARN, lifecycle: { caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE, caKeyAlgorithm: CaKeyAlgorithm.EC_SECP384R1 } });
  });

  test('creates no CA and no CRL bucket', () => {
    built.template.resourceCountIs('AWS::ACMPCA::CertificateAuthority', 0);
    built.template.resourceCountIs('AWS::S3::Bucket', 0);
  });

  test('registers the existing CA with AWS IoT', () => {
    built.template.hasResourceProperties('Custom::IotCaRegistration', { CertificateAuthorityArn: EXISTING_CA_ARN, SigningAlgorithm: 'SHA384WITHECDSA' });
  });

  test('issues device certificates valid for 7 days from that CA', () => {
    const fn = built.template.findResources('AWS::Lambda::Function')[functionLogicalId(built.template, 'LifecycleApiFunction')];
    expect(fn?.Properties.Environment.Variables).toMatchObject({ CA_ARN: EXISTING_CA_ARN, CA_SIGNING_ALGORITHM: 'SHA384WITHECDSA', CERTIFICATE_VALIDITY_DAYS: '7' });
  });

  test('grants Private CA actions on that CA only', () => {
    built.template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Action: 'acm-pca:IssueCertificate', Resource: EXISTING_CA_ARN })]) },
    });
  });

  test('still creates the JITR rule, and the rotate and commit rules', () => {
    built.template.resourceCountIs('AWS::IoT::TopicRule', 3);
  });
});

describe('a new ROOT CA in short-lived certificate mode with RSA 4096', () => {
  test('creates the CA in SHORT_LIVED_CERTIFICATE mode and defaults device certificates to 7 days', () => {
    const { template } = buildStack({ lifecycle: { caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE, caKeyAlgorithm: CaKeyAlgorithm.RSA_4096 } });
    template.hasResourceProperties('AWS::ACMPCA::CertificateAuthority', { UsageMode: 'SHORT_LIVED_CERTIFICATE', KeyAlgorithm: 'RSA_4096', SigningAlgorithm: 'SHA256WITHRSA' });
    template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ CERTIFICATE_VALIDITY_DAYS: '7', CA_SIGNING_ALGORITHM: 'SHA256WITHRSA' }) } });
  });
});

describe('a new SUBORDINATE CA', () => {
  test('waits for its certificate: no activation, no IoT registration, no rule, and the CSR as output', () => {
    const { template } = buildStack({ lifecycle: { caType: CaType.SUBORDINATE } });
    template.hasResourceProperties('AWS::ACMPCA::CertificateAuthority', { Type: 'SUBORDINATE' });
    template.resourceCountIs('AWS::ACMPCA::CertificateAuthorityActivation', 0);
    template.resourceCountIs('AWS::ACMPCA::Certificate', 0);
    template.resourceCountIs('Custom::IotCaRegistration', 0);
    template.resourceCountIs('AWS::IoT::TopicRule', 0);
    template.hasOutput('CaCertificateSigningRequest', { Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('CertificateAuthority'), 'CertificateSigningRequest'] } });
  });

  test('is activated with the signed certificate and chain, then registered with AWS IoT', () => {
    const { template } = buildStack({ lifecycle: { caType: CaType.SUBORDINATE, subordinateCaCertificate: { certificatePem: hierarchy.subordinate, certificateChainPem: hierarchy.root } } });
    template.hasResourceProperties('AWS::ACMPCA::CertificateAuthorityActivation', { Certificate: hierarchy.subordinate, CertificateChain: hierarchy.root, Status: 'ACTIVE' });
    template.resourceCountIs('Custom::IotCaRegistration', 1);
    template.resourceCountIs('AWS::IoT::TopicRule', 3); // JITR, rotate, commit
  });
});

describe('props checked at synth', () => {
  const existing = (stack: Stack) => acmpca.CertificateAuthority.fromCertificateAuthorityArn(stack, 'Ca', EXISTING_CA_ARN);
  const cases: [string, (stack: Stack) => DeviceCertificateLifecycleProps, string][] = [
    [
      'fails when short-lived certificates would live longer than 7 days',
      () => ({ caUsageMode: CaUsageMode.SHORT_LIVED_CERTIFICATE, certificateValidityDays: 8 }),
      'certificateValidityDays is 8, but a CA in SHORT_LIVED_CERTIFICATE mode issues certificates valid for 7 days at most: use 7 or less, or the GENERAL_PURPOSE mode.',
    ],
    ['fails on a validity of 0 days', () => ({ certificateValidityDays: 0 }), 'certificateValidityDays must be a whole number of days from 1 to 3650 (got 0).'],
    [
      'fails when device certificates would outlast the root CA',
      () => ({ caValidityYears: 1, certificateValidityDays: 400 }),
      'certificateValidityDays (400) outlasts the root CA (1 years): shorten it or raise caValidityYears.',
    ],
    [
      'fails when asked to change the type of an existing CA',
      (stack) => ({ existingCertificateAuthority: existing(stack), caType: CaType.SUBORDINATE }),
      `caType applies only to a CA this stack creates; it cannot change the existing CA ${EXISTING_CA_ARN}.`,
    ],
    [
      'fails on an ARN that is not a Private CA',
      (stack) => ({ existingCertificateAuthority: acmpca.CertificateAuthority.fromCertificateAuthorityArn(stack, 'Bad', 'arn:aws:s3:::bucket') }),
      'The CA ARN must look like arn:aws:acm-pca:<region>:<account>:certificate-authority/<uuid> (got "arn:aws:s3:::bucket").',
    ],
    ['fails on a name prefix IoT cannot use', () => ({ namePrefix: 'my prefix' }), 'namePrefix must start with a letter and hold 1 to 32 letters, digits and "-" (got "my prefix").'],
    [
      'fails when a subordinate certificate is given for a ROOT CA',
      () => ({ subordinateCaCertificate: { certificatePem: hierarchy.subordinate, certificateChainPem: hierarchy.root } }),
      'subordinateCaCertificate applies only when caType is SUBORDINATE.',
    ],
    [
      'fails when the subordinate certificate is not a CA certificate',
      () => ({ caType: CaType.SUBORDINATE, subordinateCaCertificate: { certificatePem: hierarchy.leaf, certificateChainPem: hierarchy.root } }),
      'subordinateCaCertificate.certificatePem (CN=not-a-ca) is not a CA certificate: sign the CSR with a CA profile (basicConstraints CA:TRUE, pathlen 0).',
    ],
    [
      'fails when the chain does not start with the issuer',
      () => ({ caType: CaType.SUBORDINATE, subordinateCaCertificate: { certificatePem: hierarchy.subordinate, certificateChainPem: hierarchy.subordinate } }),
      'The chain starts with CN=Device issuing CA, but the subordinate certificate was issued by CN=Parent root: put the issuing CA first.',
    ],
    [
      'fails when the subordinate certificate is not PEM',
      () => ({ caType: CaType.SUBORDINATE, subordinateCaCertificate: { certificatePem: 'hello', certificateChainPem: hierarchy.root } }),
      'subordinateCaCertificate.certificatePem is not a PEM certificate: give the certificate your parent CA signed from the CSR output CaCertificateSigningRequest.',
    ],
  ];

  test.each(cases)('%s', (_name, props, message) => {
    const stack = new Stack(new App(), 'Checked');
    expect(() => new DeviceCertificateLifecycle(stack, 'Lifecycle', props(stack))).toThrow(message);
  });
});
