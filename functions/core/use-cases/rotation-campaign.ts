import type { ChangeRecorder } from '../change-recorder';
import { purposeOf } from '../certificate-purpose';
import { ConflictError, LifecycleError, ValidationError } from '../errors';
import { DAY_MS, EXPIRY_LIMITS, type RenewalNotice, type RenewalNotifier } from '../expiry';
import type { CertificateRecord, OperationRecord, Page } from '../model';
import { operationIdOf, sha256Hex } from '../operations';
import type { Clock, DeviceStore, IdGenerator } from '../ports';

/*
 * Rotation campaigns: a backend asks every device whose certificate expires before a date to rotate now. The campaign
 * is an operation record (the API request's own, keyed on caller + Idempotency-Key): its `progress` holds the request,
 * the counters and a cursor over the store's expiry index. Nothing waits in a request or an invocation: a scheduled job
 * (`runRotationCampaigns`) sends, each run, the notices its time allows at the campaign's rate, saves the cursor, and
 * the next run goes on from there. A crash re-sends at most the notices sent since the last saved cursor (one
 * checkpoint interval, never more than a page): a device rotates once whatever it is told twice.
 */

/** The limits of campaigns, named once. */
export const CAMPAIGN_LIMITS = {
  /** Notices a second a campaign may ask for. */
  minNoticesPerSecond: 1,
  maxNoticesPerSecond: 100,
  /**
   * Without a rate in the request: 1,200 a minute (the Greengrass certificate rotator rolls out 100 a minute), and
   * below AWS Private CA's IssueCertificate quota (25 a second) that the devices' rotations then draw on.
   */
  defaultNoticesPerSecond: 20,
  /** Campaigns open at once: each runs at its own rate, so the job sends at most 5 × 100 notices a second. */
  maxOpenCampaigns: 5,
  /** How far ahead `expiringBefore` may be, in days (the expiry index looks at most that far). */
  maxWindowDays: EXPIRY_LIMITS.maxWarningDays,
  /** Certificates asked of the expiry index per page. */
  pageSize: 50,
  /** The cursor is saved at the end of each page and at least this often: a crash re-sends at most this much. */
  checkpointMs: 5_000,
  /** A run holds its campaign until its deadline plus this, so a late-starting run of the next schedule leaves it alone. */
  runLeaseMarginMs: 10_000,
  /** A campaign whose creation stopped half-way (the client never retried) leaves the open list after this. */
  abandonedAfterMs: 3_600_000,
  /** The open list is rewritten at least this often, so the table's TTL never takes it while a long campaign runs. */
  indexRefreshMs: 7 * DAY_MS,
} as const;

export type CampaignStatus = 'RUNNING' | 'DONE' | 'CANCELLED';

/** What the API answers about a campaign. */
export interface RotationCampaign {
  readonly campaignId: string;
  readonly status: CampaignStatus;
  /** Devices with an ACTIVE certificate expiring before this instant are told to rotate. */
  readonly expiringBefore: string;
  readonly noticesPerSecond: number;
  /** Notices published so far (each device once; after a crash, the few re-sent are not counted twice). */
  readonly noticesSent: number;
  /** Certificates of the window looked at so far. */
  readonly certificatesScanned: number;
  /** Of those, the ones that got no notice: not ACTIVE, expired, the device not ACTIVE or already rotating, or told for another certificate. */
  readonly certificatesSkipped: number;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** When a scheduled run last worked on it. */
  readonly lastRunAt?: string;
  /** When it was DONE or CANCELLED. */
  readonly finishedAt?: string;
  readonly cancelledBy?: string;
}

export interface StartRotationCampaignCommand {
  readonly actor: string;
  readonly requestKey: string;
  /** ISO-8601 instant, in the future and at most `maxWindowDays` ahead. */
  readonly expiringBefore: string;
  /** @default CAMPAIGN_LIMITS.defaultNoticesPerSecond */
  readonly noticesPerSecond?: number;
}

export interface CancelRotationCampaignCommand {
  readonly campaignId: string;
  readonly actor: string;
  readonly requestKey: string;
}

