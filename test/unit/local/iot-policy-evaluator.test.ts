import { authorize, resourceArn, type IotAction, type IotRequestContext } from '../../../functions/adapters/local/iot-policy-evaluator';
import { fleetPolicyDocument, type IotPolicyDocument, type IotPolicyStatement } from '../../../functions/policy/fleet-policy';

const ACCOUNT = '000000000000';
const ARN = `arn:aws:iot:local:${ACCOUNT}`;
const THING = '${iot:Connection.Thing.ThingName}';
const fleetPolicy = fleetPolicyDocument({ region: 'local', accountId: ACCOUNT });

/** Device A connected as AWS IoT associates it: client id = the thing attached to its certificate. */
const deviceA: IotRequestContext = {
  region: 'local',
  accountId: ACCOUNT,
  clientId: 'device-a',
  thingName: 'device-a',
  thingAttached: true,
  certificateId: 'a1'.repeat(32),
};

/** A certificate attached to no thing named like its client id: no thing name, not attached. */
const unassociated: IotRequestContext = { ...deviceA, clientId: 'device-a', thingName: undefined, thingAttached: false };

function policyOf(...statements: IotPolicyStatement[]): IotPolicyDocument {
  return { Version: '2012-10-17', Statement: statements };
}

describe('resourceArn', () => {
  test.each<[IotAction, string, string]>([
    ['iot:Connect', 'device-a', `${ARN}:client/device-a`],
    ['iot:Publish', 'devices/device-a/telemetry', `${ARN}:topic/devices/device-a/telemetry`],
    ['iot:RetainPublish', 'devices/device-a/state', `${ARN}:topic/devices/device-a/state`],
    ['iot:Receive', 'devices/device-a/commands', `${ARN}:topic/devices/device-a/commands`],
    ['iot:Subscribe', 'devices/device-a/#', `${ARN}:topicfilter/devices/device-a/#`],
  ])('names %s on %s as %s', (action, resource, expected) => {
    // Act
    const arn = resourceArn(action, resource, deviceA);

    // Assess
    expect(arn).toBe(expected);
  });

  test('uses the partition of the context when it has one', () => {
    // Act
    const arn = resourceArn('iot:Connect', 'device-a', { ...deviceA, partition: 'aws-cn', region: 'cn-north-1' });

    // Assess
    expect(arn).toBe(`arn:aws-cn:iot:cn-north-1:${ACCOUNT}:client/device-a`);
  });
});

