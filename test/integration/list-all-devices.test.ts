import { DEVICE_STATUSES, type Device, type DeviceStatus } from '../../functions/core/model';
import type { DeviceStore } from '../../functions/core/ports';
import { createApiHarness, type ApiHarness } from '../support/api-harness';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { InMemoryDeviceStore } from '../support/in-memory-store';

const at = '2026-11-30T10:00:00.000Z';

const device = (deviceId: string, status: DeviceStatus): Device => ({ deviceId, thingName: deviceId, status, attributes: {}, createdAt: at, updatedAt: at, version: 1 });

/** Uneven counts, one state left empty, ids that sort differently by code unit and by locale. */
const FLEET: readonly Device[] = [
  ...['reg-b', 'reg-a', 'Reg-Z', 'reg-c'].map((id) => device(id, 'REGISTERED')),
  ...Array.from({ length: 9 }, (_, index) => device(`act-${String(index).padStart(2, '0')}`, 'ACTIVE')),
  device('sus-1', 'SUSPENDED'),
  ...['rev-2', 'rev-1', 'rev-3'].map((id) => device(id, 'REVOKED')),
  // none DECOMMISSIONED
];

const codeUnitOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const EXPECTED_ORDER = [...FLEET].sort((a, b) => DEVICE_STATUSES.indexOf(a.status) - DEVICE_STATUSES.indexOf(b.status) || codeUnitOrder(a.deviceId, b.deviceId)).map((d) => d.deviceId);

/** A token as a caller could forge it: the store's own encoding (base64url JSON) of whatever it likes. */
const forge = (token: unknown): string => Buffer.from(JSON.stringify(token), 'utf8').toString('base64url');
const decode = (token: string): Record<string, unknown> => JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as Record<string, unknown>;

async function walk(store: DeviceStore, limit: number, status?: DeviceStatus): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let nextToken: string | undefined;
  let pages = 0;
  do {
    const page = await store.listDevices({ limit, ...(status ? { status } : {}), ...(nextToken ? { nextToken } : {}) });
    expect(page.items.length).toBeLessThanOrEqual(limit);
    ids.push(...page.items.map((d) => d.deviceId));
    nextToken = page.nextToken;
    pages += 1;
    expect(pages).toBeLessThan(100);
  } while (nextToken);
  return { ids, pages };
}