/**
 * What starts a run of the job: the input of the rotation function's campaign schedule (an EventBridge rule with a
 * fixed input, every minute), and of the local mode's timer.
 */
export const ROTATION_CAMPAIGN_JOB_EVENT = { job: 'rotation-campaigns' } as const;

/** The open campaigns are listed in one record of their own (the store has no query over operation records). */
export const CAMPAIGN_INDEX_CALLER = 'rotation-campaigns';
const CAMPAIGN_INDEX_HANDLE = 'open';
export const CAMPAIGN_INDEX_ID = operationIdOf(CAMPAIGN_INDEX_CALLER, CAMPAIGN_INDEX_HANDLE);

/** A campaign id is the id of its operation record: 64 lower-case hex characters. */
export const CAMPAIGN_ID_PATTERN = /^[0-9a-f]{64}$/;

type Store = Pick<DeviceStore, 'getOperation' | 'commit'>;

/* ----------------------------------------------------------------------------
 * The API side: start, read, cancel
 * -------------------------------------------------------------------------- */

/**
 * Starts a campaign (or answers the one this Idempotency-Key started). The campaign is listed as open before its
 * record is finished, so a 202 always names a campaign the job will run; a creation that stops half-way is finished by
 * the client's retry, or leaves the open list after `abandonedAfterMs`.
 */
export async function startRotationCampaign(recorder: ChangeRecorder, command: StartRotationCampaignCommand): Promise<RotationCampaign> {
  const expiringBefore = parseInstant(command.expiringBefore);
  const noticesPerSecond = command.noticesPerSecond ?? CAMPAIGN_LIMITS.defaultNoticesPerSecond;
  checkRate(noticesPerSecond);
  return recorder.operations.execute(
    {
      caller: command.actor,
      handle: command.requestKey,
      operation: 'ROTATION_CAMPAIGN',
      target: 'fleet',
      payload: { expiringBefore: expiringBefore.toISOString(), noticesPerSecond: command.noticesPerSecond },
    },
    async (run) => {
      const now = recorder.deps.clock.now();
      checkWindow(expiringBefore, now);
      await addToIndex({ store: recorder.store, clock: recorder.deps.clock }, run.record.operationId);
      await run.commit(
        { events: [] },
        {
          status: 'DONE',
          progress: {
            state: 'RUNNING',
            expiringBefore: expiringBefore.toISOString(),
            noticesPerSecond: String(noticesPerSecond),
            windowStart: now.toISOString(),
            noticesSent: '0',
            certificatesScanned: '0',
            certificatesSkipped: '0',
          },
        },
      );
      return presentCampaign(run.record);
    },
    async (record) => presentCampaign(record),
  );
}

export async function getRotationCampaign(store: Pick<DeviceStore, 'getOperation'>, campaignId: string): Promise<RotationCampaign> {
  return presentCampaign(await requireCampaign(store, campaignId));
}

/**
 * Cancels a RUNNING campaign: the job stops it at its next checkpoint (within `checkpointMs` of notices). Cancelling a
 * cancelled campaign answers it again; a DONE one cannot be cancelled (every notice is out).
 */
export async function cancelRotationCampaign(recorder: ChangeRecorder, command: CancelRotationCampaignCommand): Promise<RotationCampaign> {
  assertCampaignId(command.campaignId);
  return recorder.operations.execute(
    { caller: command.actor, handle: command.requestKey, operation: 'CANCEL_ROTATION_CAMPAIGN', target: command.campaignId, payload: { campaignId: command.campaignId } },
    async (run) => {
      const cancelled = await recorder.retryOnConflict(async () => {
        const record = await requireCampaign(recorder.store, command.campaignId);
        const state = record.progress?.state as CampaignStatus;
        if (state === 'CANCELLED') return record;
        if (state === 'DONE') {
          throw new LifecycleError('INVALID_TRANSITION', `Campaign ${command.campaignId} is DONE: every notice has gone out, there is nothing left to cancel.`, {
            details: { entity: 'CAMPAIGN', from: 'DONE', to: 'CANCELLED', campaignId: command.campaignId },
          });
        }
        const now = recorder.now();
        const { runner: _runner, runnerUntil: _until, ...progress } = record.progress ?? {};
        const next = { ...record, progress: { ...progress, state: 'CANCELLED', finishedAt: now, cancelledBy: command.actor }, updatedAt: now, version: record.version + 1 };
        await recorder.store.commit({ operation: { next, expectedVersion: record.version }, events: [] });
        return next;
      });
      await run.commit({ events: [] }, { status: 'DONE' });
      return presentCampaign(cancelled);
    },
    async () => getRotationCampaign(recorder.store, command.campaignId),
  );
}

