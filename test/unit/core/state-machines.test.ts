import {
  CERTIFICATE_TRANSITIONS,
  DEVICE_TRANSITIONS,
  assertCertificateTransition,
  assertDeviceTransition,
  effectiveCertificateStatus,
} from '../../../functions/core/state-machines';
import { CERTIFICATE_STATUSES, DEVICE_STATUSES, type CertificateStatus, type DeviceStatus } from '../../../functions/core/model';

const allowedCertificate: [CertificateStatus, CertificateStatus][] = [
  ['PENDING_ACTIVATION', 'ACTIVE'],
  ['PENDING_ACTIVATION', 'REJECTED'],
  ['PENDING_ACTIVATION', 'REVOKED'],
  ['ACTIVE', 'INACTIVE'],
  ['INACTIVE', 'ACTIVE'],
  ['ACTIVE', 'REVOKED'],
  ['INACTIVE', 'REVOKED'],
  ['INACTIVE', 'RETIRED'],
  ['ACTIVE', 'RETIRED'],
  ['RETIRED', 'REVOKED'],
];

const allowedDevice: [DeviceStatus, DeviceStatus][] = [
  ['REGISTERED', 'ACTIVE'],
  ['ACTIVE', 'SUSPENDED'],
  ['SUSPENDED', 'ACTIVE'],
  ...(['REGISTERED', 'ACTIVE', 'SUSPENDED'] as const).flatMap((from): [DeviceStatus, DeviceStatus][] => [
    [from, 'REVOKED'],
    [from, 'DECOMMISSIONED'],
  ]),
  ['REVOKED', 'DECOMMISSIONED'],
];

describe('certificate state machine', () => {
  const everyPair = CERTIFICATE_STATUSES.flatMap((from) => CERTIFICATE_STATUSES.map((to) => [from, to] as const));

  test.each(everyPair)('%s → %s is allowed exactly when the lifecycle says so', (from, to) => {
    const expected = allowedCertificate.some(([a, b]) => a === from && b === to);
    if (expected) expect(() => assertCertificateTransition(from, to)).not.toThrow();
    else expect(() => assertCertificateTransition(from, to)).toThrow(expect.objectContaining({ code: 'INVALID_TRANSITION', message: `A certificate in state ${from} cannot move to ${to}.` }));
  });

  test('REVOKED and REJECTED are terminal; RETIRED only goes on to REVOKED', () => {
    expect([CERTIFICATE_TRANSITIONS.REVOKED, CERTIFICATE_TRANSITIONS.RETIRED, CERTIFICATE_TRANSITIONS.REJECTED]).toEqual([[], ['REVOKED'], []]);
  });

  test.each([
    ['ACTIVE', '2026-01-01T00:00:00.000Z', 'EXPIRED'],
    ['INACTIVE', '2026-01-01T00:00:00.000Z', 'EXPIRED'],
    ['ACTIVE', '2027-01-01T00:00:00.000Z', 'ACTIVE'],
    ['REVOKED', '2026-01-01T00:00:00.000Z', 'REVOKED'],
  ] as const)('a %s certificate with notAfter %s reads as %s', (status, notAfter, expected) => {
    expect(effectiveCertificateStatus({ status, notAfter }, new Date('2026-06-01T00:00:00Z'))).toBe(expected);
  });
});

describe('device state machine', () => {
  const everyPair = DEVICE_STATUSES.flatMap((from) => DEVICE_STATUSES.map((to) => [from, to] as const));

  test.each(everyPair)('%s → %s is allowed exactly when the lifecycle says so', (from, to) => {
    const expected = allowedDevice.some(([a, b]) => a === from && b === to);
    if (expected) expect(() => assertDeviceTransition(from, to)).not.toThrow();
    else expect(() => assertDeviceTransition(from, to)).toThrow(expect.objectContaining({ code: 'INVALID_TRANSITION' }));
  });

  test('DECOMMISSIONED is terminal', () => {
    expect(DEVICE_TRANSITIONS.DECOMMISSIONED).toEqual([]);
  });
});
