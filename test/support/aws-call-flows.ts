import { randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createApiHarness, type ApiHarness } from './api-harness';
import { AwsCallCounter, type AwsCallCounts } from './aws-call-counter';
import { makeCsr } from './pki';

/** The flows whose AWS calls are counted, in the order they run on one device. */
export const COUNTED_FLOWS = ['JITR onboarding', 'pre-registration', 'issuance (CSR)', 'certificate revocation', 'suspension', 'resumption', 'device revocation'] as const;
export type CountedFlow = (typeof COUNTED_FLOWS)[number];

export interface FlowCalls {
  readonly flow: CountedFlow;
  readonly calls: AwsCallCounts;
  /** The capacity units DynamoDB reported for the flow's requests (`ReturnConsumedCapacity: TOTAL`). */
  readonly capacity: CapacityUnits;
}

export interface CapacityUnits {
  readonly read: number;
  readonly write: number;
}

/** The DynamoDB operations that report consumed capacity, and which kind they consume. */
const CAPACITY_KIND: Readonly<Record<string, keyof CapacityUnits>> = {
  GetItemCommand: 'read',
  BatchGetItemCommand: 'read',
  QueryCommand: 'read',
  ScanCommand: 'read',
  TransactGetItemsCommand: 'read',
  PutItemCommand: 'write',
  UpdateItemCommand: 'write',
  DeleteItemCommand: 'write',
  BatchWriteItemCommand: 'write',
  TransactWriteItemsCommand: 'write',
};

/**
 * Asks every DynamoDB request for its consumed capacity and adds it up. DynamoDB Local sizes it by AWS's rules (1 write
 * unit per KB written, twice that in a transaction; 1 read unit per 4 KB read consistently, twice in a transaction).
 * A conditional write that is refused reports nothing, though AWS bills it (1 write unit at least): the flows counted
 * here have none.
 */
class CapacityMeter {
  private units = { read: 0, write: 0 };

  public attach(client: Pick<DynamoDBClient, 'middlewareStack'>): this {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const kind = CAPACITY_KIND[context.commandName ?? ''];
        if (kind === undefined) return next(args);
        (args.input as { ReturnConsumedCapacity?: string }).ReturnConsumedCapacity = 'TOTAL';
        const result = await next(args);
        const consumed = (result.output as { ConsumedCapacity?: { CapacityUnits?: number } | { CapacityUnits?: number }[] }).ConsumedCapacity;
        for (const entry of Array.isArray(consumed) ? consumed : consumed ? [consumed] : []) this.units[kind] += entry.CapacityUnits ?? 0;
        return result;
      },
      { step: 'initialize', name: 'capacityMeter' },
    );
    return this;
  }

  public async measure<T>(run: () => Promise<T>): Promise<{ readonly result: T; readonly capacity: CapacityUnits }> {
    const before = { ...this.units };
    const result = await run();
    return { result, capacity: { read: this.units.read - before.read, write: this.units.write - before.write } };
  }
}

/**
 * Runs each flow once, warm (a first device went through every flow before, as a warm Lambda would have: the CA
 * certificate is cached), through the real handlers, core and adapters, on DynamoDB Local (counted on the wire) with
 * AWS IoT and AWS Private CA behind aws-sdk-client-mock (counted at the mock). Answers the calls of each flow.
 * Needs `DYNAMODB_ENDPOINT` (the jest global setup, or the bench, starts DynamoDB Local).
 */
export async function countAwsCallsPerFlow(): Promise<FlowCalls[]> {
  const harness = await createApiHarness();
  try {
    const counter = new AwsCallCounter().attachMiddleware('DynamoDB', harness.table.documentClient).attachMock('IoT', harness.aws.iot).attachMock('Private CA', harness.aws.pca);
    const meter = new CapacityMeter().attach(harness.table.documentClient);
    await runFlows(harness, counter, meter, `warm-up-${randomUUID()}`);
    return await runFlows(harness, counter, meter, `counted-${randomUUID()}`);
  } finally {
    await harness.close();
  }
}

