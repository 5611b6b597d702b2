import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE, syncDirectory, writeFileAtomic } from './atomic-file';
import {
  registryChangeKey,
  type LocalCaCertificate,
  type LocalPolicy,
  type LocalRegistryCertificate,
  type LocalRegistryChange,
  type LocalRegistrySnapshot,
  type LocalThing,
  type LocalThingGroupPolicyAttachment,
} from './local-device-registry';

/** The snapshot file format's version, so a later change of shape can be recognised instead of misread. */
export const REGISTRY_FILE_VERSION = 1;

/** The journal is folded into the snapshot once it holds more changes than this and than the registry holds records. */
export const DEFAULT_MIN_JOURNAL_ENTRIES = 1000;

interface RegistryFile {
  readonly version: number;
  readonly savedAt: string;
  readonly registry: LocalRegistrySnapshot;
}

const CHANGE_KINDS: ReadonlySet<string> = new Set<LocalRegistryChange['kind']>(['certificate', 'thing', 'caCertificate', 'policy', 'thingGroupPolicy']);

export class RegistryFileError extends Error {
  public constructor(
    public readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${message}`, options);
    this.name = 'RegistryFileError';
  }
}

export interface RegistrySnapshotFileOptions {
  /** @default `path` with `.json` replaced by `.journal.jsonl` (`registry.json` → `registry.journal.jsonl`) */
  readonly journalPath?: string;
  /** @default DEFAULT_MIN_JOURNAL_ENTRIES */
  readonly minJournalEntries?: number;
  readonly now?: () => Date;
  /** Where loading says what it skipped (a torn last journal line) and a failed compaction says why. @default console.warn */
  readonly log?: (message: string) => void;
}

/** The registry's records by key, in the order they were first written (the order the registry's own snapshot has). */
class RegistryState {
  private readonly certificates = new Map<string, LocalRegistryCertificate>();
  private readonly things = new Map<string, LocalThing>();
  private readonly caCertificates = new Map<string, LocalCaCertificate>();
  private readonly policies = new Map<string, LocalPolicy>();
  private readonly thingGroupPolicies = new Map<string, LocalThingGroupPolicyAttachment>();

  public static from(snapshot: LocalRegistrySnapshot | undefined): RegistryState {
    const state = new RegistryState();
    for (const value of snapshot?.certificates ?? []) state.apply({ kind: 'certificate', value });
    for (const value of snapshot?.things ?? []) state.apply({ kind: 'thing', value });
    for (const value of snapshot?.caCertificates ?? []) state.apply({ kind: 'caCertificate', value });
    for (const value of snapshot?.policies ?? []) state.apply({ kind: 'policy', value });
    for (const value of snapshot?.thingGroupPolicies ?? []) state.apply({ kind: 'thingGroupPolicy', value });
    return state;
  }

  public get size(): number {
    return this.certificates.size + this.things.size + this.caCertificates.size + this.policies.size + this.thingGroupPolicies.size;
  }

  public apply(change: LocalRegistryChange): void {
    const key = registryChangeKey(change);
    switch (change.kind) {
      case 'certificate':
        this.certificates.set(key, change.value);
        return;
      case 'thing':
        this.things.set(key, change.value);
        return;
      case 'caCertificate':
        this.caCertificates.set(key, change.value);
        return;
      case 'policy':
        this.policies.set(key, change.value);
        return;
      case 'thingGroupPolicy':
        this.thingGroupPolicies.set(key, change.value);
        return;
    }
  }

  public snapshot(): LocalRegistrySnapshot {
    return {
      certificates: [...this.certificates.values()],
      things: [...this.things.values()],
      caCertificates: [...this.caCertificates.values()],
      policies: [...this.policies.values()],
      thingGroupPolicies: [...this.thingGroupPolicies.values()],
    };
  }
}

interface PendingChange {
  readonly line: string;
  readonly change: LocalRegistryChange;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The local IoT registry on disk, at a cost per change that does not grow with the fleet:
 * - `registry.json`: a snapshot, one JSON document replaced atomically (temporary file + fsync + rename);
 * - `registry.journal.jsonl` beside it: the changes since that snapshot, one JSON line each (`{"kind":"thing","value":{...}}`,
 *   a record's whole new value), appended and fsync'd; changes saved at the same moment share one append and one fsync.
 * Loading replays the journal on top of the snapshot. Once the journal holds more changes than the registry holds records
 * (and at least `minJournalEntries`), the snapshot is rewritten and the journal emptied: the rewrite is paid once per that
 * many changes. A crash between the two leaves changes the snapshot already holds in the journal; replaying a record's
 * value again changes nothing. A crash in the middle of an append leaves a torn last line, never acknowledged: loading
 * skips it and says so. `flush` (the local mode's shutdown) folds the journal in, so a stopped registry is one readable file.
 * Pass `save` as the registry's `onChange`: a registry change resolves once it is on disk.
 */
export class RegistrySnapshotFile {
  public readonly journalPath: string;
  private readonly minJournalEntries: number;
  private readonly now: () => Date;
  private readonly log: (message: string) => void;
  private state: RegistryState | undefined;
  private journalEntries = 0;
  /** Where a torn last line starts, to be cut off before the first append. */
  private tornTailFrom: number | undefined;
  private pending: PendingChange[] = [];
  private compactRequested = false;
  private compactionError: unknown;
  private running: Promise<void> | undefined;

  public constructor(
    public readonly path: string,
    options: RegistrySnapshotFileOptions = {},
  ) {
    this.journalPath = options.journalPath ?? `${path.replace(/\.json$/, '')}.journal.jsonl`;
    this.minJournalEntries = options.minJournalEntries ?? DEFAULT_MIN_JOURNAL_ENTRIES;
    this.now = options.now ?? (() => new Date());
    this.log = options.log ?? ((message) => console.warn(message));
  }

  /**
   * The saved registry (the snapshot with the journal replayed on it), or undefined when none was saved yet.
   * Throws `RegistryFileError` on a file it cannot read back (a torn last journal line is skipped, not an error).
   */
  public async load(): Promise<LocalRegistrySnapshot | undefined> {
    const snapshot = await this.readSnapshot();
    const state = RegistryState.from(snapshot);
    const journal = await this.readJournal();
    for (const change of journal.changes) state.apply(change);
    if (journal.tornBytes > 0) {
      this.log(`[local] ${this.journalPath}: skipped a torn last line (${journal.tornBytes} bytes), a change cut short by a crash before it was acknowledged`);
    }
    // Cut off before this file's first append (so it starts on a line of its own), not here: loading only reads,
    // and may read a journal another process is appending to.
    this.tornTailFrom = journal.tornBytes > 0 ? journal.goodBytes : undefined;
    this.state = state;
    this.journalEntries = journal.changes.length;
    return snapshot === undefined && journal.changes.length === 0 ? undefined : state.snapshot();
  }

  public save = (change: LocalRegistryChange): Promise<void> =>
    new Promise((resolve, reject) => {
      this.pending.push({ line: `${JSON.stringify({ kind: change.kind, value: change.value })}\n`, change, resolve, reject });
      this.start();
    });

  /** Resolves when every change saved so far is on disk, folded into the snapshot (the journal is then empty). */
  public async flush(): Promise<void> {
    this.compactRequested = true;
    this.compactionError = undefined;
    this.start();
    while (this.running) await this.running;
    if (this.compactionError !== undefined) throw this.compactionError;
  }

  private start(): void {
    if (this.running) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.pending.length > 0 || this.compactRequested) this.start(); // asked for after the last loop turn
    });
  }

  private async drain(): Promise<void> {
    await Promise.resolve(); // let `start` record the run before any write begins
    let state: RegistryState;
    try {
      state = await this.loadedState();
    } catch (error) {
      for (const waiter of this.pending.splice(0)) waiter.reject(error);
      this.compactionError = error;
      this.compactRequested = false;
      return;
    }
    while (this.pending.length > 0 || this.compactRequested) {
      const batch = this.pending.splice(0);
      if (batch.length > 0) {
        for (const { change } of batch) state.apply(change);
        try {
          await this.append(batch.map(({ line }) => line).join(''));
          this.journalEntries += batch.length;
          for (const waiter of batch) waiter.resolve();
        } catch (error) {
          for (const waiter of batch) waiter.reject(error);
          continue;
        }
      }
      const due = this.journalEntries > Math.max(this.minJournalEntries, state.size);
      if (!due && !this.compactRequested) continue;
      const requested = this.compactRequested;
      this.compactRequested = false;
      try {
        if (this.journalEntries > 0 || requested) await this.compact(state);
      } catch (error) {
        // The journal still holds every change: nothing is lost, the next compaction tries again.
        if (requested) this.compactionError = error;
        else this.log(`[local] folding ${this.journalPath} into ${this.path} failed (the journal keeps every change): ${(error as Error).message}`);
      }
    }
  }

  /** The state the journal is appended to: what `load` read, or (when saving starts without a load) what is on disk. */
  private async loadedState(): Promise<RegistryState> {
    if (!this.state) await this.load();
    return this.state as RegistryState;
  }

  private async compact(state: RegistryState): Promise<void> {
    const file: RegistryFile = { version: REGISTRY_FILE_VERSION, savedAt: this.now().toISOString(), registry: state.snapshot() };
    await writeFileAtomic(this.path, `${JSON.stringify(file)}\n`);
    // A crash here leaves the journal's changes in both files: replayed on this snapshot, they change nothing.
    await this.truncateJournal(0);
    this.tornTailFrom = undefined;
    this.journalEntries = 0;
  }

  private async append(lines: string): Promise<void> {
    if (this.tornTailFrom !== undefined) {
      await this.truncateJournal(this.tornTailFrom);
      this.tornTailFrom = undefined;
    }
    await mkdir(dirname(this.journalPath), { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
    const handle = await open(this.journalPath, 'a', PRIVATE_FILE_MODE);
    let created: boolean;
    try {
      created = (await handle.stat()).size === 0;
      await handle.appendFile(lines);
      await handle.sync();
    } finally {
      await handle.close();
    }
    // A journal just created (or emptied) needs its directory entry on disk too.
    if (created) await syncDirectory(dirname(this.journalPath));
  }

  private async truncateJournal(length: number): Promise<void> {
    let handle;
    try {
      handle = await open(this.journalPath, 'r+');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    try {
      await handle.truncate(length);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  private async readSnapshot(): Promise<LocalRegistrySnapshot | undefined> {
    const text = await readIfExists(this.path);
    if (text === undefined) return undefined;
    let parsed: Partial<RegistryFile>;
    try {
      parsed = JSON.parse(text) as Partial<RegistryFile>;
    } catch (error) {
      throw new RegistryFileError(this.path, 'is not valid JSON; restore it from a backup or move it away to start with an empty registry.', { cause: error });
    }
    if (parsed.version !== REGISTRY_FILE_VERSION) throw new RegistryFileError(this.path, `has version ${String(parsed.version)}, expected ${REGISTRY_FILE_VERSION}.`);
    const registry = parsed.registry;
    if (!registry || !Array.isArray(registry.certificates) || !Array.isArray(registry.things)) {
      throw new RegistryFileError(this.path, 'does not hold a registry (certificates and things).');
    }
    return registry;
  }

  /** The journal's complete lines, and the bytes of a last line no newline ended (a torn append). */
  private async readJournal(): Promise<{ changes: LocalRegistryChange[]; goodBytes: number; tornBytes: number }> {
    const text = await readIfExists(this.journalPath);
    if (text === undefined) return { changes: [], goodBytes: 0, tornBytes: 0 };
    const end = text.lastIndexOf('\n') + 1;
    const changes = text
      .slice(0, end)
      .split('\n')
      .slice(0, -1)
      .map((line, index) => this.parseJournalLine(line, index + 1));
    return { changes, goodBytes: Buffer.byteLength(text.slice(0, end), 'utf8'), tornBytes: Buffer.byteLength(text.slice(end), 'utf8') };
  }

  private parseJournalLine(line: string, lineNumber: number): LocalRegistryChange {
    let parsed: { kind?: unknown; value?: unknown };
    try {
      parsed = JSON.parse(line) as { kind?: unknown; value?: unknown };
    } catch (error) {
      throw new RegistryFileError(this.journalPath, `line ${lineNumber} is not valid JSON (only a torn last line is skipped); restore the data folder from a backup.`, { cause: error });
    }
    if (typeof parsed.kind !== 'string' || !CHANGE_KINDS.has(parsed.kind) || typeof parsed.value !== 'object' || parsed.value === null) {
      throw new RegistryFileError(this.journalPath, `line ${lineNumber} is not a registry change ({"kind": ..., "value": {...}}).`);
    }
    return parsed as LocalRegistryChange;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