/* ----------------------------------------------------------------------------
 * The scheduled job
 * -------------------------------------------------------------------------- */

export interface CampaignJobDependencies {
  readonly store: Pick<DeviceStore, 'getOperation' | 'commit' | 'findCertificatesExpiring' | 'getDevice' | 'listDeviceCertificates'>;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

export interface CampaignRunOptions {
  /** No notice is sent from this instant on: the cursor is saved and the next run goes on. */
  readonly deadline: Date;
  /** Publishes a notice to the device's `certificates/expiring` topic. */
  readonly notify: RenewalNotifier;
  /** Waits this many milliseconds: the pacing (a timer in the handler, the fake clock in tests). */
  readonly wait: (ms: number) => Promise<void>;
  /** @default CAMPAIGN_LIMITS.pageSize */
  readonly pageSize?: number;
  /** @default CAMPAIGN_LIMITS.checkpointMs */
  readonly checkpointMs?: number;
}

/**
 * Why a run stopped working on a campaign:
 * - `COMPLETED`: the window was walked to its end: the campaign is DONE;
 * - `DEADLINE`: the run's time is up: the cursor is saved, the next run goes on;
 * - `CANCELLED`: someone cancelled it;
 * - `BUSY`: another run holds it (an overlapping or retried invocation);
 * - `SUPERSEDED`: its record changed under this run (another run took it over after this one's lease ran out);
 * - `FAILED`: a call failed; the cursor saved last is where the next run goes on.
 */
export type CampaignStop = 'COMPLETED' | 'DEADLINE' | 'CANCELLED' | 'BUSY' | 'SUPERSEDED' | 'FAILED';

export interface CampaignRunReport {
  readonly campaignId: string;
  readonly stoppedBy: CampaignStop;
  /** In this run. */
  readonly noticesSent: number;
  readonly certificatesScanned: number;
  readonly error?: string;
}

export interface CampaignsRunResult {
  /** One report per RUNNING campaign, oldest first. */
  readonly campaigns: readonly CampaignRunReport[];
  /** Finished, cancelled or abandoned campaigns taken off the open list. */
  readonly closed: number;
}

/**
 * One run of the job: each open campaign in turn is walked at its own rate until the deadline (all at once: each has
 * its own pacing), then finished ones leave the open list. A failing campaign does not stop the others.
 */
export async function runRotationCampaigns(dependencies: CampaignJobDependencies, options: CampaignRunOptions): Promise<CampaignsRunResult> {
  const { store, clock } = dependencies;
  const index = await store.getOperation(CAMPAIGN_INDEX_ID);
  const open = Object.entries(index?.progress ?? {}).sort(([, a], [, b]) => a.localeCompare(b));
  if (open.length === 0) return { campaigns: [], closed: 0 };
  const closing = new Set<string>();
  const reports = await Promise.all(
    open.map(async ([campaignId, listedAt]): Promise<CampaignRunReport | undefined> => {
      const record = await store.getOperation(campaignId);
      if (!record || record.status !== 'DONE') {
        if (isAbandoned(record, listedAt, clock.now())) closing.add(campaignId);
        return undefined;
      }
      if (record.progress?.state !== 'RUNNING') {
        closing.add(campaignId);
        return undefined;
      }
      const report = await new CampaignRun(dependencies, record, options).run();
      if (report.stoppedBy === 'COMPLETED' || report.stoppedBy === 'CANCELLED') closing.add(campaignId);
      return report;
    }),
  );
  const stale = index !== undefined && clock.now().getTime() - Date.parse(index.updatedAt) >= CAMPAIGN_LIMITS.indexRefreshMs;
  if (closing.size > 0 || stale) {
    await changeIndex({ store, clock }, (listed) => {
      for (const campaignId of closing) delete listed[campaignId];
      return listed;
    });
  }
  return { campaigns: reports.filter((report): report is CampaignRunReport => report !== undefined), closed: closing.size };
}

/** Stops the walk from inside it. */
class StopRun extends Error {
  public constructor(public readonly reason: CampaignStop) {
    super(reason);
    this.name = 'StopRun';
  }
}

/** One campaign in one run: claim it, walk the window from the cursor at the campaign's rate, save the cursor as it goes. */
class CampaignRun {
  private record: OperationRecord;
  private progress: Record<string, string>;
  private readonly runner: string;
  private readonly pageSize: number;
  private readonly checkpointMs: number;
  private readonly interval: number;
  private nextSlot = 0;
  private lastSave = 0;
  private sent = 0;
  private scanned = 0;

