import { randomUUID } from 'node:crypto';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { ConflictError, RequestInProgressError } from '../../functions/core/errors';
import type { OperationRecord } from '../../functions/core/model';
import { Operations, operationIdOf, type OperationRequest } from '../../functions/core/operations';
import { localDocumentClient } from '../../local/dynamodb-local';
import { AwsCallCounter } from '../support/aws-call-counter';
import { createTestTable, dynamoDbEndpoint, type TestTable } from '../support/dynamodb';
import { TestClock } from '../support/lifecycle-fixture';
import { deviceRecord, RECORD_TIME } from '../support/records';

/*
 * One-record writes (an operation's start, progress, lease) on DynamoDB Local, counted on the wire: a conditional PutItem
 * instead of a one-item transaction (half the write units on AWS), and an operation started without reading first.
 * The guarantees are those of the transaction: the same condition, CONFLICT on a stale version with nothing written,
 * and a write that landed but whose answer was lost is recognised as ours.
 */

const LEASE_SECONDS = 60;

const operation = (overrides: Partial<OperationRecord> = {}): OperationRecord => ({
  operationId: randomUUID(),
  caller: 'arn:aws:iam::123456789012:role/backend',
  handle: randomUUID(),
  operation: 'SUSPEND_DEVICE',
  target: 'device-1',
  payloadHash: 'a'.repeat(64),
  status: 'PENDING',
  leaseUntil: '2026-11-26T10:01:00.000Z',
  leaseHolder: 'holder-1',
  createdAt: RECORD_TIME,
  updatedAt: RECORD_TIME,
  version: 1,
  ...overrides,
});

const request = (deviceId: string): OperationRequest => ({ caller: 'arn:aws:iam::123456789012:role/backend', handle: randomUUID(), operation: 'SUSPEND_DEVICE', target: deviceId, payload: { deviceId } });

/**
 * A store whose document client puts the next request of `operation` on the wire, then loses its answer (a socket timeout,
 * which the SDK retries): the SDK's retry of the same request is what the store sees, as on a real network.
 */
function storeLosingAnAnswer(table: TestTable): { store: DynamoDbDeviceStore; loseNext: (operation: string) => void; lost: () => number } {
  const documentClient = localDocumentClient(dynamoDbEndpoint());
  let armed: string | undefined;
  let lost = 0;
  documentClient.middlewareStack.add(
    (next, context) => async (args) => {
      const result = await next(args);
      if (armed !== undefined && context.commandName === `${armed}Command`) {
        armed = undefined;
        lost += 1;
        throw Object.assign(new Error('socket hang up after the request was sent'), { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} });
      }
      return result;
    },
    // After the SDK's retry middleware: what it retries is the request whose answer was lost.
    { step: 'finalizeRequest', name: 'loseAnAnswer', priority: 'low' },
  );
  return {
    store: new DynamoDbDeviceStore({ tableName: table.tableName, documentClient }),
    loseNext: (operation) => {
      armed = operation;
    },
    lost: () => lost,
  };
}

