import { Stack, type RemovalPolicy } from 'aws-cdk-lib';
import type * as acmpca from 'aws-cdk-lib/aws-acmpca';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as iot from 'aws-cdk-lib/aws-iot';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { NewCertificateAuthority, type CaSubject, type SubordinateCaCertificate } from './certificate-authority';
import type { DeviceApi } from './device-api';
import { addDeviceApi } from './device-api-function';
import { addDeviceTable } from './device-table';
import type { ExpiryMonitor } from './expiry-monitor';
import { addFleet } from './fleet';
import { IotCaRegistration } from './iot-ca-registration';
import { privateCaTemplateArn, type CertificateAuthorityBinding, type LifecycleFunction } from './lifecycle-function';
import { addMonitoring, addRotationAlarms } from './monitoring';
import { addRegistrationPipeline } from './registration-pipeline';
import { addRotationPipeline } from './rotation-pipeline';
import { CaKeyAlgorithm, CaType, CaUsageMode, EnrollmentPolicy, SIGNING_ALGORITHMS, resolveSettings, type ResolvedSettings } from './settings';

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
   * AWS Private CAs this stack issued from before (a CA rotation, docs/deploy.md "Rotating the CA"): they sign
   * nothing any more, but their AWS IoT registrations stay ACTIVE with auto-registration on, and JITR, rotation and
   * connects accept their devices until an operator deactivates them (docs/deploy.md, "Rotating the CA").
   * @default - none
   */
  readonly previousCertificateAuthorities?: readonly acmpca.ICertificateAuthority[];

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
   * Topic root of the fleet policy: each device owns `<topicRoot>/<thingName>/...`. Certificate rotation (protocol
   * version 1) uses `devices/<thingName>/certificates/...`: with another root, devices cannot rotate over MQTT (the
   * synth warns).
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
   * The expiry monitor tells each device with an ACTIVE certificate in the warning window to renew it, on
   * `devices/<thing>/certificates/expiring` (docs/rotation.md), at most this many notices per second; 0: no notices.
   * @default 20
   */
  readonly renewalNoticesPerSecond?: number;

  /**
   * The CA expiry alarm fires when the CA certificate, or a certificate of its chain, has fewer days left than
   * this. It must exceed `certificateValidityDays`: after that point a device certificate of full validity would
   * outlive the CA.
   * @default - `certificateValidityDays` + 90 (455 with the general-purpose defaults, 97 in short-lived mode)
   */
  readonly caExpiryAlarmDays?: number;

  /**
   * How long a device has, after its rotation was accepted, to connect with the new certificate and commit it, in
   * whole hours (1 to 720). Past it the sweep withdraws the new certificate and the old one stays (docs/rotation.md).
   * @default 6
   */
  readonly rotationCommitHours?: number;

  /**
   * Minutes between two runs of the sweep that withdraws rotations past their commit deadline (1 to 1440, and at
   * most the commit window).
   * @default 15
   */
  readonly rotationSweepMinutes?: number;

  /**
   * Rotation function invocations the rotation queue feeds at once (2 to 1000). Each rotation issues a certificate
   * (AWS Private CA IssueCertificate: 25/s per account, shared with the API) and registers it with AWS IoT.
   * @default 2
   */
  readonly rotationConcurrency?: number;

  /**
   * JITR function invocations the registration queue feeds at once (2 to 1000), each a batch of up to 10 registration
   * events handled in parallel. Raise it after raising the AWS IoT quotas onboarding uses (DescribeCertificate first):
   * docs/performance.md gives the value for a target rate.
   * @default - sized for AWS IoT DescribeCertificate's default quota (10 per second): 2
   */
  readonly registrationConcurrency?: number;
}

