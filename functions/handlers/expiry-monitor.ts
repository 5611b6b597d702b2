import type { Context, ScheduledEvent } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { DRIFT_LIMITS, DriftCheck, type DriftReport } from '../core/drift';
import { UpstreamError } from '../core/errors';
import { ExpiryMonitor, FleetCaCensus, type CaExpiry, type ExpiringCertificatesReport, type FleetCaCensusReport, type RenewalNotifier } from '../core/expiry';
import { systemClock, type DeviceMessenger, type DeviceRegistry } from '../core/ports';
import { IotDataMessenger } from '../adapters/aws/iot-data-messenger';
import { expiringTopic } from './mqtt/rotation-protocol';
import { awsCertificateAuthority, awsDeviceRegistry, awsDeviceStore } from './aws-wiring';
import { EXPIRY_METRICS, readConfig } from './config';

export interface ExpiryMonitorHandlerDependencies {
  readonly monitor: ExpiryMonitor;
  /**
   * Tells each device with a certificate in the window to renew it, on `devices/<thing>/certificates/expiring`.
   * @default - no notices (the devices renew on their own schedule)
   */
  readonly notices?: { readonly messenger: DeviceMessenger; readonly perSecond: number; readonly wait?: (ms: number) => Promise<void> };
  /**
   * Compares the device records with AWS IoT's certificate statuses, a slice of the fleet per run (functions/core/drift.ts).
   * @default - no drift check
   */
  readonly drift?: DriftCheck;
  /**
   * Counts the live certificates still on each fleet CA (a CA rotation) and the devices that expired without rotating.
   * @default - no census
   */
  readonly census?: FleetCaCensus;
  /** Powertools Metrics, publishing in the embedded metric format to the function's log (no CloudWatch API call). */
  readonly metrics: Metrics;
  readonly logger?: Logger;
}

/** What one run found (EventBridge ignores it; the local mode and tests read it). */
export interface ExpiryMonitorResult {
  readonly caDaysToExpiry: number;
  readonly caNotAfter: string;
  readonly deviceCertificatesExpiringSoon: number;
  readonly deviceIds: readonly string[];
  /** Renewal notices published to devices. */
  readonly noticesSent: number;
  /** The census of the fleet's CAs, when there is one. */
  readonly census?: FleetCaCensusReport;
  /** What the drift check did, when there is one. */
  readonly drift?: Pick<DriftReport, 'checked' | 'repaired' | 'failures' | 'skipped' | 'stoppedBy' | 'passStartedAt'> & { readonly findings: number };
}

/** Takes the EventBridge scheduled event (its content is not used: every run reads everything afresh). */
export type ExpiryMonitorHandler = (event?: unknown, context?: Context) => Promise<ExpiryMonitorResult>;

/** How long before the function's timeout the drift check stops, so it saves its cursor and the metrics get out. */
export const DRIFT_DEADLINE_MARGIN_MS = 30_000;

/**
 * The expiry monitor, run on a schedule (EventBridge): publishes `CaDaysToExpiry` and
 * `DeviceCertificatesExpiringSoon`, and logs the devices whose certificates expire soon; with a drift check, also
 * `CertificateDrift` and `CertificateDriftRepaired`, and each disagreement in the log. The CA, the device
 * certificates and the drift check run independently, so a failure of one still publishes the others; the run then
 * fails, which the function's error alarm reports (and a missing `CaDaysToExpiry` counts as breaching).
 */
