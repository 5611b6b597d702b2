import { randomUUID } from 'node:crypto';
import { createApiHarness, type ApiHarness } from './api-harness';
import { AwsCallCounter, type AwsCallCounts } from './aws-call-counter';
import { makeCsr } from './pki';

/** The flows whose AWS calls are counted, in the order they run on one device. */
export const COUNTED_FLOWS = ['JITR onboarding', 'pre-registration', 'issuance (CSR)', 'certificate revocation', 'suspension', 'resumption', 'device revocation'] as const;
export type CountedFlow = (typeof COUNTED_FLOWS)[number];

export interface FlowCalls {
  readonly flow: CountedFlow;
  readonly calls: AwsCallCounts;
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
    await runFlows(harness, counter, `warm-up-${randomUUID()}`);
    return await runFlows(harness, counter, `counted-${randomUUID()}`);
  } finally {
    await harness.close();
  }
}

async function runFlows(harness: ApiHarness, counter: AwsCallCounter, prefix: string): Promise<FlowCalls[]> {
  const results: FlowCalls[] = [];
  const measure = async <T>(flow: CountedFlow, run: () => Promise<T>): Promise<T> => {
    const { result, calls } = await counter.measure(run);
    results.push({ flow, calls });
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

/** The counts as a Markdown table: one row per flow, one column per service, each cell `total (operation × n, ...)`. */
export function formatFlowCalls(results: readonly FlowCalls[]): string {
  const services = ['DynamoDB', 'IoT', 'Private CA'];
  const cell = (calls: AwsCallCounts, service: string) => {
    const operations = Object.entries(calls[service] ?? {});
    const total = operations.reduce((sum, [, count]) => sum + count, 0);
    return total === 0 ? '0' : `${total} (${operations.map(([operation, count]) => `${operation} ${count}`).join(', ')})`;
  };
  return [`| flow | ${services.join(' | ')} |`, `| --- | ${services.map(() => '---').join(' | ')} |`, ...results.map(({ flow, calls }) => `| ${flow} | ${services.map((service) => cell(calls, service)).join(' | ')} |`)].join('\n');
}
