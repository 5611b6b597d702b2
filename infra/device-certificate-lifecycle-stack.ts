import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import * as acmpca from 'aws-cdk-lib/aws-acmpca';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { DeviceCertificateLifecycle, type DeviceCertificateLifecycleProps } from './device-certificate-lifecycle';

export interface DeviceCertificateLifecycleStackProps extends StackProps {
  /**
   * ARN of an existing AWS Private CA (becomes `existingCertificateAuthority`).
   * @default - the stack creates a CA
   */
  readonly existingCaArn?: string;
  /**
   * ARNs of the AWS Private CAs the stack issued from before a CA rotation (become `previousCertificateAuthorities`).
   * @default - none
   */
  readonly previousCaArns?: readonly string[];
  /**
   * ARN of an SNS topic the alarms notify (becomes `alarmTopic`).
   * @default - alarms without actions
   */
  readonly alarmTopicArn?: string;
  /** Everything else about the lifecycle; see {@link DeviceCertificateLifecycleProps}. */
  readonly lifecycle?: Omit<DeviceCertificateLifecycleProps, 'existingCertificateAuthority' | 'previousCertificateAuthorities' | 'alarmTopic'>;
}

/** The app's one stack: the {@link DeviceCertificateLifecycle} construct and the outputs an operator needs. */
export class DeviceCertificateLifecycleStack extends Stack {
  public readonly lifecycle: DeviceCertificateLifecycle;

  public constructor(scope: Construct, id: string, props: DeviceCertificateLifecycleStackProps = {}) {
    super(scope, id, props);
    const lifecycle = new DeviceCertificateLifecycle(this, 'Lifecycle', {
      ...props.lifecycle,
      existingCertificateAuthority: props.existingCaArn === undefined ? undefined : acmpca.CertificateAuthority.fromCertificateAuthorityArn(this, 'ExistingCa', props.existingCaArn),
      previousCertificateAuthorities: props.previousCaArns?.map((arn, index) => acmpca.CertificateAuthority.fromCertificateAuthorityArn(this, `PreviousCa${index}`, arn)),
      alarmTopic: props.alarmTopicArn === undefined ? undefined : sns.Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn),
    });
    this.lifecycle = lifecycle;

    new CfnOutput(this, 'ApiUrl', { value: lifecycle.api.restApi.url, description: 'Device API base URL (SigV4, service execute-api)' });
    new CfnOutput(this, 'IotDataEndpoint', {
      value: 'aws iot describe-endpoint --endpoint-type iot:Data-ATS',
      description: 'Run this to get the MQTT endpoint devices connect to (port 8883)',
    });
    new CfnOutput(this, 'CaArn', { value: lifecycle.certificateAuthorityArn, description: 'The AWS Private CA that signs device certificates' });
    if (lifecycle.caCertificateId) {
      new CfnOutput(this, 'CaCertificateId', { value: lifecycle.caCertificateId, description: 'The CA certificate id in AWS IoT (auto-registration on)' });
    }
    const newCa = lifecycle.newCertificateAuthority;
    if (newCa) {
      new CfnOutput(this, 'CrlBucketName', { value: newCa.crlBucket.bucketName, description: 'Where AWS Private CA publishes the CRL' });
      if (!newCa.isActive) {
        new CfnOutput(this, 'CaCertificateSigningRequest', {
          value: newCa.certificateSigningRequest,
          description: 'Sign this CSR with your parent CA (CA profile, path length 0), then deploy again with subordinateCaCertificateFile and subordinateCaChainFile',
        });
      }
    }
    new CfnOutput(this, 'DeviceTableName', { value: lifecycle.deviceTable.tableName });
    new CfnOutput(this, 'ThingGroupName', { value: lifecycle.thingGroup.ref, description: 'Devices join this group; the fleet policy is attached to it' });
    new CfnOutput(this, 'FleetPolicyName', { value: lifecycle.fleetPolicy.ref });
    new CfnOutput(this, 'RegistrationQueueUrl', { value: lifecycle.registrationQueue.queueUrl, description: 'Registration events waiting for the JITR function' });
    new CfnOutput(this, 'DeadLetterQueueUrl', { value: lifecycle.deadLetterQueue.queueUrl, description: 'Registration events that could not be processed' });
    new CfnOutput(this, 'DeadLetterQueueArn', {
      value: lifecycle.deadLetterQueue.queueArn,
      description: 'Redrive it to the registration queue with: aws sqs start-message-move-task --source-arn <this ARN>',
    });
  }
}
