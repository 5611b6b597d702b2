import { IOT_DATA_MESSENGER_IAM_ACTIONS } from '../../functions/adapters/aws/iot-data-messenger';
import { App, Aws, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { DEVICE_TABLE_SCHEMA } from '../../functions/adapters/aws/device-table';
import { iotRegistryIamActions } from '../../functions/adapters/aws/iot-device-registry';
import { PRIVATE_CA_IAM_ACTIONS } from '../../functions/adapters/aws/private-ca-certificate-authority';
import { ENVIRONMENT } from '../../functions/handlers/config';
import { fleetPolicyDocument } from '../../functions/policy/fleet-policy';
import { DEVICE_API_ROUTES, GATEWAY_ERROR_RESPONSES } from '../../infra/device-api';
import { HANDLER_ENTRIES, LifecycleFunction } from '../../infra/lifecycle-function';
import { actionsOf, buildStack, functionLogicalId, iamStatements, resourcesOf, statementsOfFunction, type SynthesizedStack } from './stacks';

/**
 * The default stack: a new ROOT CA (EC P-256, GENERAL_PURPOSE), retained data, preregistered enrollment.
 * Built once for the whole file.
 */
let built: SynthesizedStack;
let template: Template;
beforeAll(() => {
  built = buildStack();
  template = built.template;
});

const resolve = (value: unknown) => Stack.of(built.stack).resolve(value);
const caArn = () => ({ 'Fn::GetAtt': [Object.keys(template.findResources('AWS::ACMPCA::CertificateAuthority'))[0], 'Arn'] });
const queueLogicalId = (prefix: 'LifecycleRegistrationQueue' | 'LifecycleRegistrationDeadLetterQueue') => {
  const id = Object.keys(template.findResources('AWS::SQS::Queue')).find((logicalId) => logicalId.startsWith(prefix));
  if (!id) throw new Error(`no queue ${prefix}`);
  return id;
};
const registrationQueue = () => queueLogicalId('LifecycleRegistrationQueue');
const deadLetterQueue = () => queueLogicalId('LifecycleRegistrationDeadLetterQueue');
const iotArn = (resource: string) => ({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iot:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, `:${resource}/*`]] });

/** Actions that AWS only authorizes on "*", each with the reason; any other "*" fails the test. */
const STAR_RESOURCE_ALLOW_LIST: Readonly<Record<string, string>> = {
  'iot:DescribeEndpoint': 'no resource type in the Service Authorization Reference',
  'iot:GetRegistrationCode': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCACertificate': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCertificate': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCertificateWithoutCA': 'no resource type in the Service Authorization Reference',
  'xray:PutTraceSegments': 'X-Ray has no resource-level permissions',
  'xray:PutTelemetryRecords': 'X-Ray has no resource-level permissions',
};

describe('private CA', () => {
  test('creates a ROOT CA with EC P-256, general-purpose mode and a CRL in its own bucket', () => {
    template.hasResourceProperties('AWS::ACMPCA::CertificateAuthority', {
      Type: 'ROOT',
      KeyAlgorithm: 'EC_prime256v1',
      SigningAlgorithm: 'SHA256WITHECDSA',
      UsageMode: 'GENERAL_PURPOSE',
      RevocationConfiguration: {
        CrlConfiguration: {
          Enabled: true,
          ExpirationInDays: 7,
          S3BucketName: { Ref: Match.stringLikeRegexp('CrlBucket') },
          S3ObjectAcl: 'BUCKET_OWNER_FULL_CONTROL',
          CrlDistributionPointExtensionConfiguration: { OmitExtension: false },
        },
      },
    });
  });

  test('signs the root certificate with the root template and activates the CA', () => {
    template.hasResourceProperties('AWS::ACMPCA::Certificate', {
      CertificateAuthorityArn: caArn(),
      TemplateArn: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/RootCACertificate/V1']] },
      Validity: { Type: 'YEARS', Value: 10 },
    });
    template.hasResourceProperties('AWS::ACMPCA::CertificateAuthorityActivation', { CertificateAuthorityArn: caArn(), Status: 'ACTIVE' });
  });

  test('retains the CA by default', () => {
    template.hasResource('AWS::ACMPCA::CertificateAuthority', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  });

  test('keeps the CRL bucket private and encrypted, and lets only AWS Private CA of this account write to it', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'acm-pca.amazonaws.com' },
            Action: ['s3:PutObject', 's3:PutObjectAcl', 's3:GetBucketAcl', 's3:GetBucketLocation'],
            Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } }, ArnLike: { 'aws:SourceArn': Match.anyValue() } },
          }),
        ]),
      },
    });
  });

  test('creates the CA only once its bucket policy exists', () => {
    const [policyId] = Object.keys(template.findResources('AWS::S3::BucketPolicy'));
    template.hasResource('AWS::ACMPCA::CertificateAuthority', { DependsOn: Match.arrayWith([policyId]) });
  });
});

