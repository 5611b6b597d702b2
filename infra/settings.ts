import { Duration, RemovalPolicy, Token } from 'aws-cdk-lib';
import { Schedule } from 'aws-cdk-lib/aws-events';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { PRIVATE_CA_ARN_PATTERN } from '../functions/adapters/aws/private-ca-arns';
import type { CaSubject } from './certificate-authority';
import type { ApiThrottling, DeviceCertificateLifecycleProps } from './device-certificate-lifecycle';

/*
 * The choices the construct offers, its secure defaults and the rules that tie the choices
 * together: all in this one file, so a reader (and a test) finds every default and every
 * synth-time check in one place.
 */

/** How the CA is used; chosen when the CA is created and never changed afterwards. */
export enum CaUsageMode {
  /** Certificates of any validity; $400 a month per CA (see docs/deploy.md). */
  GENERAL_PURPOSE = 'GENERAL_PURPOSE',
  /** Certificates valid for 7 days at most; $50 a month per CA and cheaper certificates. */
  SHORT_LIVED_CERTIFICATE = 'SHORT_LIVED_CERTIFICATE',
}

/** The CA key algorithms AWS Private CA offers (its `KeyAlgorithm` values). */
export enum CaKeyAlgorithm {
  EC_PRIME256V1 = 'EC_prime256v1',
  EC_SECP384R1 = 'EC_secp384r1',
  RSA_2048 = 'RSA_2048',
  RSA_4096 = 'RSA_4096',
}

/** Where a new CA sits in its hierarchy. */
export enum CaType {
  /** Self-signed: the stack creates, signs and activates it. */
  ROOT = 'ROOT',
  /** Signed by a parent CA you hold: the stack creates it and you import the signed certificate (docs/deploy.md). */
  SUBORDINATE = 'SUBORDINATE',
}

/** Who may register on first connect. */
export enum EnrollmentPolicy {
  /** Any device presenting a valid certificate from the CA. */
  OPEN = 'open',
  /** Only devices pre-registered through the API (`POST /devices`). */
  PREREGISTERED = 'preregistered',
}

/** The signing algorithm that goes with each key algorithm (SHA-256 except for P-384, which pairs with SHA-384). */
export const SIGNING_ALGORITHMS: Readonly<Record<CaKeyAlgorithm, string>> = {
  [CaKeyAlgorithm.EC_PRIME256V1]: 'SHA256WITHECDSA',
  [CaKeyAlgorithm.EC_SECP384R1]: 'SHA384WITHECDSA',
  [CaKeyAlgorithm.RSA_2048]: 'SHA256WITHRSA',
  [CaKeyAlgorithm.RSA_4096]: 'SHA256WITHRSA',
};

/** The limits the checks below enforce, named once. */
export const LIMITS = {
  /** AWS Private CA short-lived certificate mode issues certificates valid for 7 days at most. */
  shortLivedMaxValidityDays: 7,
  /** The functions refuse more (functions/handlers/config.ts, CERTIFICATE_VALIDITY_DAYS). */
  maxValidityDays: 3650,
  maxCaValidityYears: 30,
  /** Leaves room for the suffixes added to IoT, API and stack names. */
  namePrefixPattern: /^[A-Za-z][A-Za-z0-9-]{0,31}$/,
  topicRootPattern: /^[A-Za-z0-9_-]{1,64}$/,
  caArnPattern: PRIVATE_CA_ARN_PATTERN,
} as const;

