import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { REVOCATION_REASONS, type RevocationReason } from '../../core/model';
import { PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE } from './atomic-file';
import type { RevocationEntry, RevocationList } from './software-ca';

/**
 * The software CA's revocations in an append-only file, one JSON object per line: a revocation
 * costs one small append (flushed to disk before `add` resolves), never a rewrite of a growing
 * list. A line torn by a crash mid-append is skipped on load; the next append starts a fresh line.
 */
export class JsonLinesRevocationList implements RevocationList {
  private readonly bySerial = new Map<string, RevocationEntry>();
  private appending: Promise<void> = Promise.resolve();
  private changes = 0;

  private constructor(
    public readonly path: string,
    private readonly handle: FileHandle,
    private needsNewline: boolean,
    /** Lines that could not be read back (torn or edited by hand), for the caller to report. */
    public readonly skippedLines: readonly number[],
  ) {}

  public static async open(path: string): Promise<JsonLinesRevocationList> {
    await mkdir(dirname(path), { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
    let text = '';
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    const entries: RevocationEntry[] = [];
    const skipped: number[] = [];
    for (const [index, line] of text.split('\n').entries()) {
      if (line.trim() === '') continue;
      const entry = parseEntry(line);
      if (entry) entries.push(entry);
      else skipped.push(index + 1);
    }
    const handle = await open(path, 'a', PRIVATE_FILE_MODE);
    const list = new JsonLinesRevocationList(path, handle, text.length > 0 && !text.endsWith('\n'), skipped);
    for (const entry of entries) if (!list.bySerial.has(entry.serialNumber)) list.bySerial.set(entry.serialNumber, entry);
    return list;
  }

  /** Grows on every change of the entries, a failed append's rollback included. */
  public get revision(): number {
    return this.changes;
  }

  public async add(entry: RevocationEntry): Promise<void> {
    const serialNumber = entry.serialNumber.toLowerCase();
    if (this.bySerial.has(serialNumber)) return;
    const stored = { ...entry, serialNumber };
    this.bySerial.set(serialNumber, stored);
    this.changes += 1;
    const append = this.appending.then(async () => {
      const line = `${this.needsNewline ? '\n' : ''}${JSON.stringify(stored)}\n`;
      await this.handle.appendFile(line, 'utf8');
      await this.handle.sync();
      this.needsNewline = false;
    });
    // Appends run one after another so lines never interleave; a failed one does not block the next.
    this.appending = append.catch(() => undefined);
    try {
      await append;
    } catch (error) {
      this.bySerial.delete(serialNumber);
      this.changes += 1;
      throw error;
    }
  }

  public async entries(): Promise<readonly RevocationEntry[]> {
    return [...this.bySerial.values()];
  }

  public async close(): Promise<void> {
    await this.appending;
    await this.handle.close();
  }
}

function parseEntry(line: string): RevocationEntry | undefined {
  try {
    const value = JSON.parse(line) as Partial<RevocationEntry>;
    if (typeof value.serialNumber !== 'string' || !/^[0-9a-f]+$/i.test(value.serialNumber)) return undefined;
    if (typeof value.revokedAt !== 'string' || Number.isNaN(Date.parse(value.revokedAt))) return undefined;
    if (!REVOCATION_REASONS.includes(value.reason as RevocationReason)) return undefined;
    return { serialNumber: value.serialNumber.toLowerCase(), reason: value.reason as RevocationReason, revokedAt: value.revokedAt };
  } catch {
    return undefined;
  }
}