  public constructor(
    private readonly dependencies: CampaignJobDependencies,
    record: OperationRecord,
    private readonly options: CampaignRunOptions,
  ) {
    this.record = record;
    this.progress = { ...(record.progress ?? {}) };
    this.runner = dependencies.ids.next();
    this.pageSize = options.pageSize ?? CAMPAIGN_LIMITS.pageSize;
    this.checkpointMs = options.checkpointMs ?? CAMPAIGN_LIMITS.checkpointMs;
    this.interval = 1000 / Number(this.progress.noticesPerSecond);
  }

  public async run(): Promise<CampaignRunReport> {
    const now = this.now();
    const held = this.progress.runner !== undefined && Date.parse(this.progress.runnerUntil ?? '') > now;
    if (held) return this.report('BUSY');
    try {
      try {
        this.progress.runner = this.runner;
        this.progress.runnerUntil = new Date(this.options.deadline.getTime() + CAMPAIGN_LIMITS.runLeaseMarginMs).toISOString();
        this.progress.lastRunAt = new Date(now).toISOString();
        await this.save();
      } catch (error) {
        // Claimed or cancelled by someone else between our read and our write.
        if (error instanceof StopRun && error.reason === 'SUPERSEDED') throw new StopRun('BUSY');
        throw error;
      }
      await this.walk();
      return this.report('COMPLETED');
    } catch (error) {
      if (error instanceof StopRun) return this.report(error.reason);
      await this.saveQuietly();
      return this.report('FAILED', error);
    }
  }

  private async walk(): Promise<void> {
    const { store } = this.dependencies;
    const window = { notBefore: new Date(this.progress.windowStart ?? ''), before: new Date(this.progress.expiringBefore ?? '') };
    for (;;) {
      const page = await this.pageAtCursor(store, window);
      const resumeAt = this.progress.afterCertificateId === undefined ? 0 : page.items.findIndex((item) => item.certificateId === this.progress.afterCertificateId) + 1;
      for (const certificate of page.items.slice(resumeAt)) {
        if (this.now() >= this.options.deadline.getTime()) await this.stop('DEADLINE');
        const notice = await this.noticeFor(certificate);
        if (notice) await this.send(certificate.deviceId as string, notice);
        else this.count('certificatesSkipped');
        this.scanned += 1;
        this.count('certificatesScanned');
        this.progress.afterCertificateId = certificate.certificateId;
        if (this.now() - this.lastSave >= this.checkpointMs) await this.save();
      }
      delete this.progress.afterCertificateId;
      if (page.nextToken === undefined) {
        const { runner: _runner, runnerUntil: _until, pageToken: _token, ...rest } = this.progress;
        this.progress = { ...rest, state: 'DONE', finishedAt: new Date(this.now()).toISOString() };
        await this.save();
        return;
      }
      this.progress.pageToken = page.nextToken;
      await this.save();
    }
  }

