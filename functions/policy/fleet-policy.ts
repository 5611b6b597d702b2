import { BOOTSTRAP_ORGANIZATIONAL_UNIT } from '../core/certificate-purpose';

/**
 * The fleet's AWS IoT policy, one document for every device. Policy variables confine
 * each device to its own client id (= thing name) and its own `devices/<thing>/...` topics;
 * `iot:Connection.Thing.IsAttached` refuses a certificate that is not attached to that thing. A bootstrap
 * certificate (subject OU `bootstrap`) is confined further, to the rotation request and its answers.
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

/**
 * One statement. `NotResource` (every resource but these) is what AWS IoT Core's own publish/subscribe policy
 * examples use to say "all topics except"; a statement has exactly one of `Resource` and `NotResource`.
 */
export type IotPolicyStatement = IotPolicyStatementBase & ({ readonly Resource: string | readonly string[]; readonly NotResource?: never } | { readonly NotResource: string | readonly string[]; readonly Resource?: never });

interface IotPolicyStatementBase {
  readonly Effect: 'Allow' | 'Deny';
  readonly Action: string | readonly string[];
  readonly Condition?: Readonly<Record<string, Readonly<Record<string, string | readonly string[]>>>>;
}

export interface IotPolicyDocument {
  readonly Version: '2012-10-17';
  readonly Statement: readonly IotPolicyStatement[];
}

/** The certificate policy variable AWS IoT Core sets from the subject's (first) OU: `iot:Certificate.Subject.OrganizationalUnit`. */
export const SUBJECT_OU_CONDITION_KEY = 'iot:Certificate.Subject.OrganizationalUnit';

export function fleetPolicyDocument(options: FleetPolicyOptions): IotPolicyDocument {
  const arn = `arn:${options.partition ?? 'aws'}:iot:${options.region}:${options.accountId}`;
  const root = options.topicRoot ?? DEFAULT_TOPIC_ROOT;
  const thing = '${iot:Connection.Thing.ThingName}';
  const rotate = `${root}/${thing}/certificates/rotate`;
  const bootstrapOnly = { StringEquals: { [SUBJECT_OU_CONDITION_KEY]: BOOTSTRAP_ORGANIZATIONAL_UNIT } };
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
      // A bootstrap certificate (OU=bootstrap) only rotates: an explicit Deny, which no Allow overrides, on every topic but
      // the rotation request and its two answers. A certificate without an OU never matches it (the condition key is
      // absent, so StringEquals is false): whatever AWS IoT does with an absent attribute, it can only leave this Deny
      // out, never apply it to an operational certificate.
      { Effect: 'Deny', Action: 'iot:Publish', NotResource: `${arn}:topic/${rotate}`, Condition: bootstrapOnly },
      { Effect: 'Deny', Action: 'iot:Receive', NotResource: [`${arn}:topic/${rotate}/accepted`, `${arn}:topic/${rotate}/rejected`], Condition: bootstrapOnly },
      {
        Effect: 'Deny',
        Action: 'iot:Subscribe',
        NotResource: [`${arn}:topicfilter/${rotate}/+`, `${arn}:topicfilter/${rotate}/accepted`, `${arn}:topicfilter/${rotate}/rejected`],
        Condition: bootstrapOnly,
      },
    ],
  };
}
