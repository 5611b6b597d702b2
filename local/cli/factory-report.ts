import { open, readFile, type FileHandle } from 'node:fs/promises';

/**
 * The resumable report of a factory run: one JSON line per device handled, appended as each finishes, in a
 * file that outlives the run. A rerun reads it back: the last line of each device says where it stands.
 */

export type ReportOutcome =
  /** `factory sign`: the certificate was issued (or answered again for the same CSR) and its files written. */
  | 'SIGNED'
  /** `factory preregister`: the device was created. */
  | 'CREATED'
  /** `factory preregister`: the device existed already. */
  | 'EXISTS'
  | 'FAILED';

export interface ReportLine {
  readonly deviceId: string;
  readonly outcome: ReportOutcome;
  readonly at: string;
  /** What the outcome holds for: the SHA-256 of the CSR's DER (sign), or of the manifest entry (preregister). */
  readonly inputSha256: string;
  readonly idempotencyKey?: string;
  readonly [field: string]: unknown;
}

/** The last line of each device in a report file; none when the file does not exist. A torn last line (a crash mid-write) is ignored. */
export async function readReport(path: string): Promise<Map<string, ReportLine>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw error;
  }
  const latest = new Map<string, ReportLine>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let parsed: Partial<ReportLine>;
    try {
      parsed = JSON.parse(line) as Partial<ReportLine>;
    } catch {
      continue;
    }
    if (typeof parsed.deviceId === 'string' && typeof parsed.outcome === 'string' && typeof parsed.inputSha256 === 'string') latest.set(parsed.deviceId, parsed as ReportLine);
  }
  return latest;
}

/** Appends lines one at a time (workers finish concurrently), each synced before the next. */
export class ReportWriter {
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    public readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  public static async open(path: string): Promise<ReportWriter> {
    const handle = await open(path, 'a', 0o644);
    // A previous run cut off mid-line would glue its fragment to our first line: start on a fresh line.
    const { size } = await handle.stat();
    if (size > 0) {
      const last = Buffer.alloc(1);
      const reader = await open(path, 'r');
      try {
        await reader.read(last, 0, 1, size - 1);
      } finally {
        await reader.close();
      }
      if (last.toString() !== '\n') await handle.appendFile('\n');
    }
    return new ReportWriter(path, handle);
  }

  public append(line: ReportLine): Promise<void> {
    const write = this.queue.then(async () => {
      await this.handle.appendFile(`${JSON.stringify(line)}\n`);
      await this.handle.sync();
    });
    this.queue = write.catch(() => undefined);
    return write;
  }

  public async close(): Promise<void> {
    await this.queue;
    await this.handle.close();
  }
}