describe('CA registration with AWS IoT', () => {
  test('registers the CA through the custom resource with its ARN, signing algorithm and the verification template', () => {
    template.hasResourceProperties('Custom::IotCaRegistration', {
      CertificateAuthorityArn: caArn(),
      SigningAlgorithm: 'SHA256WITHECDSA',
      TemplateArn: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityCertificate/V1']] },
    });
  });

  test('registers the CA only after it is activated', () => {
    const [activationId] = Object.keys(template.findResources('AWS::ACMPCA::CertificateAuthorityActivation'));
    template.hasResource('Custom::IotCaRegistration', { DependsOn: Match.arrayWith([activationId]) });
  });

  test('lets the registration handler issue only with the verification template', () => {
    const statements = statementsOfFunction(template, 'LifecycleIotCaRegistrationHandler');
    expect(statements).toContainEqual(
      expect.objectContaining({
        Action: 'acm-pca:IssueCertificate',
        Resource: caArn(),
        Condition: { StringEquals: { 'acm-pca:TemplateArn': { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityCertificate/V1']] } } },
      }),
    );
    expect(statements).toContainEqual(expect.objectContaining({ Action: ['iot:DescribeCACertificate', 'iot:UpdateCACertificate', 'iot:DeleteCACertificate'] }));
    expect(statements).toContainEqual(expect.objectContaining({ Action: ['iot:GetRegistrationCode', 'iot:RegisterCACertificate'], Resource: '*' }));
  });
});

describe('tables', () => {
  test('device table has the keys and indexes of device-table.ts', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: DEVICE_TABLE_SCHEMA.partitionKey, KeyType: 'HASH' },
        { AttributeName: DEVICE_TABLE_SCHEMA.sortKey, KeyType: 'RANGE' },
      ],
      GlobalSecondaryIndexes: [DEVICE_TABLE_SCHEMA.byStatusIndex, DEVICE_TABLE_SCHEMA.byExpiryIndex].map((index) => ({
        IndexName: index.indexName,
        KeySchema: [
          { AttributeName: index.partitionKey, KeyType: 'HASH' },
          { AttributeName: index.sortKey, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      })),
    });
  });

  test('device table lets change markers age out through the TTL attribute of device-table.ts', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: DEVICE_TABLE_SCHEMA.partitionKey, KeyType: 'HASH' },
        { AttributeName: DEVICE_TABLE_SCHEMA.sortKey, KeyType: 'RANGE' },
      ],
      TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
    });
    expect(DEVICE_TABLE_SCHEMA.timeToLiveAttribute).toBe('expiresAt');
  });

  test('the device table is the only table: idempotency is its operation records, there is no idempotency table', () => {
    const tables = Object.values(template.findResources('AWS::DynamoDB::Table'));
    expect(tables).toHaveLength(1);
    expect(tables[0]?.Properties.KeySchema).toEqual([
      { AttributeName: DEVICE_TABLE_SCHEMA.partitionKey, KeyType: 'HASH' },
      { AttributeName: DEVICE_TABLE_SCHEMA.sortKey, KeyType: 'RANGE' },
    ]);
  });

  test('every table is on-demand, KMS-encrypted, with point-in-time recovery, deletion protection and retained', () => {
    const tables = template.findResources('AWS::DynamoDB::Table');
    expect(Object.keys(tables)).toHaveLength(1);
    for (const table of Object.values(tables)) {
      expect(table).toMatchObject({
        DeletionPolicy: 'Retain',
        Properties: {
          BillingMode: 'PAY_PER_REQUEST',
          SSESpecification: { SSEEnabled: true },
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          DeletionProtectionEnabled: true,
        },
      });
    }
  });
});