/** The secure defaults, in one place. */
export const DEFAULTS = {
  caType: CaType.ROOT,
  caKeyAlgorithm: CaKeyAlgorithm.EC_PRIME256V1,
  caUsageMode: CaUsageMode.GENERAL_PURPOSE,
  /** A root CA outlives the devices it vouches for; alarm and rotate well before it ends. */
  caValidityYears: 10,
  /** How long a CRL is valid; AWS Private CA refreshes it well before. */
  crlValidityDays: 7,
  certificateValidityDays: {
    [CaUsageMode.GENERAL_PURPOSE]: 365,
    [CaUsageMode.SHORT_LIVED_CERTIFICATE]: 7,
  },
  /** The safer choice: a stolen CA-signed key alone cannot enrol an unknown device. */
  enrollmentPolicy: EnrollmentPolicy.PREREGISTERED,
  /** Tables, bucket and CA hold the fleet's identity: keep them unless told otherwise. */
  removalPolicy: RemovalPolicy.RETAIN,
  namePrefix: 'iot-cert-lifecycle',
  topicRoot: 'devices',
  logRetention: RetentionDays.ONE_YEAR,
  /** Steady requests per second and burst for the whole API stage (IssueCertificate allows 25/s per account). */
  apiThrottling: { rateLimit: 10, burstLimit: 20 },
  /** How long one JITR invocation (a batch of up to `registrationQueue.batchSize` events) may run. */
  jitrTimeoutSeconds: 30,
  /**
   * The queue between the registration rule and the JITR function: it absorbs onboarding bursts, and the
   * event source mapping paces them (DescribeCertificate allows 10 TPS per account by default).
   */
  registrationQueue: {
    /** Lambda's guidance for SQS event sources: a visibility timeout of at least six times the function timeout. */
    visibilityTimeoutFactor: 6,
    /** Deliveries of one event before it goes to the dead-letter queue (about 10 x 3 minutes of retries). */
    maxReceiveCount: 10,
    batchSize: 10,
    retentionDays: 4,
    /** The oldest waiting event alarms past this age: the queue is not keeping up, or the function keeps failing. */
    oldestMessageAlarmMinutes: 15,
  },
  /** Longer than the registration queue's retention: SQS keeps a message's first enqueue time when it dead-letters it. */
  deadLetterRetentionDays: 14,
  /** The scheduled function that watches the CA's and the device certificates' expiry. */
  expiryMonitor: {
    /** EventBridge schedule expression; the CA expiry alarm expects a data point every day. */
    schedule: 'rate(1 day)',
    /** Renewal notices (devices/<thing>/certificates/expiring) published per second at most; 0: none. */
    renewalNoticesPerSecond: 20,
    /**
     * Device certificates with fewer days left are counted and their devices logged. In short-lived mode every
     * certificate has at most 7 days, so 30 would count the whole fleet: there, one that has 2 days left is late.
     */
    warningDays: {
      [CaUsageMode.GENERAL_PURPOSE]: 30,
      [CaUsageMode.SHORT_LIVED_CERTIFICATE]: 2,
    },
    /**
     * The CA alarm fires this many days before the CA can no longer cover a device certificate of full validity:
     * the default threshold is `certificateValidityDays + caAlarmLeadDays`.
     */
    caAlarmLeadDays: 90,
    /** One run pages through the expiry index; generous for fleets of millions. */
    timeoutMinutes: 5,
  },
  /** Certificate rotation over MQTT (docs/rotation.md): the rotation function, its sweep and its alarms. */
  rotation: {
    /** How long a device has to connect with its new certificate and commit it before the new one is withdrawn. */
    commitHours: 6,
    /** How often the sweep withdraws rotations past their commit deadline (EventBridge `rate(<n> minutes)`). */
    sweepMinutes: 15,
    /**
     * One invocation: a batch of device messages handled in parallel (each may wait for AWS Private CA up to
     * PRIVATE_CA_MAX_WAIT_MS), or one sweep; a sweep cut short is finished by the next one.
     */
    timeoutSeconds: 60,
    /** The rejected-rotations alarm: at least `threshold` rotate or commit messages answered on `.../rejected` within `periodMinutes`. */
    rejectedAlarm: { periodMinutes: 60, threshold: 5 },
  },
  /**
   * The queue between the rotate and commit topic rules and the rotation function: it absorbs a fleet rotating at
   * once, and the event source mapping paces it (each rotate calls IssueCertificate, 25/s per account, shared with
   * the API, and RegisterCertificate, 10 TPS by default).
   */
  rotationQueue: {
    /** Lambda's guidance for SQS event sources: a visibility timeout of at least six times the function timeout. */
    visibilityTimeoutFactor: 6,
    /** Deliveries of one message before it goes to the rotation dead-letter queue (about 10 x 6 minutes of retries). */
    maxReceiveCount: 10,
    /** Messages of one invocation; with `maxConcurrency` 2, at most 10 rotations in flight. */
    batchSize: 5,
    /** Concurrent invocations the queue feeds (`rotationConcurrency`); 2 is the lowest value SQS event sources accept. */
    maxConcurrency: 2,
    retentionDays: 4,
    /** The oldest waiting message alarms past this age: rotation is not keeping up, or the function keeps failing. */
    oldestMessageAlarmMinutes: 15,
  },
} as const;

