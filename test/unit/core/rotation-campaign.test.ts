import { createHash } from 'node:crypto';
import { DeviceLifecycle } from '../../../functions/core/lifecycle';
import { UpstreamError } from '../../../functions/core/errors';
import type { RenewalNotice } from '../../../functions/core/expiry';
import type { CertificateStatus, DeviceStatus, PendingRotation } from '../../../functions/core/model';
import type { StoreChange } from '../../../functions/core/ports';
import {
  CAMPAIGN_INDEX_ID,
  CAMPAIGN_LIMITS,
  runRotationCampaigns,
  type CampaignJobDependencies,
  type CampaignRunOptions,
  type CampaignsRunResult,
} from '../../../functions/core/use-cases/rotation-campaign';
import { InMemoryDeviceStore } from '../../support/in-memory-store';
import { TestClock } from '../../support/lifecycle-fixture';
import { certificateRecord, deviceRecord } from '../../support/records';
import { errorOf } from '../../support/lifecycle-errors';

const DAY_MS = 86_400_000;
const operator = 'arn:aws:iam::123456789012:role/operator';

interface Sent {
  readonly deviceId: string;
  readonly notice: RenewalNotice;
  readonly at: number;
}

const certificateIdOf = (name: string) => createHash('sha256').update(name).digest('hex');

/** A fleet in an in-memory store, the lifecycle over it, a fake clock the pacing advances, and the notices sent. */
function setup() {
  const clock = new TestClock(new Date('2027-03-01T00:00:00.000Z'));
  const store = new InMemoryDeviceStore();
  let counter = 0;
  const ids = { next: () => `id-${(counter += 1)}` };
  // Neither the CA nor the registry is used by campaigns.
  const lifecycle = new DeviceLifecycle({ store, clock, ids, ca: undefined as never, registry: undefined as never });
  const sent: Sent[] = [];
  const waits: number[] = [];
  const options = (runMs: number, overrides: Partial<CampaignRunOptions> = {}): CampaignRunOptions => ({
    deadline: new Date(clock.now().getTime() + runMs),
    notify: async (deviceId, notice) => {
      sent.push({ deviceId, notice, at: clock.now().getTime() });
    },
    wait: async (ms) => {
      waits.push(ms);
      clock.advance(ms);
    },
    ...overrides,
  });
  /** A device with one certificate expiring `days` from now. */
  const device = (deviceId: string, days: number, state: { device?: DeviceStatus; certificate?: CertificateStatus; rotation?: PendingRotation } = {}): string => {
    const certificateId = certificateIdOf(`${deviceId}-${days}`);
    if (!store.devices.has(deviceId)) store.devices.set(deviceId, deviceRecord(deviceId, { status: state.device ?? 'ACTIVE', ...(state.rotation ? { rotation: state.rotation } : {}) }));
    store.certificates.set(certificateId, certificateRecord(certificateId, deviceId, new Date(clock.now().getTime() + days * DAY_MS).toISOString(), { status: state.certificate ?? 'ACTIVE' }));
    return certificateId;
  };
  const start = (expiringInDays: number, requestKey = 'campaign-key-1', noticesPerSecond?: number) =>
    lifecycle.startRotationCampaign({
      actor: operator,
      requestKey,
      expiringBefore: new Date(clock.now().getTime() + expiringInDays * DAY_MS).toISOString(),
      ...(noticesPerSecond === undefined ? {} : { noticesPerSecond }),
    });
  const run = (runMs: number, overrides: Partial<CampaignRunOptions> = {}, jobStore: CampaignJobDependencies['store'] = store): Promise<CampaignsRunResult> =>
    runRotationCampaigns({ store: jobStore, clock, ids }, options(runMs, overrides));
  return { clock, store, lifecycle, sent, waits, device, start, run };
}

