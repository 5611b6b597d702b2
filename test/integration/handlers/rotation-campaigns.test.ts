import type { Context } from 'aws-lambda';
import type { CertificateRecord, DeviceStatus, CertificateStatus } from '../../../functions/core/model';
import type { RenewalNotice } from '../../../functions/core/expiry';
import { systemClock } from '../../../functions/core/ports';
import { createRotationHandler, ROTATION_CAMPAIGN_JOB_EVENT, type RotationResult } from '../../../functions/handlers/rotation';
import { createApiHarness, type ApiHarness } from '../../support/api-harness';
import { deviceRecord } from '../../support/records';

/*
 * Rotation campaigns through the API handler and the rotation function's scheduled job, on the real core and the
 * DynamoDB store on DynamoDB Local: the campaign record, the open list and the cursor over the ByExpiry index.
 */

const DAY_MS = 86_400_000;
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, addContext: () => undefined } as never;

let harness: ApiHarness;
let certificates = 0;

beforeAll(async () => {
  harness = await createApiHarness();
});

afterAll(async () => {
  await harness?.close();
});

/** A device and one certificate expiring `days` from now, written as the lifecycle writes them. */
async function storeDevice(deviceId: string, days: number, status: { device?: DeviceStatus; certificate?: CertificateStatus } = {}): Promise<string> {
  certificates += 1;
  const now = Date.now();
  const certificate: CertificateRecord = {
    certificateId: certificates.toString(16).padStart(64, 'c'),
    deviceId,
    serialNumber: certificates.toString(16),
    subject: `CN=${deviceId}`,
    issuer: 'CN=Fake Private CA',
    keyAlgorithm: 'EC_P_256',
    notBefore: new Date(now - DAY_MS).toISOString(),
    notAfter: new Date(now + days * DAY_MS).toISOString(),
    status: status.certificate ?? 'ACTIVE',
    source: 'CSR',
    certificatePem: '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----',
    createdAt: new Date(now).toISOString(),
    updatedAt: new Date(now).toISOString(),
    version: 1,
  };
  await harness.table.store.commit({ device: { next: deviceRecord(deviceId, { status: status.device ?? 'ACTIVE' }) }, certificates: [{ next: certificate }], events: [] });
  return certificate.certificateId;
}

const inDays = (days: number) => new Date(Date.now() + days * DAY_MS).toISOString();
const start = (body: unknown, key: string) => harness.call('POST', '/rotation-campaigns', { body, headers: { 'Idempotency-Key': key } });