export function createExpiryMonitorHandler(dependencies: ExpiryMonitorHandlerDependencies): ExpiryMonitorHandler {
  const { monitor, metrics } = dependencies;
  const logger = dependencies.logger ?? new Logger({ serviceName: 'expiry-monitor' });

  const reportCa = (ca: CaExpiry): void => {
    metrics.addMetric(EXPIRY_METRICS.caDaysToExpiry, MetricUnit.NoUnit, ca.daysLeft);
    const details = {
      caDaysToExpiry: ca.daysLeft,
      notAfter: ca.notAfter.toISOString(),
      expiresFirst: ca.limiting.subject,
      certificates: ca.certificates.map(({ subject, notAfter, daysLeft }) => ({ subject, notAfter: notAfter.toISOString(), daysLeft })),
    };
    if (ca.expired) logger.error('the CA has expired: no device certificate it signed verifies any more (docs/deploy.md, "Rotating the CA")', details);
    else logger.info('CA expiry checked', details);
  };

  const reportDevices = (report: ExpiringCertificatesReport): void => {
    metrics.addMetric(EXPIRY_METRICS.deviceCertificatesExpiringSoon, MetricUnit.Count, report.count);
    if (report.count === 0) {
      logger.info(`no device certificate expires within ${report.warningDays} days`, { warningDays: report.warningDays });
      return;
    }
    logger.warn(`device certificates expire within ${report.warningDays} days: their devices must rotate`, {
      count: report.count,
      warningDays: report.warningDays,
      soonestNotAfter: report.soonestNotAfter,
      deviceIds: report.deviceIds,
      deviceIdsTruncated: report.truncated,
    });
  };

  /** One WARN line per disagreement (the alarm's description sends operators here), then the run in one line. */
  const reportDrift = (report: DriftReport): void => {
    metrics.addMetric(EXPIRY_METRICS.certificateDrift, MetricUnit.Count, report.findings.length);
    metrics.addMetric(EXPIRY_METRICS.certificateDriftRepaired, MetricUnit.Count, report.repaired);
    for (const finding of report.findings) {
      const what = finding.repair === undefined ? 'reported only: decide in AWS IoT or through the API' : finding.repaired ? `repaired: set ${finding.repair} in AWS IoT` : `not repaired: setting ${finding.repair} in AWS IoT failed`;
      logger.warn(`certificate drift ${finding.kind}: ${what}`, { ...finding });
    }
    const summary = {
      checked: report.checked,
      drift: report.findings.length,
      repaired: report.repaired,
      failures: report.failures,
      skipped: report.skipped,
      stoppedBy: report.stoppedBy,
      passStartedAt: report.passStartedAt,
    };
    if (report.failures > 0) logger.error('the drift check could not read or repair some certificates in AWS IoT; the next pass checks them again', { ...summary, failureSamples: report.failureSamples });
    else logger.info('drift check done', summary);
  };

  const reportCensus = (report: FleetCaCensusReport): void => {
    for (const ca of report.cas) {
      const single = metrics.singleMetric();
      single.addDimension('CaRole', ca.role);
      single.addDimension('CaCertificateId', ca.caCertificateId);
      single.addMetric(EXPIRY_METRICS.liveCertificatesByCa, MetricUnit.Count, ca.liveCertificates);
    }
    const previous = report.cas.filter((ca) => ca.role === 'previous');
    metrics.addMetric(EXPIRY_METRICS.liveCertificatesOnPreviousCas, MetricUnit.Count, previous.reduce((sum, ca) => sum + ca.liveCertificates, 0));
    const inUse = previous.filter((ca) => ca.liveCertificates > 0);
    if (inUse.length > 0) metrics.addMetric(EXPIRY_METRICS.previousCaDaysToExpiry, MetricUnit.NoUnit, Math.min(...inUse.map((ca) => ca.daysLeft)));
    metrics.addMetric(EXPIRY_METRICS.devicesExpiredWithoutRotation, MetricUnit.Count, report.devicesExpiredWithoutRotation);
    logger.info('live certificates per CA', {
      cas: report.cas.map(({ caCertificateId, role, subject, liveCertificates, daysLeft }) => ({ caCertificateId, role, subject, liveCertificates, daysLeft })),
      unknownIssuer: report.unknownIssuer,
      devicesChecked: report.devicesChecked,
    });
    for (const ca of inUse) {
      logger.warn(`${ca.liveCertificates} live certificate(s) still on previous CA ${ca.caCertificateId}: their devices must rotate before it expires (docs/deploy.md, "Rotating the CA")`, {
        caCertificateId: ca.caCertificateId,
        daysLeft: ca.daysLeft,
        deviceIds: ca.deviceIds,
      });
    }
    if (report.devicesExpiredWithoutRotation > 0) {
      logger.warn('devices expired without rotating: they need the recovery path (docs/rotation.md, "Recovery after expiry")', {
        count: report.devicesExpiredWithoutRotation,
        deviceIds: report.expiredDeviceIds,
      });
    }
    if (report.unknownIssuer > 0) logger.error('live certificates from a CA the fleet no longer lists: list it in previousCaArns again, or revoke them', { count: report.unknownIssuer });
  };

  const notifier = dependencies.notices ? pacedNotifier(dependencies.notices) : undefined;
  const drift = dependencies.drift;

  return async (_event?: unknown, context?: Context): Promise<ExpiryMonitorResult> => {
    if (context) logger.addContext(context);
    const deadline = context ? new Date(Date.now() + context.getRemainingTimeInMillis() - DRIFT_DEADLINE_MARGIN_MS) : undefined;
    const [ca, devices, drifted, counted] = await Promise.allSettled([
      monitor.checkCa(),
      monitor.findExpiringCertificates(notifier),
      drift ? drift.run(deadline ? { deadline } : {}) : Promise.resolve(undefined),
      dependencies.census ? dependencies.census.run() : Promise.resolve(undefined),
    ]);
    if (ca.status === 'fulfilled') reportCa(ca.value);
    else logger.error('could not read the CA certificates', { error: ca.reason as Error });
    if (devices.status === 'fulfilled') reportDevices(devices.value);
    else logger.error('could not count the device certificates expiring soon', { error: devices.reason as Error });
    if (drifted.status === 'fulfilled' && drifted.value) reportDrift(drifted.value);
    else if (drifted.status === 'rejected') logger.error('could not compare the device records with AWS IoT', { error: drifted.reason as Error });
    if (counted.status === 'fulfilled' && counted.value) reportCensus(counted.value);
    else if (counted.status === 'rejected') logger.error('could not count the certificates per CA', { error: counted.reason as Error });
    if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
    if (ca.status === 'rejected') throw ca.reason;
    if (devices.status === 'rejected') throw devices.reason;
    if (drifted.status === 'rejected') throw drifted.reason;
    if (counted.status === 'rejected') throw counted.reason;
    const driftReport = drifted.value;
    // Stopped by failures in a row: AWS IoT or the role is failing every call; the errors alarm should say so.
    if (driftReport?.stoppedBy === 'FAILURES') {
      throw new UpstreamError('UPSTREAM_FAILURE', `The drift check stopped after ${driftReport.failures} failed AWS IoT calls (the first: ${driftReport.failureSamples[0]?.error ?? 'unknown'}).`, true);
    }
    return {
      caDaysToExpiry: ca.value.daysLeft,
      caNotAfter: ca.value.notAfter.toISOString(),
      deviceCertificatesExpiringSoon: devices.value.count,
      deviceIds: devices.value.deviceIds,
      noticesSent: devices.value.noticesSent,
      ...(counted.value ? { census: counted.value } : {}),
      ...(driftReport
        ? {
            drift: {
              checked: driftReport.checked,
              findings: driftReport.findings.length,
              repaired: driftReport.repaired,
              failures: driftReport.failures,
              skipped: driftReport.skipped,
              stoppedBy: driftReport.stoppedBy,
              passStartedAt: driftReport.passStartedAt,
            },
          }
        : {}),
    };
  };
}

