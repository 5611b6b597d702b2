import { InvalidTransitionError } from './errors';
import type { CertificateRecord, CertificateStatus, DeviceStatus, EffectiveCertificateStatus } from './model';

/**
 * The allowed transitions, written down once. Every state change in the
 * system passes through `assertCertificateTransition` / `assertDeviceTransition`.
 */
export const CERTIFICATE_TRANSITIONS: Readonly<Record<CertificateStatus, readonly CertificateStatus[]>> = {
  PENDING_ACTIVATION: ['ACTIVE', 'REJECTED', 'REVOKED'],
  ACTIVE: ['INACTIVE', 'REVOKED', 'RETIRED'],
  // A retired certificate may have been switched INACTIVE by a suspension between the commit's decision and its retirement.
  INACTIVE: ['ACTIVE', 'REVOKED', 'RETIRED'],
  REVOKED: [],
  // A retired certificate is out of use, not out of reach: a key found compromised later is still revoked (at the CA too).
  RETIRED: ['REVOKED'],
  REJECTED: [],
};

export const DEVICE_TRANSITIONS: Readonly<Record<DeviceStatus, readonly DeviceStatus[]>> = {
  REGISTERED: ['ACTIVE', 'REVOKED', 'DECOMMISSIONED'],
  ACTIVE: ['SUSPENDED', 'REVOKED', 'DECOMMISSIONED'],
  SUSPENDED: ['ACTIVE', 'REVOKED', 'DECOMMISSIONED'],
  REVOKED: ['DECOMMISSIONED'],
  DECOMMISSIONED: [],
};

export const canTransitionCertificate = (from: CertificateStatus, to: CertificateStatus): boolean =>
  CERTIFICATE_TRANSITIONS[from].includes(to);

export const canTransitionDevice = (from: DeviceStatus, to: DeviceStatus): boolean => DEVICE_TRANSITIONS[from].includes(to);

export function assertCertificateTransition(from: CertificateStatus, to: CertificateStatus): void {
  if (!canTransitionCertificate(from, to)) throw new InvalidTransitionError('CERTIFICATE', from, to);
}

export function assertDeviceTransition(from: DeviceStatus, to: DeviceStatus): void {
  if (!canTransitionDevice(from, to)) throw new InvalidTransitionError('DEVICE', from, to);
}

/** Certificates that can still authenticate, or could again after a resume. */
export const isLiveCertificateStatus = (status: CertificateStatus): boolean =>
  status === 'ACTIVE' || status === 'INACTIVE' || status === 'PENDING_ACTIVATION';

/** The status a reader should see: a live certificate past its `notAfter` is `EXPIRED`. */
export function effectiveCertificateStatus(
  certificate: Pick<CertificateRecord, 'status' | 'notAfter'>,
  now: Date,
): EffectiveCertificateStatus {
  if (isLiveCertificateStatus(certificate.status) && Date.parse(certificate.notAfter) <= now.getTime()) return 'EXPIRED';
  return certificate.status;
}

/** Devices that may receive a new certificate (by CSR or on first connect). */
export const deviceAcceptsNewCertificates = (status: DeviceStatus): boolean => status === 'REGISTERED' || status === 'ACTIVE';