describe('functions', () => {
  test('every function of ours runs Node.js 22 on arm64 with X-Ray tracing', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    const ours = ['LifecycleJitrFunction', 'LifecycleApiFunction', 'LifecycleIotCaRegistrationHandler', 'LifecycleExpiryMonitorFunction', 'LifecycleRotationFunction'].map((prefix) => functions[functionLogicalId(template, prefix)]);
    for (const fn of ours) {
      expect(fn?.Properties).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], TracingConfig: { Mode: 'Active' } });
    }
  });

  test('the API function gets every configuration variable the functions read, but those of the expiry monitor and of rotation', () => {
    const fn = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleApiFunction')];
    // IOT_DATA_ENDPOINT it gets: POST /devices/{id}/rotate publishes the renewal notice.
    const notApi = ['EXPIRY_WARNING_DAYS', 'METRICS_SERVICE_NAME', 'ROTATION_COMMIT_SECONDS', 'RENEWAL_NOTICES_PER_SECOND'];
    expect(Object.keys(fn?.Properties.Environment.Variables).sort()).toEqual([...Object.keys(ENVIRONMENT).filter((name) => !notApi.includes(name)), 'NODE_OPTIONS'].sort());
    expect(fn?.Properties.Environment.Variables).toMatchObject({
      CA_ARN: caArn(),
      CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
      CA_TEMPLATE_ARN: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityClientAuthCertificate/V1']] },
      ENROLLMENT_POLICY: 'preregistered',
      CERTIFICATE_VALIDITY_DAYS: '365',
    });
    expect(fn?.Properties.Environment.Variables).not.toHaveProperty('IDEMPOTENCY_TABLE_NAME');
  });

  test('the JITR function gets the table, CA, thing group and enrollment policy variables', () => {
    const fn = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleJitrFunction')];
    expect(Object.keys(fn?.Properties.Environment.Variables)).toEqual(expect.arrayContaining(['DEVICE_TABLE_NAME', 'CA_ARN', 'THING_GROUP_NAME', 'ENROLLMENT_POLICY']));
    expect(fn?.Properties.Environment.Variables).not.toHaveProperty('IDEMPOTENCY_TABLE_NAME');
  });

  test('the JITR function is fed by the registration queue: batches of 10, failed records reported one by one, 2 at a time', () => {
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 2); // this one, and the rotation queue's (rotation-pipeline.test.ts)
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') },
      EventSourceArn: { 'Fn::GetAtt': [registrationQueue(), 'Arn'] },
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
  });

  test('no function has async retry settings or an on-failure destination (the expiry monitor, invoked by EventBridge, keeps Lambda\'s; its alarms report failures)', () => {
    template.resourceCountIs('AWS::Lambda::EventInvokeConfig', 0);
  });

  test('the JITR role holds exactly the IoT, Private CA and table actions it needs', () => {
    const actions = statementsOfFunction(template, 'LifecycleJitrFunction').flatMap(actionsOf);
    expect(actions.filter((action) => action.startsWith('iot:')).sort()).toEqual(
      ['iot:AddThingToThingGroup', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachThingPrincipal', 'iot:UpdateCertificate'].sort(),
    );
    expect(actions.filter((action) => action.startsWith('acm-pca:')).sort()).toEqual(['acm-pca:GetCertificateAuthorityCertificate', 'acm-pca:RevokeCertificate']);
    expect(actions).toEqual(expect.arrayContaining(['dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem']));
  });

  test('the JITR role may consume the registration queue only', () => {
    const statements = statementsOfFunction(template, 'LifecycleJitrFunction').filter((statement) => actionsOf(statement).some((action) => action.startsWith('sqs:')));
    expect(statements).toHaveLength(1);
    expect(actionsOf(statements[0]!).sort()).toEqual(['sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage']);
    expect(statements[0]?.Resource).toEqual({ 'Fn::GetAtt': [registrationQueue(), 'Arn'] });
  });

  test('the API role may issue certificates only with the device template, on this CA only', () => {
    expect(statementsOfFunction(template, 'LifecycleApiFunction')).toContainEqual({
      Effect: 'Allow',
      Action: 'acm-pca:IssueCertificate',
      Resource: caArn(),
      Condition: { StringEquals: { 'acm-pca:TemplateArn': { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityClientAuthCertificate/V1']] } } },
    });
  });

  test('the API role holds exactly the IoT actions the registry adapter calls in THING_GROUP and WITH_CA mode, no more, no less', () => {
    const granted = statementsOfFunction(template, 'LifecycleApiFunction')
      .flatMap(actionsOf)
      .filter((action) => action.startsWith('iot:'));
    // The modes functions/handlers/aws-wiring.ts wires the API function's registry with (function-wiring.test.ts checks them).
    // Besides the registry's actions, the messenger's: the renewal notice of POST /devices/{id}/rotate.
    expect([...new Set(granted)].sort()).toEqual([...iotRegistryIamActions({ policyAttachment: 'THING_GROUP', certificateRegistration: 'WITH_CA' }), ...IOT_DATA_MESSENGER_IAM_ACTIONS].sort());
    expect(granted).toHaveLength(new Set(granted).size);
  });

  test('the API role may retire CA registrations (UpdateCACertificate) on CA certificates of this account and region only, and only the API role', () => {
    const statements = statementsOfFunction(template, 'LifecycleApiFunction').filter((statement) => actionsOf(statement).includes('iot:UpdateCACertificate'));
    expect(statements).toHaveLength(1);
    expect(actionsOf(statements[0]!)).toEqual(['iot:UpdateCACertificate']);
    expect(resolve(statements[0]?.Resource)).toEqual(iotArn('cacert'));
    for (const fn of ['LifecycleJitrFunction']) expect(statementsOfFunction(template, fn).flatMap(actionsOf)).not.toContain('iot:UpdateCACertificate');
  });

  test('the API role may neither attach or detach IoT policies nor register certificates without the CA', () => {
    const granted = statementsOfFunction(template, 'LifecycleApiFunction').flatMap(actionsOf);
    for (const action of ['iot:AttachPolicy', 'iot:DetachPolicy', 'iot:RegisterCertificateWithoutCA', 'iot:*']) expect(granted).not.toContain(action);
  });

  test('the API role holds exactly the Private CA actions the Private CA adapter calls', () => {
    const granted = statementsOfFunction(template, 'LifecycleApiFunction')
      .flatMap(actionsOf)
      .filter((action) => action.startsWith('acm-pca:'));
    expect(granted.sort()).toEqual([...PRIVATE_CA_IAM_ACTIONS].sort());
  });

  test('the API role reaches DynamoDB on the device table and its indexes only (there is no idempotency table)', () => {
    const [deviceTable] = Object.keys(template.findResources('AWS::DynamoDB::Table'));
    const statements = statementsOfFunction(template, 'LifecycleApiFunction').filter((statement) => actionsOf(statement).some((action) => action.startsWith('dynamodb:')));
    expect(statements.length).toBeGreaterThan(0);
    for (const resource of statements.flatMap(resourcesOf)) expect(JSON.stringify(resource)).toContain(`"${deviceTable}"`);
    expect(JSON.stringify(template.toJSON())).not.toMatch(/IdempotencyTable|IDEMPOTENCY_TABLE_NAME/);
  });

  test.each(['LifecycleJitrFunction', 'LifecycleApiFunction'])('%s may attach and detach thing principals on certificates of this account and region only', (fn) => {
    const statements = statementsOfFunction(template, fn).filter((statement) => actionsOf(statement).some((action) => /^iot:(Attach|Detach)ThingPrincipal$/.test(action)));
    expect(statements).toHaveLength(1);
    expect(actionsOf(statements[0]!)).toEqual(expect.arrayContaining(['iot:AttachThingPrincipal', 'iot:DetachThingPrincipal']));
    expect(resolve(statements[0]?.Resource)).toEqual(iotArn('cert'));
  });

  test('rejects an IoT action it does not know how to scope, rather than granting it on "*"', () => {
    const stack = new Stack(new App({ context: { 'aws:cdk:bundling-stacks': [] } }), 'Bare');
    const fn = new LifecycleFunction(stack, 'Fn', { entry: HANDLER_ENTRIES.jitr, description: 'test', logRetention: RetentionDays.ONE_DAY, removalPolicy: RemovalPolicy.DESTROY });
    expect(() => fn.useFleet({ thingGroupName: 'group', thingGroupArn: 'arn:aws:iot:eu-west-1:111122223333:thinggroup/group' }, ['iot:CreateThing', 'iot:DeleteThing'])).toThrow(
      'Bare/Fn: no resource scoping is defined for iot:DeleteThing (infra/lifecycle-function.ts IOT_ACTION_RESOURCES).',
    );
  });

  test('no IAM statement allows "*" as resource except for actions AWS only authorizes on "*"', () => {
    const offending = iamStatements(template)
      .filter(({ statement }) => statement.Effect === 'Allow' && resourcesOf(statement).includes('*'))
      .flatMap(({ logicalId, statement }) => actionsOf(statement).filter((action) => !(action in STAR_RESOURCE_ALLOW_LIST)).map((action) => `${logicalId}: ${action}`));
    expect(offending).toEqual([]);
  });

  test('no function role uses the AWS managed basic execution policy: each writes to its own log group only', () => {
    for (const role of Object.values(template.findResources('AWS::IAM::Role'))) {
      expect(JSON.stringify(role.Properties.ManagedPolicyArns ?? [])).not.toContain('AWSLambdaBasicExecutionRole');
    }
  });
});

describe('just-in-time registration rule', () => {
  test('selects the registration events of our CA with the 2016-03-23 SQL version', () => {
    const registration = Object.keys(template.findResources('Custom::IotCaRegistration'))[0];
    template.hasResourceProperties('AWS::IoT::TopicRule', {
      RuleName: 'iot_cert_lifecycle_jitr',
      TopicRulePayload: {
        Sql: { 'Fn::Join': ['', ["SELECT * FROM '$aws/events/certificates/registered/", { 'Fn::GetAtt': [registration, 'CaCertificateId'] }, "'"]] },
        AwsIotSqlVersion: '2016-03-23',
        RuleDisabled: false,
        Actions: [{ Sqs: { QueueUrl: { Ref: registrationQueue() }, RoleArn: Match.anyValue(), UseBase64: false } }],
        ErrorAction: { Sqs: { QueueUrl: { Ref: deadLetterQueue() }, RoleArn: Match.anyValue(), UseBase64: false } },
      },
    });
  });

  test('no Lambda permission lets AWS IoT invoke a function: the rule only sends to the queue', () => {
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission')).map((permission) => permission.Properties.Principal);
    expect(permissions).not.toContain('iot.amazonaws.com');
  });

  test.each([
    ['Actions', 'registration queue'],
    ['ErrorAction', 'dead-letter queue'],
  ] as const)('the rule %s role may only sqs:SendMessage to the %s, and only AWS IoT of this account may assume it', (where, queue) => {
    const [rule] = Object.values(template.findResources('AWS::IoT::TopicRule'));
    const payload = rule?.Properties.TopicRulePayload;
    const sqsAction = (where === 'Actions' ? payload.Actions[0] : payload.ErrorAction).Sqs as { QueueUrl: { Ref: string }; RoleArn: { 'Fn::GetAtt': [string, string] } };
    const roleId = sqsAction.RoleArn['Fn::GetAtt'][0];
    expect(sqsAction.QueueUrl.Ref).toBe(queue === 'registration queue' ? registrationQueue() : deadLetterQueue());
    const statements = iamStatements(template)
      .filter(({ logicalId }) => {
        const policy = template.findResources('AWS::IAM::Policy')[logicalId];
        return (policy?.Properties.Roles as { Ref: string }[] | undefined)?.some((role) => role.Ref === roleId);
      })
      .map(({ statement }) => statement);
    expect(statements).toEqual([{ Effect: 'Allow', Action: 'sqs:SendMessage', Resource: { 'Fn::GetAtt': [sqsAction.QueueUrl.Ref, 'Arn'] } }]);
    expect(template.findResources('AWS::IAM::Role')[roleId]?.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'iot.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } },
    ]);
  });
});

describe('registration queue and dead-letter queue', () => {
  test('the registration queue redrives into the dead-letter queue after 10 receives', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [deadLetterQueue(), 'Arn'] }, maxReceiveCount: 10 },
    });
  });

  test('the registration queue hides a message for at least six times the JITR function timeout', () => {
    const queue = template.findResources('AWS::SQS::Queue')[registrationQueue()];
    const jitr = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleJitrFunction')];
    expect(queue?.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * (jitr?.Properties.Timeout as number));
  });

  test('the dead-letter queue keeps messages longer than the registration queue', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    expect(queues[deadLetterQueue()]?.Properties.MessageRetentionPeriod).toBe(14 * 24 * 3600);
    expect(queues[deadLetterQueue()]?.Properties.MessageRetentionPeriod).toBeGreaterThan(queues[registrationQueue()]?.Properties.MessageRetentionPeriod as number);
  });

  test.each(['LifecycleRegistrationQueue', 'LifecycleRegistrationDeadLetterQueue'] as const)('%s is encrypted and refuses requests without TLS', (prefix) => {
    const id = queueLogicalId(prefix);
    expect(template.findResources('AWS::SQS::Queue')[id]?.Properties.SqsManagedSseEnabled).toBe(true);
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: id }],
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
  });
});

