import { Logger } from '@aws-lambda-powertools/logger';
import { Annotations, Match, type Template } from 'aws-cdk-lib/assertions';
import type { Context } from 'aws-lambda';
import { IOT_DATA_MESSENGER_IAM_ACTIONS } from '../../functions/adapters/aws/iot-data-messenger';
import { iotRegistryIamActions } from '../../functions/adapters/aws/iot-device-registry';
import { privateCaIamActions } from '../../functions/adapters/aws/private-ca-certificate-authority';
import { LifecycleError } from '../../functions/core/errors';
import type { DeviceLifecycle } from '../../functions/core/lifecycle';
import { LIFECYCLE_VARIABLES } from '../../functions/handlers/aws-wiring';
import { CA_OPERATIONS, readConfig, REGISTRY_MODES, REGISTRY_OPERATIONS } from '../../functions/handlers/config';
import { answerTopic, expiringTopic, rotationRuleSql, rotationTopic, type RotationStep } from '../../functions/handlers/mqtt/rotation-protocol';
import { CAMPAIGN_DEADLINE_MARGIN_MS, createRotationHandler, ROTATION_CAMPAIGN_JOB_EVENT } from '../../functions/handlers/rotation';
import { fleetPolicyDocument } from '../../functions/policy/fleet-policy';
import { ANSWER_TOPICS_RESOURCE, ROTATION_METRICS, ROTATION_REJECTED_LOG_MESSAGES, ROTATION_STEPS } from '../../infra/rotation-pipeline';
import { CaType, DEFAULTS, resolveSettings, ROTATION_LIMITS } from '../../infra/settings';
import { actionsOf, buildStack, functionLogicalId, iamStatements, resourcesOf, statementsOfFunction, type SynthesizedStack } from './stacks';

/** The default stack, built once for the file; variants build their own. */
let built: SynthesizedStack;
let template: Template;
beforeAll(() => {
  built = buildStack();
  template = built.template;
});

const logicalIdStartingWith = (type: string, prefix: string, from: Template = template) => {
  const id = Object.keys(from.findResources(type)).find((logicalId) => logicalId.startsWith(prefix));
  if (!id) throw new Error(`no ${type} ${prefix}`);
  return id;
};
const rotationQueue = (from: Template = template) => logicalIdStartingWith('AWS::SQS::Queue', 'LifecycleRotationQueue', from);
const deadLetterQueue = (from: Template = template) => logicalIdStartingWith('AWS::SQS::Queue', 'LifecycleRotationDeadLetterQueue', from);
const rotationFunction = (from: Template = template) => functionLogicalId(from, 'LifecycleRotationFunction');
const ruleOf = (step: RotationStep) => template.findResources('AWS::IoT::TopicRule')[logicalIdStartingWith('AWS::IoT::TopicRule', step === 'rotate' ? 'LifecycleRotationRotateRule' : 'LifecycleRotationCommitRule')];

