import type { Context, ScheduledEvent } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { ExpiryMonitor, type CaExpiry, type ExpiringCertificatesReport } from '../core/expiry';
import { systemClock } from '../core/ports';
import { awsCertificateAuthority, awsDeviceStore } from './aws-wiring';
import { EXPIRY_METRICS, readConfig } from './config';

export interface ExpiryMonitorHandlerDependencies {
  readonly monitor: ExpiryMonitor;
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
}

/** Takes the EventBridge scheduled event (its content is not used: every run reads everything afresh). */
export type ExpiryMonitorHandler = (event?: unknown, context?: Context) => Promise<ExpiryMonitorResult>;

/**
 * The expiry monitor, run on a schedule (EventBridge): publishes `CaDaysToExpiry` and
 * `DeviceCertificatesExpiringSoon`, and logs the devices whose certificates expire soon. The CA and the
 * device certificates are read independently, so a failure of one still publishes the other; the run then
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

  return async (_event?: unknown, context?: Context): Promise<ExpiryMonitorResult> => {
    if (context) logger.addContext(context);
    const [ca, devices] = await Promise.allSettled([monitor.checkCa(), monitor.findExpiringCertificates()]);
    if (ca.status === 'fulfilled') reportCa(ca.value);
    else logger.error('could not read the CA certificates', { error: ca.reason as Error });
    if (devices.status === 'fulfilled') reportDevices(devices.value);
    else logger.error('could not count the device certificates expiring soon', { error: devices.reason as Error });
    if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
    if (ca.status === 'rejected') throw ca.reason;
    if (devices.status === 'rejected') throw devices.reason;
    return {
      caDaysToExpiry: ca.value.daysLeft,
      caNotAfter: ca.value.notAfter.toISOString(),
      deviceCertificatesExpiringSoon: devices.value.count,
      deviceIds: devices.value.deviceIds,
    };
  };
}

/**
 * The function's AWS wiring, built once per cold start. It reads only: the device table's expiry index and the
 * CA's certificates (the stack grants it GetCertificateAuthorityCertificate alone).
 */
export function expiryMonitorDependencies(): ExpiryMonitorHandlerDependencies {
  const config = readConfig(['DEVICE_TABLE_NAME', 'CA_ARN', 'CA_SIGNING_ALGORITHM', 'CA_TEMPLATE_ARN', 'EXPIRY_WARNING_DAYS', 'METRICS_SERVICE_NAME']);
  return {
    monitor: new ExpiryMonitor({ store: awsDeviceStore(config.DEVICE_TABLE_NAME), ca: awsCertificateAuthority(config), clock: systemClock }, { warningDays: config.EXPIRY_WARNING_DAYS }),
    metrics: new Metrics({ namespace: EXPIRY_METRICS.namespace, serviceName: config.METRICS_SERVICE_NAME }),
  };
}

let awsHandler: ExpiryMonitorHandler | undefined;

export const handler = async (event: ScheduledEvent, context: Context): Promise<ExpiryMonitorResult> => {
  awsHandler ??= createExpiryMonitorHandler(expiryMonitorDependencies());
  return awsHandler(event, context);
};