describe('fleet policy and thing group', () => {
  test('creates the fleet IoT policy of fleet-policy.ts for the deployment region and account', () => {
    template.hasResourceProperties('AWS::IoT::Policy', {
      PolicyName: 'iot-cert-lifecycle-fleet',
      PolicyDocument: resolve(fleetPolicyDocument({ region: Aws.REGION, accountId: Aws.ACCOUNT_ID, partition: Aws.PARTITION })),
    });
  });

  test('confines bootstrap certificates (subject OU=bootstrap) to the rotation request and its answers with explicit Denies', () => {
    const topic = (suffix: string) => ({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iot:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, `:${suffix}`]] });
    const rotate = 'devices/${iot:Connection.Thing.ThingName}/certificates/rotate';
    const bootstrapOnly = { StringEquals: { 'iot:Certificate.Subject.OrganizationalUnit': 'bootstrap' } };
    template.hasResourceProperties('AWS::IoT::Policy', {
      PolicyName: 'iot-cert-lifecycle-fleet',
      PolicyDocument: {
        Statement: Match.arrayWith([
          { Effect: 'Deny', Action: 'iot:Publish', NotResource: topic(`topic/${rotate}`), Condition: bootstrapOnly },
          { Effect: 'Deny', Action: 'iot:Receive', NotResource: [topic(`topic/${rotate}/accepted`), topic(`topic/${rotate}/rejected`)], Condition: bootstrapOnly },
          {
            Effect: 'Deny',
            Action: 'iot:Subscribe',
            NotResource: [topic(`topicfilter/${rotate}/+`), topic(`topicfilter/${rotate}/accepted`), topic(`topicfilter/${rotate}/rejected`)],
            Condition: bootstrapOnly,
          },
        ]),
      },
    });
  });

  test('creates the thing group devices join', () => {
    template.hasResourceProperties('AWS::IoT::ThingGroup', { ThingGroupName: 'iot-cert-lifecycle-devices' });
  });

  test('attaches the policy to the thing group on create and detaches it on delete', () => {
    const [attachment] = Object.values(template.findResources('Custom::AWS'));
    const [group] = Object.keys(template.findResources('AWS::IoT::ThingGroup'));
    const create = JSON.stringify(attachment?.Properties.Create);
    const remove = JSON.stringify(attachment?.Properties.Delete);
    expect(create).toContain('\\"action\\":\\"attachPolicy\\"');
    expect(create).toContain(`{"Fn::GetAtt":["${group}","Arn"]}`);
    expect(remove).toContain('\\"action\\":\\"detachPolicy\\"');
  });

  test('the attachment may attach and detach policies on that thing group only', () => {
    const [group] = Object.keys(template.findResources('AWS::IoT::ThingGroup'));
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: { Statement: [{ Effect: 'Allow', Action: ['iot:AttachPolicy', 'iot:DetachPolicy'], Resource: { 'Fn::GetAtt': [group, 'Arn'] } }] },
    });
  });
});

