import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import {
  DAY_MS,
  EXPIRY_LIMITS,
  ExpiringCertificatesTally,
  ExpiryMonitor,
  caExpiryOf,
  daysLeft,
  expiryWindow,
  isExpiringSoon,
  validitiesOf,
} from '../../../functions/core/expiry';
import type { CertificateRecord, CertificateStatus } from '../../../functions/core/model';
import type { CaCertificates, ExpiringCertificatesQuery } from '../../../functions/core/ports';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);
const clock = { now: () => NOW };

let serial = 0;
function certificate(notAfter: Date, overrides: Partial<CertificateRecord> = {}): CertificateRecord {
  serial += 1;
  return {
    certificateId: serial.toString(16).padStart(64, '0'),
    deviceId: `device-${serial}`,
    serialNumber: serial.toString(16),
    subject: `CN=device-${serial}`,
    issuer: 'CN=Fleet CA',
    keyAlgorithm: 'EC_P_256',
    notBefore: new Date(notAfter.getTime() - 365 * DAY_MS).toISOString(),
    notAfter: notAfter.toISOString(),
    status: 'ACTIVE',
    source: 'CSR',
    certificatePem: '',
    createdAt: NOW.toISOString(),
    updatedAt: NOW.toISOString(),
    version: 1,
    ...overrides,
  };
}

describe('daysLeft', () => {
  test.each([
    ['exactly 90 days', 90, 90 * DAY_MS],
    ['90 days less a millisecond', 89, 90 * DAY_MS - 1],
    ['a millisecond', 0, 1],
    ['nothing (the instant it expires)', 0, 0],
    ['minus a millisecond', -1, -1],
    ['minus exactly one day', -1, -DAY_MS],
    ['minus a day and a millisecond', -2, -DAY_MS - 1],
  ])('%s left counts as %i whole days', (_name, expected, offset) => {
    expect(daysLeft(at(offset), NOW)).toBe(expected);
  });
});

describe('isExpiringSoon, with a 30-day window', () => {
  test.each([
    ['exactly 30 days left (not fewer than 30)', false, 30 * DAY_MS],
    ['30 days less a millisecond left', true, 30 * DAY_MS - 1],
    ['a millisecond left', true, 1],
    ['expiring this instant (expired)', false, 0],
    ['expired a millisecond ago', false, -1],
    ['a year left', false, 365 * DAY_MS],
  ])('%s: expiring soon is %s', (_name, expected, offset) => {
    expect(isExpiringSoon({ status: 'ACTIVE', notAfter: at(offset).toISOString() }, NOW, 30)).toBe(expected);
  });

  test.each([
    ['ACTIVE', true],
    ['INACTIVE', true],
    ['PENDING_ACTIVATION', true],
    ['REVOKED', false],
    ['RETIRED', false],
    ['REJECTED', false],
  ] as [CertificateStatus, boolean][])('a certificate in state %s with 10 days left counts: %s', (status, expected) => {
    expect(isExpiringSoon({ status, notAfter: at(10 * DAY_MS).toISOString() }, NOW, 30)).toBe(expected);
  });

  test('agrees with daysLeft: expiring soon exactly when 0 <= daysLeft < warningDays, for a live certificate not yet expired', () => {
    for (const offset of [1, DAY_MS - 1, DAY_MS, 29 * DAY_MS, 30 * DAY_MS - 1, 30 * DAY_MS, 31 * DAY_MS]) {
      const days = daysLeft(at(offset), NOW);
      expect({ offset, soon: isExpiringSoon({ status: 'ACTIVE', notAfter: at(offset).toISOString() }, NOW, 30) }).toEqual({ offset, soon: days >= 0 && days < 30 });
    }
  });
});

test('the store window runs from now (included) to now + warningDays (excluded)', () => {
  expect(expiryWindow(NOW, 30)).toEqual({ notBefore: NOW, before: at(30 * DAY_MS) });
});