describe('POST /rotation-campaigns', () => {
  test('answers 202 with the campaign and its Location; the same key and body answer the same campaign', async () => {
    const body = { expiringBefore: inDays(3000), noticesPerSecond: 40 };

    const first = await start(body, 'campaign-route-1');
    const again = await start(body, 'campaign-route-1');

    expect(first.status).toBe(202);
    expect(first.body).toMatchObject({ status: 'RUNNING', noticesPerSecond: 40, noticesSent: 0, expiringBefore: body.expiringBefore });
    expect(first.raw.headers?.Location).toBe(`/rotation-campaigns/${first.body.campaignId}`);
    expect(again.status).toBe(202);
    expect(again.body.campaignId).toBe(first.body.campaignId);
    const read = await harness.call('GET', `/rotation-campaigns/${first.body.campaignId}`);
    expect(read.status).toBe(200);
    expect(read.body.campaignId).toBe(first.body.campaignId);

    const cancelled = await harness.call('POST', `/rotation-campaigns/${first.body.campaignId}/cancel`, { headers: { 'Idempotency-Key': 'campaign-cancel-1' } });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ status: 'CANCELLED', cancelledBy: 'arn:aws:iam::123456789012:role/backend' });
  });

  test('fails with 422 IDEMPOTENCY_KEY_REUSED for the same key with another body', async () => {
    const first = await start({ expiringBefore: inDays(30) }, 'campaign-route-2');
    await harness.call('POST', `/rotation-campaigns/${first.body.campaignId}/cancel`);

    const reused = await start({ expiringBefore: inDays(31) }, 'campaign-route-2');

    expect(reused.status).toBe(422);
    expect(reused.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  test.each([
    ['a date without its offset', { expiringBefore: '2030-01-01T00:00:00' }, 'expiringBefore must be an ISO-8601 date and time with its offset'],
    ['a past date', { expiringBefore: '2020-01-01T00:00:00Z' }, 'expiringBefore must be in the future'],
    ['a rate above 100', { expiringBefore: '2030-01-01T00:00:00Z', noticesPerSecond: 500 }, 'noticesPerSecond'],
    ['an unknown field', { expiringBefore: '2030-01-01T00:00:00Z', devices: ['a'] }, 'unknown field(s) "devices"'],
  ])('rejects %s with 400 INVALID_REQUEST saying what to fix', async (_case, body, message) => {
    const answer = await start(body, `campaign-bad-${_case.replace(/\W/g, '-')}`);

    expect(answer.status).toBe(400);
    expect(answer.body.error.code).toBe('INVALID_REQUEST');
    expect(answer.body.error.message).toContain(message);
  });

  test('answers 404 CAMPAIGN_NOT_FOUND for an unknown campaign', async () => {
    const unknown = await harness.call('GET', `/rotation-campaigns/${'0'.repeat(64)}`);

    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('CAMPAIGN_NOT_FOUND');
  });
});

describe('the scheduled job over DynamoDB Local', () => {
  test('walks the ByExpiry index page by page from its saved cursor: after a crash, every device in the window is told, one re-sent at most', async () => {
    const inWindow: string[] = [];
    for (let index = 0; index < 12; index += 1) inWindow.push(`campaign-meter-${String(index).padStart(2, '0')}`);
    for (const [index, deviceId] of inWindow.entries()) await storeDevice(deviceId, 5 + index / 10);
    await storeDevice('campaign-suspended', 5, { device: 'SUSPENDED', certificate: 'INACTIVE' });
    await storeDevice('campaign-outside', 60);
    const campaign = (await start({ expiringBefore: inDays(10), noticesPerSecond: 100 }, 'campaign-job-1')).body;
    const sent: { deviceId: string; notice: RenewalNotice }[] = [];
    let calls = 0;
    const notify = async (deviceId: string, notice: RenewalNotice) => {
      if ((calls += 1) === 8) throw new Error('the data plane failed');
      sent.push({ deviceId, notice });
    };
    const run = () => harness.lifecycle.runRotationCampaigns({ deadline: new Date(Date.now() + 60_000), notify, wait: async () => undefined, pageSize: 5, checkpointMs: 0 });

    const crashed = await run();
    const resumed = await run();

    expect(crashed.campaigns).toEqual([expect.objectContaining({ campaignId: campaign.campaignId, stoppedBy: 'FAILED', noticesSent: 7 })]);
    expect(resumed.campaigns).toEqual([expect.objectContaining({ stoppedBy: 'COMPLETED' })]);
    expect(sent.map((notice) => notice.deviceId).sort()).toEqual([...inWindow].sort());
    const read = await harness.call('GET', `/rotation-campaigns/${campaign.campaignId}`);
    expect(read.body).toMatchObject({ status: 'DONE', noticesSent: 12, certificatesScanned: 13, certificatesSkipped: 1 });
  });

  test('the rotation function runs the job on its schedule event and publishes each notice on the device\'s expiring topic', async () => {
    const deviceId = 'campaign-scheduled-1';
    const certificateId = await storeDevice(deviceId, 3);
    await start({ expiringBefore: inDays(4) }, 'campaign-job-2');
    const published: { topic: string; message: Record<string, unknown> }[] = [];
    const handler = createRotationHandler({
      lifecycle: harness.lifecycle,
      messenger: { publish: async (topic, message) => void published.push({ topic, message }) },
      logger: silent,
      pacing: { clock: systemClock, wait: async () => undefined },
    });
    const context = { getRemainingTimeInMillis: () => 60_000 } as unknown as Context;

    const result = (await handler({ ...ROTATION_CAMPAIGN_JOB_EVENT }, context)) as RotationResult;

    expect(result.kind).toBe('campaigns');
    expect(published).toContainEqual({ topic: `devices/${deviceId}/certificates/expiring`, message: { certificateId, notAfter: expect.any(String), renewBy: expect.any(String) } });
  });

  test('fails the invocation when a campaign fails (the errors alarm sees it), after saving where it got to', async () => {
    await storeDevice('campaign-scheduled-2', 2);
    const campaign = (await start({ expiringBefore: inDays(2.5) }, 'campaign-job-3')).body;
    const handler = createRotationHandler({
      lifecycle: harness.lifecycle,
      messenger: { publish: async () => Promise.reject(new Error('AWS IoT data plane unavailable')) },
      logger: silent,
      pacing: { clock: systemClock, wait: async () => undefined },
    });

    await expect(handler({ ...ROTATION_CAMPAIGN_JOB_EVENT }, { getRemainingTimeInMillis: () => 60_000 } as unknown as Context)).rejects.toThrow(
      /1 rotation campaign\(s\) failed in this run \(the first: AWS IoT data plane unavailable\)/,
    );
    const read = await harness.call('GET', `/rotation-campaigns/${campaign.campaignId}`);
    expect(read.body).toMatchObject({ status: 'RUNNING', noticesSent: 0 });
  });
});