/**
 * The figures the JITR queue's concurrency is chosen from (docs/performance.md shows the arithmetic). One onboarding
 * makes one AWS IoT DescribeCertificate call, whose default quota (10 TPS per account and Region) binds before any
 * other call the flow makes; one invocation handles a batch of `registrationQueue.batchSize` events in parallel.
 */
export const ONBOARDING_RATE = {
  /** AWS IoT DescribeCertificate's default quota, per account and Region: the onboarding rate the defaults allow. */
  describeCertificatePerSecond: 10,
  /**
   * Seconds one registration event takes when nothing is throttled: five AWS IoT calls and the device table's
   * reads and transactions in sequence, each a round trip of some 20-40 ms within a Region (an estimate, not measured in AWS).
   */
  secondsPerEvent: 0.3,
} as const;

/**
 * The JITR invocations the registration queue must feed at once to sustain `eventsPerSecond` onboardings: events in
 * flight (rate x time per event) over the events one invocation handles, and never under what Lambda accepts (2).
 */
export function registrationConcurrencyFor(eventsPerSecond: number): number {
  const inFlight = eventsPerSecond * ONBOARDING_RATE.secondsPerEvent;
  return Math.min(ROTATION_LIMITS.maxConcurrency, Math.max(ROTATION_LIMITS.minConcurrency, Math.ceil(inFlight / DEFAULTS.registrationQueue.batchSize)));
}

/** A prop or context value that cannot work; the message names it and says what would. */
export class InvalidConfigurationError extends Error {
  public override readonly name = 'InvalidConfigurationError';
}

export function fail(message: string): never {
  throw new InvalidConfigurationError(message);
}

export function checkCertificateValidityDays(validityDays: number, usageMode: CaUsageMode): void {
  if (Token.isUnresolved(validityDays)) fail('certificateValidityDays must be a number known at synth time.');
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > LIMITS.maxValidityDays) {
    fail(`certificateValidityDays must be a whole number of days from 1 to ${LIMITS.maxValidityDays} (got ${validityDays}).`);
  }
  if (usageMode === CaUsageMode.SHORT_LIVED_CERTIFICATE && validityDays > LIMITS.shortLivedMaxValidityDays) {
    fail(
      `certificateValidityDays is ${validityDays}, but a CA in SHORT_LIVED_CERTIFICATE mode issues certificates valid for ` +
        `${LIMITS.shortLivedMaxValidityDays} days at most: use ${LIMITS.shortLivedMaxValidityDays} or less, or the GENERAL_PURPOSE mode.`,
    );
  }
}

export function checkNamePrefix(namePrefix: string): void {
  if (!LIMITS.namePrefixPattern.test(namePrefix)) {
    fail(`namePrefix must start with a letter and hold 1 to 32 letters, digits and "-" (got "${namePrefix}").`);
  }
}

export function checkTopicRoot(topicRoot: string): void {
  if (!LIMITS.topicRootPattern.test(topicRoot)) {
    fail(`topicRoot must be 1 to 64 letters, digits, "_" and "-" (got "${topicRoot}").`);
  }
}

export function checkCaArn(caArn: string): void {
  if (!Token.isUnresolved(caArn) && !LIMITS.caArnPattern.test(caArn)) {
    fail(`The CA ARN must look like arn:aws:acm-pca:<region>:<account>:certificate-authority/<uuid> (got "${caArn}").`);
  }
}

export function checkCaValidityYears(years: number): void {
  if (!Number.isInteger(years) || years < 1 || years > LIMITS.maxCaValidityYears) {
    fail(`caValidityYears must be a whole number of years from 1 to ${LIMITS.maxCaValidityYears} (got ${years}).`);
  }
}