describe('device API', () => {
  test('has every route, every method with AWS_IAM authorization and the request validator', () => {
    const methods = Object.values(template.findResources('AWS::ApiGateway::Method'));
    expect(methods).toHaveLength(DEVICE_API_ROUTES.length);
    const [validator] = Object.keys(template.findResources('AWS::ApiGateway::RequestValidator'));
    for (const method of methods) {
      expect(method.Properties).toMatchObject({ AuthorizationType: 'AWS_IAM', RequestValidatorId: { Ref: validator }, Integration: { Type: 'AWS_PROXY' } });
    }
    const paths = Object.values(template.findResources('AWS::ApiGateway::Resource')).map((resource) => resource.Properties.PathPart);
    expect(paths.sort()).toEqual(['certificates', 'devices', 'resume', 'revoke', 'revoke', 'rotate', 'suspend', '{certificateId}', '{deviceId}', 'rotation-campaigns', '{campaignId}', 'cancel', 'certificate-authorities', '{caCertificateId}', 'deactivate'].sort());
  });

  test('validates bodies and parameters', () => {
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', { ValidateRequestBody: true, ValidateRequestParameters: true });
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'GET',
      RequestParameters: { 'method.request.querystring.status': false, 'method.request.querystring.limit': false, 'method.request.querystring.nextToken': false },
    });
    template.hasResourceProperties('AWS::ApiGateway::Model', { Name: 'SignCsr', Schema: Match.objectLike({ required: ['csr'], additionalProperties: false }) });
  });

  test('checks each body against a model built from the handler\'s zod schema, one model per body', () => {
    template.resourceCountIs('AWS::ApiGateway::Model', 5);
    template.hasResourceProperties('AWS::ApiGateway::Model', { Name: 'DeactivateCa', Schema: Match.objectLike({ additionalProperties: false, properties: { force: Match.objectLike({ type: 'boolean' }) } }) });
    template.hasResourceProperties('AWS::ApiGateway::Model', {
      Name: 'CreateDevice',
      Schema: Match.objectLike({
        $schema: 'http://json-schema.org/draft-04/schema#',
        required: ['deviceId'],
        additionalProperties: false,
        properties: { deviceId: { type: 'string', pattern: '^[a-zA-Z0-9:_-]{1,128}$' }, attributes: Match.objectLike({ type: 'object', maxProperties: 3 }) },
      }),
    });
    template.hasResourceProperties('AWS::ApiGateway::Model', { Name: 'SignCsr', Schema: Match.objectLike({ properties: { csr: { type: 'string', minLength: 1, maxLength: 16384 } } }) });
    template.hasResourceProperties('AWS::ApiGateway::Model', {
      Name: 'StartRotationCampaign',
      Schema: Match.objectLike({ required: ['expiringBefore'], additionalProperties: false, properties: Match.objectLike({ noticesPerSecond: Match.objectLike({ type: 'integer', minimum: 1, maximum: 100 }) }) }),
    });
    const [revoke] = Object.keys(template.findResources('AWS::ApiGateway::Model', { Properties: { Name: 'Revoke' } }));
    const revokeMethods = Object.values(template.findResources('AWS::ApiGateway::Method')).filter((method) => method.Properties.RequestModels?.['application/json']?.Ref === revoke);
    expect(revokeMethods).toHaveLength(2);
  });

  test('requires the path parameters of a route and lets every POST carry an Idempotency-Key', () => {
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'POST',
      RequestParameters: { 'method.request.path.deviceId': true, 'method.request.path.certificateId': true, 'method.request.header.Idempotency-Key': false },
    });
  });

  test.each([
    ['MISSING_AUTHENTICATION_TOKEN', 'UNAUTHORIZED'],
    ['INVALID_SIGNATURE', 'UNAUTHORIZED'],
    ['EXPIRED_TOKEN', 'UNAUTHORIZED'],
    ['ACCESS_DENIED', 'FORBIDDEN'],
    ['THROTTLED', 'UPSTREAM_THROTTLED'],
    ['INTEGRATION_TIMEOUT', 'UPSTREAM_FAILURE'],
    ['REQUEST_TOO_LARGE', 'PAYLOAD_TOO_LARGE'],
    ['BAD_REQUEST_BODY', 'INVALID_REQUEST'],
    ['DEFAULT_4XX', 'INVALID_REQUEST'],
    ['DEFAULT_5XX', 'INTERNAL_ERROR'],
  ])('answers API Gateway %s in the error shape of the handler, with code %s', (responseType, code) => {
    const responses = Object.values(template.findResources('AWS::ApiGateway::GatewayResponse')).filter((response) => response.Properties.ResponseType === responseType);
    expect(responses).toHaveLength(1);
    const body = responses[0]?.Properties.ResponseTemplates['application/json'] as string;
    // What API Gateway sends once it substitutes its message (a JSON-quoted string) must be valid JSON of our shape.
    const sent = JSON.parse(body.replace('$context.error.messageString', JSON.stringify('Some "quoted" message')));
    expect(sent).toEqual({ error: { code, message: expect.any(String) } });
    expect(responses[0]?.Properties.ResponseParameters).toMatchObject({ 'gatewayresponse.header.Content-Type': "'application/json'" });
  });

  test('tells a throttled caller when to retry', () => {
    template.hasResourceProperties('AWS::ApiGateway::GatewayResponse', { ResponseType: 'THROTTLED', ResponseParameters: Match.objectLike({ 'gatewayresponse.header.Retry-After': "'2'" }) });
  });

  test('declares each gateway response once', () => {
    const types = GATEWAY_ERROR_RESPONSES.map((response) => response.type.responseType);
    expect(new Set(types).size).toBe(types.length);
    template.resourceCountIs('AWS::ApiGateway::GatewayResponse', types.length);
  });

  test('API Gateway waits 29 s for the API function, which has the same timeout', () => {
    for (const method of Object.values(template.findResources('AWS::ApiGateway::Method'))) expect(method.Properties.Integration.TimeoutInMillis).toBe(29_000);
    const api = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleApiFunction')];
    expect(api?.Properties.Timeout).toBe(29);
  });

  test('the stage logs access in JSON, traces with X-Ray, logs errors and is throttled', () => {
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: 'v1',
      TracingEnabled: true,
      AccessLogSetting: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('requestId') },
      MethodSettings: [Match.objectLike({ HttpMethod: '*', ResourcePath: '/*', LoggingLevel: 'ERROR', DataTraceEnabled: false, ThrottlingRateLimit: 10, ThrottlingBurstLimit: 20 })],
    });
  });
});

