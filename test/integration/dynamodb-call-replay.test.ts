import { GetItemCommand, PutItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { DynamoDbCallRecorder, freshKeys, itemCountOf, replayCalls, ReplayError, tokensOf, type RecordedCall } from '../../bench/support/dynamodb-call-replay';
import { localApiCalibration } from '../../bench/support/local-api-calibration';
import { makeKeyAndCsr } from '../../local/cli/device';
import { createApiHarness, type ApiHarness } from '../support/api-harness';
import { dynamoDbEndpoint } from '../support/dynamodb';
import { makeCsr } from '../support/pki';

/**
 * The benchmarks' design floors replay a flow's recorded DynamoDB calls under fresh keys (bench/support/dynamodb-call-replay.ts).
 * A floor is only a floor if the replay does the flow's DynamoDB work: the same operations, items and outcomes, on
 * other keys. Recorded here from real flows (JITR, pre-registration + issuance) through the handlers, on DynamoDB Local.
 */
describe('recorded DynamoDB calls, replayed under fresh keys', () => {
  let harness: ApiHarness;
  beforeAll(async () => {
    harness = await createApiHarness();
  });
  afterAll(async () => {
    await harness.close();
  });

  const shape = (calls: readonly RecordedCall[]) => calls.map((call) => ({ operation: call.operation, items: itemCountOf(call), outcome: call.outcome }));
  const keyStrings = (calls: readonly RecordedCall[]) => calls.flatMap((call) => JSON.stringify(call.input).match(/"PK":\{"S":"[^"]+"\}/g) ?? []);

  async function recordJitr(deviceId: string): Promise<{ calls: RecordedCall[]; tokens: string[] }> {
    const certificatePem = await harness.aws.ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
    const pending = await harness.aws.registry.registerPendingActivation(certificatePem, harness.aws.caCertificateId);
    const event = { certificateId: pending.certificateId, caCertificateId: harness.aws.caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: '0' };
    const { result, calls } = await new DynamoDbCallRecorder(harness.table.documentClient).record(() => harness.jitr(event));
    expect(result.outcome).toBe('ACTIVATED');
    return { calls, tokens: tokensOf(calls, [deviceId, pending.certificateId], [harness.aws.caCertificateId]) };
  }

  test('a JITR activation replays twice with the same operations, item counts and outcomes, on keys of its own each time', async () => {
    const { calls, tokens } = await recordJitr('replay-jitr-device');
    expect(calls.length).toBeGreaterThan(0);
    expect(tokens).toEqual(expect.arrayContaining(['replay-jitr-device']));

    const replayRecorder = new DynamoDbCallRecorder(harness.table.client);
    const first = freshKeys(calls, tokens);
    const second = freshKeys(calls, tokens);
    const { calls: replayed } = await replayRecorder.record(async () => {
      await replayCalls(harness.table.client, first);
      await replayCalls(harness.table.client, second);
    });

    expect(shape(replayed)).toEqual([...shape(calls), ...shape(calls)]);
    // Fresh keys: no replayed key is the calibration's, nor the other replay's.
    const calibrationKeys = new Set(keyStrings(calls));
    expect(keyStrings(first).filter((key) => calibrationKeys.has(key))).toEqual([]);
    expect(keyStrings(second).filter((key) => keyStrings(first).includes(key))).toEqual([]);
    // The replay wrote the items the flow wrote, of the same size: the device item under its new key.
    const deviceKey = (recorded: readonly RecordedCall[]) => (JSON.stringify(recorded[0]?.input).match(/DEVICE#[^"]+/) ?? [])[0] as string;
    const read = async (pk: string) => (await harness.table.client.send(new GetItemCommand({ TableName: harness.table.tableName, Key: { PK: { S: pk }, SK: { S: 'DEVICE' } }, ConsistentRead: true }))).Item;
    const original = (await read(deviceKey(calls))) as Record<string, AttributeValue>;
    const copy = (await read(deviceKey(first))) as Record<string, AttributeValue>;
    expect(copy.status).toEqual(original.status);
    expect(JSON.stringify(copy).length).toBe(JSON.stringify(original).length);
  });

  test('pre-registration and issuance through the API replay with the same operations and outcomes', async () => {
    const deviceId = 'replay-api-device';
    const { csrPem } = await makeCsr(deviceId);
    const { calls } = await new DynamoDbCallRecorder(harness.table.documentClient).record(async () => {
      expect((await harness.call('POST', '/devices', { body: { deviceId } })).status).toBe(201);
      expect((await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr: csrPem } })).status).toBe(201);
    });
    const tokens = tokensOf(calls, [deviceId], [harness.aws.caCertificateId]);

    const { calls: replayed } = await new DynamoDbCallRecorder(harness.table.client).record(() => replayCalls(harness.table.client, freshKeys(calls, tokens)));

    expect(shape(replayed)).toEqual(shape(calls));
    expect(calls.some((call) => call.operation === 'TransactWriteItems')).toBe(true);
  });

  test('a replay that does not end as the calibration did fails instead of passing for a floor (the same keys again)', async () => {
    const { calls } = await recordJitr('replay-same-keys');

    await expect(replayCalls(harness.table.client, calls)).rejects.toMatchObject({ name: 'ReplayError', code: 'OUTCOME_DIFFERS' });
  });

  test('a call that failed in the calibration must fail in the replay, and does, under fresh keys', async () => {
    const tableName = harness.table.tableName;
    const item = { PK: { S: 'EXISTING#0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9' }, SK: { S: 'X' } };
    const recorder = new DynamoDbCallRecorder(harness.table.client);
    const { calls } = await recorder.record(async () => {
      await harness.table.client.send(new PutItemCommand({ TableName: tableName, Item: item }));
      await expect(harness.table.client.send(new PutItemCommand({ TableName: tableName, Item: item, ConditionExpression: 'attribute_not_exists(PK)' }))).rejects.toThrow();
    });
    expect(calls.map((call) => call.outcome)).toEqual(['OK', 'ConditionalCheckFailedException']);

    await expect(replayCalls(harness.table.client, freshKeys(calls, tokensOf(calls)))).resolves.toBeUndefined();
  });

  test('an empty recording is refused: a floor of nothing would be no floor', async () => {
    await expect(replayCalls(harness.table.client, [])).rejects.toBeInstanceOf(ReplayError);
  });

  test("the issuance bench's calibration records the local mode's issuance in-process, and its replay matches it", async () => {
    const calibration = await localApiCalibration(dynamoDbEndpoint());
    try {
      const deviceId = 'calibrated-device';
      const { csrPem } = await makeKeyAndCsr(deviceId);
      const { calls: setup } = await calibration.recorder.record(async () => expect((await calibration.request('POST', '/devices', { deviceId })).status).toBe(201));
      const { result, calls: timed } = await calibration.recorder.record(() => calibration.request('POST', `/devices/${deviceId}/certificates`, { csr: csrPem }));
      expect(result.status).toBe(201);
      expect(JSON.stringify(result.body)).toContain('BEGIN CERTIFICATE');
      expect(timed.some((call) => call.operation === 'TransactWriteItems')).toBe(true);

      const fresh = freshKeys([...setup, ...timed], tokensOf([...setup, ...timed], [deviceId], calibration.sharedValues));
      const { calls: replayed } = await new DynamoDbCallRecorder(harness.table.client).record(() => replayCalls(harness.table.client, fresh));

      expect(shape(replayed)).toEqual(shape([...setup, ...timed]));
    } finally {
      calibration.close();
    }
  });
});