describe('listing every device (no status) on DynamoDB Local', () => {
  let table: TestTable;
  const memory = new InMemoryDeviceStore();
  beforeAll(async () => {
    table = await createTestTable();
    for (const next of FLEET) {
      await table.store.commit({ device: { next }, events: [] });
      await memory.commit({ device: { next }, events: [] });
    }
  });
  afterAll(async () => {
    await table.drop();
  });

  test.each([1, 2, 3, 4, 7, 16, 17, 100])('pages of %i: every device once, state by state then by id, never a Scan', async (limit) => {
    // Act
    const { ids, pages } = await walk(table.store, limit);

    // Assess
    expect(ids).toEqual(EXPECTED_ORDER);
    expect(new Set(ids).size).toBe(FLEET.length);
    expect(pages).toBeGreaterThanOrEqual(Math.ceil(FLEET.length / limit));
    expect(pages).toBeLessThanOrEqual(Math.ceil(FLEET.length / limit) + 1);
  });

  test('the in-memory store lists in the same order, with the same page sizes', async () => {
    for (const limit of [1, 3, 5, 100]) expect((await walk(memory, limit)).ids).toEqual(EXPECTED_ORDER);
  });

  test('a page that ends inside a state carries that state and key; one that ends at a state boundary continues with the next state', async () => {
    // REGISTERED holds 4: a page of 2 stops inside it, a page of 4 at its end.
    const inside = await table.store.listDevices({ limit: 2 });
    expect(decode(inside.nextToken as string)).toMatchObject({ scope: 'all-devices', bucket: 0, key: expect.objectContaining({ GSI1PK: 'STATUS#REGISTERED' }) });
    const following = await table.store.listDevices({ limit: 3, nextToken: inside.nextToken });
    expect(following.items.map((d) => d.deviceId)).toEqual(EXPECTED_ORDER.slice(2, 5));
  });

  test('?status= still lists one state only, and its tokens do not continue a listing of every device (nor the reverse)', async () => {
    expect((await walk(table.store, 2, 'REVOKED')).ids).toEqual(['rev-1', 'rev-2', 'rev-3']);
    expect((await walk(table.store, 5, 'DECOMMISSIONED')).ids).toEqual([]);
    const byStatus = await table.store.listDevices({ status: 'ACTIVE', limit: 2 });
    const all = await table.store.listDevices({ limit: 2 });
    await expect(table.store.listDevices({ limit: 2, nextToken: byStatus.nextToken })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(table.store.listDevices({ status: 'REGISTERED', limit: 2, nextToken: all.nextToken })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  const realKey = { PK: 'DEVICE#act-01', SK: 'DEVICE', GSI1PK: 'STATUS#ACTIVE', GSI1SK: 'act-01' };
  test.each([
    ['not base64 JSON', 'not-a-token'],
    ['a state past the last', forge({ scope: 'all-devices', bucket: DEVICE_STATUSES.length })],
    ['a state far past the last', forge({ scope: 'all-devices', bucket: 200 })],
    ['a negative state', forge({ scope: 'all-devices', bucket: -1 })],
    ['a fractional state', forge({ scope: 'all-devices', bucket: 1.5 })],
    ['a key of another state than its bucket', forge({ scope: 'all-devices', bucket: 0, key: realKey })],
    ['a key without a bucket outside the first state', forge({ scope: 'all-devices', key: realKey })],
    ['a key missing an attribute', forge({ scope: 'all-devices', bucket: 1, key: { PK: 'DEVICE#act-01', SK: 'DEVICE', GSI1PK: 'STATUS#ACTIVE' } })],
    ['a key with another attribute', forge({ scope: 'all-devices', bucket: 1, key: { ...realKey, GSI2PK: 'x' } })],
    ['a key that is a list', forge({ scope: 'all-devices', bucket: 1, key: ['x'] })],
    ['a number key value', forge({ scope: 'all-devices', bucket: 1, key: { ...realKey, SK: 1 } })],
    ['the scope of an expiry query', forge({ scope: 'expiry:x:y', bucket: 1 })],
  ])('a forged token (%s) is INVALID_REQUEST, never an upstream error', async (_what, nextToken) => {
    await expect(table.store.listDevices({ limit: 2, nextToken })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  test('a well-formed token a caller wrote by hand continues where it says', async () => {
    const page = await table.store.listDevices({ limit: 2, nextToken: forge({ scope: 'all-devices', bucket: 1, key: realKey }) });
    expect(page.items.map((d) => d.deviceId)).toEqual(['act-02', 'act-03']);
  });
});

describe('GET /devices without a status, through the API handler', () => {
  let harness: ApiHarness;
  beforeAll(async () => {
    harness = await createApiHarness();
    for (const next of FLEET) await harness.table.store.commit({ device: { next }, events: [] });
    // One pre-registered through the API itself.
    expect((await harness.call('POST', '/devices', { body: { deviceId: 'reg-api' } })).status).toBe(201);
  });
  afterAll(async () => {
    await harness.close();
  });

  test('pages through every device with limit and nextToken, none lost or repeated', async () => {
    const seen: string[] = [];
    let nextToken: string | undefined;
    do {
      const response = await harness.call('GET', '/devices', { query: { limit: '3', ...(nextToken ? { nextToken } : {}) } });
      expect(response.status).toBe(200);
      expect(response.body.items.length).toBeLessThanOrEqual(3);
      seen.push(...response.body.items.map((d: { deviceId: string }) => d.deviceId));
      nextToken = response.body.nextToken;
    } while (nextToken);
    const expected = [...FLEET, device('reg-api', 'REGISTERED')]
      .sort((a, b) => DEVICE_STATUSES.indexOf(a.status) - DEVICE_STATUSES.indexOf(b.status) || codeUnitOrder(a.deviceId, b.deviceId))
      .map((d) => d.deviceId);
    expect(seen).toEqual(expected);
  });

  test('the default page is 25 devices, here all of them in one page', async () => {
    const response = await harness.call('GET', '/devices');
    expect(response.status).toBe(200);
    expect(response.body.items).toHaveLength(FLEET.length + 1);
    expect(response.body.nextToken).toBeUndefined();
    expect(response.body.items[0]).toMatchObject({ deviceId: 'Reg-Z', status: 'REGISTERED' });
  });

  test.each([
    [{ nextToken: forge({ scope: 'all-devices', bucket: 99 }) }, 'nextToken is not valid'],
    [{ nextToken: forge({ scope: 'status:ACTIVE', key: { PK: 'DEVICE#act-01', SK: 'DEVICE', GSI1PK: 'STATUS#ACTIVE', GSI1SK: 'act-01' } }) }, 'nextToken is not valid'],
    [{ limit: '0' }, 'limit'],
    [{ status: 'happy' }, 'status must be one of'],
  ])('rejects %j with 400 INVALID_REQUEST', async (query, fragment) => {
    const response = await harness.call('GET', '/devices', { query });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('INVALID_REQUEST');
    expect(response.body.error.message).toContain(fragment);
  });
});