describe('authorize with the fleet policy', () => {
  describe('iot:Connect', () => {
    test('allows device A to connect with its own client id when its certificate is attached to its thing', () => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Connect', 'device-a', deviceA);

      // Assess
      expect(result).toEqual({
        allowed: true,
        reason:
          `iot:Connect on ${ARN}:client/device-a allowed by policy[0].Statement[0] ` +
          `(Resource ${ARN}:client/${THING} with Condition Bool iot:Connection.Thing.IsAttached "true")`,
      });
    });

    test.each<[string, IotRequestContext, string]>([
      ['another client id than its thing name', { ...deviceA, clientId: 'device-b' }, 'Resource does not match'],
      ['a thing that is not attached', { ...deviceA, thingAttached: false }, 'Condition Bool iot:Connection.Thing.IsAttached "true" not met (iot:Connection.Thing.IsAttached is "false")'],
      ['no thing associated with the connection', unassociated, 'policy variable ${iot:Connection.Thing.ThingName} has no value for this connection'],
    ])('rejects a connection with %s', (_case, context, why) => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Connect', context.clientId, context);

      // Assess
      expect(result.allowed).toBe(false);
      expect(result.reason).toContain(why);
    });

    test('rejects an empty client id even when no thing name resolves (an unresolved variable is not an empty string)', () => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Connect', '', { ...unassociated, clientId: '' });

      // Assess
      expect(result).toEqual({
        allowed: false,
        reason:
          `iot:Connect on ${ARN}:client/ not allowed by any statement: policy[0].Statement[0]: ` +
          `Resource ${ARN}:client/${THING}: policy variable ${THING} has no value for this connection`,
      });
    });
  });

  describe('iot:Publish and iot:Receive', () => {
    test.each<[IotAction, string, boolean]>([
      ['iot:Publish', 'devices/device-a/telemetry', true],
      ['iot:Publish', 'devices/device-a/certificates/rotate', true],
      // `/*` is a glob: `*` crosses topic levels and matches the empty string, but the slash is required.
      ['iot:Publish', 'devices/device-a/', true],
      ['iot:Publish', 'devices/device-a', false],
      ['iot:Publish', 'devices/device-b/x', false],
      ['iot:Publish', 'devices/device-ab/x', false],
      ['iot:Publish', 'Devices/device-a/x', false],
      ['iot:Publish', 'other/devices/device-a/x', false],
      ['iot:Receive', 'devices/device-a/commands', true],
      ['iot:Receive', 'devices/device-a/certificates/rotate/accepted', true],
      ['iot:Receive', 'devices/device-a', false],
      ['iot:Receive', 'devices/device-b/commands', false],
    ])('%s on %s: allowed = %s', (action, topic, expected) => {
      // Act
      const result = authorize([fleetPolicy], action, topic, deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test('says which statement allowed a publish', () => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Publish', 'devices/device-a/telemetry', deviceA);

      // Assess
      expect(result.reason).toBe(`iot:Publish on ${ARN}:topic/devices/device-a/telemetry allowed by policy[0].Statement[1] (Resource ${ARN}:topic/devices/${THING}/*)`);
    });

    test('says why nothing allowed a publish to another device', () => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Publish', 'devices/device-b/x', deviceA);

      // Assess
      expect(result.reason).toBe(
        `iot:Publish on ${ARN}:topic/devices/device-b/x not allowed by any statement: ` +
          `policy[0].Statement[1]: Resource does not match (${ARN}:topic/devices/${THING}/*)`,
      );
    });
  });

  describe('iot:RetainPublish', () => {
    test('rejects a retained publish to its own topic: the fleet policy grants iot:Publish, not iot:RetainPublish', () => {
      // Act
      const result = authorize([fleetPolicy], 'iot:RetainPublish', 'devices/device-a/state', deviceA);

      // Assess
      expect(result).toEqual({ allowed: false, reason: `iot:RetainPublish on ${ARN}:topic/devices/device-a/state not allowed by any statement` });
    });

    test.each<[string, string | readonly string[], boolean]>([
      ['granted by name, on its own topics', 'iot:RetainPublish', true],
      ['granted by iot:*', 'iot:*', true],
      ['not granted by iot:Publish', ['iot:Publish', 'iot:Receive'], false],
    ])('a policy with iot:RetainPublish %s: allowed = %s', (_case, action, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: action, Resource: `${ARN}:topic/devices/${THING}/*` });

      // Act
      const result = authorize([policy], 'iot:RetainPublish', 'devices/device-a/state', deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });
  });

  describe('iot:Subscribe', () => {
    test.each<[string, boolean]>([
      ['devices/device-a/#', true],
      ['devices/device-a/+/status', true],
      ['devices/device-a/commands', true],
      ['devices/device-a', false],
      ['devices/#', false],
      ['devices/+/x', false],
      ['devices/+/#', false],
      ['#', false],
      ['+/device-a/#', false],
      ['devices/device-b/#', false],
    ])('topic filter %s: allowed = %s', (filter, expected) => {
      // Act
      const result = authorize([fleetPolicy], 'iot:Subscribe', filter, deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test('rejects a subscription that only a topic (not topicfilter) resource would cover', () => {
      // Prepare
      const topicOnly = policyOf({ Effect: 'Allow', Action: 'iot:Subscribe', Resource: `${ARN}:topic/devices/${THING}/*` });

      // Act
      const result = authorize([topicOnly], 'iot:Subscribe', 'devices/device-a/x', deviceA);

      // Assess
      expect(result.allowed).toBe(false);
    });
  });

  describe('a connection with no thing name', () => {
    test.each<[IotAction, string]>([
      ['iot:Publish', 'devices/device-a/x'],
      ['iot:Publish', 'devices//x'],
      ['iot:Publish', 'devices/anything/x'],
      ['iot:Receive', 'devices//x'],
      ['iot:Subscribe', 'devices//#'],
      ['iot:Subscribe', 'devices/#'],
    ])('rejects %s on %s: the unresolved variable matches nothing', (action, resource) => {
      // Act
      const result = authorize([fleetPolicy], action, resource, unassociated);

      // Assess
      expect(result.allowed).toBe(false);
      expect(result.reason).toContain(`policy variable ${THING} has no value for this connection`);
    });
  });
});

describe('authorize', () => {
  test('rejects everything when no policy is attached', () => {
    // Act
    const result = authorize([], 'iot:Connect', 'device-a', deviceA);

    // Assess
    expect(result).toEqual({ allowed: false, reason: `iot:Connect on ${ARN}:client/device-a not allowed by any statement (no policies)` });
  });

  describe('an explicit Deny', () => {
    const denyRestricted = policyOf({ Effect: 'Deny', Action: 'iot:Publish', Resource: `${ARN}:topic/devices/${THING}/restricted/*` });

    test.each<[string, IotPolicyDocument[]]>([
      ['after the Allow', [fleetPolicy, denyRestricted]],
      ['before the Allow', [denyRestricted, fleetPolicy]],
    ])('wins over an Allow, placed %s', (_order, policies) => {
      // Act
      const result = authorize(policies, 'iot:Publish', 'devices/device-a/restricted/x', deviceA);

      // Assess
      expect(result.allowed).toBe(false);
      expect(result.reason).toMatch(/^iot:Publish on \S+ explicitly denied by policy\[\d\]\.Statement\[0\] \(Resource \S+\/restricted\/\*\)$/);
    });

    test('leaves what it does not cover allowed', () => {
      // Act
      const result = authorize([fleetPolicy, denyRestricted], 'iot:Publish', 'devices/device-a/telemetry', deviceA);

      // Assess
      expect(result.allowed).toBe(true);
    });

    test('wins within one policy too', () => {
      // Prepare
      const policy = policyOf(
        { Effect: 'Allow', Action: 'iot:*', Resource: '*' },
        { Effect: 'Deny', Action: 'iot:Connect', Resource: `${ARN}:client/blocked-*` },
      );

      // Act
      const blocked = authorize([policy], 'iot:Connect', 'blocked-1', { ...deviceA, clientId: 'blocked-1' });
      const other = authorize([policy], 'iot:Connect', 'device-a', deviceA);

      // Assess
      expect(blocked).toEqual({ allowed: false, reason: `iot:Connect on ${ARN}:client/blocked-1 explicitly denied by policy[0].Statement[1] (Resource ${ARN}:client/blocked-*)` });
      expect(other.allowed).toBe(true);
    });

    test('does not apply when its resource variable has no value, as in AWS IoT Core', () => {
      // Prepare
      const policy = policyOf(
        { Effect: 'Allow', Action: 'iot:Publish', Resource: `${ARN}:topic/*` },
        { Effect: 'Deny', Action: 'iot:Publish', Resource: `${ARN}:topic/${THING}/*` },
      );

      // Act
      const result = authorize([policy], 'iot:Publish', 'x/y', unassociated);

      // Assess
      expect(result.allowed).toBe(true);
    });
  });

  describe('actions', () => {
    test.each<[string | string[], boolean]>([
      ['*', true],
      ['iot:*', true],
      ['iot:Pub*', true],
      ['iot:Publis?', true],
      ['IOT:PUBLISH', true],
      [['iot:Connect', 'iot:Publish'], true],
      ['iot:Subscribe', false],
      ['iot:Receive', false],
      ['iot:Publish?', false],
      [['iot:Connect', 'iot:Receive'], false],
      ['s3:*', false],
    ])('Action %j covers iot:Publish: %s', (action, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: action, Resource: `${ARN}:topic/t` });

      // Act
      const result = authorize([policy], 'iot:Publish', 't', deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test('applies a Deny with a wildcard action to every action', () => {
      // Prepare
      const policies = [fleetPolicy, policyOf({ Effect: 'Deny', Action: 'iot:*', Resource: '*' })];

      // Act
      const results = (['iot:Connect', 'iot:Publish', 'iot:Subscribe', 'iot:Receive'] as const).map((action) =>
        authorize(policies, action, action === 'iot:Connect' ? 'device-a' : 'devices/device-a/x', deviceA).allowed,
      );

      // Assess
      expect(results).toEqual([false, false, false, false]);
    });
  });

  describe('resources', () => {
    test.each<[string, boolean]>([
      ['temp1', true],
      ['tempX', true],
      ['temp/', true],
      ['temp', false],
      ['temp12', false],
    ])('`?` matches exactly one character: devices/device-a/%s allowed = %s', (suffix, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${ARN}:topic/devices/${THING}/temp?` });

      // Act
      const result = authorize([policy], 'iot:Publish', `devices/device-a/${suffix}`, deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test.each<[string, boolean]>([
      [`arn:aws:iot:*:${ACCOUNT}:topic/t`, true],
      ['arn:aws:iot:local:*:topic/t', true],
      [`arn:aws:iot:*:topic/t`, false],
      [`arn:aws:iot:local:111111111111:topic/t`, false],
      [`arn:aws:iot:eu-west-1:${ACCOUNT}:topic/t`, false],
      [`arn:aws-cn:iot:local:${ACCOUNT}:topic/t`, false],
      [`${ARN}:*`, true],
      [`${ARN}:topic*`, true],
      [`${ARN}:topicfilter/*`, false],
      ['topic/t', false],
    ])('matches the ARN segment by segment: %s allowed = %s', (resource, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: resource });

      // Act
      const result = authorize([policy], 'iot:Publish', 't', deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test('allows when any resource of a list matches', () => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: [`${ARN}:topic/a`, `${ARN}:topic/b`] });

      // Act
      const results = ['a', 'b', 'c'].map((topic) => authorize([policy], 'iot:Publish', topic, deviceA).allowed);

      // Assess
      expect(results).toEqual([true, true, false]);
    });

    test.each<[string, boolean]>([
      ['clients/dev*', true],
      ['clients/device-a', false],
      ['clients/dev', false],
    ])('treats a substituted value as literal, not as a wildcard: %s allowed = %s', (topic, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${ARN}:topic/clients/\${iot:ClientId}` });

      // Act
      const result = authorize([policy], 'iot:Publish', topic, { ...deviceA, clientId: 'dev*' });

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test.each<[string, string, boolean]>([
      ['${iot:CertificateId}', `certs/${'a1'.repeat(32)}`, true],
      ['${iot:CertificateId}', `certs/${'b2'.repeat(32)}`, false],
      ['${iot:Connection.Thing.IsAttached}', 'certs/true', true],
      ['${iot:Connection.Thing.IsAttached}', 'certs/false', false],
      ['${*}', 'certs/*', true],
      ['${*}', 'certs/x', false],
      ['${?}${$}', 'certs/?$', true],
      ['${IOT:CLIENTID}', 'certs/device-a', true],
    ])('resolves %s in a resource: %s allowed = %s', (variable, topic, expected) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${ARN}:topic/certs/${variable}` });

      // Act
      const result = authorize([policy], 'iot:Publish', topic, deviceA);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test('rejects a resource with a policy variable outside the supported subset, naming it', () => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: `${ARN}:topic/\${iot:Connection.Thing.Attributes[site]}/*` });

      // Act
      const result = authorize([policy], 'iot:Publish', 'lyon/x', deviceA);

      // Assess
      expect(result).toEqual({
        allowed: false,
        reason:
          `iot:Publish on ${ARN}:topic/lyon/x not allowed by any statement: policy[0].Statement[0]: ` +
          `Resource ${ARN}:topic/\${iot:Connection.Thing.Attributes[site]}/*: unsupported policy variable \${iot:Connection.Thing.Attributes[site]}`,
      });
    });
  });

  describe('conditions', () => {
    type Condition = NonNullable<IotPolicyStatement['Condition']>;

    test.each<[string, boolean, Condition, IotRequestContext]>([
      ['StringEquals on the client id', true, { StringEquals: { 'iot:ClientId': 'device-a' } }, deviceA],
      ['StringEquals on another client id', false, { StringEquals: { 'iot:ClientId': 'device-b' } }, deviceA],
      ['StringEquals with any of several values', true, { StringEquals: { 'iot:ClientId': ['device-b', 'device-a'] } }, deviceA],
      ['StringEquals is case-sensitive', false, { StringEquals: { 'iot:ClientId': 'DEVICE-A' } }, deviceA],
      ['StringEquals takes `*` literally', false, { StringEquals: { 'iot:ClientId': 'device-*' } }, deviceA],
      ['StringEquals with a policy variable', true, { StringEquals: { 'iot:Connection.Thing.ThingName': '${iot:ClientId}' } }, deviceA],
      ['StringEquals on an absent thing name', false, { StringEquals: { 'iot:Connection.Thing.ThingName': 'device-a' } }, unassociated],
      ['StringLike with `*`', true, { StringLike: { 'iot:ClientId': 'device-*' } }, deviceA],
      ['StringLike with `?`', true, { StringLike: { 'iot:ClientId': 'device-?' } }, deviceA],
      ['StringLike not matching', false, { StringLike: { 'iot:ClientId': 'sensor-*' } }, deviceA],
      ['StringNotEquals none of the values', true, { StringNotEquals: { 'iot:ClientId': ['device-b', 'device-c'] } }, deviceA],
      ['StringNotEquals one of the values', false, { StringNotEquals: { 'iot:ClientId': ['device-b', 'device-a'] } }, deviceA],
      ['StringNotEquals on an absent key (true, as IAM)', true, { StringNotEquals: { 'iot:Connection.Thing.ThingName': 'device-a' } }, unassociated],
      ['Bool true when attached', true, { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } }, deviceA],
      ['Bool true when not attached', false, { Bool: { 'iot:Connection.Thing.IsAttached': ['true'] } }, { ...deviceA, thingAttached: false }],
      ['Bool false when not attached', true, { Bool: { 'iot:Connection.Thing.IsAttached': 'false' } }, { ...deviceA, thingAttached: false }],
      ['Bool with a non-boolean value', false, { Bool: { 'iot:Connection.Thing.IsAttached': 'yes' } }, deviceA],
      ['keys of an operator all holding', true, { StringEquals: { 'iot:ClientId': 'device-a', 'iot:Connection.Thing.ThingName': 'device-a' } }, deviceA],
      ['keys of an operator not all holding', false, { StringEquals: { 'iot:ClientId': 'device-a', 'iot:Connection.Thing.ThingName': 'other' } }, deviceA],
      ['operators all holding', true, { StringEquals: { 'iot:ClientId': 'device-a' }, Bool: { 'iot:Connection.Thing.IsAttached': 'true' } }, deviceA],
      ['operators not all holding', false, { StringEquals: { 'iot:ClientId': 'device-a' }, Bool: { 'iot:Connection.Thing.IsAttached': 'false' } }, deviceA],
    ])('%s: allowed = %s', (_case, expected, condition, context) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: '*', Condition: condition });

      // Act
      const result = authorize([policy], 'iot:Publish', 't', context);

      // Assess
      expect(result.allowed).toBe(expected);
    });

    test.each<[string, Condition, string]>([
      ['an unknown operator', { StringEqualsIfExists: { 'iot:ClientId': 'device-a' } }, 'unsupported condition operator StringEqualsIfExists'],
      ['a set operator', { 'ForAnyValue:StringLike': { 'iot:ClientId': 'device-*' } }, 'unsupported condition operator ForAnyValue:StringLike'],
      ['an unknown condition key', { StringEquals: { 'iot:Connection.Thing.ThingTypeName': 'sensor' } }, 'unsupported condition key iot:Connection.Thing.ThingTypeName (in StringEquals)'],
    ])('rejects an Allow whose condition uses %s, naming it', (_case, condition, why) => {
      // Prepare
      const policy = policyOf({ Effect: 'Allow', Action: 'iot:Publish', Resource: '*', Condition: condition });

      // Act
      const result = authorize([policy], 'iot:Publish', 't', deviceA);

      // Assess
      expect(result).toEqual({ allowed: false, reason: `iot:Publish on ${ARN}:topic/t not allowed by any statement: policy[0].Statement[0]: ${why}` });
    });

    test('rejects when a Deny has a condition it cannot evaluate (fails closed), even if an Allow matches', () => {
      // Prepare
      const policy = policyOf(
        { Effect: 'Allow', Action: 'iot:Publish', Resource: '*' },
        { Effect: 'Deny', Action: 'iot:Publish', Resource: '*', Condition: { DateGreaterThan: { 'aws:CurrentTime': '2020-01-01T00:00:00Z' } } },
      );

      // Act
      const result = authorize([policy], 'iot:Publish', 't', deviceA);

      // Assess
      expect(result).toEqual({
        allowed: false,
        reason: `iot:Publish on ${ARN}:topic/t denied by policy[0].Statement[1], a Deny that cannot be evaluated: unsupported condition operator DateGreaterThan`,
      });
    });

    test('lets a Deny whose condition does not hold leave the Allow in force', () => {
      // Prepare
      const policy = policyOf(
        { Effect: 'Allow', Action: 'iot:Publish', Resource: '*' },
        { Effect: 'Deny', Action: 'iot:Publish', Resource: '*', Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'false' } } },
      );

      // Act
      const attached = authorize([policy], 'iot:Publish', 't', deviceA);
      const detached = authorize([policy], 'iot:Publish', 't', { ...deviceA, thingAttached: false });

      // Assess
      expect(attached.allowed).toBe(true);
      expect(detached.allowed).toBe(false);
    });
  });
});

describe('authorize a bootstrap certificate (subject OU=bootstrap) with the fleet policy', () => {
  const bootstrap: IotRequestContext = { ...deviceA, subjectOrganizationalUnits: ['bootstrap'] };

  test.each<[IotAction, string]>([
    ['iot:Connect', 'device-a'],
    ['iot:Publish', 'devices/device-a/certificates/rotate'],
    ['iot:Subscribe', 'devices/device-a/certificates/rotate/+'],
    ['iot:Subscribe', 'devices/device-a/certificates/rotate/accepted'],
    ['iot:Subscribe', 'devices/device-a/certificates/rotate/rejected'],
    ['iot:Receive', 'devices/device-a/certificates/rotate/accepted'],
    ['iot:Receive', 'devices/device-a/certificates/rotate/rejected'],
  ])('allows %s on %s: what a rotation needs', (action, resource) => {
    // Act
    const result = authorize([fleetPolicy], action, resource, bootstrap);

    // Assess
    expect(result.allowed).toBe(true);
  });

  test.each<[IotAction, string]>([
    ['iot:Publish', 'devices/device-a/telemetry'],
    ['iot:Publish', 'devices/device-a/certificates/commit'],
    ['iot:Publish', 'devices/device-a/certificates/rotate/accepted'],
    ['iot:Subscribe', 'devices/device-a/#'],
    ['iot:Subscribe', 'devices/device-a/certificates/commit/+'],
    ['iot:Receive', 'devices/device-a/commands'],
    ['iot:Receive', 'devices/device-a/certificates/rotate'],
  ])('rejects %s on %s with the explicit Deny, although the fleet Allow covers it', (action, resource) => {
    // Act
    const result = authorize([fleetPolicy], action, resource, bootstrap);

    // Assess
    expect(result.allowed).toBe(false);
    expect(result.reason).toContain('explicitly denied');
    expect(result.reason).toContain('StringEquals iot:Certificate.Subject.OrganizationalUnit');
    expect(authorize([fleetPolicy], action, resource, deviceA).allowed).toBe(true);
  });

  test.each<[string, readonly string[] | undefined]>([
    ['no OU (the key is absent)', undefined],
    ['an empty OU list', []],
    ['another OU', ['meters']],
    ['"Bootstrap": StringEquals is case-sensitive', ['Bootstrap']],
    ['bootstrap as the second OU: the variable is the first value', ['meters', 'bootstrap']],
  ])('leaves a certificate with %s unconfined', (_case, units) => {
    // Arrange
    const context: IotRequestContext = { ...deviceA, ...(units === undefined ? {} : { subjectOrganizationalUnits: units }) };

    // Act
    const result = authorize([fleetPolicy], 'iot:Publish', 'devices/device-a/telemetry', context);

    // Assess
    expect(result.allowed).toBe(true);
  });

  test('the first OU decides when a subject holds several', () => {
    // Act
    const result = authorize([fleetPolicy], 'iot:Publish', 'devices/device-a/telemetry', { ...deviceA, subjectOrganizationalUnits: ['bootstrap', 'meters'] });

    // Assess
    expect(result.allowed).toBe(false);
  });
});

describe('NotResource', () => {
  const everythingAllowed = { Effect: 'Allow', Action: 'iot:*', Resource: '*' } as const;

  test('a Deny with NotResource denies every resource but the ones listed', () => {
    // Arrange
    const policy = policyOf(everythingAllowed, { Effect: 'Deny', Action: 'iot:Publish', NotResource: [`${ARN}:topic/open/*`] });

    // Act
    const outside = authorize([policy], 'iot:Publish', 'closed/x', deviceA);
    const inside = authorize([policy], 'iot:Publish', 'open/x', deviceA);

    // Assess
    expect(outside).toEqual({ allowed: false, reason: `iot:Publish on ${ARN}:topic/closed/x explicitly denied by policy[0].Statement[1] (Resource not in NotResource (${ARN}:topic/open/*))` });
    expect(inside.allowed).toBe(true);
  });

  test('an Allow with NotResource allows every resource but the ones listed', () => {
    // Arrange
    const policy = policyOf({ Effect: 'Allow', Action: 'iot:Receive', NotResource: `${ARN}:topic/a/restricted/*` });

    // Act and assess
    expect(authorize([policy], 'iot:Receive', 'a/open', deviceA).allowed).toBe(true);
    expect(authorize([policy], 'iot:Receive', 'a/restricted/x', deviceA).allowed).toBe(false);
  });

  test('policy variables in NotResource are resolved; one without a value excludes nothing', () => {
    // Arrange
    const policy = policyOf(everythingAllowed, { Effect: 'Deny', Action: 'iot:Publish', NotResource: `${ARN}:topic/own/${THING}` });

    // Act and assess
    expect(authorize([policy], 'iot:Publish', 'own/device-a', deviceA).allowed).toBe(true);
    expect(authorize([policy], 'iot:Publish', 'own/device-b', deviceA).allowed).toBe(false);
    expect(authorize([policy], 'iot:Publish', 'own/device-a', { ...unassociated, thingAttached: true }).allowed).toBe(false);
  });

  test('a Deny whose NotResource cannot be evaluated applies (fails closed)', () => {
    // Arrange
    const policy = policyOf(everythingAllowed, { Effect: 'Deny', Action: 'iot:Publish', NotResource: `${ARN}:topic/\${iot:Unknown}` });

    // Act
    const result = authorize([policy], 'iot:Publish', 'anything', deviceA);

    // Assess
    expect(result.allowed).toBe(false);
    expect(result.reason).toContain('a Deny that cannot be evaluated');
  });
});
