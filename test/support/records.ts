import type { CertificateRecord, Device } from '../../functions/core/model';

/** A fixed instant for records built by hand in store tests. */
export const RECORD_TIME = '2026-11-26T10:00:00.000Z';

/** A device record as the store keeps it (ACTIVE, version 1 unless overridden). */
export const deviceRecord = (deviceId: string, overrides: Partial<Device> = {}): Device => ({
  deviceId,
  thingName: deviceId,
  status: 'ACTIVE',
  attributes: { line: 'a' },
  createdAt: RECORD_TIME,
  updatedAt: RECORD_TIME,
  version: 1,
  ...overrides,
});

/** A certificate record as the store keeps it (ACTIVE, from a CSR, version 1 unless overridden); its PEM is not parsed by the store. */
export const certificateRecord = (certificateId: string, deviceId: string, notAfter: string, overrides: Partial<CertificateRecord> = {}): CertificateRecord => ({
  certificateId,
  deviceId,
  serialNumber: certificateId.slice(0, 16),
  subject: `CN=${deviceId}`,
  issuer: 'CN=Test CA',
  keyAlgorithm: 'EC_P_256',
  notBefore: RECORD_TIME,
  notAfter,
  status: 'ACTIVE',
  source: 'CSR',
  certificatePem: '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----',
  createdAt: RECORD_TIME,
  updatedAt: RECORD_TIME,
  version: 1,
  ...overrides,
});