describe('caExpiryOf', () => {
  test('a root CA alone: its own notAfter decides', () => {
    const expiry = caExpiryOf([{ subject: 'CN=Root', notAfter: at(400 * DAY_MS) }], NOW);
    expect(expiry).toMatchObject({ daysLeft: 400, notAfter: at(400 * DAY_MS), expired: false, limiting: { subject: 'CN=Root', daysLeft: 400 } });
  });

  test('a chain whose intermediate expires first: the intermediate decides, though the CA and the root last longer', () => {
    const expiry = caExpiryOf(
      [
        { subject: 'CN=Issuing CA', notAfter: at(700 * DAY_MS) },
        { subject: 'CN=Intermediate', notAfter: at(120 * DAY_MS) },
        { subject: 'CN=Root', notAfter: at(3000 * DAY_MS) },
      ],
      NOW,
    );
    expect(expiry).toMatchObject({ daysLeft: 120, limiting: { subject: 'CN=Intermediate' }, expired: false });
    expect(expiry.certificates.map(({ subject, daysLeft: days }) => [subject, days])).toEqual([
      ['CN=Issuing CA', 700],
      ['CN=Intermediate', 120],
      ['CN=Root', 3000],
    ]);
  });

  test.each([
    ['exactly at the 90-day threshold: 90 days, which is not below 90', 90 * DAY_MS, 90],
    ['a millisecond inside it: 89 days', 90 * DAY_MS - 1, 89],
  ])('%s', (_name, offset, expected) => {
    expect(caExpiryOf([{ subject: 'CN=Root', notAfter: at(offset) }], NOW).daysLeft).toBe(expected);
  });

  test.each([
    ['expired three days ago: -3 days', -3 * DAY_MS, -3],
    ['expiring this instant: 0 days, and expired', 0, 0],
  ])('an expired CA, %s', (_name, offset, expected) => {
    expect(caExpiryOf([{ subject: 'CN=Root', notAfter: at(offset) }], NOW)).toMatchObject({ daysLeft: expected, expired: true });
  });

  test('a CA whose root expired while the CA certificate itself is still valid is expired', () => {
    const expiry = caExpiryOf(
      [
        { subject: 'CN=Issuing CA', notAfter: at(200 * DAY_MS) },
        { subject: 'CN=Root', notAfter: at(-DAY_MS) },
      ],
      NOW,
    );
    expect(expiry).toMatchObject({ expired: true, daysLeft: -1, limiting: { subject: 'CN=Root' } });
  });

  test('rejects an empty list, naming what is wrong', () => {
    expect(() => caExpiryOf([], NOW)).toThrow(expect.objectContaining({ code: 'CONFIGURATION_ERROR', message: 'The CA answered no certificate: is it activated?' }));
  });
});