/** The longest warning window and alarm threshold (the functions refuse more: EXPIRY_WARNING_DAYS in functions/handlers/config.ts). */
const MAX_EXPIRY_DAYS = 3650;

export function checkExpiryWarningDays(days: number): void {
  if (Token.isUnresolved(days) || !Number.isInteger(days) || days < 1 || days > MAX_EXPIRY_DAYS) {
    fail(`expiryWarningDays must be a whole number of days from 1 to ${MAX_EXPIRY_DAYS} (got ${days}).`);
  }
}

/**
 * The CA alarm must fire while a device certificate of full validity can still be issued: once the CA has fewer
 * days left than `certificateValidityDays`, such a certificate would outlive it.
 */
export function checkCaExpiryAlarmDays(days: number, certificateValidityDays: number): void {
  if (Token.isUnresolved(days) || !Number.isInteger(days) || days < 1 || days > MAX_EXPIRY_DAYS) {
    fail(`caExpiryAlarmDays must be a whole number of days from 1 to ${MAX_EXPIRY_DAYS} (got ${days}).`);
  }
  if (days <= certificateValidityDays) {
    fail(
      `caExpiryAlarmDays (${days}) must exceed certificateValidityDays (${certificateValidityDays}): from ${certificateValidityDays} days before the CA ` +
        'expires, a device certificate of full validity would outlive it, so the alarm would come after CSR signing is already affected.',
    );
  }
}

/**
 * The expiry monitor must run at least daily: the CA expiry alarm looks at one-day periods and treats missing
 * data as breaching. A `rate(...)` longer than a day is refused; a `cron(...)` is taken as given.
 */
export function checkExpiryMonitorSchedule(schedule: Schedule): void {
  const rate = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/.exec(schedule.expressionString);
  if (rate) {
    const [, value, unit] = rate;
    const every = unit?.startsWith('minute') ? Duration.minutes(Number(value)) : unit?.startsWith('hour') ? Duration.hours(Number(value)) : Duration.days(Number(value));
    if (every.toSeconds() > Duration.days(1).toSeconds()) {
      fail(`expiryMonitorSchedule runs every ${value} ${unit}, but the CA expiry alarm expects a data point every day: run it at least daily.`);
    }
    return;
  }
  if (!/^cron\(.+\)$/.test(schedule.expressionString)) fail(`expiryMonitorSchedule must be a rate(...) or cron(...) expression (got "${schedule.expressionString}").`);
}

/** The bounds of the rotation settings (the functions refuse a commit window outside 1 minute to 30 days: ROTATION_COMMIT_SECONDS). */
export const ROTATION_LIMITS = {
  maxCommitHours: 720,
  maxSweepMinutes: 1440,
  /** What Lambda accepts as the maximum concurrency of an SQS event source. */
  minConcurrency: 2,
  maxConcurrency: 1000,
} as const;

/**
 * The commit window, the sweep interval and the rotation queue's concurrency. The sweep must run at least once per
 * commit window: a rotation past its deadline waits up to one interval to be withdrawn.
 */
export function checkRotationSettings(settings: { readonly rotationCommitHours: number; readonly rotationSweepMinutes: number; readonly rotationConcurrency: number }): void {
  const { rotationCommitHours: hours, rotationSweepMinutes: minutes, rotationConcurrency: concurrency } = settings;
  const whole = (value: number, min: number, max: number) => !Token.isUnresolved(value) && Number.isInteger(value) && value >= min && value <= max;
  if (!whole(hours, 1, ROTATION_LIMITS.maxCommitHours)) {
    fail(`rotationCommitHours must be a whole number of hours from 1 to ${ROTATION_LIMITS.maxCommitHours} (got ${hours}): how long a device has to commit its rotated certificate.`);
  }
  if (!whole(minutes, 1, ROTATION_LIMITS.maxSweepMinutes)) {
    fail(`rotationSweepMinutes must be a whole number of minutes from 1 to ${ROTATION_LIMITS.maxSweepMinutes} (got ${minutes}): how often rotations past their commit deadline are withdrawn.`);
  }
  if (minutes > hours * 60) {
    fail(
      `rotationSweepMinutes (${minutes}) must not exceed the commit window, rotationCommitHours (${hours}, that is ${hours * 60} minutes): ` +
        'the sweep must run at least once per window, or a rotation past its deadline waits longer than the window itself to be withdrawn.',
    );
  }
  if (!whole(concurrency, ROTATION_LIMITS.minConcurrency, ROTATION_LIMITS.maxConcurrency)) {
    fail(
      `rotationConcurrency must be a whole number from ${ROTATION_LIMITS.minConcurrency} to ${ROTATION_LIMITS.maxConcurrency} (got ${concurrency}): ` +
        `the rotation function invocations the rotation queue feeds at once (Lambda accepts no less than ${ROTATION_LIMITS.minConcurrency}).`,
    );
  }
}