  /**
   * The page the cursor is on. A saved token the store no longer accepts (its format changed with an upgrade) starts the
   * walk over: the devices told already are told again, which costs notices, not rotations.
   */
  private async pageAtCursor(store: CampaignJobDependencies['store'], window: { notBefore: Date; before: Date }): Promise<Page<CertificateRecord>> {
    const query = { ...window, limit: this.pageSize };
    const token = this.progress.pageToken;
    if (token === undefined) return store.findCertificatesExpiring(query);
    try {
      return await store.findCertificatesExpiring({ ...query, nextToken: token });
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      delete this.progress.pageToken;
      delete this.progress.afterCertificateId;
      return store.findCertificatesExpiring(query);
    }
  }

  /**
   * The notice a certificate of the window gets, read afresh: an ACTIVE, unexpired certificate of an ACTIVE device with
   * no rotation in flight, and the device's soonest-expiring live ACTIVE certificate (one notice per device).
   */
  private async noticeFor(listed: CertificateRecord): Promise<RenewalNotice | undefined> {
    const { store } = this.dependencies;
    const now = this.now();
    // A bootstrap certificate cannot be rotated over MQTT (it only serves recovery): its device is told about its operational one.
    if (listed.status !== 'ACTIVE' || listed.deviceId === undefined || Date.parse(listed.notAfter) <= now || purposeOf(listed) !== 'OPERATIONAL') return undefined;
    const device = await store.getDevice(listed.deviceId);
    if (!device || device.status !== 'ACTIVE' || device.rotation !== undefined) return undefined;
    const certificates = (await store.listDeviceCertificates(device.deviceId)).filter((certificate) => certificate.status === 'ACTIVE' && Date.parse(certificate.notAfter) > now && purposeOf(certificate) === 'OPERATIONAL');
    const current = certificates.find((certificate) => certificate.certificateId === listed.certificateId);
    if (!current) return undefined;
    const sooner = certificates.some(
      (other) => other.certificateId !== current.certificateId && (other.notAfter < current.notAfter || (other.notAfter === current.notAfter && other.certificateId < current.certificateId)),
    );
    if (sooner) return undefined;
    return { certificateId: current.certificateId, notAfter: current.notAfter, renewBy: new Date(now).toISOString() };
  }

  /** Sends at the campaign's rate: one notice per `1000 / noticesPerSecond` ms, none at or after the deadline. */
  private async send(deviceId: string, notice: RenewalNotice): Promise<void> {
    const now = this.now();
    const slot = Math.max(now, this.nextSlot);
    if (slot >= this.options.deadline.getTime()) await this.stop('DEADLINE');
    if (slot > now) await this.options.wait(slot - now);
    await this.options.notify(deviceId, { ...notice, renewBy: new Date(Math.max(this.now(), Date.parse(notice.renewBy))).toISOString() });
    this.nextSlot = slot + this.interval;
    this.sent += 1;
    this.count('noticesSent');
  }

  private count(counter: 'noticesSent' | 'certificatesScanned' | 'certificatesSkipped'): void {
    this.progress[counter] = String(Number(this.progress[counter] ?? '0') + 1);
  }

  /** Saves the cursor, lets the campaign go (the next run claims it afresh) and stops. */
  private async stop(reason: CampaignStop): Promise<never> {
    const { runner: _runner, runnerUntil: _until, ...rest } = this.progress;
    this.progress = rest;
    await this.save();
    throw new StopRun(reason);
  }

  /**
   * Writes the progress on condition of the record's version. A conflict is a cancel (stop), a write of ours whose answer
   * was lost (go on), or another run that took the campaign over (stop).
   */
  private async save(): Promise<void> {
    const { store } = this.dependencies;
    const at = new Date(this.now()).toISOString();
    const next: OperationRecord = { ...this.record, progress: { ...this.progress }, updatedAt: at, version: this.record.version + 1 };
    try {
      await store.commit({ operation: { next, expectedVersion: this.record.version }, events: [] });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      const stored = await store.getOperation(this.record.operationId);
      if (stored?.progress?.state === 'CANCELLED') throw new StopRun('CANCELLED');
      const ours = stored?.version === next.version && stored.updatedAt === next.updatedAt && stored.progress?.runner === next.progress?.runner;
      if (!ours) throw new StopRun('SUPERSEDED');
    }
    this.record = next;
    this.lastSave = this.now();
  }