/** A CA hierarchy of real certificates with chosen expiries: root → intermediate → issuing CA. */
async function caHierarchy(notAfter: { root: Date; intermediate: Date; issuing: Date }): Promise<CaCertificates> {
  const provider = webcrypto as unknown as Crypto;
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = async () => (await provider.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const [rootKeys, intermediateKeys, issuingKeys] = [await keys(), await keys(), await keys()];
  const notBefore = at(-DAY_MS);
  const caExtensions = [new x509.BasicConstraintsExtension(true, undefined, true)];
  const root = await x509.X509CertificateGenerator.createSelfSigned(
    { name: 'CN=Test Root', keys: rootKeys, notBefore, notAfter: notAfter.root, signingAlgorithm: algorithm, extensions: caExtensions },
    provider,
  );
  const issue = (subject: string, issuer: string, publicKey: CryptoKey, signingKey: CryptoKey, end: Date) =>
    x509.X509CertificateGenerator.create({ subject, issuer, publicKey, signingKey, notBefore, notAfter: end, signingAlgorithm: algorithm, extensions: caExtensions }, provider);
  const intermediate = await issue('CN=Test Intermediate', root.subject, intermediateKeys.publicKey, rootKeys.privateKey, notAfter.intermediate);
  const issuing = await issue('CN=Test Issuing CA', intermediate.subject, issuingKeys.publicKey, intermediateKeys.privateKey, notAfter.issuing);
  return { certificatePem: issuing.toString('pem'), certificateChainPem: `${intermediate.toString('pem')}\n${root.toString('pem')}` };
}

describe('validitiesOf and ExpiryMonitor.checkCa, on real certificates', () => {
  test('reads the CA certificate first, then its chain, and finds the intermediate that expires first', async () => {
    const ca = await caHierarchy({ root: at(3650 * DAY_MS), intermediate: at(45 * DAY_MS), issuing: at(900 * DAY_MS) });

    const validities = await validitiesOf(ca);
    const expiry = await new ExpiryMonitor({ ca: { getCaCertificates: async () => ca }, store: { findCertificatesExpiring: async () => ({ items: [] }) }, clock }, { warningDays: 30 }).checkCa();

    expect(validities.map((validity) => validity.subject)).toEqual(['CN=Test Issuing CA', 'CN=Test Intermediate', 'CN=Test Root']);
    expect(expiry).toMatchObject({ daysLeft: 45, limiting: { subject: 'CN=Test Intermediate' }, expired: false });
  });

  test('a root CA without chain', async () => {
    const ca = await caHierarchy({ root: at(3650 * DAY_MS), intermediate: at(3650 * DAY_MS), issuing: at(3650 * DAY_MS) });
    expect(await validitiesOf({ certificatePem: ca.certificatePem, certificateChainPem: '' })).toEqual([{ subject: 'CN=Test Issuing CA', notAfter: at(3650 * DAY_MS) }]);
  });

  test('rejects a CA certificate that is not a certificate', async () => {
    await expect(validitiesOf({ certificatePem: 'not a certificate', certificateChainPem: '' })).rejects.toMatchObject({ code: 'INVALID_CERTIFICATE' });
  });
});

describe('ExpiringCertificatesTally', () => {
  test('counts every certificate of the window and lists each device once, soonest first', () => {
    const tally = new ExpiringCertificatesTally(NOW, 30);
    tally.add([certificate(at(DAY_MS), { deviceId: 'a' }), certificate(at(2 * DAY_MS), { deviceId: 'b' }), certificate(at(3 * DAY_MS), { deviceId: 'a' })]);
    tally.add([certificate(at(4 * DAY_MS), { deviceId: 'c' })]);

    expect(tally.report()).toEqual({
      warningDays: 30,
      window: expiryWindow(NOW, 30),
      count: 4,
      deviceIds: ['a', 'b', 'c'],
      truncated: false,
      soonestNotAfter: at(DAY_MS).toISOString(),
    });
  });

  test('leaves out what is not expiring soon: revoked, retired, already expired, at or past the window end', () => {
    const tally = new ExpiringCertificatesTally(NOW, 30).add([
      certificate(at(DAY_MS), { status: 'REVOKED' }),
      certificate(at(DAY_MS), { status: 'RETIRED' }),
      certificate(at(-1)),
      certificate(at(30 * DAY_MS)),
      certificate(at(30 * DAY_MS - 1), { deviceId: 'last-one-in' }),
    ]);
    expect(tally.report()).toMatchObject({ count: 1, deviceIds: ['last-one-in'] });
  });

  test(`lists exactly ${EXPIRY_LIMITS.maxListedDevices} devices without truncating`, () => {
    const certificates = Array.from({ length: EXPIRY_LIMITS.maxListedDevices }, (_, i) => certificate(at(DAY_MS + i), { deviceId: `d-${i}` }));
    const report = new ExpiringCertificatesTally(NOW, 30).add(certificates).report();
    expect(report).toMatchObject({ count: 100, truncated: false });
    expect(report.deviceIds).toHaveLength(100);
  });

  test('the 101st device is counted but not listed, and the report says the list is truncated', () => {
    const certificates = Array.from({ length: EXPIRY_LIMITS.maxListedDevices + 1 }, (_, i) => certificate(at(DAY_MS + i), { deviceId: `d-${i}` }));
    const report = new ExpiringCertificatesTally(NOW, 30).add(certificates).report();
    expect(report).toMatchObject({ count: 101, truncated: true });
    expect(report.deviceIds).toHaveLength(100);
    expect(report.deviceIds).not.toContain('d-100');
  });

  test('a device already listed does not truncate the list', () => {
    const report = new ExpiringCertificatesTally(NOW, 30, 2)
      .add([certificate(at(DAY_MS), { deviceId: 'a' }), certificate(at(DAY_MS), { deviceId: 'b' }), certificate(at(2 * DAY_MS), { deviceId: 'a' })])
      .report();
    expect(report).toMatchObject({ count: 3, deviceIds: ['a', 'b'], truncated: false });
  });

  test('a certificate without a device is counted, with nobody to list', () => {
    expect(new ExpiringCertificatesTally(NOW, 30).add([certificate(at(DAY_MS), { deviceId: undefined })]).report()).toMatchObject({ count: 1, deviceIds: [] });
  });

  test('an empty window: zero, nobody, no soonest', () => {
    expect(new ExpiringCertificatesTally(NOW, 30).report()).toEqual({ warningDays: 30, window: expiryWindow(NOW, 30), count: 0, deviceIds: [], truncated: false });
  });
});

describe('ExpiryMonitor.findExpiringCertificates', () => {
  /** A store that answers the window in pages of at most `limit`, as the DynamoDB store does, and records each query. */
  function pagingStore(certificates: readonly CertificateRecord[]) {
    const queries: ExpiringCertificatesQuery[] = [];
    return {
      queries,
      findCertificatesExpiring: async (query: ExpiringCertificatesQuery) => {
        queries.push(query);
        const start = query.nextToken ? Number(query.nextToken) : 0;
        const items = certificates.slice(start, start + query.limit);
        return { items, ...(start + query.limit < certificates.length ? { nextToken: String(start + query.limit) } : {}) };
      },
    };
  }
  const noCa = { getCaCertificates: async (): Promise<CaCertificates> => Promise.reject(new Error('not asked')) };

  test('pages through the whole window, never asking for more than a page, and counts all of it', async () => {
    const certificates = Array.from({ length: 23 }, (_, i) => certificate(at(DAY_MS + i * 1000), { deviceId: `d-${i}` }));
    const store = pagingStore(certificates);

    const report = await new ExpiryMonitor({ ca: noCa, store, clock }, { warningDays: 30, pageSize: 5, maxListedDevices: 10 }).findExpiringCertificates();

    expect(report).toMatchObject({ count: 23, truncated: true });
    expect(report.deviceIds).toEqual(Array.from({ length: 10 }, (_, i) => `d-${i}`));
    expect(store.queries.map((query) => query.nextToken)).toEqual([undefined, '5', '10', '15', '20']);
    for (const query of store.queries) expect(query).toMatchObject({ notBefore: NOW, before: at(30 * DAY_MS), limit: 5 });
  });

  test(`asks pages of ${EXPIRY_LIMITS.pageSize} by default`, async () => {
    const store = pagingStore([]);
    await new ExpiryMonitor({ ca: noCa, store, clock }, { warningDays: 7 }).findExpiringCertificates();
    expect(store.queries).toEqual([{ notBefore: NOW, before: at(7 * DAY_MS), limit: EXPIRY_LIMITS.pageSize }]);
  });

  test.each([0, 3651, 1.5])('fails to start with a warning window of %s days', (warningDays) => {
    expect(() => new ExpiryMonitor({ ca: noCa, store: pagingStore([]), clock }, { warningDays })).toThrow(
      expect.objectContaining({ code: 'CONFIGURATION_ERROR', message: `The expiry warning window must be a whole number of days from 1 to 3650 (got ${warningDays}).` }),
    );
  });
});
