import { createHash } from 'node:crypto';
import { ConflictError, IdempotencyKeyReusedError, LifecycleError, RequestInProgressError, type ErrorCode } from './errors';
import type { OperationOutcome, OperationRecord, OperationType } from './model';
import type { Clock, DeviceStore, IdGenerator, StoreChange } from './ports';

/** What a caller asks for; the handle is the client's Idempotency-Key (or the request id when it sent none). */
export interface OperationRequest {
  readonly caller: string;
  readonly handle: string;
  readonly operation: OperationType;
  /** The device (and certificate) acted on. */
  readonly target: string;
  /** The normalized request: hashed, so the same handle with another payload is refused. */
  readonly payload: Readonly<Record<string, unknown>>;
}

export interface OperationDependencies {
  readonly store: DeviceStore;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

export const sha256Hex = (value: string): string => createHash('sha256').update(value).digest('hex');

/**
 * Whose keys these are. An assumed IAM role's ARN names the session too (`…:assumed-role/<role>/<session>`), and a
 * retry from another worker or after a credential refresh comes with another session name: the role is the caller.
 */
export function idempotencyNamespaceOf(caller: string): string {
  const assumed = /^(arn:aws[a-z-]*:sts::\d{12}:assumed-role\/[^/]+)\/.+$/.exec(caller);
  return assumed ? (assumed[1] as string) : caller;
}

/** The record's key: one namespace of handles per caller, so one caller's key never answers another's request. */
export const operationIdOf = (caller: string, handle: string): string => sha256Hex(`${idempotencyNamespaceOf(caller)}\u0000${handle}`);

/** JSON with sorted keys, so the same payload always hashes the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * One execution of an operation, holding its lease. Every write goes through `commit`, on condition of the
 * operation record's version: if another execution took the operation over (our lease ran out), our writes
 * fail and we stop with REQUEST_IN_PROGRESS instead of acting twice.
 */
export class RunningOperation {
  public constructor(
    private current: OperationRecord,
    private readonly deps: OperationDependencies,
  ) {}

  public get record(): OperationRecord {
    return this.current;
  }

  public get progress(): Readonly<Record<string, string>> {
    return this.current.progress ?? {};
  }

  /** Writes `change` and the operation record (with `update`) in one atomic change. */
  public async commit(change: Omit<StoreChange, 'operation'>, update: Partial<Pick<OperationRecord, 'status' | 'progress' | 'outcome'>> = {}): Promise<void> {
    const finished = update.status !== undefined && update.status !== 'PENDING';
    const next: OperationRecord = {
      ...this.current,
      ...update,
      ...(finished ? { leaseUntil: undefined, leaseHolder: undefined } : {}),
      updatedAt: this.deps.clock.now().toISOString(),
      version: this.current.version + 1,
    };
    try {
      await this.deps.store.commit({ ...change, operation: { next, expectedVersion: this.current.version } });
    } catch (error) {
      if (!(error instanceof ConflictError) || !(await this.landedAnyway(next, error))) throw error;
    }
    this.current = next;
  }

  public saveProgress(progress: Readonly<Record<string, string>>): Promise<void> {
    return this.commit({ events: [] }, { progress: { ...this.progress, ...progress } });
  }

  public finish(change: Omit<StoreChange, 'operation'>, outcome: OperationOutcome): Promise<void> {
    return this.commit(change, { status: 'DONE', outcome });
  }

  public withdraw(change: Omit<StoreChange, 'operation'>, outcome: OperationOutcome): Promise<void> {
    return this.commit(change, { status: 'WITHDRAWN', outcome });
  }

  /** After a failure: ends our lease at once, so the client's retry does not wait for it. Best effort (else it runs out). */
  public async release(): Promise<void> {
    try {
      const stored = await this.deps.store.getOperation(this.current.operationId);
      if (!stored || stored.status !== 'PENDING' || stored.leaseHolder !== this.current.leaseHolder) return;
      await this.deps.store.commit({
        operation: { next: { ...stored, leaseUntil: undefined, leaseHolder: undefined, updatedAt: this.deps.clock.now().toISOString(), version: stored.version + 1 }, expectedVersion: stored.version },
        events: [],
      });
    } catch {
      // The lease then simply runs out.
    }
  }

