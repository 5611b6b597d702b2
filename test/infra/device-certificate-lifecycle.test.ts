import { Aws, Stack } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { DEVICE_TABLE_SCHEMA } from '../../functions/adapters/aws/device-table';
import { IOT_REGISTRY_IAM_ACTIONS } from '../../functions/adapters/aws/iot-device-registry';
import { PRIVATE_CA_IAM_ACTIONS } from '../../functions/adapters/aws/private-ca-certificate-authority';
import { ENVIRONMENT } from '../../functions/handlers/config';
import { fleetPolicyDocument } from '../../functions/policy/fleet-policy';
import { DEVICE_API_ROUTES } from '../../infra/device-api';
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
const queueArn = () => ({ 'Fn::GetAtt': [Object.keys(template.findResources('AWS::SQS::Queue'))[0], 'Arn'] });

/** Actions that AWS only authorizes on "*", each with the reason; any other "*" fails the test. */
const STAR_RESOURCE_ALLOW_LIST: Readonly<Record<string, string>> = {
  'iot:GetRegistrationCode': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCACertificate': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCertificate': 'no resource type in the Service Authorization Reference',
  'iot:RegisterCertificateWithoutCA': 'no resource type in the Service Authorization Reference',
  'iot:AttachThingPrincipal': 'no resource type in the Service Authorization Reference',
  'iot:DetachThingPrincipal': 'no resource type in the Service Authorization Reference',
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

  test('idempotency table has the id key and the expiration TTL', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      TimeToLiveSpecification: { AttributeName: 'expiration', Enabled: true },
    });
  });

  test('every table is on-demand, KMS-encrypted, with point-in-time recovery, deletion protection and retained', () => {
    const tables = template.findResources('AWS::DynamoDB::Table');
    expect(Object.keys(tables)).toHaveLength(2);
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
    const ours = ['LifecycleJitrFunction', 'LifecycleApiFunction', 'LifecycleIotCaRegistrationHandler'].map((prefix) => functions[functionLogicalId(template, prefix)]);
    for (const fn of ours) {
      expect(fn?.Properties).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], TracingConfig: { Mode: 'Active' } });
    }
  });

  test('the API function gets every configuration variable the functions read', () => {
    const fn = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleApiFunction')];
    expect(Object.keys(fn?.Properties.Environment.Variables).sort()).toEqual([...Object.keys(ENVIRONMENT), 'NODE_OPTIONS'].sort());
    expect(fn?.Properties.Environment.Variables).toMatchObject({
      CA_ARN: caArn(),
      CA_SIGNING_ALGORITHM: 'SHA256WITHECDSA',
      CA_TEMPLATE_ARN: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityClientAuthCertificate/V1']] },
      ENROLLMENT_POLICY: 'preregistered',
      CERTIFICATE_VALIDITY_DAYS: '365',
    });
  });

  test('the JITR function gets the table, CA, thing group and enrollment policy variables', () => {
    const fn = template.findResources('AWS::Lambda::Function')[functionLogicalId(template, 'LifecycleJitrFunction')];
    expect(Object.keys(fn?.Properties.Environment.Variables)).toEqual(expect.arrayContaining(['DEVICE_TABLE_NAME', 'CA_ARN', 'THING_GROUP_NAME', 'ENROLLMENT_POLICY']));
    expect(fn?.Properties.Environment.Variables).not.toHaveProperty('IDEMPOTENCY_TABLE_NAME');
  });

  test('the JITR function retries twice, then sends the event to the dead-letter queue', () => {
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') },
      MaximumRetryAttempts: 2,
      MaximumEventAgeInSeconds: 6 * 3600,
      DestinationConfig: { OnFailure: { Destination: queueArn() } },
    });
  });

  test('the JITR role holds exactly the IoT, Private CA and table actions it needs', () => {
    const actions = statementsOfFunction(template, 'LifecycleJitrFunction').flatMap(actionsOf);
    expect(actions.filter((action) => action.startsWith('iot:')).sort()).toEqual(
      ['iot:AddThingToThingGroup', 'iot:AttachThingPrincipal', 'iot:CreateThing', 'iot:DescribeCertificate', 'iot:DetachThingPrincipal', 'iot:UpdateCertificate'].sort(),
    );
    expect(actions.filter((action) => action.startsWith('acm-pca:')).sort()).toEqual(['acm-pca:GetCertificateAuthorityCertificate', 'acm-pca:RevokeCertificate']);
    expect(actions).toEqual(expect.arrayContaining(['dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem']));
  });

  test('the API role may issue certificates only with the device template, on this CA only', () => {
    expect(statementsOfFunction(template, 'LifecycleApiFunction')).toContainEqual({
      Effect: 'Allow',
      Action: 'acm-pca:IssueCertificate',
      Resource: caArn(),
      Condition: { StringEquals: { 'acm-pca:TemplateArn': { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':acm-pca:::template/EndEntityClientAuthCertificate/V1']] } } },
    });
  });

  test('the API role holds the IoT actions of the API, AttachPolicy only on certificates and the thing group', () => {
    const statements = statementsOfFunction(template, 'LifecycleApiFunction');
    expect(statements.flatMap(actionsOf).filter((action) => action.startsWith('iot:')).sort()).toEqual(
      [
        'iot:AddThingToThingGroup',
        'iot:AttachPolicy',
        'iot:AttachThingPrincipal',
        'iot:CreateThing',
        'iot:DescribeCertificate',
        'iot:DetachPolicy',
        'iot:DetachThingPrincipal',
        'iot:RegisterCertificate',
        'iot:RegisterCertificateWithoutCA',
        'iot:UpdateCertificate',
      ].sort(),
    );
    const attach = statements.find((statement) => actionsOf(statement).includes('iot:AttachPolicy'));
    expect(resolve(attach?.Resource)).toEqual([
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':iot:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':cert/*']] },
      { 'Fn::GetAtt': [Object.keys(template.findResources('AWS::IoT::ThingGroup'))[0], 'Arn'] },
    ]);
  });

  test('the API role covers every action the AWS adapters declare they call', () => {
    const actions = statementsOfFunction(template, 'LifecycleApiFunction').flatMap(actionsOf);
    expect(actions).toEqual(expect.arrayContaining([...IOT_REGISTRY_IAM_ACTIONS, ...PRIVATE_CA_IAM_ACTIONS]));
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
        Actions: [{ Lambda: { FunctionArn: { 'Fn::GetAtt': [functionLogicalId(template, 'LifecycleJitrFunction'), 'Arn'] } } }],
        ErrorAction: { Sqs: { QueueUrl: { Ref: Object.keys(template.findResources('AWS::SQS::Queue'))[0] }, RoleArn: Match.anyValue(), UseBase64: false } },
      },
    });
  });

  test('lets AWS IoT invoke the JITR function from that rule only', () => {
    const [rule] = Object.keys(template.findResources('AWS::IoT::TopicRule'));
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'iot.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [functionLogicalId(template, 'LifecycleJitrFunction'), 'Arn'] },
      SourceArn: { 'Fn::GetAtt': [rule, 'Arn'] },
      SourceAccount: { Ref: 'AWS::AccountId' },
    });
  });

  test('lets the rule role (assumable by AWS IoT of this account only) send to the dead-letter queue', () => {
    template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [{ Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'iot.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } }],
      },
    });
  });

  test('the dead-letter queue is encrypted and refuses requests without TLS', () => {
    template.hasResourceProperties('AWS::SQS::Queue', { SqsManagedSseEnabled: true, MessageRetentionPeriod: 14 * 24 * 3600 });
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
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
  test('has the eight routes, every method with AWS_IAM authorization and the request validator', () => {
    const methods = Object.values(template.findResources('AWS::ApiGateway::Method'));
    expect(methods).toHaveLength(DEVICE_API_ROUTES.length);
    const [validator] = Object.keys(template.findResources('AWS::ApiGateway::RequestValidator'));
    for (const method of methods) {
      expect(method.Properties).toMatchObject({ AuthorizationType: 'AWS_IAM', RequestValidatorId: { Ref: validator }, Integration: { Type: 'AWS_PROXY' } });
    }
    const paths = Object.values(template.findResources('AWS::ApiGateway::Resource')).map((resource) => resource.Properties.PathPart);
    expect(paths.sort()).toEqual(['certificates', 'devices', 'resume', 'revoke', 'revoke', 'suspend', '{certificateId}', '{deviceId}'].sort());
  });

  test('validates bodies and parameters', () => {
    template.hasResourceProperties('AWS::ApiGateway::RequestValidator', { ValidateRequestBody: true, ValidateRequestParameters: true });
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'GET',
      RequestParameters: { 'method.request.querystring.status': true, 'method.request.querystring.limit': false, 'method.request.querystring.nextToken': false },
    });
    template.hasResourceProperties('AWS::ApiGateway::Model', { Name: 'SignCsr', Schema: Match.objectLike({ required: ['csr'], additionalProperties: false }) });
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
  test('alarms when the dead-letter queue holds a message and when functions fail', () => {
    template.resourceCountIs('AWS::CloudWatch::Alarm', 4);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Namespace: 'AWS/SQS',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Namespace: 'AWS/Lambda',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') } }],
    });
  });

  test('outputs the API URL, the endpoint lookup, the CA, its IoT id, the table and the thing group', () => {
    const outputs = template.findOutputs('*');
    expect(Object.keys(outputs)).toEqual(expect.arrayContaining(['ApiUrl', 'IotDataEndpoint', 'CaArn', 'CaCertificateId', 'DeviceTableName', 'ThingGroupName']));
    expect(outputs.IotDataEndpoint?.Value).toBe('aws iot describe-endpoint --endpoint-type iot:Data-ATS');
  });
});