async function runFlows(harness: ApiHarness, counter: AwsCallCounter, meter: CapacityMeter, prefix: string): Promise<FlowCalls[]> {
  const results: FlowCalls[] = [];
  const measure = async <T>(flow: CountedFlow, run: () => Promise<T>): Promise<T> => {
    const { result: { result, calls }, capacity } = await meter.measure(() => counter.measure(run));
    results.push({ flow, calls, capacity });
    return result;
  };
  const expectStatus = (response: { status: number; body: unknown }, status: number, what: string) => {
    if (response.status !== status) throw new Error(`${what} answered ${response.status}, not ${status}: ${JSON.stringify(response.body)}`);
    return response;
  };

  // JITR: a certificate our CA signed, registered PENDING_ACTIVATION by the device's first connect (before counting: that is AWS IoT's work).
  const jitrDevice = `${prefix}-jitr`;
  const certificatePem = await harness.aws.ca.mintDeviceCertificate(jitrDevice, (await makeCsr(jitrDevice)).csrPem, 365);
  const pending = await harness.aws.registry.registerPendingActivation(certificatePem, harness.aws.caCertificateId);
  const event = { certificateId: pending.certificateId, caCertificateId: harness.aws.caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: String(Date.now()) };
  const outcome = await measure('JITR onboarding', () => harness.jitr(event));
  if (outcome.outcome !== 'ACTIVATED') throw new Error(`JITR answered ${outcome.outcome}, not ACTIVATED.`);

  const deviceId = `${prefix}-api`;
  const { csrPem } = await makeCsr(deviceId);
  await measure('pre-registration', async () => expectStatus(await harness.call('POST', '/devices', { body: { deviceId } }), 201, 'POST /devices'));
  const issued = await measure('issuance (CSR)', async () => expectStatus(await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr: csrPem } }), 201, 'POST /devices/{id}/certificates'));
  const certificateId = String((issued.body as { certificateId: string }).certificateId);
  await measure('certificate revocation', async () =>
    expectStatus(await harness.call('POST', `/devices/${deviceId}/certificates/${certificateId}/revoke`, { body: { reason: 'KEY_COMPROMISE' } }), 200, 'POST .../revoke'),
  );
  // Suspension, resumption and device revocation act on the JITR device: ACTIVE, with one ACTIVE certificate.
  await measure('suspension', async () => expectStatus(await harness.call('POST', `/devices/${jitrDevice}/suspend`), 200, 'POST .../suspend'));
  await measure('resumption', async () => expectStatus(await harness.call('POST', `/devices/${jitrDevice}/resume`), 200, 'POST .../resume'));
  await measure('device revocation', async () => expectStatus(await harness.call('POST', `/devices/${jitrDevice}/revoke`, { body: { reason: 'CESSATION_OF_OPERATION' } }), 200, 'POST /devices/{id}/revoke'));
  return results;
}

/**
 * The counts as a Markdown table: one row per flow, one column per service, each cell `total (operation × n, ...)`, then
 * the DynamoDB capacity units the flow consumed (on-demand: read and write request units).
 */
export function formatFlowCalls(results: readonly FlowCalls[]): string {
  const services = ['DynamoDB', 'IoT', 'Private CA'];
  const cell = (calls: AwsCallCounts, service: string) => {
    const operations = Object.entries(calls[service] ?? {});
    const total = operations.reduce((sum, [, count]) => sum + count, 0);
    return total === 0 ? '0' : `${total} (${operations.map(([operation, count]) => `${operation} ${count}`).join(', ')})`;
  };
  const units = (value: number) => (Number.isInteger(value) ? String(value) : value.toFixed(1));
  return [
    `| flow | ${services.join(' | ')} | DynamoDB read units | DynamoDB write units |`,
    `| --- | ${services.map(() => '---').join(' | ')} | --- | --- |`,
    ...results.map(({ flow, calls, capacity }) => `| ${flow} | ${services.map((service) => cell(calls, service)).join(' | ')} | ${units(capacity.read)} | ${units(capacity.write)} |`),
  ].join('\n');
}