describe('one-record writes on DynamoDB Local', () => {
  let table: TestTable;
  let counter: AwsCallCounter;
  beforeAll(async () => {
    table = await createTestTable();
    counter = new AwsCallCounter().attachMiddleware('DynamoDB', table.documentClient);
  });
  afterAll(async () => {
    await table.drop();
  });

  const stored = async (operationId: string) =>
    (await table.documentClient.send(new GetCommand({ TableName: table.tableName, Key: { PK: `OPERATION#${operationId}`, SK: 'OPERATION' }, ConsistentRead: true }))).Item;

  test('a change of one record is one conditional PutItem; on a stale version it is CONFLICT and writes nothing', async () => {
    const record = operation();
    await table.store.commit({ operation: { next: record }, events: [] });
    const next = { ...record, progress: { step: 'one' }, version: 2 };

    const { calls } = await counter.measure(() => table.store.commit({ operation: { next, expectedVersion: 1 }, events: [] }));
    const stale = await table.store.commit({ operation: { next: { ...record, progress: { step: 'stale' }, version: 2 }, expectedVersion: 1 }, events: [] }).catch((error: unknown) => error);

    expect(calls).toEqual({ DynamoDB: { PutItem: 1 } });
    expect(stale).toBeInstanceOf(ConflictError);
    expect(await table.store.getOperation(record.operationId)).toEqual(next);
    // The storage attributes are those a transaction writes: the retention (TTL) is kept.
    expect((await stored(record.operationId))?.expiresAt).toEqual(expect.any(Number));
  });

  test('creating a record that exists already is refused with CONFLICT, one PutItem, the stored record unchanged', async () => {
    const deviceId = `single-${randomUUID()}`;
    await table.store.commit({ device: { next: deviceRecord(deviceId) }, events: [] });

    const { result, calls } = await counter.measure(() => table.store.commit({ device: { next: deviceRecord(deviceId, { status: 'SUSPENDED' }) }, events: [] }).catch((error: unknown) => error));

    expect(result).toBeInstanceOf(ConflictError);
    expect(calls).toEqual({ DynamoDB: { PutItem: 1 } });
    expect((await table.store.getDevice(deviceId))?.status).toBe('ACTIVE');
  });

  test('createOperation writes a new record in one PutItem, and answers an existing one from the refused write (no read, nothing changed)', async () => {
    const record = operation();

    const created = await counter.measure(() => table.store.createOperation(record));
    const again = await counter.measure(() => table.store.createOperation({ ...record, leaseHolder: 'holder-2', payloadHash: 'b'.repeat(64) }));

    expect(created).toEqual({ result: undefined, calls: { DynamoDB: { PutItem: 1 } } });
    // DynamoDB Local honours ReturnValuesOnConditionCheckFailure: the record comes back with the refusal, as on AWS.
    expect(again).toEqual({ result: record, calls: { DynamoDB: { PutItem: 1 } } });
    expect(await table.store.getOperation(record.operationId)).toEqual(record);
  });

  test('an operation starts with one PutItem and no read; the same handle again is answered from that write', async () => {
    const clock = new TestClock(new Date(RECORD_TIME));
    let ids = 0;
    const operations = new Operations({ store: table.store, clock, ids: { next: () => `holder-${(ids += 1)}` } }, LEASE_SECONDS);
    const asked = request(`start-${randomUUID()}`);

    const first = await counter.measure(() => operations.start(asked));
    const second = await counter.measure(() => operations.start(asked).catch((error: unknown) => error));

    expect(first.calls).toEqual({ DynamoDB: { PutItem: 1 } });
    expect(first.result.kind).toBe('running');
    expect(second.calls).toEqual({ DynamoDB: { PutItem: 1 } });
    expect(second.result).toBeInstanceOf(RequestInProgressError);
  });

  test('an operation start whose answer was lost (the SDK retried the write and it was refused) goes on as the record it wrote', async () => {
    const { store, loseNext, lost } = storeLosingAnAnswer(table);
    const clock = new TestClock(new Date(RECORD_TIME));
    const operations = new Operations({ store, clock, ids: { next: () => 'holder-lost-start' } }, LEASE_SECONDS);
    const asked = request(`lost-start-${randomUUID()}`);

    loseNext('PutItem');
    const started = await operations.start(asked);

    expect(lost()).toBe(1);
    expect(started.kind).toBe('running');
    if (started.kind !== 'running') return;
    expect(started.run.record).toMatchObject({ operationId: operationIdOf(asked.caller, asked.handle), leaseHolder: 'holder-lost-start', version: 1 });
    await started.run.finish({ events: [] }, {});
    expect(await store.getOperation(started.run.record.operationId)).toMatchObject({ status: 'DONE', version: 2 });
  });

  test('a progress write that landed but whose answer was lost is recognised as ours: the operation goes on and finishes', async () => {
    const { store, loseNext, lost } = storeLosingAnAnswer(table);
    const clock = new TestClock(new Date(RECORD_TIME));
    const operations = new Operations({ store, clock, ids: { next: () => 'holder-lost-progress' } }, LEASE_SECONDS);
    const started = await operations.start(request(`lost-progress-${randomUUID()}`));
    if (started.kind !== 'running') throw new Error('expected a new operation');

    loseNext('PutItem');
    await started.run.saveProgress({ issuanceId: 'issuance-1' });
    await started.run.finish({ events: [] }, {});

    expect(lost()).toBe(1);
    expect(await store.getOperation(started.run.record.operationId)).toMatchObject({ status: 'DONE', progress: { issuanceId: 'issuance-1' }, version: 3 });
  });

  test('a progress write after another execution took the operation over is refused: REQUEST_IN_PROGRESS, the new holder keeps it', async () => {
    const clock = new TestClock(new Date(RECORD_TIME));
    let ids = 0;
    const operations = new Operations({ store: table.store, clock, ids: { next: () => `holder-${(ids += 1)}` } }, LEASE_SECONDS);
    const asked = request(`taken-${randomUUID()}`);
    const first = await operations.start(asked);
    clock.advance((LEASE_SECONDS + 1) * 1000);
    const second = await operations.start(asked);
    if (first.kind !== 'running' || second.kind !== 'running') throw new Error('expected two executions');

    const refused = await first.run.saveProgress({ step: 'late' }).catch((error: unknown) => error);

    expect(refused).toBeInstanceOf(RequestInProgressError);
    expect(await table.store.getOperation(first.run.record.operationId)).toMatchObject({ leaseHolder: second.run.record.leaseHolder, version: 2 });
    expect((await table.store.getOperation(first.run.record.operationId))?.progress).toBeUndefined();
  });
});