/** Runs each call it is given at most `perSecond` a second, in the order given. */
function pacer(perSecond: number, wait: (ms: number) => Promise<void> = (ms) => new Promise<void>((resolve) => setTimeout(resolve, ms))): <T>(call: () => Promise<T>) => Promise<T> {
  const interval = 1000 / perSecond;
  let next = 0;
  return async (call) => {
    const now = Date.now();
    const slot = Math.max(now, next);
    next = slot + interval;
    if (slot > now) await wait(slot - now);
    return call();
  };
}

/**
 * The registry calls of the drift check, at most `perSecond` a second: DescribeCertificate's quota (10 a second by
 * default) is the account's, and JITR needs it for every first connect.
 */
export function pacedRegistry(registry: Pick<DeviceRegistry, 'describeCertificate' | 'updateCertificateStatus'>, perSecond: number, wait?: (ms: number) => Promise<void>): Pick<DeviceRegistry, 'describeCertificate' | 'updateCertificateStatus'> {
  const paced = pacer(perSecond, wait);
  return {
    describeCertificate: (certificateId) => paced(() => registry.describeCertificate(certificateId)),
    updateCertificateStatus: (certificateId, status) => paced(() => registry.updateCertificateStatus(certificateId, status)),
  };
}

/**
 * Publishes each notice to its device's `expiring` topic, at most `perSecond` a second: a fleet whose certificates
 * were issued together gets its notices spread instead of all at once (and the data plane's quota is left to the rest).
 */
