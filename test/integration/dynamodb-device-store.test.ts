import { PutCommand, QueryCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { ConflictError } from '../../functions/core/errors';
import { DeviceLifecycle } from '../../functions/core/lifecycle';
import type { AuditEvent } from '../../functions/core/model';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { certificateRecord, deviceRecord, RECORD_TIME } from '../support/records';
import { randomUUID } from 'node:crypto';

const at = RECORD_TIME;

const device = deviceRecord;
const certificate = certificateRecord;

const event = (deviceId: string, key: string, overrides: Partial<AuditEvent> = {}): AuditEvent => ({
  eventId: randomUUID(),
  type: 'DEVICE_PREREGISTERED',
  at,
  actor: 'test',
  deviceId,
  idempotencyKey: key,
  ...overrides,
});

describe('DynamoDbDeviceStore on DynamoDB Local', () => {
  let table: TestTable;
  beforeAll(async () => {
    table = await createTestTable();
  });
  afterAll(async () => {
    await table.drop();
  });

  const countEvents = async (deviceId: string) =>
    (
      await table.documentClient.send(
        new QueryCommand({ TableName: table.tableName, KeyConditionExpression: 'PK = :pk AND begins_with(SK, :e)', ExpressionAttributeValues: { ':pk': `DEVICE#${deviceId}`, ':e': 'EVENT#' } }),
      )
    ).Items?.length ?? 0;

  test('stores a device with its certificates and answers them with its latest events, newest first', async () => {
    const id = 'store-view-1';
    await table.store.commit({ device: { next: device(id) }, events: [event(id, 'k-view-1', { at: '2026-11-26T10:00:00.000Z' })] });
    await table.store.commit({
      device: { next: device(id, { version: 2 }), expectedVersion: 1 },
      certificates: [{ next: certificate('c1', id, '2027-01-01T00:00:00.000Z') }],
      events: [event(id, 'k-view-2', { type: 'CERTIFICATE_ISSUED', certificateId: 'c1', at: '2026-11-26T10:05:00.000Z' })],
    });

    const view = await table.store.getDeviceView(id, 10);

    expect(view?.device).toEqual(device(id, { version: 2 }));
    expect(view?.certificates.map((c) => c.certificateId)).toEqual(['c1']);
    expect(view?.events.map((e) => e.type)).toEqual(['CERTIFICATE_ISSUED', 'DEVICE_PREREGISTERED']);
    expect(await table.store.getCertificate('c1')).toMatchObject({ deviceId: id, status: 'ACTIVE' });
    expect(await table.store.getDeviceView('nobody', 10)).toBeUndefined();
  });

  test('keeps an operation record on condition of its version, and finds the certificates of a device by their links, oldest first', async () => {
    const id = 'store-op-1';
    const operation = { operationId: 'op-1', caller: 'arn:caller', handle: 'key-0001', operation: 'ISSUE_CERTIFICATE' as const, target: id, payloadHash: 'h', status: 'PENDING' as const, createdAt: at, updatedAt: at, version: 1 };
    await table.store.commit({ operation: { next: operation }, device: { next: device(id) }, events: [] });
    await table.store.commit({
      operation: { next: { ...operation, status: 'DONE', outcome: { certificateId: 'c-new' }, version: 2 }, expectedVersion: 1 },
      certificates: [{ next: certificate('c-new', id, '2027-01-01T00:00:00.000Z', { createdAt: '2026-11-26T11:00:00.000Z' }) }, { next: certificate('c-old', id, '2027-01-01T00:00:00.000Z') }],
      events: [],
    });

    await expect(table.store.commit({ operation: { next: { ...operation, version: 2 }, expectedVersion: 1 }, events: [] })).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await table.store.getOperation('op-1')).toMatchObject({ status: 'DONE', outcome: { certificateId: 'c-new' }, version: 2 });
    expect(await table.store.getOperation('op-never')).toBeUndefined();
    expect((await table.store.listDeviceCertificates(id)).map((c) => c.certificateId)).toEqual(['c-old', 'c-new']);
  });

  test('lists the 250 certificates of one device across Query pages and BatchGet rounds', async () => {
    const id = 'store-many-1';
    await table.store.commit({ device: { next: device(id) }, events: [] });
    const ids = Array.from({ length: 250 }, (_, i) => `many-${String(i).padStart(3, '0')}`);
    for (let start = 0; start < ids.length; start += 40) {
      await table.store.commit({ certificates: ids.slice(start, start + 40).map((c, i) => ({ next: certificate(c, id, '2027-01-01T00:00:00.000Z', { createdAt: new Date(Date.parse(at) + (start + i) * 1000).toISOString() }) })), events: [] });
    }
    expect((await table.store.listDeviceCertificates(id)).map((c) => c.certificateId)).toEqual(ids);
  });

  test('rejects a write on a stale version with CONFLICT and writes none of the change', async () => {
    const id = 'store-stale-1';
    await table.store.commit({ device: { next: device(id) }, events: [event(id, 'k-stale-1')] });

    const stale = table.store.commit({
      device: { next: device(id, { status: 'SUSPENDED', version: 2 }), expectedVersion: 7 },
      certificates: [{ next: certificate('c-stale', id, '2027-01-01T00:00:00.000Z') }],
      events: [event(id, 'k-stale-2', { type: 'DEVICE_SUSPENDED' })],
    });

    await expect(stale).rejects.toBeInstanceOf(ConflictError);
    await expect(stale).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await table.store.getDevice(id))?.status).toBe('ACTIVE');
    expect(await table.store.getCertificate('c-stale')).toBeUndefined();
    expect(await countEvents(id)).toBe(1);
  });

  test('rejects creating a device that exists with CONFLICT', async () => {
    const id = 'store-exists-1';
    await table.store.commit({ device: { next: device(id) }, events: [event(id, 'k-exists-1')] });
    await expect(table.store.commit({ device: { next: device(id) }, events: [event(id, 'k-exists-2')] })).rejects.toMatchObject({ code: 'CONFLICT' });
  });

  test('lists devices by state across pages without losing or repeating one', async () => {
    const ids = Array.from({ length: 7 }, (_, i) => `list-susp-${i}`);
    for (const id of ids) await table.store.commit({ device: { next: device(id, { status: 'SUSPENDED' }) }, events: [event(id, `k-${id}`)] });

    const seen: string[] = [];
    let nextToken: string | undefined;
    let pages = 0;
    do {
      const page = await table.store.listDevices({ status: 'SUSPENDED', limit: 3, nextToken });
      seen.push(...page.items.map((d) => d.deviceId));
      nextToken = page.nextToken;
      pages += 1;
    } while (nextToken);

    expect(seen.sort()).toEqual([...ids].sort());
    expect(pages).toBeGreaterThanOrEqual(3);
  });

  test('rejects a page token that does not belong to the query with INVALID_REQUEST', async () => {
    const ids = ['tok-1', 'tok-2'];
    for (const id of ids) await table.store.commit({ device: { next: device(id, { status: 'REVOKED' }) }, events: [event(id, `k-${id}`)] });
    const page = await table.store.listDevices({ status: 'REVOKED', limit: 1 });

    await expect(table.store.listDevices({ status: 'ACTIVE', limit: 1, nextToken: page.nextToken })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(table.store.listDevices({ status: 'REVOKED', limit: 1, nextToken: 'not-a-token' })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    const forged = (key: unknown) => Buffer.from(JSON.stringify({ scope: 'status:REVOKED', key })).toString('base64url');
    for (const key of [{ foo: 'bar' }, null, [], { PK: 1 }]) {
      await expect(table.store.listDevices({ status: 'REVOKED', limit: 1, nextToken: forged(key) })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    }
  });

  test('finds live certificates expiring in a window across months, soonest first, and leaves out revoked ones', async () => {
    const id = 'expiry-1';
    const certs = [
      certificate('exp-a', id, '2030-01-10T00:00:00.000Z'),
      certificate('exp-b', id, '2030-02-20T00:00:00.000Z'),
      certificate('exp-c', id, '2030-03-05T00:00:00.000Z'),
      certificate('exp-revoked', id, '2030-01-15T00:00:00.000Z', { status: 'REVOKED' }),
      certificate('exp-late', id, '2030-06-01T00:00:00.000Z'),
    ];
    await table.store.commit({ device: { next: device(id) }, certificates: certs.map((next) => ({ next })), events: [event(id, 'k-exp')] });

    const found: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await table.store.findCertificatesExpiring({ notBefore: new Date('2030-01-01T00:00:00Z'), before: new Date('2030-04-01T00:00:00Z'), limit: 2, nextToken });
      found.push(...page.items.map((c) => c.certificateId));
      nextToken = page.nextToken;
    } while (nextToken);

    expect(found).toEqual(['exp-a', 'exp-b', 'exp-c']);
  });

  test('finds devices whose rotation is due, soonest deadline first, across pages; a cleared rotation leaves the index', async () => {
    const rotation = (deviceId: string, commitDeadline: string) => ({ state: 'PENDING' as const, requestId: `r-${deviceId}`, certificateId: `new-${deviceId}`, previousCertificateId: `old-${deviceId}`, commitDeadline });
    const deadlines = ['2026-12-01T03:00:00.000Z', '2026-12-01T01:00:00.000Z', '2026-12-01T02:00:00.000Z', '2026-12-02T00:00:00.000Z'];
    for (const [index, deadline] of deadlines.entries()) {
      await table.store.commit({ device: { next: device(`rotating-${index}`, { rotation: rotation(`rotating-${index}`, deadline) }) }, events: [] });
    }
    await table.store.commit({ device: { next: device('rotating-none') }, events: [] });

    const found: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await table.store.findRotationsDue({ before: new Date('2026-12-01T03:00:00.000Z'), limit: 2, ...(nextToken ? { nextToken } : {}) });
      found.push(...page.items.map((d) => d.deviceId));
      nextToken = page.nextToken;
    } while (nextToken);
    expect(found).toEqual(['rotating-1', 'rotating-2', 'rotating-0']);
    expect((await table.store.getDevice('rotating-1'))?.rotation?.commitDeadline).toBe(deadlines[1]);

    const { rotation: _cleared, ...withoutRotation } = device('rotating-1', { rotation: rotation('rotating-1', deadlines[1] as string), version: 2 });
    await table.store.commit({ device: { next: withoutRotation, expectedVersion: 1 }, events: [] });
    const after = await table.store.findRotationsDue({ before: new Date('2026-12-01T03:00:00.000Z'), limit: 10 });
    expect(after.items.map((d) => d.deviceId)).toEqual(['rotating-2', 'rotating-0']);
    expect((await table.store.getDevice('rotating-1'))?.rotation).toBeUndefined();
    await expect(table.store.findRotationsDue({ before: new Date('2026-12-01T03:00:00.000Z'), limit: 10, nextToken: 'forged' })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  test('of 24 racing suspensions of one device exactly one changes it, the others answer it SUSPENDED, and the trail holds exactly one', async () => {
    const ca = await SoftwareCertificateAuthority.create('Race CA');
    let n = 0;
    const lifecycle = new DeviceLifecycle(
      { store: table.store, registry: new LocalDeviceRegistry({ thingGroupName: 'fleet' }), ca: ca.ca, clock: { now: () => new Date() }, ids: { next: () => `race-${(n += 1)}` } },
      { maxConflictRetries: 10 },
    );
    const id = 'race-1';
    await table.store.commit({ device: { next: device(id) }, events: [event(id, 'k-race')] });

    const results = await Promise.allSettled(
      Array.from({ length: 24 }, (_, i) => lifecycle.suspendDevice({ deviceId: id, actor: `caller-${i}`, requestKey: `request-${i}` })),
    );

    // A race is never answered as a refusal: the device is SUSPENDED, as each asked, or the loser is told to retry (CONFLICT).
    const refusals = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => (r.reason as { code: string }).code);
    expect(refusals.filter((code) => code !== 'CONFLICT')).toEqual([]);
    for (const r of results) if (r.status === 'fulfilled') expect(r.value.status).toBe('SUSPENDED');
    expect(await table.store.getDevice(id)).toMatchObject({ status: 'SUSPENDED', version: 2 });
    const trail = await table.documentClient.send(new ScanCommand({ TableName: table.tableName, FilterExpression: '#t = :t AND deviceId = :d', ExpressionAttributeNames: { '#t': 'type' }, ExpressionAttributeValues: { ':t': 'DEVICE_SUSPENDED', ':d': id } }));
    expect(trail.Items).toHaveLength(1);
  });
});

describe('upgrade from 0.1.0', () => {
  test('a device item that lists its certificates gets their links, loses the list, and a second run changes nothing', async () => {
    const table = await createTestTable();
    try {
      const certificates = Array.from({ length: 120 }, (_, i) => certificate(`legacy-${String(i).padStart(3, '0')}`, 'legacy-1', '2027-01-01T00:00:00.000Z'));
      for (let start = 0; start < certificates.length; start += 40) {
        await table.store.commit({ certificates: certificates.slice(start, start + 40).map((next) => ({ next: { ...next, deviceId: undefined } })), events: [] });
      }
      const legacyDevice = { ...device('legacy-1'), certificateIds: certificates.map((c) => c.certificateId) };
      await table.documentClient.send(new PutCommand({ TableName: table.tableName, Item: { PK: 'DEVICE#legacy-1', SK: 'DEVICE', itemType: 'Device', GSI1PK: 'STATUS#ACTIVE', GSI1SK: 'legacy-1', ...legacyDevice } }));
      expect(await table.store.listDeviceCertificates('legacy-1')).toEqual([]);

      expect(await table.store.migrateCertificateLists()).toBe(1);
      expect(await table.store.migrateCertificateLists()).toBe(0);

      expect((await table.store.listDeviceCertificates('legacy-1')).map((c) => c.certificateId).sort()).toEqual(certificates.map((c) => c.certificateId));
      expect(await table.store.getDevice('legacy-1')).toEqual(device('legacy-1'));
    } finally {
      await table.drop();
    }
  });
});