  /**
   * A conflict on our own record: either our write landed and only its answer was lost (the SDK retried it and the
   * retry found it done), then the whole transaction is written and we go on; or another execution took the
   * operation over, then it finishes the job and we stop. Any other conflict (the device moved) is the caller's.
   */
  private async landedAnyway(next: OperationRecord, cause: ConflictError): Promise<boolean> {
    let stored: OperationRecord | undefined;
    try {
      stored = await this.deps.store.getOperation(this.current.operationId);
    } catch {
      return false;
    }
    if (!stored || stored.version === this.current.version) return false;
    if (stored.version === next.version && stored.updatedAt === next.updatedAt && stored.leaseHolder === next.leaseHolder && stored.status === next.status) return true;
    throw new RequestInProgressError({ cause });
  }
}

export type StartedOperation = { readonly kind: 'finished'; readonly record: OperationRecord } | { readonly kind: 'running'; readonly run: RunningOperation };

/**
 * The one idempotency model: every change a caller asks for is an operation record, written before any side
 * effect and kept `OPERATION_RETENTION_DAYS`. A retry with the same handle resumes it (its steps are idempotent and
 * its progress says what is done) or answers its outcome; the same handle with another request is refused.
 */
export class Operations {
  public constructor(
    private readonly deps: OperationDependencies,
    private readonly leaseSeconds: number,
  ) {}

  /**
   * Runs `steps` for a new or unfinished operation, or answers a finished one with `replay`.
   * On failure the lease is released and the record stays PENDING with its progress, for the retry.
   */
  public async execute<T>(request: OperationRequest, steps: (run: RunningOperation) => Promise<T>, replay: (record: OperationRecord) => Promise<T>): Promise<T> {
    const started = await this.start(request);
    if (started.kind === 'finished') {
      if (started.record.status === 'WITHDRAWN') throw withdrawnError(started.record);
      return replay(started.record);
    }
    try {
      return await steps(started.run);
    } catch (error) {
      if (started.run.record.status === 'PENDING') await started.run.release();
      throw error;
    }
  }

  public async start(request: OperationRequest): Promise<StartedOperation> {
    const operationId = operationIdOf(request.caller, request.handle);
    const payloadHash = sha256Hex(canonicalJson(request.payload));
    const holder = this.deps.ids.next();
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const now = this.deps.clock.now();
      const leaseUntil = new Date(now.getTime() + this.leaseSeconds * 1000).toISOString();
      const record: OperationRecord = {
        operationId,
        caller: request.caller,
        handle: request.handle,
        operation: request.operation,
        target: request.target,
        payloadHash,
        status: 'PENDING',
        leaseUntil,
        leaseHolder: holder,
        createdAt: now.toISOString(),
        updatedAt: now.toISOString(),
        version: 1,
      };
      // Written at once, without reading first: a new request (the common case) costs one write; a retry gets the stored record back from it.
      let existing: OperationRecord | undefined;
      try {
        existing = await this.deps.store.createOperation(record);
      } catch (error) {
        // It may have been written: end our lease, so the client's retry does not wait for it.
        await new RunningOperation(record, this.deps).release();
        throw error;
      }
      if (!existing) return { kind: 'running', run: new RunningOperation(record, this.deps) };
      if (existing.operation !== request.operation || existing.target !== request.target || existing.payloadHash !== payloadHash) {
        throw new IdempotencyKeyReusedError({ operation: existing.operation, target: existing.target });
      }
      if (existing.status !== 'PENDING') return { kind: 'finished', record: existing };
      // Our own write of a moment ago, whose answer was lost: it is ours.
      if (existing.leaseHolder === holder) return { kind: 'running', run: new RunningOperation(existing, this.deps) };
      if (existing.leaseUntil !== undefined && Date.parse(existing.leaseUntil) > now.getTime()) throw new RequestInProgressError();
      const taken: OperationRecord = { ...existing, leaseUntil, leaseHolder: holder, updatedAt: now.toISOString(), version: existing.version + 1 };
      try {
        await this.deps.store.commit({ operation: { next: taken, expectedVersion: existing.version }, events: [] });
        return { kind: 'running', run: new RunningOperation(taken, this.deps) };
      } catch (error) {
        if (!(error instanceof ConflictError)) {
          await new RunningOperation(taken, this.deps).release();
          throw error;
        }
      }
    }
    throw new RequestInProgressError();
  }
}

function withdrawnError(record: OperationRecord): LifecycleError {
  const error = record.outcome?.error;
  return new LifecycleError((error?.code ?? 'CERTIFICATE_WITHDRAWN') as ErrorCode, error?.message ?? 'This request was withdrawn; send a new request with a new Idempotency-Key.', {
    details: { withdrawn: true, ...(record.outcome?.certificateId ? { certificateId: record.outcome.certificateId } : {}) },
  });
}