/** IAM and AWS IoT policy resource matching: `*` is any run of characters ("/" included), `?` any one character. */
const matchesResource = (pattern: string, value: string) =>
  new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`).test(value);

describe('topic rules', () => {
  test.each(['rotate', 'commit'] as const)('the %s rule selects the device message with its sender, exactly as rotationRuleSql says, with the 2016-03-23 SQL version', (step) => {
    expect(ruleOf(step)?.Properties).toEqual({
      RuleName: `iot_cert_lifecycle_rotation_${step}`,
      TopicRulePayload: {
        Description: expect.any(String),
        Sql: rotationRuleSql(step),
        AwsIotSqlVersion: '2016-03-23',
        RuleDisabled: false,
        Actions: [{ Sqs: { QueueUrl: { Ref: rotationQueue() }, RoleArn: expect.anything(), UseBase64: false } }],
        ErrorAction: { Sqs: { QueueUrl: { Ref: deadLetterQueue() }, RoleArn: expect.anything(), UseBase64: false } },
      },
    });
    expect(ruleOf(step)?.Properties.TopicRulePayload.Sql).toBe(
      step === 'rotate'
        ? "SELECT requestId, csr, topic() AS mqttTopic, clientid() AS mqttClientId, principal() AS mqttPrincipal FROM 'devices/+/certificates/rotate'"
        : "SELECT requestId, certificateId, topic() AS mqttTopic, clientid() AS mqttClientId, principal() AS mqttPrincipal FROM 'devices/+/certificates/commit'",
    );
  });

  test.each([
    ['Actions', 'rotation queue'],
    ['ErrorAction', 'rotation dead-letter queue'],
  ] as const)('the rules %s role may only sqs:SendMessage to the %s, and only AWS IoT of this account may assume it', (where, queue) => {
    const roleIds = ROTATION_STEPS.map((step) => {
      const payload = ruleOf(step)?.Properties.TopicRulePayload;
      const action = (where === 'Actions' ? payload.Actions[0] : payload.ErrorAction).Sqs as { QueueUrl: { Ref: string }; RoleArn: { 'Fn::GetAtt': [string, string] } };
      expect(action.QueueUrl.Ref).toBe(queue === 'rotation queue' ? rotationQueue() : deadLetterQueue());
      return action.RoleArn['Fn::GetAtt'][0];
    });
    expect(new Set(roleIds).size).toBe(1);
    const [roleId] = roleIds;
    const statements = iamStatements(template)
      .filter(({ logicalId }) => (template.findResources('AWS::IAM::Policy')[logicalId]?.Properties.Roles as { Ref: string }[] | undefined)?.some((role) => role.Ref === roleId))
      .map(({ statement }) => statement);
    expect(statements).toEqual([{ Effect: 'Allow', Action: 'sqs:SendMessage', Resource: { 'Fn::GetAtt': [queue === 'rotation queue' ? rotationQueue() : deadLetterQueue(), 'Arn'] } }]);
    expect(template.findResources('AWS::IAM::Role')[roleId!]?.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'iot.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } },
    ]);
  });

  test('the fleet policy lets a device publish its rotate and commit messages, subscribe to and receive their answers and the expiring notice, on its own topics only', () => {
    const policy = fleetPolicyDocument({ region: 'eu-west-1', accountId: '111122223333' });
    const allows = (action: string, resource: string, thing: string) =>
      policy.Statement.some(
        (statement) =>
          statement.Effect === 'Allow' &&
          ([] as string[]).concat(statement.Action).includes(action) &&
          ([] as string[]).concat(statement.Resource ?? []).some((pattern) => matchesResource(pattern.replace('${iot:Connection.Thing.ThingName}', thing), resource)),
      );
    const arn = 'arn:aws:iot:eu-west-1:111122223333';
    for (const step of ROTATION_STEPS) {
      expect(allows('iot:Publish', `${arn}:topic/${rotationTopic('dev-1', step)}`, 'dev-1')).toBe(true);
      expect(allows('iot:Subscribe', `${arn}:topicfilter/${rotationTopic('dev-1', step)}/+`, 'dev-1')).toBe(true);
      for (const outcome of ['accepted', 'rejected'] as const) {
        expect(allows('iot:Subscribe', `${arn}:topicfilter/${answerTopic('dev-1', step, outcome)}`, 'dev-1')).toBe(true);
        expect(allows('iot:Receive', `${arn}:topic/${answerTopic('dev-1', step, outcome)}`, 'dev-1')).toBe(true);
        // Never another device's answers.
        expect(allows('iot:Receive', `${arn}:topic/${answerTopic('dev-2', step, outcome)}`, 'dev-1')).toBe(false);
      }
      // Never a request on another device's topic.
      expect(allows('iot:Publish', `${arn}:topic/${rotationTopic('dev-2', step)}`, 'dev-1')).toBe(false);
    }
    expect(allows('iot:Receive', `${arn}:topic/${expiringTopic('dev-1')}`, 'dev-1')).toBe(true);
  });

  test('a topic root other than devices/ is reported at synth: devices could not publish on the rotation topics', () => {
    const other = buildStack({ lifecycle: { topicRoot: 'things' } });
    Annotations.fromStack(other.stack).hasWarning('/TestStack/Lifecycle', Match.stringLikeRegexp('topicRoot is "things", but the rotation protocol'));
    Annotations.fromStack(built.stack).hasNoWarning('*', Match.stringLikeRegexp('rotation protocol'));
  });
});

describe('rotation queue and dead-letter queue', () => {
  test('the rotation queue redrives into its own dead-letter queue after 10 receives', () => {
    expect(template.findResources('AWS::SQS::Queue')[rotationQueue()]?.Properties.RedrivePolicy).toEqual({
      deadLetterTargetArn: { 'Fn::GetAtt': [deadLetterQueue(), 'Arn'] },
      maxReceiveCount: DEFAULTS.rotationQueue.maxReceiveCount,
    });
    expect(DEFAULTS.rotationQueue.maxReceiveCount).toBe(10);
  });

  test('the rotation queue hides a message for six times the function timeout, and the dead-letter queue keeps messages 14 days', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    const fn = template.findResources('AWS::Lambda::Function')[rotationFunction()];
    expect(fn?.Properties.Timeout).toBe(60);
    expect(queues[rotationQueue()]?.Properties.VisibilityTimeout).toBe(6 * 60);
    expect(queues[rotationQueue()]?.Properties.MessageRetentionPeriod).toBe(4 * 24 * 3600);
    expect(queues[deadLetterQueue()]?.Properties.MessageRetentionPeriod).toBe(14 * 24 * 3600);
  });

  test.each([
    ['rotation queue', rotationQueue],
    ['rotation dead-letter queue', deadLetterQueue],
  ])('the %s is encrypted and refuses requests without TLS', (_name, queue) => {
    const id = queue();
    expect(template.findResources('AWS::SQS::Queue')[id]?.Properties.SqsManagedSseEnabled).toBe(true);
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: id }],
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
  });

  test('the rotation function consumes it in batches of 5, reporting failed records one by one, 2 invocations at a time by default', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: rotationFunction() },
      EventSourceArn: { 'Fn::GetAtt': [rotationQueue(), 'Arn'] },
      BatchSize: 5,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
  });

  test('rotationConcurrency sets the maximum concurrency', () => {
    const other = buildStack({ lifecycle: { rotationConcurrency: 8 } }).template;
    other.hasResourceProperties('AWS::Lambda::EventSourceMapping', { FunctionName: { Ref: rotationFunction(other) }, ScalingConfig: { MaximumConcurrency: 8 } });
  });
});

/** The EventBridge rules that invoke the rotation function: the sweep's (no input of its own) and the campaigns' (a fixed input). */
const rulesOfRotationFunction = (withInput: boolean) =>
  Object.values(template.findResources('AWS::Events::Rule')).filter((rule) =>
    (rule.Properties.Targets as { Arn: unknown; Input?: unknown }[]).some(
      (target) => JSON.stringify(target.Arn) === JSON.stringify({ 'Fn::GetAtt': [rotationFunction(), 'Arn'] }) && (target.Input !== undefined) === withInput,
    ),
  );

describe('sweep schedule', () => {
  test('EventBridge invokes the rotation function every 15 minutes with its scheduled event (no input of its own)', () => {
    const rules = rulesOfRotationFunction(false);
    expect(rules).toHaveLength(1);
    expect(rules[0]?.Properties.ScheduleExpression).toBe('rate(15 minutes)');
    expect(rules[0]?.Properties.Targets).toEqual([{ Arn: { 'Fn::GetAtt': [rotationFunction(), 'Arn'] }, Id: expect.any(String) }]);
    template.hasResourceProperties('AWS::Lambda::Permission', { FunctionName: { 'Fn::GetAtt': [rotationFunction(), 'Arn'] }, Principal: 'events.amazonaws.com' });
  });

  test('rotationSweepMinutes sets the rate', () => {
    const other = buildStack({ lifecycle: { rotationSweepMinutes: 5 } }).template;
    other.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(5 minutes)', Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [rotationFunction(other), 'Arn'] } })] });
  });
});

describe('rotation campaign schedule', () => {
  test('EventBridge invokes the rotation function every minute with the campaign job\'s input, which the handler tells from the sweep', () => {
    const rules = rulesOfRotationFunction(true);
    expect(rules).toHaveLength(1);
    expect(rules[0]?.Properties.ScheduleExpression).toBe('rate(1 minute)');
    expect(rules[0]?.Properties.Targets).toEqual([{ Arn: { 'Fn::GetAtt': [rotationFunction(), 'Arn'] }, Id: expect.any(String), Input: JSON.stringify(ROTATION_CAMPAIGN_JOB_EVENT) }]);
  });

  test('a run stops sending with a margin before the function\'s timeout, so it saves its cursors', () => {
    expect(DEFAULTS.rotation.timeoutSeconds * 1000 - CAMPAIGN_DEADLINE_MARGIN_MS).toBeGreaterThanOrEqual(30_000);
    expect(template.findResources('AWS::Lambda::Function')[rotationFunction()]?.Properties.Timeout).toBe(DEFAULTS.rotation.timeoutSeconds);
  });
});

describe('rotation function', () => {
  test('runs Node.js 22 on arm64 with X-Ray tracing, from the rotation handler', () => {
    expect(template.findResources('AWS::Lambda::Function')[rotationFunction()]?.Properties).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], TracingConfig: { Mode: 'Active' } });
  });

  test('gets exactly the variables the rotation wiring reads: the lifecycle ones, the commit window in seconds and an empty data endpoint', () => {
    const variables = template.findResources('AWS::Lambda::Function')[rotationFunction()]?.Properties.Environment.Variables as Record<string, unknown>;
    expect(Object.keys(variables).sort()).toEqual([...LIFECYCLE_VARIABLES, 'ROTATION_COMMIT_SECONDS', 'IOT_DATA_ENDPOINT', 'NODE_OPTIONS'].sort());
    expect(variables).toMatchObject({ ROTATION_COMMIT_SECONDS: String(6 * 3600), IOT_DATA_ENDPOINT: '', ENROLLMENT_POLICY: 'preregistered', CERTIFICATE_VALIDITY_DAYS: '365' });
  });

  test('rotationCommitHours sets ROTATION_COMMIT_SECONDS', () => {
    const other = buildStack({ lifecycle: { rotationCommitHours: 2 } }).template;
    expect(other.findResources('AWS::Lambda::Function')[rotationFunction(other)]?.Properties.Environment.Variables.ROTATION_COMMIT_SECONDS).toBe('7200');
  });

  test('every commit window the settings accept is one the function accepts, and so is the empty data endpoint', () => {
    for (const hours of [1, DEFAULTS.rotation.commitHours, ROTATION_LIMITS.maxCommitHours]) {
      expect(readConfig(['ROTATION_COMMIT_SECONDS', 'IOT_DATA_ENDPOINT'], { ROTATION_COMMIT_SECONDS: String(hours * 3600), IOT_DATA_ENDPOINT: '' })).toEqual({
        ROTATION_COMMIT_SECONDS: hours * 3600,
        IOT_DATA_ENDPOINT: '',
      });
    }
  });

  test('its role holds exactly the IoT registry, data-plane and Private CA actions of its declared operations', () => {
    const actions = statementsOfFunction(template, 'LifecycleRotationFunction').flatMap(actionsOf);
    const iotActions = actions.filter((action) => action.startsWith('iot:'));
    expect(iotActions).toHaveLength(new Set(iotActions).size);
    expect([...iotActions].sort()).toEqual([...iotRegistryIamActions({ ...REGISTRY_MODES, operations: REGISTRY_OPERATIONS.rotation }), ...IOT_DATA_MESSENGER_IAM_ACTIONS].sort());
    expect(actions.filter((action) => action.startsWith('acm-pca:')).sort()).toEqual([...privateCaIamActions(CA_OPERATIONS.rotation)].sort());
    for (const action of ['iot:AttachPolicy', 'iot:DetachPolicy', 'iot:RegisterCertificateWithoutCA', 'iot:*']) expect(actions).not.toContain(action);
  });

  test('may publish only on the certificates/ topics of devices, and look up the endpoint (no resource type: "*")', () => {
    const statements = statementsOfFunction(template, 'LifecycleRotationFunction');
    const publish = statements.filter((statement) => actionsOf(statement).includes('iot:Publish'));
    expect(publish).toEqual([{ Effect: 'Allow', Action: 'iot:Publish', Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iot:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':topic/devices/*/certificates/*']] } }]);
    expect(statements.filter((statement) => actionsOf(statement).includes('iot:DescribeEndpoint'))).toEqual([{ Effect: 'Allow', Action: 'iot:DescribeEndpoint', Resource: '*' }]);
    // Every topic the function publishes on is inside the grant; the devices' request topics' siblings outside it are not.
    const answers = ROTATION_STEPS.flatMap((step) => (['accepted', 'rejected'] as const).map((outcome) => answerTopic('dev-1', step, outcome)));
    for (const topic of [...answers, expiringTopic('dev-1')]) expect(matchesResource(ANSWER_TOPICS_RESOURCE, topic)).toBe(true);
    expect(matchesResource(ANSWER_TOPICS_RESOURCE, 'devices/dev-1/telemetry')).toBe(false);
  });

  test('may issue certificates only with the device template, on this CA only', () => {
    const ca = { 'Fn::GetAtt': [Object.keys(template.findResources('AWS::ACMPCA::CertificateAuthority'))[0], 'Arn'] };
    expect(statementsOfFunction(template, 'LifecycleRotationFunction')).toContainEqual({
      Effect: 'Allow',
      Action: 'acm-pca:IssueCertificate',
      Resource: ca,
      Condition: { StringEquals: { 'acm-pca:TemplateArn': { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityClientAuthCertificate/V1']] } } },
    });
  });

  test('reaches DynamoDB on the device table and its indexes only, like the API function, and consumes the rotation queue only', () => {
    const [deviceTable] = Object.keys(template.findResources('AWS::DynamoDB::Table'));
    const statements = statementsOfFunction(template, 'LifecycleRotationFunction');
    const dynamo = statements.filter((statement) => actionsOf(statement).some((action) => action.startsWith('dynamodb:')));
    const api = statementsOfFunction(template, 'LifecycleApiFunction').filter((statement) => actionsOf(statement).some((action) => action.startsWith('dynamodb:')));
    expect(dynamo).toEqual(api);
    for (const resource of dynamo.flatMap(resourcesOf)) expect(JSON.stringify(resource)).toContain(`"${deviceTable}"`);
    const sqs = statements.filter((statement) => actionsOf(statement).some((action) => action.startsWith('sqs:')));
    expect(sqs).toHaveLength(1);
    expect(sqs[0]?.Resource).toEqual({ 'Fn::GetAtt': [rotationQueue(), 'Arn'] });
  });
});

describe('alarms', () => {
  const alarms = () => Object.values(template.findResources('AWS::CloudWatch::Alarm')).map((alarm) => alarm.Properties);

  test('the rotation dead-letter queue alarms as soon as it holds a message', () => {
    expect(alarms()).toContainEqual(
      expect.objectContaining({
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Namespace: 'AWS/SQS',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [deadLetterQueue(), 'QueueName'] } }],
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      }),
    );
  });

  test('a rotation message waiting 15 minutes alarms', () => {
    expect(alarms()).toContainEqual(
      expect.objectContaining({ MetricName: 'ApproximateAgeOfOldestMessage', Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [rotationQueue(), 'QueueName'] } }], Threshold: 15 * 60 }),
    );
  });

  test('the rotation function errors alarm', () => {
    expect(alarms()).toContainEqual(
      expect.objectContaining({ MetricName: 'Errors', Namespace: 'AWS/Lambda', Dimensions: [{ Name: 'FunctionName', Value: { Ref: rotationFunction() } }], Threshold: 1, Statistic: 'Sum' }),
    );
  });

  test('5 rejected rotations within an hour alarm, counted from the function log by a metric filter with the function name as dimension', () => {
    const [filter, ...others] = Object.values(template.findResources('AWS::Logs::MetricFilter'));
    expect(others).toEqual([]);
    const logGroup = template.findResources('AWS::Lambda::Function')[rotationFunction()]?.Properties.LoggingConfig.LogGroup;
    expect(filter?.Properties).toEqual({
      LogGroupName: { Ref: logGroup.Ref },
      FilterPattern: '{ ($.message = "rotation rotate rejected") || ($.message = "rotation commit rejected") }',
      MetricTransformations: [{ MetricNamespace: 'IotCertificateLifecycle', MetricName: 'RotationsRejected', MetricValue: '1', Unit: 'Count', Dimensions: [{ Key: 'FunctionName', Value: '$.function_name' }] }],
    });
    expect(alarms()).toContainEqual(
      expect.objectContaining({
        Namespace: ROTATION_METRICS.namespace,
        MetricName: ROTATION_METRICS.rotationsRejected,
        Dimensions: [{ Name: 'FunctionName', Value: { Ref: rotationFunction() } }],
        Statistic: 'Sum',
        Period: 3600,
        Threshold: 5,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
      }),
    );
  });

  test('the rotation alarms notify the alarm topic when one is given', () => {
    const other = buildStack({ alarmTopicArn: 'arn:aws:sns:eu-west-1:111122223333:alarms' }).template;
    const rotationAlarms = Object.entries(other.findResources('AWS::CloudWatch::Alarm')).filter(([id]) => /^LifecycleRotation/.test(id));
    expect(rotationAlarms.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual(
      ['LifecycleRotationDeadLetterQueueNotEmptyAlarm', 'LifecycleRotationErrorsAlarm', 'LifecycleRotationQueueBacklogAlarm', 'LifecycleRotationsRejectedAlarm'].sort(),
    );
    for (const [, alarm] of rotationAlarms) expect(alarm.Properties.AlarmActions).toEqual(['arn:aws:sns:eu-west-1:111122223333:alarms']);
  });
});

describe('the rejected-rotations metric filter matches what the handler logs', () => {
  const lines: Record<string, unknown>[] = [];
  let write: jest.SpyInstance;
  beforeEach(() => {
    lines.length = 0;
    write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      for (const line of String(chunk).split('\n').filter((text) => text.trim().startsWith('{'))) lines.push(JSON.parse(line) as Record<string, unknown>);
      return true;
    });
  });
  afterEach(() => write.mockRestore());

  const context = { functionName: 'iot-cert-lifecycle-RotationFunction-abc', functionVersion: '$LATEST', invokedFunctionArn: 'arn:aws:lambda:eu-west-1:111122223333:function:x', memoryLimitInMB: '512', awsRequestId: 'req-1' } as Context;
  const refuse = async () => {
    throw new LifecycleError('INVALID_TRANSITION', 'The device is suspended.');
  };

  test.each(['rotate', 'commit'] as const)('a refused %s is logged as one of ROTATION_REJECTED_LOG_MESSAGES, with the function_name the filter takes as dimension', async (step) => {
    const published: string[] = [];
    const handler = createRotationHandler({
      lifecycle: { requestRotation: refuse, commitRotation: refuse } as unknown as DeviceLifecycle,
      messenger: { publish: async (topic) => void published.push(topic) },
      logger: new Logger({ serviceName: 'rotation', logLevel: 'INFO' }),
    });
    const payload = step === 'rotate' ? { requestId: 'r-1', csr: 'CSR' } : { requestId: 'r-1', certificateId: 'a'.repeat(64) };
    await handler({ ...payload, mqttTopic: rotationTopic('dev-1', step), mqttClientId: 'dev-1', mqttPrincipal: 'b'.repeat(64) }, context);

    expect(published).toEqual([answerTopic('dev-1', step, 'rejected')]);
    const rejected = lines.filter((line) => ROTATION_REJECTED_LOG_MESSAGES.includes(line.message as string));
    expect(rejected).toEqual([expect.objectContaining({ message: `rotation ${step} rejected`, function_name: context.functionName, code: 'INVALID_TRANSITION' })]);
  });
});

test('a new SUBORDINATE CA waiting for its certificate gets no rotation yet: nothing could be issued', () => {
  const pending = buildStack({ lifecycle: { caType: CaType.SUBORDINATE } });
  expect(pending.stack.lifecycle.rotationFunction).toBeUndefined();
  expect(Object.keys(pending.template.toJSON().Resources as object).filter((id) => id.startsWith('LifecycleRotation'))).toEqual([]);
});

describe('settings', () => {
  test.each([
    [{ rotationCommitHours: 0 }, 'rotationCommitHours must be a whole number of hours from 1 to 720 (got 0)'],
    [{ rotationCommitHours: 1.5 }, 'rotationCommitHours must be a whole number of hours from 1 to 720 (got 1.5)'],
    [{ rotationCommitHours: 721 }, 'rotationCommitHours must be a whole number of hours from 1 to 720 (got 721)'],
    [{ rotationSweepMinutes: 0 }, 'rotationSweepMinutes must be a whole number of minutes from 1 to 1440 (got 0)'],
    [{ rotationSweepMinutes: 1441, rotationCommitHours: 48 }, 'rotationSweepMinutes must be a whole number of minutes from 1 to 1440 (got 1441)'],
    [{ rotationSweepMinutes: 120, rotationCommitHours: 1 }, 'rotationSweepMinutes (120) must not exceed the commit window, rotationCommitHours (1, that is 60 minutes)'],
    [{ rotationConcurrency: 1 }, 'rotationConcurrency must be a whole number from 2 to 1000 (got 1)'],
    [{ rotationConcurrency: 1001 }, 'rotationConcurrency must be a whole number from 2 to 1000 (got 1001)'],
  ])('refuses %j, naming the setting', (lifecycle, message) => {
    expect(() => buildStack({ lifecycle })).toThrow(message);
  });

  test('accepts the bounds', () => {
    expect(() => resolveSettings({ rotationCommitHours: 720, rotationSweepMinutes: 1440, rotationConcurrency: 1000 })).not.toThrow();
    expect(resolveSettings({ rotationCommitHours: 1, rotationSweepMinutes: 1, rotationConcurrency: 2 })).toMatchObject({ rotationCommitHours: 1, rotationSweepMinutes: 1, rotationConcurrency: 2 });
    expect(resolveSettings({})).toMatchObject({ rotationCommitHours: 6, rotationSweepMinutes: 15, rotationConcurrency: 2 });
  });
});

test('no IAM statement of the rotation pipeline allows "*" but for actions without a resource type', () => {
  const rotationRoles = new Set(Object.keys(template.findResources('AWS::IAM::Role')).filter((id) => id.startsWith('LifecycleRotation')));
  const policies = template.findResources('AWS::IAM::Policy');
  const offending = iamStatements(template)
    .filter(({ logicalId }) => (policies[logicalId]?.Properties.Roles as { Ref: string }[] | undefined)?.some((role) => rotationRoles.has(role.Ref)))
    .filter(({ statement }) => resourcesOf(statement).includes('*'))
    .flatMap(({ statement }) => actionsOf(statement))
    .filter((action) => !['iot:RegisterCertificate', 'iot:DescribeEndpoint', 'xray:PutTraceSegments', 'xray:PutTelemetryRecords'].includes(action));
  expect(offending).toEqual([]);
  // The function's role and the rules' two roles.
  expect(rotationRoles.size).toBeGreaterThanOrEqual(3);
});
