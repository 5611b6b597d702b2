import { Aws, type RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import type { Construct } from 'constructs';
import { fleetPolicyDocument } from '../functions/policy/fleet-policy';
import { roleWritingTo, type FleetBinding } from './lifecycle-function';

export interface FleetProps {
  readonly namePrefix: string;
  readonly topicRoot: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

export interface Fleet {
  readonly thingGroup: iot.CfnThingGroup;
  readonly fleetPolicy: iot.CfnPolicy;
  /** The fleet as the functions see it: what goes into THING_GROUP_NAME, and what their grants name. */
  readonly binding: FleetBinding;
}

/**
 * The fleet: the thing group every device joins, the fleet IoT policy, and the policy attached to the group.
 * Created directly in `scope` (ids `ThingGroup`, `FleetPolicy`, `FleetPolicyAttachment*`), so their logical ids
 * are those of a deployed stack.
 */
export function addFleet(scope: Construct, props: FleetProps): Fleet {
  const thingGroup = new iot.CfnThingGroup(scope, 'ThingGroup', {
    thingGroupName: `${props.namePrefix}-devices`,
    thingGroupProperties: { thingGroupDescription: 'Every device onboarded by the certificate lifecycle; the fleet policy applies through it.' },
  });
  const fleetPolicy = new iot.CfnPolicy(scope, 'FleetPolicy', {
    policyName: `${props.namePrefix}-fleet`,
    policyDocument: fleetPolicyDocument({ region: Aws.REGION, accountId: Aws.ACCOUNT_ID, partition: Aws.PARTITION, topicRoot: props.topicRoot }),
  });
  attachPolicyToThingGroup(scope, thingGroup, fleetPolicy, props);
  return { thingGroup, fleetPolicy, binding: { thingGroupName: thingGroup.ref, thingGroupArn: thingGroup.attrArn } };
}

/**
 * AttachPolicy on the thing group (CloudFormation's PolicyPrincipalAttachment takes no thing group), so devices
 * get the policy by joining the group and never hit the 15 TPS AttachPolicy quota.
 */
function attachPolicyToThingGroup(scope: Construct, thingGroup: iot.CfnThingGroup, fleetPolicy: iot.CfnPolicy, props: FleetProps): cr.AwsCustomResource {
  const call = (action: 'attachPolicy' | 'detachPolicy'): cr.AwsSdkCall => ({
    service: 'Iot',
    action,
    parameters: { policyName: fleetPolicy.ref, target: thingGroup.attrArn },
    physicalResourceId: cr.PhysicalResourceId.of(`${props.namePrefix}-fleet-policy-on-thing-group`),
    ...(action === 'detachPolicy' ? { ignoreErrorCodesMatching: 'ResourceNotFoundException' } : {}),
  });
  const logGroup = new LogGroup(scope, 'FleetPolicyAttachmentLogs', { retention: props.logRetention, removalPolicy: props.removalPolicy });
  const attachment = new cr.AwsCustomResource(scope, 'FleetPolicyAttachment', {
    onCreate: call('attachPolicy'),
    onUpdate: call('attachPolicy'),
    onDelete: call('detachPolicy'),
    // AttachPolicy/DetachPolicy are authorized against their target: this one thing group only.
    policy: cr.AwsCustomResourcePolicy.fromStatements([new iam.PolicyStatement({ actions: ['iot:AttachPolicy', 'iot:DetachPolicy'], resources: [thingGroup.attrArn] })]),
    installLatestAwsSdk: false,
    logGroup,
    role: roleWritingTo(scope, 'FleetPolicyAttachmentRole', logGroup),
  });
  attachment.node.addDependency(fleetPolicy, thingGroup);
  return attachment;
}
