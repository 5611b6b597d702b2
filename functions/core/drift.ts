import { ConfigurationError, ConflictError, NotFoundError, ValidationError } from './errors';
import type { CertificateRecord, CertificateStatus, Device, DeviceStatus, OperationRecord, OperationType } from './model';
import { operationIdOf, sha256Hex } from './operations';
import type { Clock, DeviceRegistry, DeviceStore, RegistryCertificateStatus } from './ports';
import { isLiveCertificateStatus } from './state-machines';

/*
 * The drift check: the device records against AWS IoT's certificate statuses. Who is right depends on who could have
 * made the difference:
 * - the record, where the lifecycle wrote a terminal or decided state (a revoked or retired certificate, a suspended or
 *   revoked device): the lifecycle changes AWS IoT first and the record after, so a record that went further than AWS
 *   IoT means a step that never reached it. Those are repaired in AWS IoT (the record is never written);
 * - AWS IoT, for what a person did in its console (a certificate of an active device deactivated or revoked there),
 *   which the lifecycle cannot know was meant: reported only.
 * AWS IoT's DescribeCertificate allows 10 calls a second per account by default, and JITR needs it for every first
 * connect, so a run checks a bounded number of certificates and the next run goes on from where it stopped.
 */

/** The limits of one run, named once. */
export const DRIFT_LIMITS = {
  /** Certificates whose AWS IoT status one run reads (DescribeCertificate calls). */
  maxCertificatesPerRun: 2000,
  /** Devices asked of the store per page: a run never holds more than one page. */
  devicesPerPage: 100,
  /** Registry failures in a row after which a run stops (AWS IoT is down, or the role may not call it). */
  maxConsecutiveFailures: 10,
  /** How many failures a report names; the count covers them all. */
  maxReportedFailures: 20,
  /**
   * Registry calls a second the AWS wiring allows the check: 2,000 certificates in about 8 minutes, leaving 6 of the
   * 10 DescribeCertificate calls a second (the default quota) to JITR.
   */
  registryCallsPerSecond: 4,
} as const;

/**
 * What a disagreement is, with who decides it:
 * - `REVOKED_CERTIFICATE_NOT_REVOKED`: revoked on record, not in AWS IoT (Device Defender's "revoked device
 *   certificate still active"). Repaired: REVOKED.
 * - `REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED`: a live certificate of a revoked (or decommissioned) device, not revoked in
 *   AWS IoT: the device's revocation stopped before this certificate. Repaired: REVOKED (its retry still has to revoke it
 *   at the CA and on record).
 * - `RETIRED_CERTIFICATE_ACTIVE`: replaced by a committed rotation, still ACTIVE in AWS IoT. Repaired: INACTIVE.
 * - `SUSPENDED_DEVICE_CERTIFICATE_ACTIVE`: a live certificate of a suspended device, ACTIVE in AWS IoT. Repaired: INACTIVE.
 * - `CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE`: a certificate the device may use (or use again after a resume) that is
 *   INACTIVE or REVOKED in AWS IoT: someone changed it there. Reported only.
 * - `CERTIFICATE_NOT_IN_REGISTRY`: a live certificate (ACTIVE, INACTIVE, PENDING_ACTIVATION on record) AWS IoT does not
 *   know (deleted there). Reported only.
 * - `STATUS_MISMATCH`: any other disagreement (e.g. ACTIVE in AWS IoT while PENDING_ACTIVATION on record after a
 *   first connect that stopped half-way). Reported only.
 */
export const DRIFT_KINDS = [
  'REVOKED_CERTIFICATE_NOT_REVOKED',
  'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED',
  'RETIRED_CERTIFICATE_ACTIVE',
  'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE',
  'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE',
  'CERTIFICATE_NOT_IN_REGISTRY',
  'STATUS_MISMATCH',
] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

/** What AWS IoT answered for a certificate: its status, or that it does not know it. */
export type RegistryObservation = RegistryCertificateStatus | 'NOT_FOUND';

export interface DriftDecision {
  readonly kind: DriftKind;
  /** The status AWS IoT is set to; absent when the disagreement is only reported. */
  readonly repair?: 'INACTIVE' | 'REVOKED';
}

const report = (kind: DriftKind): DriftDecision => ({ kind });

/**
 * Whether the record and AWS IoT disagree on a certificate, and whether the record decides it. Undefined when they
 * agree, including the states the lifecycle passes through (it changes AWS IoT first, then the record: a resume
 * half-done leaves an INACTIVE record with an ACTIVE certificate in AWS IoT).
 */