describe('alarms and outputs', () => {
  test('alarms when the dead-letter queue holds a message, when registration events wait too long and when functions fail', () => {
    template.resourceCountIs('AWS::CloudWatch::Alarm', 14); // 5 here, 5 of the expiry monitor (expiry-monitor.test.ts), 4 of rotation (rotation-pipeline.test.ts)
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Namespace: 'AWS/SQS',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [deadLetterQueue(), 'QueueName'] } }],
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateAgeOfOldestMessage',
      Namespace: 'AWS/SQS',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [registrationQueue(), 'QueueName'] } }],
      Threshold: 15 * 60,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Namespace: 'AWS/Lambda',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') } }],
    });
  });

  test('outputs the API URL, the endpoint lookup, the CA, its IoT id, the table, the thing group and the queues', () => {
    const outputs = template.findOutputs('*');
    expect(Object.keys(outputs)).toEqual(
      expect.arrayContaining(['ApiUrl', 'IotDataEndpoint', 'CaArn', 'CaCertificateId', 'DeviceTableName', 'ThingGroupName', 'RegistrationQueueUrl', 'DeadLetterQueueUrl', 'DeadLetterQueueArn']),
    );
    expect(outputs.IotDataEndpoint?.Value).toBe('aws iot describe-endpoint --endpoint-type iot:Data-ATS');
    expect(outputs).not.toHaveProperty('IdempotencyTableName');
  });
});
