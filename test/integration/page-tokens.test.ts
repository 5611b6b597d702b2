import type { CertificateRecord, Device, DeviceStatus } from '../../functions/core/model';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { certificateRecord, deviceRecord } from '../support/records';

const device = (deviceId: string, status: DeviceStatus): Device => deviceRecord(deviceId, { status, attributes: {} });
const certificate = (certificateId: string, deviceId: string, notAfter: string): CertificateRecord => certificateRecord(certificateId, deviceId, notAfter, { serialNumber: certificateId });

/** A token as a caller could forge it: the store's own encoding (base64url JSON) of whatever it likes. */
const forge = (token: unknown): string => Buffer.from(JSON.stringify(token), 'utf8').toString('base64url');

const EXPIRY_WINDOW = { notBefore: new Date('2030-01-01T00:00:00.000Z'), before: new Date('2030-03-01T00:00:00.000Z') };
const EXPIRY_SCOPE = `expiry:${EXPIRY_WINDOW.notBefore.toISOString()}:${EXPIRY_WINDOW.before.toISOString()}`;

describe('DynamoDbDeviceStore page tokens on DynamoDB Local', () => {
  let table: TestTable;
  beforeAll(async () => {
    table = await createTestTable();
    for (const id of ['page-a', 'page-b', 'page-c']) await table.store.commit({ device: { next: device(id, 'ACTIVE') }, events: [] });
    await table.store.commit({ device: { next: device('page-revoked', 'REVOKED') }, events: [] });
    await table.store.commit({
      device: { next: device('page-expiring', 'ACTIVE') },
      certificates: ['2030-01-05', '2030-01-10', '2030-01-20'].map((day, index) => ({ next: certificate(`page-cert-${index}`, 'page-expiring', `${day}T00:00:00.000Z`) })),
      events: [],
    });
  });
  afterAll(async () => {
    await table.drop();
  });

  test('a token from a real page of devices continues the query', async () => {
    // Act
    const first = await table.store.listDevices({ status: 'ACTIVE', limit: 2 });
    const second = await table.store.listDevices({ status: 'ACTIVE', limit: 10, nextToken: first.nextToken });

    // Assess
    expect(first.nextToken).toBeDefined();
    expect([...first.items, ...second.items].map((item) => item.deviceId).sort()).toEqual(['page-a', 'page-b', 'page-c', 'page-expiring']);
  });

  test('a token from a real page of expiring certificates continues the query', async () => {
    // Act
    const first = await table.store.findCertificatesExpiring({ ...EXPIRY_WINDOW, limit: 2 });
    const second = await table.store.findCertificatesExpiring({ ...EXPIRY_WINDOW, limit: 10, nextToken: first.nextToken });

    // Assess
    expect(first.nextToken).toBeDefined();
    expect([...first.items, ...second.items].map((item) => item.certificateId)).toEqual(['page-cert-0', 'page-cert-1', 'page-cert-2']);
  });

  const deviceKey = { PK: 'DEVICE#a', SK: 'DEVICE', GSI1PK: 'STATUS#ACTIVE', GSI1SK: 'a' };
  test.each<[string, unknown]>([
    ['a key with a foreign set of attributes', { scope: 'status:ACTIVE', key: { PK: 'x' } }],
    ['a key in another status partition', { scope: 'status:ACTIVE', key: { ...deviceKey, GSI1PK: 'STATUS#REVOKED' } }],
    ['a key without the index sort key', { scope: 'status:ACTIVE', key: { PK: 'DEVICE#a', SK: 'DEVICE', GSI1PK: 'STATUS#ACTIVE' } }],
    ['a key with an attribute more', { scope: 'status:ACTIVE', key: { ...deviceKey, itemType: 'Device' } }],
    ['a key of the expiry index', { scope: 'status:ACTIVE', key: { PK: 'CERTIFICATE#c', SK: 'CERTIFICATE', GSI2PK: 'EXPIRY#2030-01', GSI2SK: '2030-01-05T00:00:00.000Z#c' } }],
    ['a key with an empty value', { scope: 'status:ACTIVE', key: { ...deviceKey, GSI1SK: '' } }],
    ['a key with a number for a value', { scope: 'status:ACTIVE', key: { ...deviceKey, GSI1SK: 7 } }],
    ['no key at all', { scope: 'status:ACTIVE' }],
  ])('refuses a forged device page token with %s as INVALID_REQUEST', async (_name, forged) => {
    // Act
    const listing = table.store.listDevices({ status: 'ACTIVE', limit: 2, nextToken: forge(forged) });

    // Assess
    await expect(listing).rejects.toMatchObject({ name: 'ValidationError', code: 'INVALID_REQUEST' });
  });

  const certificateKey = { PK: 'CERTIFICATE#c', SK: 'CERTIFICATE', GSI2PK: 'EXPIRY#2030-01', GSI2SK: '2030-01-05T00:00:00.000Z#c' };
  test.each<[string, unknown]>([
    ['a key with a foreign set of attributes', { scope: EXPIRY_SCOPE, bucket: 0, key: { PK: 'x' } }],
    ['a key of the status index', { scope: EXPIRY_SCOPE, bucket: 0, key: deviceKey }],
    ['a key in another month than its bucket', { scope: EXPIRY_SCOPE, bucket: 1, key: certificateKey }],
    ['a key in a month outside the window', { scope: EXPIRY_SCOPE, bucket: 0, key: { ...certificateKey, GSI2PK: 'EXPIRY#1999-01' } }],
    ['a key whose expiry is outside the window', { scope: EXPIRY_SCOPE, bucket: 0, key: { ...certificateKey, GSI2SK: '2031-01-05T00:00:00.000Z#c' } }],
  ])('refuses a forged expiry page token with %s as INVALID_REQUEST', async (_name, forged) => {
    // Act
    const finding = table.store.findCertificatesExpiring({ ...EXPIRY_WINDOW, limit: 2, nextToken: forge(forged) });

    // Assess
    await expect(finding).rejects.toMatchObject({ name: 'ValidationError', code: 'INVALID_REQUEST' });
  });
});