export function decideDrift(deviceStatus: DeviceStatus, recordStatus: CertificateStatus, registry: RegistryObservation): DriftDecision | undefined {
  // Unknown to AWS IoT, it cannot connect: a disagreement only for a certificate the record says may (e.g. an issuance
  // withdrawn before its registration leaves a REVOKED record that AWS IoT never saw).
  if (registry === 'NOT_FOUND') return isLiveCertificateStatus(recordStatus) ? report('CERTIFICATE_NOT_IN_REGISTRY') : undefined;
  switch (recordStatus) {
    case 'REVOKED':
      return registry === 'REVOKED' ? undefined : { kind: 'REVOKED_CERTIFICATE_NOT_REVOKED', repair: 'REVOKED' };
    case 'RETIRED':
      if (registry === 'ACTIVE') return { kind: 'RETIRED_CERTIFICATE_ACTIVE', repair: 'INACTIVE' };
      return registry === 'PENDING_ACTIVATION' ? report('STATUS_MISMATCH') : undefined;
    case 'REJECTED':
      // Refused on first connect: REVOKED or INACTIVE in AWS IoT, or still PENDING_ACTIVATION; never ACTIVE.
      return registry === 'ACTIVE' ? report('STATUS_MISMATCH') : undefined;
    default:
      return decideLive(deviceStatus, recordStatus, registry);
  }
}

/** A live certificate (ACTIVE, INACTIVE, PENDING_ACTIVATION): its device's status says what AWS IoT must hold. */
function decideLive(deviceStatus: DeviceStatus, recordStatus: CertificateStatus, registry: RegistryCertificateStatus): DriftDecision | undefined {
  if (deviceStatus === 'REVOKED' || deviceStatus === 'DECOMMISSIONED') {
    return registry === 'REVOKED' ? undefined : { kind: 'REVOKED_DEVICE_CERTIFICATE_NOT_REVOKED', repair: 'REVOKED' };
  }
  if (deviceStatus === 'SUSPENDED') {
    // The lifecycle itself deactivates a first-connect activation that stopped half-way on a suspended device.
    if (registry === 'ACTIVE') return { kind: 'SUSPENDED_DEVICE_CERTIFICATE_ACTIVE', repair: 'INACTIVE' };
    if (registry === 'REVOKED') return report('CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE');
    if (registry === 'PENDING_ACTIVATION') return recordStatus === 'PENDING_ACTIVATION' ? undefined : report('STATUS_MISMATCH');
    return undefined;
  }
  // REGISTERED or ACTIVE: its certificates may connect.
  if (recordStatus === 'PENDING_ACTIVATION') return registry === 'PENDING_ACTIVATION' ? undefined : report('STATUS_MISMATCH');
  if (registry === 'REVOKED') return report('CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE');
  if (registry === 'PENDING_ACTIVATION') return report('STATUS_MISMATCH');
  if (recordStatus === 'ACTIVE' && registry === 'INACTIVE') return report('CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE');
  // ACTIVE/ACTIVE, or an INACTIVE record (a resume on its way) with either status in AWS IoT.
  return undefined;
}

/** One disagreement, as the log and the metrics report it. */
export interface DriftFinding {
  readonly deviceId: string;
  readonly certificateId: string;
  readonly deviceStatus: DeviceStatus;
  readonly recordStatus: CertificateStatus;
  readonly registryStatus: RegistryObservation;
  readonly kind: DriftKind;
  /** The status AWS IoT was (or was to be) set to; absent when only reported. */
  readonly repair?: 'INACTIVE' | 'REVOKED';
  readonly repaired: boolean;
  /** Why the repair failed. */
  readonly error?: string;
}

/** A certificate whose AWS IoT status could not be read. */
export interface DriftFailure {
  readonly deviceId: string;
  readonly certificateId: string;
  readonly error: string;
}

/** Why a run ended. */
export type DriftStop =
  /** The walk reached the last device: the next run starts a new pass. */
  | 'PASS_COMPLETED'
  /** `maxCertificatesPerRun` certificates were checked. */
  | 'LIMIT_REACHED'
  /** The run's deadline came (the function's time is nearly up). */
  | 'DEADLINE'
  /** `maxConsecutiveFailures` registry calls failed in a row: the next run retries from the first of them. */
  | 'FAILURES'
  /** Another run moved the cursor meanwhile: it goes on, this one stops. */
  | 'SUPERSEDED';