describe('rotation campaigns: starting one', () => {
  test('answers a RUNNING campaign and lists it as open; the same key and body answer the same campaign', async () => {
    const { start, store } = setup();

    const first = await start(30);
    const again = await start(30);

    expect(first).toMatchObject({ status: 'RUNNING', noticesPerSecond: CAMPAIGN_LIMITS.defaultNoticesPerSecond, noticesSent: 0, certificatesScanned: 0 });
    expect(first.campaignId).toMatch(/^[0-9a-f]{64}$/);
    expect(again).toEqual(first);
    expect(Object.keys(store.operations.get(CAMPAIGN_INDEX_ID)?.progress ?? {})).toEqual([first.campaignId]);
  });

  test('rejects the same Idempotency-Key with another body', async () => {
    const { start } = setup();
    await start(30, 'campaign-key-1', 10);

    const error = await errorOf(start(30, 'campaign-key-1', 11));

    expect(error.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  test.each([
    ['a past date', -1, undefined, 'expiringBefore must be in the future'],
    ['now', 0, undefined, 'expiringBefore must be in the future'],
    ['more than ten years ahead', CAMPAIGN_LIMITS.maxWindowDays + 1, undefined, `expiringBefore must be at most ${CAMPAIGN_LIMITS.maxWindowDays} days ahead.`],
    ['a rate of 0', 30, 0, 'noticesPerSecond must be a whole number from 1 to 100 (got 0).'],
    ['a rate of 101', 30, 101, 'noticesPerSecond must be a whole number from 1 to 100 (got 101).'],
    ['a fractional rate', 30, 1.5, 'noticesPerSecond must be a whole number from 1 to 100 (got 1.5).'],
  ])('rejects %s with INVALID_REQUEST and opens no campaign', async (_case, days, rate, message) => {
    const { start, store } = setup();

    const error = await errorOf(start(days, 'campaign-key-1', rate));

    expect(error.code).toBe('INVALID_REQUEST');
    expect(error.message).toContain(message);
    expect(store.operations.get(CAMPAIGN_INDEX_ID)).toBeUndefined();
  });

  test('rejects a sixth open campaign with CAMPAIGN_LIMIT_REACHED; the same key succeeds once one is cancelled', async () => {
    const { start, lifecycle } = setup();
    const open = [];
    for (let index = 1; index <= CAMPAIGN_LIMITS.maxOpenCampaigns; index += 1) open.push(await start(30, `campaign-key-${index}`));

    const refused = await errorOf(start(30, 'campaign-key-6'));
    await lifecycle.cancelRotationCampaign({ campaignId: open[0]?.campaignId as string, actor: operator, requestKey: 'cancel-key-1' });
    const sixth = await start(30, 'campaign-key-6');

    expect(refused.code).toBe('CAMPAIGN_LIMIT_REACHED');
    expect(sixth.status).toBe('RUNNING');
  });
});

describe('rotation campaigns: the scheduled job', () => {
  test('sends at most noticesPerSecond a second, and the next run goes on from the cursor until DONE', async () => {
    const { device, start, run, sent, lifecycle } = setup();
    for (let index = 0; index < 30; index += 1) device(`meter-${String(index).padStart(2, '0')}`, 10 + index / 100);
    const campaign = await start(20, 'campaign-key-1', 2);

    const first = await run(10_000, { pageSize: 7 });
    const afterFirst = await lifecycle.getRotationCampaign(campaign.campaignId);
    const second = await run(10_000, { pageSize: 7 });
    const done = await lifecycle.getRotationCampaign(campaign.campaignId);

    expect(first.campaigns).toEqual([expect.objectContaining({ stoppedBy: 'DEADLINE', noticesSent: 20 })]);
    expect(afterFirst).toMatchObject({ status: 'RUNNING', noticesSent: 20 });
    const gaps = sent.slice(1, 20).map((notice, index) => notice.at - (sent[index] as Sent).at);
    expect(new Set(gaps)).toEqual(new Set([500]));
    expect(second.campaigns).toEqual([expect.objectContaining({ stoppedBy: 'COMPLETED', noticesSent: 10 })]);
    expect(second.closed).toBe(1);
    expect(done).toMatchObject({ status: 'DONE', noticesSent: 30, certificatesScanned: 30, certificatesSkipped: 0 });
    expect(new Set(sent.map((notice) => notice.deviceId)).size).toBe(30);
  });

  test('tells a device to rotate now: renewBy is the instant of sending', async () => {
    const { device, start, run, sent } = setup();
    const certificateId = device('meter-1', 10);
    await start(20);

    await run(10_000);

    expect(sent).toEqual([{ deviceId: 'meter-1', at: expect.any(Number), notice: { certificateId, notAfter: expect.any(String), renewBy: new Date((sent[0] as Sent).at).toISOString() } }]);
  });

  test('skips suspended, revoked and rotating devices, expired and out-of-window certificates, and tells a device once', async () => {
    const { device, start, run, sent, clock, lifecycle } = setup();
    const told = device('active', 10);
    device('suspended', 10, { device: 'SUSPENDED', certificate: 'INACTIVE' });
    device('revoked', 10, { device: 'REVOKED', certificate: 'REVOKED' });
    device('registered', 10, { device: 'REGISTERED', certificate: 'PENDING_ACTIVATION' });
    device('rotating', 10, { rotation: { state: 'PENDING', requestId: 'r-1', certificateId: 'new', previousCertificateId: 'old', commitDeadline: clock.now().toISOString() } });
    device('expires-first', 0.5);
    const twiceSooner = device('two-certificates', 5);
    device('two-certificates', 8);
    device('outside', 40);
    const campaign = await start(20);
    clock.advance(DAY_MS); // expires-first's certificate expires before the job reaches it

    await run(30_000);

    expect(sent.map((notice) => [notice.deviceId, notice.notice.certificateId]).sort()).toEqual([
      ['active', told],
      ['two-certificates', twiceSooner],
    ]);
    expect(await lifecycle.getRotationCampaign(campaign.campaignId)).toMatchObject({ status: 'DONE', noticesSent: 2, certificatesScanned: 7, certificatesSkipped: 5 });
  });

  test('a saved page token the store no longer accepts starts the walk over instead of stopping the campaign for good', async () => {
    const { device, start, run, sent, store, lifecycle } = setup();
    for (let index = 0; index < 3; index += 1) device(`meter-${index}`, 10);
    const campaign = await start(20);
    const record = store.operations.get(campaign.campaignId);
    if (!record) throw new Error('no campaign record');
    store.operations.set(campaign.campaignId, { ...record, progress: { ...record.progress, pageToken: 'a token from an older store' }, version: record.version + 1 });

    const result = await run(30_000);

    expect(result.campaigns).toEqual([expect.objectContaining({ stoppedBy: 'COMPLETED', noticesSent: 3 })]);
    expect(sent).toHaveLength(3);
    expect((await lifecycle.getRotationCampaign(campaign.campaignId)).status).toBe('DONE');
  });

  test('two runs at once: one works on the campaign, the other leaves it (BUSY); each device is told once', async () => {
    const { device, start, run, sent } = setup();
    for (let index = 0; index < 10; index += 1) device(`meter-${index}`, 10);
    await start(20, 'campaign-key-1', 5);

    const [a, b] = await Promise.all([run(60_000), run(60_000)]);

    expect([a.campaigns[0]?.stoppedBy, b.campaigns[0]?.stoppedBy].sort()).toEqual(['BUSY', 'COMPLETED']);
    expect(sent).toHaveLength(10);
  });

  test('a cancel stops the campaign at the run\'s next checkpoint, and it leaves the open list', async () => {
    const { device, start, run, sent, lifecycle, store } = setup();
    for (let index = 0; index < 10; index += 1) device(`meter-${index}`, 10);
    const campaign = await start(20, 'campaign-key-1', 10);
    const notify: CampaignRunOptions['notify'] = async (deviceId, notice) => {
      sent.push({ deviceId, notice, at: 0 });
      if (sent.length === 3) await lifecycle.cancelRotationCampaign({ campaignId: campaign.campaignId, actor: operator, requestKey: 'cancel-key-1' });
    };

    const result = await run(60_000, { notify, checkpointMs: 0 });
    const later = await run(60_000);

    expect(result.campaigns).toEqual([expect.objectContaining({ stoppedBy: 'CANCELLED', noticesSent: 3 })]);
    expect(later.campaigns).toEqual([]);
    expect(sent).toHaveLength(3);
    expect(await lifecycle.getRotationCampaign(campaign.campaignId)).toMatchObject({ status: 'CANCELLED', cancelledBy: operator });
    expect(store.operations.get(CAMPAIGN_INDEX_ID)?.progress).toEqual({});
  });

  test('cancelling twice answers the same; cancelling a DONE campaign is INVALID_TRANSITION; an unknown one CAMPAIGN_NOT_FOUND', async () => {
    const { start, run, lifecycle } = setup();
    const running = await start(20, 'campaign-key-1');
    const finished = await start(20, 'campaign-key-2');
    const cancel = (campaignId: string, requestKey: string) => lifecycle.cancelRotationCampaign({ campaignId, actor: operator, requestKey });
    await cancel(running.campaignId, 'cancel-key-1');
    await run(1_000);

    const twice = await cancel(running.campaignId, 'cancel-key-2');
    const done = await errorOf(cancel(finished.campaignId, 'cancel-key-3'));
    const unknown = await errorOf(cancel('0'.repeat(64), 'cancel-key-4'));
    const malformed = await errorOf(lifecycle.getRotationCampaign('not-an-id'));

    expect(twice.status).toBe('CANCELLED');
    expect(done.code).toBe('INVALID_TRANSITION');
    expect(unknown.code).toBe('CAMPAIGN_NOT_FOUND');
    expect(malformed.code).toBe('INVALID_REQUEST');
  });
});

/**
 * A store and a notifier that fail once at their `n`-th call of one kind: thrown before it happened, or (for commits)
 * after the write landed. The job is run again (a later scheduled run) until the campaign is DONE.
 */
describe('rotation campaigns: a crash at each step', () => {
  type Step = 'findCertificatesExpiring' | 'getDevice' | 'listDeviceCertificates' | 'commit' | 'commit-landed' | 'getOperation' | 'notify';
  const steps: [Step, number][] = [];
  for (const step of ['findCertificatesExpiring', 'getDevice', 'listDeviceCertificates', 'commit', 'commit-landed', 'getOperation', 'notify'] as Step[]) {
    for (const nth of [1, 2, 4, 7]) steps.push([step, nth]);
  }

  test.each(steps)('%s fails at call %i: every device is told, each at most twice, and the campaign ends DONE', async (step, nth) => {
    const { device, start, run, sent, clock, store, lifecycle } = setup();
    const eligible = Array.from({ length: 12 }, (_unused, index) => `meter-${String(index).padStart(2, '0')}`);
    for (const [index, deviceId] of eligible.entries()) device(deviceId, 10 + index / 100);
    const campaign = await start(20, 'campaign-key-1', 50);
    let calls = 0;
    const fail = (kind: Step): void => {
      if (kind === step && (calls += 1) === nth) throw new UpstreamError('UPSTREAM_FAILURE', `${kind} failed`, true);
    };
    const faulty: CampaignJobDependencies['store'] = {
      findCertificatesExpiring: async (query) => (fail('findCertificatesExpiring'), store.findCertificatesExpiring(query)),
      getDevice: async (deviceId) => (fail('getDevice'), store.getDevice(deviceId)),
      listDeviceCertificates: async (deviceId) => (fail('listDeviceCertificates'), store.listDeviceCertificates(deviceId)),
      getOperation: async (operationId) => (fail('getOperation'), store.getOperation(operationId)),
      commit: async (change: StoreChange) => {
        fail('commit');
        await store.commit(change);
        fail('commit-landed');
      },
    };
    const notify: CampaignRunOptions['notify'] = async (deviceId, notice) => {
      fail('notify');
      sent.push({ deviceId, notice, at: clock.now().getTime() });
    };

    for (let attempt = 0; attempt < 6 && (await lifecycle.getRotationCampaign(campaign.campaignId)).status === 'RUNNING'; attempt += 1) {
      await run(20_000, { notify, pageSize: 5, checkpointMs: 0 }, faulty).catch(() => undefined);
      clock.advance(60_000);
    }

    const final = await lifecycle.getRotationCampaign(campaign.campaignId);
    expect(final.status).toBe('DONE');
    expect(new Set(sent.map((notice) => notice.deviceId))).toEqual(new Set(eligible));
    const perDevice = eligible.map((deviceId) => sent.filter((notice) => notice.deviceId === deviceId).length);
    expect(Math.max(...perDevice)).toBeLessThanOrEqual(2);
    expect(sent.length - eligible.length).toBeLessThanOrEqual(1);
  });
});

describe('rotation campaigns: abandoned creations', () => {
  test('a creation that stopped after listing the campaign is not run, and leaves the open list after an hour', async () => {
    const { start, run, clock, store } = setup();
    const commit = store.commit.bind(store);
    let failOnce = true;
    // The write that finishes the creation fails: the campaign is listed, its record still PENDING.
    store.commit = async (change: StoreChange) => {
      if (failOnce && change.operation?.next.operation === 'ROTATION_CAMPAIGN' && change.operation.next.status === 'DONE') {
        failOnce = false;
        throw new UpstreamError('UPSTREAM_FAILURE', 'DynamoDB failed', true);
      }
      return commit(change);
    };
    await errorOf(start(20));

    const soon = await run(1_000);
    clock.advance(CAMPAIGN_LIMITS.abandonedAfterMs);
    const later = await run(1_000);

    expect(soon).toEqual({ campaigns: [], closed: 0 });
    expect(later).toEqual({ campaigns: [], closed: 1 });
    expect(store.operations.get(CAMPAIGN_INDEX_ID)?.progress).toEqual({});
  });
});