function pacedNotifier(notices: NonNullable<ExpiryMonitorHandlerDependencies['notices']>): RenewalNotifier {
  const paced = pacer(notices.perSecond, notices.wait);
  return (deviceId, notice) => paced(() => notices.messenger.publish(expiringTopic(deviceId), { ...notice }));
}

/**
 * The function's AWS wiring, built once per cold start. It reads the device table's expiry index and the CA's
 * certificates (the stack grants it GetCertificateAuthorityCertificate alone); it publishes renewal notices
 * (iot:Publish on the devices' `certificates/expiring` topics) unless RENEWAL_NOTICES_PER_SECOND is 0. With
 * THING_GROUP_NAME, which the stack sets together with the AWS IoT grants of `REGISTRY_OPERATIONS.expiryMonitor`
 * (`useFleet`), it also runs the drift check: it reads the devices and their certificates, describes and updates
 * certificates in AWS IoT (paced: `DRIFT_LIMITS.registryCallsPerSecond`), and writes its cursor record.
 */
export function expiryMonitorDependencies(env: NodeJS.ProcessEnv = process.env): ExpiryMonitorHandlerDependencies {
  const config = readConfig(['DEVICE_TABLE_NAME', 'CA_ARN', 'CA_SIGNING_ALGORITHM', 'CA_TEMPLATE_ARN', 'PREVIOUS_CA_ARNS', 'EXPIRY_WARNING_DAYS', 'METRICS_SERVICE_NAME', 'RENEWAL_NOTICES_PER_SECOND', 'IOT_DATA_ENDPOINT'], env);
  const store = awsDeviceStore(config.DEVICE_TABLE_NAME);
  const ca = awsCertificateAuthority(config);
  const drift =
    env.THING_GROUP_NAME === undefined
      ? undefined
      : new DriftCheck({ store, registry: pacedRegistry(awsDeviceRegistry(readConfig(['THING_GROUP_NAME'], env).THING_GROUP_NAME), DRIFT_LIMITS.registryCallsPerSecond), clock: systemClock });
  return {
    ...(config.RENEWAL_NOTICES_PER_SECOND > 0
      ? { notices: { messenger: new IotDataMessenger(config.IOT_DATA_ENDPOINT ? { endpointHost: config.IOT_DATA_ENDPOINT } : {}), perSecond: config.RENEWAL_NOTICES_PER_SECOND } }
      : {}),
    ...(drift ? { drift } : {}),
    monitor: new ExpiryMonitor({ store, ca, clock: systemClock }, { warningDays: config.EXPIRY_WARNING_DAYS }),
    census: new FleetCaCensus({ store, ca, clock: systemClock }),
    metrics: new Metrics({ namespace: EXPIRY_METRICS.namespace, serviceName: config.METRICS_SERVICE_NAME }),
  };
}

let awsHandler: ExpiryMonitorHandler | undefined;

export const handler = async (event: ScheduledEvent, context: Context): Promise<ExpiryMonitorResult> => {
  awsHandler ??= createExpiryMonitorHandler(expiryMonitorDependencies());
  return awsHandler(event, context);
};
