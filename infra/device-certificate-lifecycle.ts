import { Aws, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as acmpca from 'aws-cdk-lib/aws-acmpca';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { DEVICE_TABLE_SCHEMA } from '../functions/adapters/aws/device-table';
import { iotRegistryIamActions } from '../functions/adapters/aws/iot-device-registry';
import { fleetPolicyDocument } from '../functions/policy/fleet-policy';
import { NewCertificateAuthority, type CaSubject, type SubordinateCaCertificate } from './certificate-authority';
import { API_INTEGRATION_TIMEOUT, DeviceApi } from './device-api';
import { ExpiryMonitor } from './expiry-monitor';
import { IotCaRegistration } from './iot-ca-registration';
import { HANDLER_ENTRIES, LifecycleFunction, privateCaTemplateArn, roleWritingTo, type CertificateAuthorityBinding, type FleetBinding } from './lifecycle-function';
import { REGISTRY_MODES } from '../functions/handlers/config';
import {
  CaKeyAlgorithm,
  CaType,
  CaUsageMode,
  DEFAULTS,
  EnrollmentPolicy,
  SIGNING_ALGORITHMS,
  checkCaArn,
  checkCaExpiryAlarmDays,
  checkCaValidityYears,
  checkCertificateValidityDays,
  checkExpiryMonitorSchedule,
  checkExpiryWarningDays,
  checkNamePrefix,
  checkTopicRoot,
  fail,
  ruleNameFrom,
} from './settings';

/** Stage throttling of the device API. */
export interface ApiThrottling {
  /** Steady requests per second. */
  readonly rateLimit: number;
  /** Burst size, in requests. */
  readonly burstLimit: number;
}

export interface DeviceCertificateLifecycleProps {
  /**
   * An existing AWS Private CA to issue device certificates from (ACTIVE, in this account and region).
   * The construct registers it with AWS IoT but never changes or deletes it.
   * @default - a new AWS Private CA is created (see `caType`, `caKeyAlgorithm`, `caUsageMode`)
   */
  readonly existingCertificateAuthority?: acmpca.ICertificateAuthority;

  /**
   * ROOT or SUBORDINATE, for a new CA only. A SUBORDINATE CA needs a second deployment with
   * `subordinateCaCertificate` (docs/deploy.md says how to get it signed).
   * @default CaType.ROOT
   */
  readonly caType?: CaType;

  /**
   * The key algorithm of the new CA; for an existing CA, the one it has (it sets the signing algorithm).
   * @default CaKeyAlgorithm.EC_PRIME256V1
   */
  readonly caKeyAlgorithm?: CaKeyAlgorithm;

  /**
   * The usage mode of the new CA; for an existing CA, the mode it was created in (it bounds the validity).
   * @default CaUsageMode.GENERAL_PURPOSE
   */
  readonly caUsageMode?: CaUsageMode;

  /**
   * Subject of a new CA.
   * @default - { commonName: `${namePrefix} device CA` }
   */
  readonly caSubject?: CaSubject;

  /**
   * Validity of a new ROOT CA certificate, in years.
   * @default 10
   */
  readonly caValidityYears?: number;

  /**
   * The certificate your parent CA signed for a new SUBORDINATE CA, and its chain. Until it is given,
   * the CA waits in PENDING_CERTIFICATE state and nothing that needs it to sign (the AWS IoT
   * registration and the just-in-time registration rule) is created.
   * @default - none: a SUBORDINATE CA stays pending
   */
  readonly subordinateCaCertificate?: SubordinateCaCertificate;

  /**
   * Validity of device certificates signed from CSRs, in days: at most 7 in SHORT_LIVED_CERTIFICATE mode.
   * @default 365 (GENERAL_PURPOSE) or 7 (SHORT_LIVED_CERTIFICATE)
   */
  readonly certificateValidityDays?: number;

  /**
   * Who may register on first connect.
   * @default EnrollmentPolicy.PREREGISTERED
   */
  readonly enrollmentPolicy?: EnrollmentPolicy;

  /**
   * What happens to the tables, the CRL bucket, log groups and a new CA when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;

  /**
   * Prefix of the names of the thing group, IoT policy, topic rule and API.
   * @default 'iot-cert-lifecycle'
   */
  readonly namePrefix?: string;

  /**
   * Topic root of the fleet policy: each device owns `<topicRoot>/<thingName>/...`.
   * @default 'devices'
   */
  readonly topicRoot?: string;

  /**
   * Retention of every log group the construct creates.
   * @default RetentionDays.ONE_YEAR
   */
  readonly logRetention?: RetentionDays;

  /**
   * Stage throttling of the device API.
   * @default { rateLimit: 10, burstLimit: 20 }
   */
  readonly apiThrottling?: ApiThrottling;

  /**
   * A regional AWS WAFv2 web ACL ARN to associate with the API stage.
   * @default - no web ACL (every method still requires SigV4)
   */
  readonly webAclArn?: string;

  /**
   * Where the alarms notify.
   * @default - alarms without actions (visible in the CloudWatch console)
   */
  readonly alarmTopic?: sns.ITopic;

  /**
   * When the expiry monitor runs. At least daily: the CA expiry alarm treats a day without data as breaching
   * (a `rate(...)` longer than a day fails the synth).
   * @default Schedule.expression('rate(1 day)')
   */
  readonly expiryMonitorSchedule?: events.Schedule;

  /**
   * The expiry monitor counts live device certificates with fewer days left than this, and logs their devices.
   * @default 30, or 2 in SHORT_LIVED_CERTIFICATE mode (where every certificate lives 7 days at most)
   */
  readonly expiryWarningDays?: number;

  /**
   * The CA expiry alarm fires when the CA certificate, or a certificate of its chain, has fewer days left than
   * this. It must exceed `certificateValidityDays`: after that point a device certificate of full validity would
   * outlive the CA.
   * @default - `certificateValidityDays` + 90 (455 with the general-purpose defaults, 97 in short-lived mode)
   */
  readonly caExpiryAlarmDays?: number;
}

/** The props with every default applied and every rule checked: what the construct builds from. */
export interface ResolvedSettings {
  readonly newCa: boolean;
  readonly caType: CaType;
  readonly caKeyAlgorithm: CaKeyAlgorithm;
  readonly caUsageMode: CaUsageMode;
  readonly caSubject: CaSubject;
  readonly caValidityYears: number;
  readonly certificateValidityDays: number;
  readonly enrollmentPolicy: EnrollmentPolicy;
  readonly removalPolicy: RemovalPolicy;
  readonly namePrefix: string;
  readonly topicRoot: string;
  readonly logRetention: RetentionDays;
  readonly apiThrottling: ApiThrottling;
  readonly expiryMonitorSchedule: events.Schedule;
  readonly expiryWarningDays: number;
  readonly caExpiryAlarmDays: number;
}

/** Applies the defaults of settings.ts and fails with a message naming the prop when a combination cannot work. */
export function resolveSettings(props: DeviceCertificateLifecycleProps): ResolvedSettings {
  const existing = props.existingCertificateAuthority;
  const newCa = existing === undefined;
  if (existing) {
    checkCaArn(existing.certificateAuthorityArn);
    for (const [name, value] of Object.entries({ caType: props.caType, caSubject: props.caSubject, caValidityYears: props.caValidityYears, subordinateCaCertificate: props.subordinateCaCertificate })) {
      if (value !== undefined) fail(`${name} applies only to a CA this stack creates; it cannot change the existing CA ${existing.certificateAuthorityArn}.`);
    }
  }
  const caType = props.caType ?? DEFAULTS.caType;
  if (props.subordinateCaCertificate && caType !== CaType.SUBORDINATE) fail('subordinateCaCertificate applies only when caType is SUBORDINATE.');
  const caUsageMode = props.caUsageMode ?? DEFAULTS.caUsageMode;
  const namePrefix = props.namePrefix ?? DEFAULTS.namePrefix;
  checkNamePrefix(namePrefix);
  const topicRoot = props.topicRoot ?? DEFAULTS.topicRoot;
  checkTopicRoot(topicRoot);
  const certificateValidityDays = props.certificateValidityDays ?? DEFAULTS.certificateValidityDays[caUsageMode];
  checkCertificateValidityDays(certificateValidityDays, caUsageMode);
  const caValidityYears = props.caValidityYears ?? DEFAULTS.caValidityYears;
  checkCaValidityYears(caValidityYears);
  if (newCa && caType === CaType.ROOT && certificateValidityDays > caValidityYears * 365) {
    fail(`certificateValidityDays (${certificateValidityDays}) outlasts the root CA (${caValidityYears} years): shorten it or raise caValidityYears.`);
  }
  const apiThrottling = props.apiThrottling ?? DEFAULTS.apiThrottling;
  if (!(apiThrottling.rateLimit > 0) || !Number.isInteger(apiThrottling.burstLimit) || apiThrottling.burstLimit < 1) {
    fail(`apiThrottling needs a positive rateLimit and a whole positive burstLimit (got ${apiThrottling.rateLimit} and ${apiThrottling.burstLimit}).`);
  }
  const expiryMonitorSchedule = props.expiryMonitorSchedule ?? events.Schedule.expression(DEFAULTS.expiryMonitor.schedule);
  checkExpiryMonitorSchedule(expiryMonitorSchedule);
  const expiryWarningDays = props.expiryWarningDays ?? DEFAULTS.expiryMonitor.warningDays[caUsageMode];
  checkExpiryWarningDays(expiryWarningDays);
  const caExpiryAlarmDays = props.caExpiryAlarmDays ?? certificateValidityDays + DEFAULTS.expiryMonitor.caAlarmLeadDays;
  checkCaExpiryAlarmDays(caExpiryAlarmDays, certificateValidityDays);
  return {
    newCa,
    caType,
    caKeyAlgorithm: props.caKeyAlgorithm ?? DEFAULTS.caKeyAlgorithm,
    caUsageMode,
    caSubject: props.caSubject ?? { commonName: `${namePrefix} device CA` },
    caValidityYears,
    certificateValidityDays,
    enrollmentPolicy: props.enrollmentPolicy ?? DEFAULTS.enrollmentPolicy,
    removalPolicy: props.removalPolicy ?? DEFAULTS.removalPolicy,
    namePrefix,
    topicRoot,
    logRetention: props.logRetention ?? DEFAULTS.logRetention,
    apiThrottling,
    expiryMonitorSchedule,
    expiryWarningDays,
    caExpiryAlarmDays,
  };
}

/**
 * The certificate lifecycle of an IoT fleet on AWS: an AWS Private CA (new or existing) registered
 * with AWS IoT for just-in-time registration; the rule and function that onboard a device on its first
 * connect, with the queue between them that paces onboarding bursts; the device REST API (sign CSRs,
 * revoke, suspend, resume, read, list); the DynamoDB tables; the fleet IoT policy attached to the fleet's
 * thing group; a dead-letter queue and alarms; and the expiry monitor, which alarms well before the CA expires.
 */
export class DeviceCertificateLifecycle extends Construct {
  public readonly settings: ResolvedSettings;
  public readonly certificateAuthorityArn: string;
  /** Set when the construct created the CA. */
  public readonly newCertificateAuthority?: NewCertificateAuthority;
  /** The CA's id in AWS IoT; undefined while a new SUBORDINATE CA waits for its certificate. */
  public readonly caCertificateId?: string;
  public readonly iotCaRegistration?: IotCaRegistration;
  public readonly registrationRule?: iot.CfnTopicRule;
  public readonly deviceTable: dynamodb.Table;
  public readonly thingGroup: iot.CfnThingGroup;
  public readonly fleetPolicy: iot.CfnPolicy;
  public readonly jitrFunction: LifecycleFunction;
  public readonly apiFunction: LifecycleFunction;
  public readonly api: DeviceApi;
  /**
   * Where the registration rule delivers AWS IoT registration events; the JITR function consumes it at a
   * bounded concurrency, so an onboarding burst waits in the queue instead of being throttled away.
   */
  public readonly registrationQueue: sqs.Queue;
  /**
   * Registration events that could not be processed: those the JITR function failed on `maxReceiveCount`
   * times (the registration queue's redrive), and those the rule could not deliver (its error action).
   */
  public readonly deadLetterQueue: sqs.Queue;
  /**
   * The scheduled function that publishes the CA's days to expiry and the device certificates expiring soon, with
   * its alarms; undefined while a new SUBORDINATE CA waits for its certificate (there is nothing to read yet).
   */
  public readonly expiryMonitor?: ExpiryMonitor;
  /** Every alarm of the construct, the expiry monitor's included. */
  public readonly alarms: readonly cloudwatch.Alarm[];

  public constructor(scope: Construct, id: string, props: DeviceCertificateLifecycleProps = {}) {
    super(scope, id);
    const settings = resolveSettings(props);
    this.settings = settings;
    const stack = Stack.of(this);

    // --- the CA -------------------------------------------------------------------------------
    let caIsActive = true;
    if (props.existingCertificateAuthority) {
      this.certificateAuthorityArn = props.existingCertificateAuthority.certificateAuthorityArn;
    } else {
      this.newCertificateAuthority = new NewCertificateAuthority(this, 'CertificateAuthority', {
        type: settings.caType,
        keyAlgorithm: settings.caKeyAlgorithm,
        usageMode: settings.caUsageMode,
        subject: settings.caSubject,
        validityYears: settings.caValidityYears,
        subordinateCertificate: props.subordinateCaCertificate,
        removalPolicy: settings.removalPolicy,
      });
      this.certificateAuthorityArn = this.newCertificateAuthority.certificateAuthorityArn;
      caIsActive = this.newCertificateAuthority.isActive;
    }
    const ca: CertificateAuthorityBinding = {
      certificateAuthorityArn: this.certificateAuthorityArn,
      signingAlgorithm: SIGNING_ALGORITHMS[settings.caKeyAlgorithm],
      deviceTemplateArn: privateCaTemplateArn(stack, 'EndEntityClientAuthCertificate/V1'),
    };

    // --- the store ----------------------------------------------------------------------------
    this.deviceTable = new dynamodb.Table(this, 'DeviceTable', {
      ...tableDefaults(settings.removalPolicy),
      partitionKey: { name: DEVICE_TABLE_SCHEMA.partitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: DEVICE_TABLE_SCHEMA.sortKey, type: dynamodb.AttributeType.STRING },
      // Operation records carry an expiry (epoch seconds) and age out; devices, certificates and audit events never do.
      timeToLiveAttribute: DEVICE_TABLE_SCHEMA.timeToLiveAttribute,
    });
    for (const index of [DEVICE_TABLE_SCHEMA.byStatusIndex, DEVICE_TABLE_SCHEMA.byExpiryIndex]) {
      this.deviceTable.addGlobalSecondaryIndex({
        indexName: index.indexName,
        partitionKey: { name: index.partitionKey, type: dynamodb.AttributeType.STRING },
        sortKey: { name: index.sortKey, type: dynamodb.AttributeType.STRING },
        projectionType: dynamodb.ProjectionType.ALL,
      });
    }

    // --- the fleet: thing group, IoT policy, and the policy attached to the group ---------------
    this.thingGroup = new iot.CfnThingGroup(this, 'ThingGroup', {
      thingGroupName: `${settings.namePrefix}-devices`,
      thingGroupProperties: { thingGroupDescription: 'Every device onboarded by the certificate lifecycle; the fleet policy applies through it.' },
    });
    this.fleetPolicy = new iot.CfnPolicy(this, 'FleetPolicy', {
      policyName: `${settings.namePrefix}-fleet`,
      policyDocument: fleetPolicyDocument({ region: Aws.REGION, accountId: Aws.ACCOUNT_ID, partition: Aws.PARTITION, topicRoot: settings.topicRoot }),
    });
    this.attachPolicyToThingGroup(settings);
    const fleet: FleetBinding = { thingGroupName: this.thingGroup.ref, thingGroupArn: this.thingGroup.attrArn };

    // --- the registration queue and its dead letters ------------------------------------------------
    this.deadLetterQueue = new sqs.Queue(this, 'RegistrationDeadLetterQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(DEFAULTS.deadLetterRetentionDays),
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue: the registration queue redrives into it, and the registration rule error action sends to it.',
    });
    const jitrTimeout = Duration.seconds(DEFAULTS.jitrTimeoutSeconds);
    this.registrationQueue = new sqs.Queue(this, 'RegistrationQueue', {
      // SQS-managed keys: AWS IoT can send to the queue without KMS permissions on its role.
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      visibilityTimeout: Duration.seconds(jitrTimeout.toSeconds() * DEFAULTS.registrationQueue.visibilityTimeoutFactor),
      retentionPeriod: Duration.days(DEFAULTS.registrationQueue.retentionDays),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: DEFAULTS.registrationQueue.maxReceiveCount },
    });

    // --- functions ---------------------------------------------------------------------------------
    const issuance = { enrollmentPolicy: settings.enrollmentPolicy, certificateValidityDays: settings.certificateValidityDays };
    this.jitrFunction = new LifecycleFunction(this, 'JitrFunction', {
      entry: HANDLER_ENTRIES.jitr,
      description: 'Just-in-time registration: onboards a device on its first connect (from the registration queue)',
      timeout: jitrTimeout,
      logRetention: settings.logRetention,
      removalPolicy: settings.removalPolicy,
    })
      .useDeviceTable(this.deviceTable)
      // RevokeCertificate and DetachThingPrincipal: compensation, undoing an onboarding that must not stand
      // (e.g. the device was suspended or revoked while its certificate was being activated).
      .useCertificateAuthority(ca, ['acm-pca:GetCertificateAuthorityCertificate', 'acm-pca:RevokeCertificate'])
      .useFleet(fleet, ['iot:DescribeCertificate', 'iot:UpdateCertificate', 'iot:CreateThing', 'iot:AddThingToThingGroup', 'iot:AttachThingPrincipal', 'iot:DetachThingPrincipal'])
      .useIssuancePolicy(issuance);
    // Failed records are reported one by one (batchItemFailures) and come back after the visibility timeout;
    // maxConcurrency holds the pollers back instead of letting Lambda throttle (which would burn receive counts).
    this.jitrFunction.addEventSource(
      new SqsEventSource(this.registrationQueue, {
        batchSize: DEFAULTS.registrationQueue.batchSize,
        reportBatchItemFailures: true,
        maxConcurrency: DEFAULTS.registrationQueue.maxConcurrency,
      }),
    );

    this.apiFunction = new LifecycleFunction(this, 'ApiFunction', {
      entry: HANDLER_ENTRIES.api,
      description: 'Device certificate lifecycle REST API',
      // As long as API Gateway waits (API_INTEGRATION_TIMEOUT, 29 s). Signing a CSR waits for AWS Private CA
      // (IssueCertificate, then GetCertificate until ready) at most maxWaitMs = 15 000 ms (the Private CA adapter
      // in functions/handlers/dependencies.ts), which leaves about 14 s for DynamoDB and AWS IoT.
      timeout: API_INTEGRATION_TIMEOUT,
      logRetention: settings.logRetention,
      removalPolicy: settings.removalPolicy,
    })
      .useDeviceTable(this.deviceTable)
      .useCertificateAuthority(ca, ['acm-pca:IssueCertificate', 'acm-pca:GetCertificate', 'acm-pca:RevokeCertificate', 'acm-pca:GetCertificateAuthorityCertificate'])
      // Exactly what the IoT registry adapter calls in the modes functions/handlers/dependencies.ts wires it with.
      .useFleet(fleet, iotRegistryIamActions(API_REGISTRY_MODES))
      .useIssuancePolicy(issuance);
    acknowledgeFunctionWildcards(this.jitrFunction, this.deviceTable, 'xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing) have no resource type, so IAM only accepts "*".');
    acknowledgeFunctionWildcards(
      this.apiFunction,
      this.deviceTable,
      'iot:RegisterCertificate has no resource type in the Service Authorization Reference, so IAM only accepts "*"; neither do xray:PutTraceSegments and xray:PutTelemetryRecords (X-Ray tracing).',
    );

    // --- AWS IoT registration of the CA, and the JITR rule on its registration events ---------------
    if (caIsActive) {
      this.iotCaRegistration = new IotCaRegistration(this, 'IotCaRegistration', {
        certificateAuthorityArn: this.certificateAuthorityArn,
        signingAlgorithm: ca.signingAlgorithm,
        logRetention: settings.logRetention,
        removalPolicy: settings.removalPolicy,
      });
      if (this.newCertificateAuthority?.activation) this.iotCaRegistration.node.addDependency(this.newCertificateAuthority.activation);
      this.caCertificateId = this.iotCaRegistration.caCertificateId;
      this.registrationRule = this.registrationRuleFor(this.caCertificateId, settings);

      // --- the expiry monitor: the CA's and the device certificates' expiry --------------------------------
      this.expiryMonitor = new ExpiryMonitor(this, 'ExpiryMonitor', {
        deviceTable: this.deviceTable,
        certificateAuthority: ca,
        schedule: settings.expiryMonitorSchedule,
        warningDays: settings.expiryWarningDays,
        caExpiryAlarmDays: settings.caExpiryAlarmDays,
        metricsServiceName: settings.namePrefix,
        logRetention: settings.logRetention,
        removalPolicy: settings.removalPolicy,
        alarmTopic: props.alarmTopic,
      });
    }

    // --- the API ---------------------------------------------------------------------------------------
    this.api = new DeviceApi(this, 'Api', {
      handler: this.apiFunction,
      apiName: `${settings.namePrefix}-devices`,
      throttling: settings.apiThrottling,
      logRetention: settings.logRetention,
      removalPolicy: settings.removalPolicy,
      webAclArn: props.webAclArn,
    });

    this.alarms = [...this.createAlarms(props.alarmTopic), ...(this.expiryMonitor?.alarms ?? [])];
  }

  /**
   * AttachPolicy on the thing group (CloudFormation's PolicyPrincipalAttachment takes no thing
   * group), so devices get the policy by joining the group and never hit the 15 TPS AttachPolicy quota.
   */
  private attachPolicyToThingGroup(settings: ResolvedSettings): cr.AwsCustomResource {
    const call = (action: 'attachPolicy' | 'detachPolicy'): cr.AwsSdkCall => ({
      service: 'Iot',
      action,
      parameters: { policyName: this.fleetPolicy.ref, target: this.thingGroup.attrArn },
      physicalResourceId: cr.PhysicalResourceId.of(`${settings.namePrefix}-fleet-policy-on-thing-group`),
      ...(action === 'detachPolicy' ? { ignoreErrorCodesMatching: 'ResourceNotFoundException' } : {}),
    });
    const logGroup = new LogGroup(this, 'FleetPolicyAttachmentLogs', { retention: settings.logRetention, removalPolicy: settings.removalPolicy });
    const attachment = new cr.AwsCustomResource(this, 'FleetPolicyAttachment', {
      onCreate: call('attachPolicy'),
      onUpdate: call('attachPolicy'),
      onDelete: call('detachPolicy'),
      // AttachPolicy/DetachPolicy are authorized against their target: this one thing group only.
      policy: cr.AwsCustomResourcePolicy.fromStatements([new iam.PolicyStatement({ actions: ['iot:AttachPolicy', 'iot:DetachPolicy'], resources: [this.thingGroup.attrArn] })]),
      installLatestAwsSdk: false,
      logGroup,
      role: roleWritingTo(this, 'FleetPolicyAttachmentRole', logGroup),
    });
    attachment.node.addDependency(this.fleetPolicy, this.thingGroup);
    return attachment;
  }

  private registrationRuleFor(caCertificateId: string, settings: ResolvedSettings): iot.CfnTopicRule {
    // One role per action, each allowed sqs:SendMessage to its one queue and nothing else.
    const sendRole = (id: string, description: string, queue: sqs.IQueue) => {
      const role = new iam.Role(this, id, {
        description,
        assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } } }),
      });
      role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [queue.queueArn] }));
      return role;
    };
    const queueRole = sendRole('RegistrationRuleRole', 'Lets the JITR topic rule send registration events to the registration queue', this.registrationQueue);
    const errorRole = sendRole('RegistrationRuleErrorRole', 'Lets the JITR topic rule send events it could not deliver to the dead-letter queue', this.deadLetterQueue);
    return new iot.CfnTopicRule(this, 'RegistrationRule', {
      ruleName: ruleNameFrom(settings.namePrefix, 'jitr'),
      topicRulePayload: {
        description: 'Queues AWS IoT certificate registration events of the device CA for the JITR function',
        sql: `SELECT * FROM '$aws/events/certificates/registered/${caCertificateId}'`,
        awsIotSqlVersion: '2016-03-23',
        ruleDisabled: false,
        actions: [{ sqs: { queueUrl: this.registrationQueue.queueUrl, roleArn: queueRole.roleArn, useBase64: false } }],
        errorAction: { sqs: { queueUrl: this.deadLetterQueue.queueUrl, roleArn: errorRole.roleArn, useBase64: false } },
      },
    });
  }

  private createAlarms(topic: sns.ITopic | undefined): cloudwatch.Alarm[] {
    const fiveMinutes = Duration.minutes(5);
    const alarm = (id: string, metric: cloudwatch.IMetric, description: string, threshold = 1) => {
      const created = new cloudwatch.Alarm(this, id, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
      });
      if (topic) created.addAlarmAction(new SnsAction(topic));
      return created;
    };
    const oldestMessageAlarmSeconds = DEFAULTS.registrationQueue.oldestMessageAlarmMinutes * 60;
    return [
      alarm(
        'DeadLetterQueueNotEmptyAlarm',
        this.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
        'A registration event could not be processed: a device may be stuck in PENDING_ACTIVATION. Inspect the dead-letter queue, then redrive it (docs/deploy.md).',
      ),
      alarm(
        'RegistrationQueueBacklogAlarm',
        this.registrationQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: cloudwatch.Stats.MAXIMUM }),
        `A registration event has waited ${DEFAULTS.registrationQueue.oldestMessageAlarmMinutes} minutes or more: onboarding is not keeping up or the JITR function keeps failing.`,
        oldestMessageAlarmSeconds,
      ),
      alarm('JitrErrorsAlarm', this.jitrFunction.metricErrors({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The JITR function crashed or timed out; its batch comes back through the registration queue.'),
      alarm('ApiFunctionErrorsAlarm', this.apiFunction.metricErrors({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The device API function crashed.'),
      alarm('ApiServerErrorsAlarm', this.api.restApi.metricServerError({ period: fiveMinutes, statistic: cloudwatch.Stats.SUM }), 'The device API answered 5XX.'),
    ];
  }
}

/** The table settings every table gets: on-demand, point-in-time recovery, KMS encryption, guarded deletion. */
export function tableDefaults(removalPolicy: RemovalPolicy): Pick<dynamodb.TableProps, 'billingMode' | 'pointInTimeRecoverySpecification' | 'encryption' | 'removalPolicy' | 'deletionProtection'> {
  return {
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    encryption: dynamodb.TableEncryption.AWS_MANAGED,
    removalPolicy,
    deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
  };
}

/**
 * The modes the API function's IoT registry adapter runs in (functions/handlers/dependencies.ts): the fleet
 * policy is attached to the thing group and certificates are registered with the CA, so the API role gets
 * neither AttachPolicy/DetachPolicy (which on cert/* would let it attach any IoT policy of the account)
 * nor RegisterCertificateWithoutCA.
 */
/** The modes the API function's registry runs in (set in functions/handlers/config.ts); its role is granted for exactly these. */
export const API_REGISTRY_MODES = REGISTRY_MODES;

/** The IAM5 findings of a function role, each with the reason it cannot be narrower. */
function acknowledgeFunctionWildcards(fn: LifecycleFunction, deviceTable: dynamodb.Table, starReason: string): void {
  const stack = Stack.of(fn);
  const iotArn = 'arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>';
  const reasons: Record<string, string> = {
    'Resource::*': starReason,
    [`Resource::${iotArn}:cert/*`]:
      'Device certificate ids (SHA-256 fingerprints) are only known at run time; the grant is limited to certificates of this account and region ' +
      '(DescribeCertificate, UpdateCertificate, and AttachThingPrincipal/DetachThingPrincipal, which IAM authorizes against the certificate).',
    [`Resource::${iotArn}:thing/*`]: 'Thing names are device ids, only known at run time; the grant is limited to things of this account and region.',
    [`Resource::<${stack.getLogicalId(deviceTable.node.defaultChild as dynamodb.CfnTable)}.Arn>/index/*`]:
      'The indexes of the device table (ByStatus, ByExpiry), which the store queries to list devices by status and certificates by expiry.',
  };
  for (const [finding, reason] of Object.entries(reasons)) Validations.of(fn.executionRole).acknowledge({ id: `AwsSolutions-IAM5[${finding}]`, reason });
}

export { CaKeyAlgorithm, CaType, CaUsageMode, EnrollmentPolicy };