/** The JITR queue's concurrency: what an SQS event source accepts. */
export function checkRegistrationConcurrency(concurrency: number): void {
  if (Token.isUnresolved(concurrency) || !Number.isInteger(concurrency) || concurrency < ROTATION_LIMITS.minConcurrency || concurrency > ROTATION_LIMITS.maxConcurrency) {
    fail(
      `registrationConcurrency must be a whole number from ${ROTATION_LIMITS.minConcurrency} to ${ROTATION_LIMITS.maxConcurrency} (got ${concurrency}): ` +
        `the JITR function invocations the registration queue feeds at once (Lambda accepts no less than ${ROTATION_LIMITS.minConcurrency}; docs/performance.md says what a value sustains).`,
    );
  }
}

/** IoT topic rule names allow letters, digits and "_" only. */
export function ruleNameFrom(namePrefix: string, suffix: string): string {
  return `${namePrefix.replace(/-/g, '_')}_${suffix}`;
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
  readonly expiryMonitorSchedule: Schedule;
  readonly expiryWarningDays: number;
  readonly caExpiryAlarmDays: number;
  readonly renewalNoticesPerSecond: number;
  readonly rotationCommitHours: number;
  readonly rotationSweepMinutes: number;
  readonly rotationConcurrency: number;
  readonly registrationConcurrency: number;
}

/** Applies the defaults above and fails with a message naming the prop when a combination cannot work. */
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
  const expiryMonitorSchedule = props.expiryMonitorSchedule ?? Schedule.expression(DEFAULTS.expiryMonitor.schedule);
  checkExpiryMonitorSchedule(expiryMonitorSchedule);
  const expiryWarningDays = props.expiryWarningDays ?? DEFAULTS.expiryMonitor.warningDays[caUsageMode];
  checkExpiryWarningDays(expiryWarningDays);
  const caExpiryAlarmDays = props.caExpiryAlarmDays ?? certificateValidityDays + DEFAULTS.expiryMonitor.caAlarmLeadDays;
  const renewalNoticesPerSecond = props.renewalNoticesPerSecond ?? DEFAULTS.expiryMonitor.renewalNoticesPerSecond;
  if (!(renewalNoticesPerSecond >= 0 && renewalNoticesPerSecond <= 1000)) fail(`renewalNoticesPerSecond must be from 0 (no notices) to 1000 (got ${renewalNoticesPerSecond}).`);
  checkCaExpiryAlarmDays(caExpiryAlarmDays, certificateValidityDays);
  const rotation = {
    rotationCommitHours: props.rotationCommitHours ?? DEFAULTS.rotation.commitHours,
    rotationSweepMinutes: props.rotationSweepMinutes ?? DEFAULTS.rotation.sweepMinutes,
    rotationConcurrency: props.rotationConcurrency ?? DEFAULTS.rotationQueue.maxConcurrency,
  };
  checkRotationSettings(rotation);
  const registrationConcurrency = props.registrationConcurrency ?? registrationConcurrencyFor(ONBOARDING_RATE.describeCertificatePerSecond);
  checkRegistrationConcurrency(registrationConcurrency);
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
    renewalNoticesPerSecond,
    ...rotation,
    registrationConcurrency,
  };
}