export interface DriftReport {
  /** Certificates whose AWS IoT status was read (successfully or not). */
  readonly checked: number;
  readonly findings: readonly DriftFinding[];
  /** Findings repaired in AWS IoT. */
  readonly repaired: number;
  /** Registry calls that failed: reads (`failureSamples`) and repairs (findings with an `error`). */
  readonly failures: number;
  /** The first `maxReportedFailures` failed reads. */
  readonly failureSamples: readonly DriftFailure[];
  /** Certificates left to the flow working on them: a rotation being committed or withdrawn, a first connect being activated, a change since they were read. */
  readonly skipped: number;
  readonly stoppedBy: DriftStop;
  /** When the pass this run belongs to started (a pass covers the fleet once, over one run or several). */
  readonly passStartedAt: string;
}

/** Where the next run starts: a page of the store's device listing, a device on it, and the certificates of that device already checked. */
export interface DriftCursor {
  /** The `listDevices` token of the page holding `deviceId` (absent: the first page). */
  readonly pageToken?: string;
  /** The device the next run starts at (absent: the start of the page). Not found on the page any more: the whole page is checked. */
  readonly deviceId?: string;
  /** Of that device, the certificates up to this one (oldest first) were checked. */
  readonly afterCertificateId?: string;
  readonly passStartedAt: string;
}

/**
 * The cursor is kept in an operation record (the one durable, version-conditioned record the store has besides
 * devices and certificates), under a fixed handle of its own caller: two runs at once cannot both move it, and the
 * table's layout is unchanged. Its `progress` holds the cursor. It is a cursor, never executed through `Operations`
 * and never answered to a caller: its type `CHECK_DRIFT` only names it.
 */
export const DRIFT_CHECK_CALLER = 'drift-check';
export const DRIFT_CURSOR_HANDLE = 'cursor';
export const DRIFT_CURSOR_OPERATION_ID = operationIdOf(DRIFT_CHECK_CALLER, DRIFT_CURSOR_HANDLE);
const DRIFT_CHECK_OPERATION: OperationType = 'CHECK_DRIFT';

export interface DriftCheckDependencies {
  readonly store: Pick<DeviceStore, 'listDevices' | 'listDeviceCertificates' | 'getDevice' | 'getCertificate' | 'getOperation' | 'commit'>;
  readonly registry: Pick<DeviceRegistry, 'describeCertificate' | 'updateCertificateStatus'>;
  readonly clock: Clock;
}

export interface DriftCheckSettings {
  /** @default DRIFT_LIMITS.maxCertificatesPerRun */
  readonly maxCertificatesPerRun?: number;
  /** @default DRIFT_LIMITS.devicesPerPage */
  readonly devicesPerPage?: number;
  /** @default DRIFT_LIMITS.maxConsecutiveFailures */
  readonly maxConsecutiveFailures?: number;
}

export interface DriftRunOptions {
  /** Stop before checking another certificate from this instant on (the cursor is saved, nothing is lost). @default - no deadline */
  readonly deadline?: Date;
}

type Position = Omit<DriftCursor, 'passStartedAt'>;

/** Stops the walk from inside it; the run answers its report. */
class StopRun extends Error {
  public constructor(public readonly reason: DriftStop) {
    super(reason);
    this.name = 'StopRun';
  }
}

/**
 * Walks the fleet (every device, in the store's listing order, and each device's certificates) a bounded slice per
 * run, compares each certificate that can still matter (not expired, not REJECTED) with AWS IoT, repairs what the
 * record decides and reports the rest. Re-read, then decide: a disagreement is acted on only if the device and the
 * certificate did not change on record while AWS IoT was being read, so a lifecycle change in progress is never undone.
 */
export class DriftCheck {
  public readonly settings: Required<DriftCheckSettings>;

  public constructor(
    private readonly dependencies: DriftCheckDependencies,
    settings: DriftCheckSettings = {},
  ) {
    this.settings = {
      maxCertificatesPerRun: settings.maxCertificatesPerRun ?? DRIFT_LIMITS.maxCertificatesPerRun,
      devicesPerPage: settings.devicesPerPage ?? DRIFT_LIMITS.devicesPerPage,
      maxConsecutiveFailures: settings.maxConsecutiveFailures ?? DRIFT_LIMITS.maxConsecutiveFailures,
    };
    for (const [name, value] of Object.entries(this.settings)) {
      if (!Number.isInteger(value) || value < 1) throw new ConfigurationError(`The drift check's ${name} must be a whole number of at least 1 (got ${value}).`);
    }
  }

