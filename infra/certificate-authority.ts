import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { Arn, ArnFormat, Aws, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as acmpca from 'aws-cdk-lib/aws-acmpca';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { CaKeyAlgorithm, CaType, CaUsageMode, DEFAULTS, SIGNING_ALGORITHMS, fail } from './settings';

/** The subject of a new CA certificate. */
export interface CaSubject {
  readonly commonName: string;
  /** @default - none */
  readonly organization?: string;
  /** Two-letter country code. @default - none */
  readonly country?: string;
}

/** The certificate your parent CA signed for a new subordinate CA (PEM). */
export interface SubordinateCaCertificate {
  /** The subordinate CA's certificate, signed by your parent CA from the CSR this stack output. */
  readonly certificatePem: string;
  /** The parent chain, issuer first, up to and including the root. */
  readonly certificateChainPem: string;
}

export interface NewCertificateAuthorityProps {
  readonly type: CaType;
  readonly keyAlgorithm: CaKeyAlgorithm;
  readonly usageMode: CaUsageMode;
  readonly subject: CaSubject;
  /** Validity of a ROOT CA's self-signed certificate. */
  readonly validityYears: number;
  /** Only for SUBORDINATE: once given, the CA is activated with it. */
  readonly subordinateCertificate?: SubordinateCaCertificate;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * A new AWS Private CA for the fleet, with its CRL published to a private, encrypted S3 bucket
 * (the CRL distribution point written into every certificate it issues).
 * ROOT: signed by itself and activated in the same deployment.
 * SUBORDINATE: created in PENDING_CERTIFICATE state; its CSR is exposed (`certificateSigningRequest`)
 * for your parent CA to sign, and the next deployment with `subordinateCertificate` activates it.
 */
export class NewCertificateAuthority extends Construct {
  public readonly certificateAuthorityArn: string;
  public readonly crlBucket: s3.Bucket;
  public readonly signingAlgorithm: string;
  /** The CSR to sign (SUBORDINATE) — also available for ROOT, where the stack signs it itself. */
  public readonly certificateSigningRequest: string;
  /** False for a SUBORDINATE CA still waiting for its signed certificate: it cannot issue yet. */
  public readonly isActive: boolean;
  /** The resource that makes the CA ACTIVE; anything that issues at deploy time depends on it. */
  public readonly activation?: acmpca.CfnCertificateAuthorityActivation;

  public constructor(scope: Construct, id: string, props: NewCertificateAuthorityProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.signingAlgorithm = SIGNING_ALGORITHMS[props.keyAlgorithm];

    this.crlBucket = new s3.Bucket(this, 'CrlBucket', {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: props.removalPolicy,
      autoDeleteObjects: props.removalPolicy === RemovalPolicy.DESTROY,
    });
    Validations.of(this.crlBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'The bucket only receives CRL objects that AWS Private CA writes; its API calls are recorded by CloudTrail. ' +
        'Server access logs would need a second bucket holding nothing of security value.',
    });
    // AWS Private CA writes the CRL itself. aws:SourceArn is matched by pattern because the CA
    // is created after (and depends on) this policy.
    this.crlBucket.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('acm-pca.amazonaws.com')],
        actions: ['s3:PutObject', 's3:PutObjectAcl', 's3:GetBucketAcl', 's3:GetBucketLocation'],
        resources: [this.crlBucket.bucketArn, this.crlBucket.arnForObjects('*')],
        conditions: {
          StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
          ArnLike: { 'aws:SourceArn': Arn.format({ service: 'acm-pca', resource: 'certificate-authority', resourceName: '*', arnFormat: ArnFormat.SLASH_RESOURCE_NAME }, stack) },
        },
      }),
    );

    const ca = new acmpca.CfnCertificateAuthority(this, 'Resource', {
      type: props.type,
      keyAlgorithm: props.keyAlgorithm,
      signingAlgorithm: this.signingAlgorithm,
      usageMode: props.usageMode,
      subject: { commonName: props.subject.commonName, organization: props.subject.organization, country: props.subject.country },
      revocationConfiguration: {
        crlConfiguration: {
          enabled: true,
          expirationInDays: DEFAULTS.crlValidityDays,
          s3BucketName: this.crlBucket.bucketName,
          // The bucket blocks public access and ACLs; the CRL stays private unless fronted (e.g. by CloudFront).
          s3ObjectAcl: 'BUCKET_OWNER_FULL_CONTROL',
          crlDistributionPointExtensionConfiguration: { omitExtension: false },
        },
      },
    });
    ca.applyRemovalPolicy(props.removalPolicy);
    if (this.crlBucket.policy) ca.node.addDependency(this.crlBucket.policy);
    this.certificateAuthorityArn = ca.attrArn;
    this.certificateSigningRequest = ca.attrCertificateSigningRequest;

    if (props.type === CaType.ROOT) {
      if (props.subordinateCertificate) fail('subordinateCaCertificate applies only to a SUBORDINATE CA.');
      const certificate = new acmpca.CfnCertificate(this, 'RootCertificate', {
        certificateAuthorityArn: ca.attrArn,
        certificateSigningRequest: ca.attrCertificateSigningRequest,
        signingAlgorithm: this.signingAlgorithm,
        templateArn: `arn:${stack.partition}:acm-pca:::template/RootCACertificate/V1`,
        validity: { type: 'YEARS', value: props.validityYears },
      });
      certificate.applyRemovalPolicy(props.removalPolicy);
      this.activation = new acmpca.CfnCertificateAuthorityActivation(this, 'Activation', {
        certificateAuthorityArn: ca.attrArn,
        certificate: certificate.attrCertificate,
        status: 'ACTIVE',
      });
    } else if (props.subordinateCertificate) {
      checkSubordinateCertificate(props.subordinateCertificate);
      this.activation = new acmpca.CfnCertificateAuthorityActivation(this, 'Activation', {
        certificateAuthorityArn: ca.attrArn,
        certificate: props.subordinateCertificate.certificatePem,
        certificateChain: props.subordinateCertificate.certificateChainPem,
        status: 'ACTIVE',
      });
    }
    this.activation?.applyRemovalPolicy(props.removalPolicy);
    this.isActive = this.activation !== undefined;
  }
}

/** Fails at synth when the files given for a subordinate CA are not what AWS Private CA will accept. */
function checkSubordinateCertificate(given: SubordinateCaCertificate): void {
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(given.certificatePem);
  } catch {
    fail('subordinateCaCertificate.certificatePem is not a PEM certificate: give the certificate your parent CA signed from the CSR output CaCertificateSigningRequest.');
  }
  const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
  if (!constraints?.ca) fail(`subordinateCaCertificate.certificatePem (${certificate.subject}) is not a CA certificate: sign the CSR with a CA profile (basicConstraints CA:TRUE, pathlen 0).`);
  const chain = x509.PemConverter.decode(given.certificateChainPem);
  if (chain.length === 0) fail('subordinateCaCertificate.certificateChainPem holds no PEM certificate: give your parent CA certificate (and its parents, up to the root).');
  const issuer = new x509.X509Certificate(chain[0] as ArrayBuffer);
  if (issuer.subject !== certificate.issuer) {
    fail(`The chain starts with ${issuer.subject}, but the subordinate certificate was issued by ${certificate.issuer}: put the issuing CA first.`);
  }
}
