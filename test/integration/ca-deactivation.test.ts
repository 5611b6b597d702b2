import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { UpstreamError } from '../../functions/core/errors';
import { DeviceLifecycle, randomIds } from '../../functions/core/lifecycle';
import type { DeviceRegistry, DeviceStore } from '../../functions/core/ports';
import { systemClock } from '../../functions/core/ports';
import { certificateIdOf } from '../../functions/core/x509';
import { createApiHandler } from '../../functions/handlers/api';
import { matchPath } from '../../functions/handlers/http/routes';
import { createTestTable, type TestTable } from '../support/dynamodb';
import { makeCsr } from '../support/pki';

/*
 * POST /certificate-authorities/{caCertificateId}/deactivate through the API handler, on DynamoDB Local, with the
 * local registry and a software CA that has rotated once (a current CA and a previous one, both registered).
 */

const silent = { info: () => undefined, error: () => undefined, warn: () => undefined, addContext: () => undefined } as never;

interface Fleet {
  readonly table: TestTable;
  readonly registry: LocalDeviceRegistry;
  readonly lifecycle: DeviceLifecycle;
  readonly oldCa: SoftwareCertificateAuthority;
  readonly oldCaId: string;
  readonly newCaId: string;
  /** Faults to inject: the registry and store the lifecycle sees call these first. */
  readonly faults: { beforeSetCaStatus?: () => void; afterSetCaStatus?: () => void; beforeCommit?: (change: Parameters<DeviceStore['commit']>[0]) => void };
  deactivate(caCertificateId: string, options?: { body?: unknown; key?: string }): Promise<{ status: number; body: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** A device onboarded by JITR with a certificate the old CA signed. */
  onboardOnOldCa(deviceId: string): Promise<string>;
  caEvents(caCertificateId: string): Promise<Record<string, unknown>[]>;
}

async function createFleet(): Promise<Fleet> {
  const table = await createTestTable();
  const { ca: oldCa, material: oldMaterial } = await SoftwareCertificateAuthority.create('Fleet CA 1');
  const { material: newMaterial } = await SoftwareCertificateAuthority.create('Fleet CA 2');
  const ca = await SoftwareCertificateAuthority.load(newMaterial, { previousCaCertificatePems: [oldMaterial.certificatePem] });
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
  const oldCaId = (await registry.registerCaCertificate(oldMaterial.certificatePem, { autoRegistration: true })).caCertificateId;
  const newCaId = (await registry.registerCaCertificate(newMaterial.certificatePem, { autoRegistration: true })).caCertificateId;
  const faults: Fleet['faults'] = {};
  const faultyRegistry: DeviceRegistry = Object.assign(Object.create(registry) as LocalDeviceRegistry, {
    setCaCertificateStatus: async (id: string, status: 'INACTIVE') => {
      faults.beforeSetCaStatus?.();
      await registry.setCaCertificateStatus(id, status);
      faults.afterSetCaStatus?.();
    },
  });
  const faultyStore: DeviceStore = Object.assign(Object.create(table.store) as DeviceStore, {
    commit: async (change: Parameters<DeviceStore['commit']>[0]) => {
      faults.beforeCommit?.(change);
      await table.store.commit(change);
    },
  });
  const lifecycle = new DeviceLifecycle({ store: faultyStore, registry: faultyRegistry, ca, clock: systemClock, ids: randomIds });
  const api = createApiHandler({ lifecycle, clock: systemClock, logger: silent });
  return {
    table,
    registry,
    lifecycle,
    oldCa,
    oldCaId,
    newCaId,
    faults,
    deactivate: async (caCertificateId, options = {}) => {
      const path = `/certificate-authorities/${caCertificateId}/deactivate`;
      const matched = matchPath('POST', path);
      const event = {
        httpMethod: 'POST',
        path,
        resource: matched?.route.resource ?? '/{proxy+}',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': options.key ?? randomUUID() },
        multiValueHeaders: {},
        queryStringParameters: null,
        multiValueQueryStringParameters: null,
        pathParameters: matched ? matched.pathParameters : { proxy: path.slice(1) },
        stageVariables: null,
        body: JSON.stringify(options.body ?? {}),
        isBase64Encoded: false,
        requestContext: { requestId: randomUUID(), identity: { userArn: 'arn:aws:iam::123456789012:role/operator' } },
      } as unknown as APIGatewayProxyEvent;
      const raw = await api(event);
      return { status: raw.statusCode, body: JSON.parse(raw.body) };
    },
    onboardOnOldCa: async (deviceId) => {
      const pem = await oldCa.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
      const registered = await registry.registerPendingActivation(pem, oldCaId);
      const now = Date.now();
      await lifecycle.registerOnFirstConnect({
        certificateId: registered.certificateId,
        caCertificateId: oldCaId,
        timestamp: now,
        certificateStatus: 'PENDING_ACTIVATION',
        awsAccountId: '000000000000',
        certificateRegistrationTimestamp: String(now),
      });
      return registered.certificateId;
    },
    caEvents: async (caCertificateId) => {
      const { Items } = await table.documentClient.send(
        new QueryCommand({ TableName: table.tableName, KeyConditionExpression: 'PK = :pk AND begins_with(SK, :events)', ExpressionAttributeValues: { ':pk': `CERTIFICATE#${caCertificateId}`, ':events': 'EVENT#' } }),
      );
      return Items ?? [];
    },
  };
}

/** The device rotates over: a certificate from the current CA, and its old-CA certificate revoked. */
async function moveToNewCa(fleet: Fleet, deviceId: string, oldCertificateId: string): Promise<void> {
  await fleet.lifecycle.issueFromCsr({ deviceId, csrPem: (await makeCsr(deviceId)).csrPem, actor: 'test', requestKey: randomUUID() });
  await fleet.lifecycle.revokeCertificate({ deviceId, certificateId: oldCertificateId, reason: 'SUPERSEDED', actor: 'test', requestKey: randomUUID() });
}

describe('POST /certificate-authorities/{caCertificateId}/deactivate', () => {
  let fleet: Fleet;
  beforeEach(async () => {
    fleet = await createFleet();
  });
  afterEach(async () => {
    await fleet.table.drop();
  });

  test('rejects the current CA with 409 CA_IS_CURRENT and changes nothing', async () => {
    const answer = await fleet.deactivate(fleet.newCaId);

    expect(answer).toMatchObject({ status: 409, body: { error: { code: 'CA_IS_CURRENT', details: { caCertificateId: fleet.newCaId } } } });
    expect(answer.body.error.message).toMatch(/switch the stack to a new CA first/);
    expect(fleet.registry.findCaCertificate(fleet.newCaId)).toMatchObject({ status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' });
  });

  test('rejects a CA that is not the fleet\'s with 404 CA_NOT_FOUND, and a malformed id with 400', async () => {
    const foreign = await certificateIdOf((await SoftwareCertificateAuthority.create('Foreign CA')).material.certificatePem);

    expect(await fleet.deactivate(foreign)).toMatchObject({ status: 404, body: { error: { code: 'CA_NOT_FOUND' } } });
    expect(await fleet.deactivate('not-a-fingerprint')).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
    expect(await fleet.deactivate(fleet.oldCaId, { body: { force: 'yes' } })).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
  });

  test('rejects a previous CA that still has live certificates with 409 CA_STILL_IN_USE, the count and the devices, and changes nothing', async () => {
    await fleet.onboardOnOldCa('on-old-1');
    await fleet.onboardOnOldCa('on-old-2');
    await fleet.lifecycle.suspendDevice({ deviceId: 'on-old-2', actor: 'test', requestKey: randomUUID() });

    const answer = await fleet.deactivate(fleet.oldCaId);

    // A SUSPENDED device's INACTIVE certificate counts: it would be stranded when the device is resumed.
    expect(answer).toMatchObject({ status: 409, body: { error: { code: 'CA_STILL_IN_USE', details: { caCertificateId: fleet.oldCaId, liveCertificates: 2 } } } });
    expect([...answer.body.error.details.deviceIds].sort()).toEqual(['on-old-1', 'on-old-2']);
    expect(fleet.registry.findCaCertificate(fleet.oldCaId)).toMatchObject({ status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' });
    expect(await fleet.caEvents(fleet.oldCaId)).toEqual([]);
  });

  test('deactivates a previous CA once its devices have rotated over, records it once, and answers the same to a retry', async () => {
    const oldCertificateId = await fleet.onboardOnOldCa('mover');
    await moveToNewCa(fleet, 'mover', oldCertificateId);
    const key = randomUUID();

    const first = await fleet.deactivate(fleet.oldCaId, { key });
    const retry = await fleet.deactivate(fleet.oldCaId, { key });

    expect(first).toMatchObject({
      status: 200,
      body: { caCertificateId: fleet.oldCaId, status: 'INACTIVE', autoRegistrationStatus: 'DISABLE', liveCertificates: 0, strandedCertificates: 0, deviceIds: [], forced: false },
    });
    expect(retry).toEqual(first);
    expect(fleet.registry.findCaCertificate(fleet.oldCaId)).toMatchObject({ status: 'INACTIVE', autoRegistrationStatus: 'DISABLE' });
    expect(fleet.registry.findCaCertificate(fleet.newCaId)).toMatchObject({ status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' });
    expect(await fleet.caEvents(fleet.oldCaId)).toEqual([
      expect.objectContaining({ type: 'CA_DEACTIVATED', certificateId: fleet.oldCaId, fromStatus: 'ACTIVE', toStatus: 'INACTIVE', actor: 'arn:aws:iam::123456789012:role/operator' }),
    ]);
  });

  test('with force, deactivates a CA that still has live certificates and answers how many it stranded', async () => {
    await fleet.onboardOnOldCa('left-behind');

    const answer = await fleet.deactivate(fleet.oldCaId, { body: { force: true } });

    expect(answer).toMatchObject({ status: 200, body: { liveCertificates: 1, strandedCertificates: 1, deviceIds: ['left-behind'], forced: true } });
    expect(fleet.registry.findCaCertificate(fleet.oldCaId)).toMatchObject({ status: 'INACTIVE', autoRegistrationStatus: 'DISABLE' });
    expect(await fleet.caEvents(fleet.oldCaId)).toEqual([expect.objectContaining({ type: 'CA_DEACTIVATED', reason: 'deactivated with force: 1 live certificate(s) stranded' })]);
  });

  test('rejects the same Idempotency-Key with another body', async () => {
    const key = randomUUID();
    await fleet.deactivate(fleet.oldCaId, { key });

    expect(await fleet.deactivate(fleet.oldCaId, { key, body: { force: true } })).toMatchObject({ status: 422, body: { error: { code: 'IDEMPOTENCY_KEY_REUSED' } } });
  });
});

describe('deactivating a CA when a call fails', () => {
  let fleet: Fleet;
  beforeEach(async () => {
    fleet = await createFleet();
  });
  afterEach(async () => {
    await fleet.table.drop();
  });

  const throttled = () => new UpstreamError('UPSTREAM_THROTTLED', 'AWS IoT UpdateCACertificate throttled', true);

  test.each([
    { call: 'UpdateCACertificate fails', inject: (f: Fleet) => (f.faults.beforeSetCaStatus = once(throttled)) },
    { call: 'UpdateCACertificate happened but its answer was lost', inject: (f: Fleet) => (f.faults.afterSetCaStatus = once(throttled)) },
    {
      call: 'the final write fails',
      inject: (f: Fleet) =>
        (f.faults.beforeCommit = onceWhen(
          (change) => change.operation?.next.status === 'DONE',
          () => new UpstreamError('UPSTREAM_FAILURE', 'DynamoDB TransactWriteItems failed', true),
        )),
    },
  ])('fails when $call, leaves no record of a deactivation, and a retry with the same key converges', async ({ call, inject }) => {
    // Prepare
    inject(fleet);
    const key = randomUUID();

    // Act
    const failed = await fleet.deactivate(fleet.oldCaId, { key });
    const eventsAfterFailure = await fleet.caEvents(fleet.oldCaId);
    const caAfterFailure = fleet.registry.findCaCertificate(fleet.oldCaId);
    const retried = await fleet.deactivate(fleet.oldCaId, { key });

    // Assess
    expect(failed.status).toBeGreaterThanOrEqual(500);
    expect(eventsAfterFailure).toEqual([]);
    if (call === 'UpdateCACertificate fails') expect(caAfterFailure).toMatchObject({ status: 'ACTIVE', autoRegistrationStatus: 'ENABLE' });
    expect(retried).toMatchObject({ status: 200, body: { status: 'INACTIVE', forced: false } });
    expect(fleet.registry.findCaCertificate(fleet.oldCaId)).toMatchObject({ status: 'INACTIVE', autoRegistrationStatus: 'DISABLE' });
    expect(await fleet.caEvents(fleet.oldCaId)).toHaveLength(1);
  });

  test('concurrent requests with the same key deactivate once', async () => {
    const key = randomUUID();

    const answers = await Promise.all([fleet.deactivate(fleet.oldCaId, { key }), fleet.deactivate(fleet.oldCaId, { key }), fleet.deactivate(fleet.oldCaId, { key })]);

    // Each answer is the outcome or "still running, retry": never a second deactivation.
    for (const answer of answers) expect([200, 409]).toContain(answer.status);
    expect(answers.filter((answer) => answer.status === 409).every((answer) => answer.body.error.code === 'REQUEST_IN_PROGRESS')).toBe(true);
    expect(await fleet.caEvents(fleet.oldCaId)).toHaveLength(1);
  });
});

function once(error: () => Error): () => void {
  let thrown = false;
  return () => {
    if (thrown) return;
    thrown = true;
    throw error();
  };
}

function onceWhen<T>(when: (value: T) => boolean, error: () => Error): (value: T) => void {
  let thrown = false;
  return (value) => {
    if (thrown || !when(value)) return;
    thrown = true;
    throw error();
  };
}