  /** After a failure: the cursor as far as it got (the failed notice is not counted: it is sent again). Best effort. */
  private async saveQuietly(): Promise<void> {
    try {
      const { runner: _runner, runnerUntil: _until, ...rest } = this.progress;
      this.progress = rest;
      await this.save();
    } catch {
      // The next run starts from the cursor saved last.
    }
  }

  private report(stoppedBy: CampaignStop, error?: unknown): CampaignRunReport {
    return {
      campaignId: this.record.operationId,
      stoppedBy,
      noticesSent: this.sent,
      certificatesScanned: this.scanned,
      ...(error === undefined ? {} : { error: error instanceof Error ? error.message : String(error) }),
    };
  }

  private now(): number {
    return this.dependencies.clock.now().getTime();
  }
}

/* ----------------------------------------------------------------------------
 * Records
 * -------------------------------------------------------------------------- */

export function presentCampaign(record: OperationRecord): RotationCampaign {
  const progress = record.progress ?? {};
  const optional = (name: 'lastRunAt' | 'finishedAt' | 'cancelledBy') => (progress[name] === undefined ? {} : { [name]: progress[name] });
  return {
    campaignId: record.operationId,
    status: progress.state as CampaignStatus,
    expiringBefore: progress.expiringBefore ?? '',
    noticesPerSecond: Number(progress.noticesPerSecond),
    noticesSent: Number(progress.noticesSent ?? '0'),
    certificatesScanned: Number(progress.certificatesScanned ?? '0'),
    certificatesSkipped: Number(progress.certificatesSkipped ?? '0'),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    ...optional('lastRunAt'),
    ...optional('finishedAt'),
    ...optional('cancelledBy'),
  };
}

const campaignNotFound = (campaignId: string): LifecycleError =>
  new LifecycleError('CAMPAIGN_NOT_FOUND', `Rotation campaign ${campaignId} does not exist (campaigns are kept 30 days after their last change).`, { details: { campaignId } });

function assertCampaignId(campaignId: string): void {
  if (!CAMPAIGN_ID_PATTERN.test(campaignId)) throw new ValidationError('INVALID_REQUEST', 'campaignId must be the 64 lower-case hex characters POST /rotation-campaigns answered.');
}

/** A campaign whose creation finished (a PENDING record is a request still being answered: no campaign yet). */
async function requireCampaign(store: Pick<DeviceStore, 'getOperation'>, campaignId: string): Promise<OperationRecord> {
  assertCampaignId(campaignId);
  const record = await store.getOperation(campaignId);
  if (!record || record.operation !== 'ROTATION_CAMPAIGN' || record.status !== 'DONE') throw campaignNotFound(campaignId);
  return record;
}

function parseInstant(value: string): Date {
  const instant = new Date(value);
  if (Number.isNaN(instant.getTime())) throw new ValidationError('INVALID_REQUEST', 'expiringBefore must be an ISO-8601 date and time, such as 2027-01-31T00:00:00Z.');
  return instant;
}

function checkRate(noticesPerSecond: number): void {
  const { minNoticesPerSecond: min, maxNoticesPerSecond: max } = CAMPAIGN_LIMITS;
  if (!Number.isInteger(noticesPerSecond) || noticesPerSecond < min || noticesPerSecond > max) {
    throw new ValidationError('INVALID_REQUEST', `noticesPerSecond must be a whole number from ${min} to ${max} (got ${noticesPerSecond}).`);
  }
}

/**
 * A date in the past names certificates that have expired already: they no longer authenticate, so no notice over
 * their connection can save them (docs/rotation.md, "Recovery after expiry").
 */
function checkWindow(expiringBefore: Date, now: Date): void {
  if (expiringBefore.getTime() <= now.getTime()) {
    throw new ValidationError(
      'INVALID_REQUEST',
      'expiringBefore must be in the future: certificates that expired already cannot rotate over their own connection (see "Recovery after expiry" in docs/rotation.md).',
    );
  }
  if (expiringBefore.getTime() > now.getTime() + CAMPAIGN_LIMITS.maxWindowDays * DAY_MS) {
    throw new ValidationError('INVALID_REQUEST', `expiringBefore must be at most ${CAMPAIGN_LIMITS.maxWindowDays} days ahead.`);
  }
}

function isAbandoned(record: OperationRecord | undefined, listedAt: string, now: Date): boolean {
  const since = record ? Date.parse(record.updatedAt) : Date.parse(listedAt);
  const leaseRunning = record?.leaseUntil !== undefined && Date.parse(record.leaseUntil) > now.getTime();
  return !leaseRunning && now.getTime() - since >= CAMPAIGN_LIMITS.abandonedAfterMs;
}

/** Lists a campaign as open; refuses a sixth, after taking finished ones off the list. */
async function addToIndex(dependencies: { readonly store: Store; readonly clock: Clock }, campaignId: string): Promise<void> {
  await changeIndex(dependencies, async (listed) => {
    if (listed[campaignId] !== undefined) return undefined;
    if (Object.keys(listed).length >= CAMPAIGN_LIMITS.maxOpenCampaigns) {
      for (const id of await finishedAmong(dependencies.store, Object.keys(listed))) delete listed[id];
    }
    if (Object.keys(listed).length >= CAMPAIGN_LIMITS.maxOpenCampaigns) {
      throw new LifecycleError(
        'CAMPAIGN_LIMIT_REACHED',
        `${CAMPAIGN_LIMITS.maxOpenCampaigns} rotation campaigns are running: wait for one to finish or cancel one (POST /rotation-campaigns/{campaignId}/cancel), then retry with the same Idempotency-Key.`,
        { details: { openCampaigns: Object.keys(listed) } },
      );
    }
    return { ...listed, [campaignId]: dependencies.clock.now().toISOString() };
  });
}

async function finishedAmong(store: Store, campaignIds: readonly string[]): Promise<Set<string>> {
  const records = await Promise.all(campaignIds.map((id) => store.getOperation(id)));
  return new Set(campaignIds.filter((_id, index) => {
    const record = records[index];
    return record?.status === 'DONE' && record.progress?.state !== 'RUNNING';
  }));
}

/** Changes the open list on condition of its version, reading it again after a concurrent change. `undefined`: no write. */
async function changeIndex(
  dependencies: { readonly store: Store; readonly clock: Clock },
  change: (listed: Record<string, string>) => Record<string, string> | undefined | Promise<Record<string, string> | undefined>,
): Promise<void> {
  const { store, clock } = dependencies;
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const current = await store.getOperation(CAMPAIGN_INDEX_ID);
    const listed = await change({ ...(current?.progress ?? {}) });
    if (listed === undefined) return;
    const at = clock.now().toISOString();
    const next: OperationRecord = {
      operationId: CAMPAIGN_INDEX_ID,
      caller: CAMPAIGN_INDEX_CALLER,
      handle: CAMPAIGN_INDEX_HANDLE,
      operation: 'ROTATION_CAMPAIGN_INDEX',
      target: 'fleet',
      payloadHash: sha256Hex('{}'),
      // Never DONE: a list, not a request; never executed through `Operations`.
      status: 'PENDING',
      progress: listed,
      createdAt: current?.createdAt ?? at,
      updatedAt: at,
      version: (current?.version ?? 0) + 1,
    };
    try {
      await store.commit({ operation: { next, ...(current ? { expectedVersion: current.version } : {}) }, events: [] });
      return;
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
    }
  }
  throw new ConflictError('The list of open rotation campaigns kept changing; retry with the same Idempotency-Key.');
}
