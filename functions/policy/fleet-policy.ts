/**
 * The fleet's AWS IoT policy, one document for every device. Policy variables confine
 * each device to its own client id (= thing name) and its own `devices/<thing>/...` topics;
 * `iot:Connection.Thing.IsAttached` refuses a certificate that is not attached to that thing.
 * The CDK construct creates it (with the deploy-time region and account); the local mode enforces it.
 */
export interface FleetPolicyOptions {
  /** `Aws.REGION` in the stack; any string locally. */
  readonly region: string;
  /** `Aws.ACCOUNT_ID` in the stack; any string locally. */
  readonly accountId: string;
  /** The topic root under which each device owns `<root>/<thingName>/...`. @default 'devices' */
  readonly topicRoot?: string;
  /** The ARN partition. @default 'aws' */
  readonly partition?: string;
}

export const DEFAULT_TOPIC_ROOT = 'devices';

export interface IotPolicyStatement {
  readonly Effect: 'Allow' | 'Deny';
  readonly Action: string | readonly string[];
  readonly Resource: string | readonly string[];
  readonly Condition?: Readonly<Record<string, Readonly<Record<string, string | readonly string[]>>>>;
}

export interface IotPolicyDocument {
  readonly Version: '2012-10-17';
  readonly Statement: readonly IotPolicyStatement[];
}

export function fleetPolicyDocument(options: FleetPolicyOptions): IotPolicyDocument {
  const arn = `arn:${options.partition ?? 'aws'}:iot:${options.region}:${options.accountId}`;
  const root = options.topicRoot ?? DEFAULT_TOPIC_ROOT;
  const thing = '${iot:Connection.Thing.ThingName}';
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: `${arn}:client/${thing}`,
        Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
      },
      { Effect: 'Allow', Action: ['iot:Publish', 'iot:Receive'], Resource: `${arn}:topic/${root}/${thing}/*` },
      { Effect: 'Allow', Action: 'iot:Subscribe', Resource: `${arn}:topicfilter/${root}/${thing}/*` },
    ],
  };
}