  public async run(options: DriftRunOptions = {}): Promise<DriftReport> {
    const { store } = this.dependencies;
    const now = this.dependencies.clock.now();
    let record = await store.getOperation(DRIFT_CURSOR_OPERATION_ID);
    const saved = record ? cursorOf(record) : undefined;
    const passStartedAt = saved?.passStartedAt ?? now.toISOString();
    const tally = new Tally();
    let failureStreakStart: Position | undefined;

    const save = async (position: Position | undefined): Promise<void> => {
      const progress: Record<string, string> = position ? withoutUndefined({ ...position, passStartedAt }) : {};
      if (!position) progress.lastPassCompletedAt = this.dependencies.clock.now().toISOString();
      const next = cursorRecord(record, progress, this.dependencies.clock.now());
      try {
        await store.commit({ operation: { next, ...(record ? { expectedVersion: record.version } : {}) }, events: [] });
      } catch (error) {
        if (error instanceof ConflictError) throw new StopRun('SUPERSEDED');
        throw error;
      }
      record = next;
    };

    let position: Position = saved ? { ...saved } : {};
    let firstPage = true;
    try {
      for (;;) {
        const page = await this.listDevicesFrom(position, firstPage);
        firstPage = false;
        if (page.restarted) position = {};
        const start = position.deviceId === undefined ? -1 : page.items.findIndex((device) => device.deviceId === position.deviceId);
        for (const [index, device] of page.items.entries()) {
          if (index < start) continue;
          const certificates = await store.listDeviceCertificates(device.deviceId);
          const resumeAfter = index === start && position.afterCertificateId !== undefined ? certificates.findIndex((c) => c.certificateId === position.afterCertificateId) : -1;
          let lastChecked: string | undefined = index === start ? position.afterCertificateId : undefined;
          for (const [certificateIndex, certificate] of certificates.entries()) {
            if (certificateIndex <= resumeAfter || !isWorthChecking(certificate, now)) continue;
            if (isBusy(device, certificate, now)) {
              tally.skipped += 1;
              continue;
            }
            const here: Position = withoutUndefined({ pageToken: position.pageToken, deviceId: device.deviceId, afterCertificateId: lastChecked });
            if (tally.checked >= this.settings.maxCertificatesPerRun) {
              await save(here);
              throw new StopRun('LIMIT_REACHED');
            }
            if (options.deadline && this.dependencies.clock.now().getTime() >= options.deadline.getTime()) {
              await save(here);
              throw new StopRun('DEADLINE');
            }
            const outcome = await this.check(device, certificate, tally);
            lastChecked = certificate.certificateId;
            if (outcome === 'FAILED') {
              failureStreakStart ??= here;
              if (tally.streak >= this.settings.maxConsecutiveFailures) {
                await save(failureStreakStart);
                throw new StopRun('FAILURES');
              }
            } else {
              failureStreakStart = undefined;
            }
          }
        }
        if (page.nextToken === undefined) {
          await save(undefined);
          throw new StopRun('PASS_COMPLETED');
        }
        position = { pageToken: page.nextToken };
        await save(position);
      }
    } catch (error) {
      if (!(error instanceof StopRun)) throw error;
      return tally.report(error.reason, passStartedAt);
    }
  }

  /**
   * The page the position is on. A saved page token the store no longer accepts (the store's token format changed with
   * an upgrade) starts the pass over rather than stopping the check for good; a token the store has just given is not
   * second-guessed.
   */
  private async listDevicesFrom(position: Position, saved: boolean): Promise<{ readonly items: readonly Device[]; readonly nextToken?: string; readonly restarted: boolean }> {
    const limit = this.settings.devicesPerPage;
    if (position.pageToken === undefined) return { ...(await this.dependencies.store.listDevices({ limit })), restarted: false };
    try {
      return { ...(await this.dependencies.store.listDevices({ limit, nextToken: position.pageToken })), restarted: false };
    } catch (error) {
      if (!saved || !(error instanceof ValidationError)) throw error;
      return { ...(await this.dependencies.store.listDevices({ limit })), restarted: true };
    }
  }

