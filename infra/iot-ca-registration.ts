import { Arn, ArnFormat, type CfnElement, CustomResource, Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { HANDLER_ENTRIES, LifecycleFunction, privateCaTemplateArn, roleWritingTo } from './lifecycle-function';

/** The template of the verification certificate: a plain end-entity certificate, valid one day. */
export const VERIFICATION_TEMPLATE = 'EndEntityCertificate/V1';

export interface IotCaRegistrationProps {
  readonly certificateAuthorityArn: string;
  /** CAs the stack replaced: their registrations are left ACTIVE, and deregistered with the stack. @default - none */
  readonly previousCertificateAuthorityArns?: readonly string[];
  readonly signingAlgorithm: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * Registers the CA with AWS IoT for just-in-time registration (auto-registration on, ACTIVE),
 * proving possession with a verification certificate the CA signs for the account's
 * registration code. When the CA is replaced, the previous registration is left ACTIVE (its devices
 * keep connecting and rotating over); on delete, sets every registration it made INACTIVE and deletes it.
 * Handler: functions/handlers/register-ca-with-iot.ts.
 */
export class IotCaRegistration extends Construct {
  /** The CA certificate id in AWS IoT (SHA-256 of its DER, lower-case hex). */
  public readonly caCertificateId: string;
  public readonly caCertificateArn: string;
  public readonly handler: LifecycleFunction;
  public readonly provider: cr.Provider;

  public constructor(scope: Construct, id: string, props: IotCaRegistrationProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const verificationTemplateArn = privateCaTemplateArn(stack, VERIFICATION_TEMPLATE);

    this.handler = new LifecycleFunction(this, 'Handler', {
      entry: HANDLER_ENTRIES.registerCaWithIot,
      description: 'Custom resource: registers the device CA with AWS IoT for just-in-time registration',
      timeout: Duration.minutes(2),
      memorySize: 256,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.handler.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['acm-pca:GetCertificateAuthorityCertificate', 'acm-pca:GetCertificate'],
        resources: [props.certificateAuthorityArn],
      }),
    );
    const previous = props.previousCertificateAuthorityArns ?? [];
    if (previous.length > 0) {
      // On delete: the previous CAs' certificates give their registration ids.
      this.handler.addToRolePolicy(new iam.PolicyStatement({ actions: ['acm-pca:GetCertificateAuthorityCertificate'], resources: [...previous] }));
    }
    this.handler.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['acm-pca:IssueCertificate'],
        resources: [props.certificateAuthorityArn],
        conditions: { StringEquals: { 'acm-pca:TemplateArn': verificationTemplateArn } },
      }),
    );
    this.handler.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['iot:DescribeCACertificate', 'iot:UpdateCACertificate', 'iot:DeleteCACertificate'],
        // The CA certificate id is only known once IoT registers it.
        resources: [Arn.format({ service: 'iot', resource: 'cacert', resourceName: '*', arnFormat: ArnFormat.SLASH_RESOURCE_NAME }, stack)],
      }),
    );
    this.handler.addToRolePolicy(
      new iam.PolicyStatement({
        // GetRegistrationCode and RegisterCACertificate have no resource type in the Service
        // Authorization Reference: IAM only accepts "*" for them.
        actions: ['iot:GetRegistrationCode', 'iot:RegisterCACertificate'],
        resources: ['*'],
      }),
    );
    Validations.of(this.handler.executionRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'iot:GetRegistrationCode and iot:RegisterCACertificate have no resource type in the Service Authorization Reference, so IAM only accepts "*"; ' +
        'so do xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing).',
    });
    Validations.of(this.handler.executionRole).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cacert/*]`,
      reason: 'The CA certificate id is assigned by AWS IoT at registration, so it is not known when the policy is written; only CA registrations are reachable.',
    });

    const providerLogs = new LogGroup(this, 'ProviderLogs', { retention: props.logRetention, removalPolicy: props.removalPolicy });
    this.provider = new cr.Provider(this, 'Provider', {
      onEventHandler: this.handler,
      logGroup: providerLogs,
      frameworkOnEventRole: roleWritingTo(this, 'ProviderRole', providerLogs),
    });
    Validations.of(this).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(this.handler.node.defaultChild as CfnElement)}.Arn>:*]`,
      reason: 'The Provider framework may invoke any version of the one registration handler (lambda:InvokeFunction on its ARN and its qualified ARNs).',
    });

    const resource = new CustomResource(this, 'Resource', {
      serviceToken: this.provider.serviceToken,
      resourceType: 'Custom::IotCaRegistration',
      properties: {
        CertificateAuthorityArn: props.certificateAuthorityArn,
        SigningAlgorithm: props.signingAlgorithm,
        TemplateArn: verificationTemplateArn,
        ...(previous.length > 0 ? { PreviousCertificateAuthorityArns: [...previous] } : {}),
      },
    });
    this.caCertificateId = resource.getAttString('CaCertificateId');
    this.caCertificateArn = resource.getAttString('CaCertificateArn');
  }
}