/**
 * The certificate lifecycle of an IoT fleet on AWS: an AWS Private CA (new or existing) registered
 * with AWS IoT for just-in-time registration; the rule and function that onboard a device on its first
 * connect, with the queue between them that paces onboarding bursts; the device REST API (sign CSRs,
 * revoke, suspend, resume, read, list); the DynamoDB tables; the fleet IoT policy attached to the fleet's
 * thing group; certificate rotation over MQTT (the rotate and commit rules, their queue and the rotation function with
 * its sweep schedule); dead-letter queues and alarms; and the expiry monitor, which alarms well before the CA expires.
 *
 * Each part is built by its own file (device-table.ts, fleet.ts, registration-pipeline.ts, device-api-function.ts,
 * rotation-pipeline.ts, monitoring.ts) directly in this construct's scope, not in a construct of its own: a resource's logical id comes
 * from its construct path, and a deployed stack must keep its ids (a new id replaces a retained table or the CA).
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
  /**
   * Answers devices' rotate and commit messages (from the rotation queue) and runs the sweep of missed commit deadlines
   * (docs/rotation.md). This and the other `rotation*` members are undefined while a new SUBORDINATE CA waits for its
   * certificate: nothing can be issued yet.
   */
  public readonly rotationFunction?: LifecycleFunction;
  /** Where the rotate and commit rules deliver device messages; the rotation function consumes it at a bounded concurrency. */
  public readonly rotationQueue?: sqs.Queue;
  /** Rotation messages that could not be processed: failed `maxReceiveCount` times, or not delivered by a rule. */
  public readonly rotationDeadLetterQueue?: sqs.Queue;
  /** The topic rules on `devices/+/certificates/rotate` and `devices/+/certificates/commit`. */
  public readonly rotationRules?: Readonly<Record<'rotate' | 'commit', iot.CfnTopicRule>>;
  /** Every alarm of the construct, the expiry monitor's and rotation's included. */
  public readonly alarms: readonly cloudwatch.Alarm[];

  public constructor(scope: Construct, id: string, props: DeviceCertificateLifecycleProps = {}) {
    super(scope, id);
    const settings = resolveSettings(props);
    this.settings = settings;
    const common = { logRetention: settings.logRetention, removalPolicy: settings.removalPolicy };

    // The CA, and its registration with AWS IoT once it can sign.
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
      deviceTemplateArn: privateCaTemplateArn(Stack.of(this), 'EndEntityClientAuthCertificate/V1'),
      previousCertificateAuthorityArns: (props.previousCertificateAuthorities ?? []).map((previous) => previous.certificateAuthorityArn),
    };
    if (caIsActive) {
      this.iotCaRegistration = new IotCaRegistration(this, 'IotCaRegistration', {
        certificateAuthorityArn: this.certificateAuthorityArn,
        previousCertificateAuthorityArns: ca.previousCertificateAuthorityArns,
        signingAlgorithm: ca.signingAlgorithm,
        ...common,
      });
      if (this.newCertificateAuthority?.activation) this.iotCaRegistration.node.addDependency(this.newCertificateAuthority.activation);
      this.caCertificateId = this.iotCaRegistration.caCertificateId;
    }

    this.deviceTable = addDeviceTable(this, settings.removalPolicy);
    const fleet = addFleet(this, { namePrefix: settings.namePrefix, topicRoot: settings.topicRoot, ...common });
    this.thingGroup = fleet.thingGroup;
    this.fleetPolicy = fleet.fleetPolicy;

    const issuance = { enrollmentPolicy: settings.enrollmentPolicy, certificateValidityDays: settings.certificateValidityDays };
    const functionNeeds = { deviceTable: this.deviceTable, certificateAuthority: ca, fleet: fleet.binding, issuance, ...common };
    const pipeline = addRegistrationPipeline(this, { ...functionNeeds, caCertificateId: this.caCertificateId, namePrefix: settings.namePrefix, concurrency: settings.registrationConcurrency });
    this.registrationQueue = pipeline.registrationQueue;
    this.deadLetterQueue = pipeline.deadLetterQueue;
    this.jitrFunction = pipeline.jitrFunction;
    this.registrationRule = pipeline.registrationRule;

    const deviceApi = addDeviceApi(this, { ...functionNeeds, apiName: `${settings.namePrefix}-devices`, throttling: settings.apiThrottling, webAclArn: props.webAclArn });
    this.apiFunction = deviceApi.apiFunction;
    this.api = deviceApi.api;

    const monitoring = addMonitoring(this, {
      registrationQueue: this.registrationQueue,
      deadLetterQueue: this.deadLetterQueue,
      jitrFunction: this.jitrFunction,
      apiFunction: this.apiFunction,
      restApi: this.api.restApi,
      expiry: caIsActive
        ? {
            deviceTable: this.deviceTable,
            certificateAuthority: ca,
            schedule: settings.expiryMonitorSchedule,
            warningDays: settings.expiryWarningDays,
            caExpiryAlarmDays: settings.caExpiryAlarmDays,
            renewalNoticesPerSecond: settings.renewalNoticesPerSecond,
            metricsServiceName: settings.namePrefix,
            driftCheck: { fleet: fleet.binding },
          }
        : undefined,
      alarmTopic: props.alarmTopic,
      ...common,
    });
    this.expiryMonitor = monitoring.expiryMonitor;

    // Rotation, once the CA can sign (like the JITR rule): each rotation issues a certificate.
    let rotationAlarms: cloudwatch.Alarm[] = [];
    if (caIsActive) {
      const rotation = addRotationPipeline(this, {
        ...functionNeeds,
        commitHours: settings.rotationCommitHours,
        sweepMinutes: settings.rotationSweepMinutes,
        concurrency: settings.rotationConcurrency,
        topicRoot: settings.topicRoot,
        namePrefix: settings.namePrefix,
      });
      this.rotationFunction = rotation.rotationFunction;
      this.rotationQueue = rotation.rotationQueue;
      this.rotationDeadLetterQueue = rotation.deadLetterQueue;
      this.rotationRules = rotation.rules;
      rotationAlarms = addRotationAlarms(this, { ...rotation, alarmTopic: props.alarmTopic });
    }
    this.alarms = [...monitoring.alarms, ...rotationAlarms];
  }
}

export { CaKeyAlgorithm, CaType, CaUsageMode, EnrollmentPolicy };