  /** Reads AWS IoT's status of one certificate, decides, re-reads the records, and repairs when the record decides. */
  private async check(device: Device, certificate: CertificateRecord, tally: Tally): Promise<'AGREE' | 'FINDING' | 'SKIPPED' | 'FAILED'> {
    const { registry, store } = this.dependencies;
    const ids = { deviceId: device.deviceId, certificateId: certificate.certificateId };
    tally.checked += 1;
    let observed: RegistryObservation;
    try {
      observed = (await registry.describeCertificate(certificate.certificateId)).status;
    } catch (error) {
      if (!(error instanceof NotFoundError)) {
        tally.failed({ ...ids, error: messageOf(error) });
        return 'FAILED';
      }
      observed = 'NOT_FOUND';
    }
    tally.streak = 0;
    const decision = decideDrift(device.status, certificate.status, observed);
    if (!decision) return 'AGREE';
    // Re-read, then decide: if the lifecycle changed the device or the certificate meanwhile, AWS IoT may be answering
    // for that change; the flow making it finishes it, and the next pass looks again.
    const [currentDevice, currentCertificate] = await Promise.all([store.getDevice(device.deviceId), store.getCertificate(certificate.certificateId)]);
    if (currentDevice?.version !== device.version || currentCertificate?.version !== certificate.version) {
      tally.skipped += 1;
      return 'SKIPPED';
    }
    const finding = { ...ids, deviceStatus: device.status, recordStatus: certificate.status, registryStatus: observed, kind: decision.kind };
    if (!decision.repair) {
      tally.findings.push({ ...finding, repaired: false });
      return 'FINDING';
    }
    try {
      await registry.updateCertificateStatus(certificate.certificateId, decision.repair);
      tally.findings.push({ ...finding, repair: decision.repair, repaired: true });
    } catch (error) {
      tally.failures += 1;
      tally.findings.push({ ...finding, repair: decision.repair, repaired: false, error: messageOf(error) });
    }
    return 'FINDING';
  }
}

/** Not expired and not REJECTED: a certificate that can still authenticate, or whose status still matters in AWS IoT. */
function isWorthChecking(certificate: CertificateRecord, now: Date): boolean {
  return certificate.status !== 'REJECTED' && Date.parse(certificate.notAfter) > now.getTime();
}

/**
 * A certificate another flow is changing right now: the two certificates of a rotation being committed or withdrawn
 * (its own steps finish them), or a first connect whose activation lease still runs.
 */
function isBusy(device: Device, certificate: CertificateRecord, now: Date): boolean {
  const rotation = device.rotation;
  if (rotation && rotation.state !== 'PENDING' && (certificate.certificateId === rotation.certificateId || certificate.certificateId === rotation.previousCertificateId)) return true;
  return certificate.status === 'PENDING_ACTIVATION' && certificate.activationLeaseUntil !== undefined && Date.parse(certificate.activationLeaseUntil) > now.getTime();
}

class Tally {
  public checked = 0;
  public streak = 0;
  public failures = 0;
  public skipped = 0;
  public readonly findings: DriftFinding[] = [];
  private readonly samples: DriftFailure[] = [];

  public failed(failure: DriftFailure): void {
    this.failures += 1;
    this.streak += 1;
    if (this.samples.length < DRIFT_LIMITS.maxReportedFailures) this.samples.push(failure);
  }

  public report(stoppedBy: DriftStop, passStartedAt: string): DriftReport {
    return {
      checked: this.checked,
      findings: [...this.findings],
      repaired: this.findings.filter((finding) => finding.repaired).length,
      failures: this.failures,
      failureSamples: [...this.samples],
      skipped: this.skipped,
      stoppedBy,
      passStartedAt,
    };
  }
}

function cursorOf(record: OperationRecord): DriftCursor | undefined {
  const progress = record.progress ?? {};
  if (progress.passStartedAt === undefined) return undefined;
  return withoutUndefined({ pageToken: progress.pageToken, deviceId: progress.deviceId, afterCertificateId: progress.afterCertificateId, passStartedAt: progress.passStartedAt });
}

function cursorRecord(current: OperationRecord | undefined, progress: Readonly<Record<string, string>>, now: Date): OperationRecord {
  const at = now.toISOString();
  return {
    operationId: DRIFT_CURSOR_OPERATION_ID,
    caller: DRIFT_CHECK_CALLER,
    handle: DRIFT_CURSOR_HANDLE,
    operation: DRIFT_CHECK_OPERATION,
    target: 'fleet',
    payloadHash: sha256Hex('{}'),
    // Never DONE: each pass is followed by the next.
    status: 'PENDING',
    progress,
    createdAt: current?.createdAt ?? at,
    updatedAt: at,
    version: (current?.version ?? 0) + 1,
  };
}

function withoutUndefined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));
