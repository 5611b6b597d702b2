import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Files holding keys, tokens and the registry: readable by their owner only. */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIRECTORY_MODE = 0o700;

export interface WriteFileOptions {
  /** @default PRIVATE_FILE_MODE */
  readonly mode?: number;
}

/**
 * Replaces `path` with `data` so that a reader (or a restart after a crash) sees either the old
 * content or the new one, never a torn file: write a temporary file beside it, flush it to disk,
 * then rename it over the target (atomic within one file system).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, options: WriteFileOptions = {}): Promise<void> {
  const mode = options.mode ?? PRIVATE_FILE_MODE;
  await mkdir(dirname(path), { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
  const temporary = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temporary, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have narrowed or widened what `open` set
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

/** Makes a rename durable: on Linux the directory entry lives in the directory, which needs its own fsync. */
export async function syncDirectory(directory: string): Promise<void> {
  let handle;
  try {
    handle = await open(directory, 'r');
    await handle.sync();
  } catch {
    // Some platforms and file systems cannot fsync a directory; the rename is still atomic there.
  } finally {
    await handle?.close();
  }
}

/**
 * Coalesces saves of a growing document into as few atomic writes as possible: while one write is
 * running, later saves wait for the next write, which carries the newest document. Each `save`
 * resolves once a write that includes its document is on disk.
 */
export class CoalescingFileWriter<T> {
  private next: { value: T; waiters: { resolve: () => void; reject: (error: unknown) => void }[] } | undefined;
  private running: Promise<void> | undefined;

  public constructor(
    private readonly path: string,
    private readonly serialize: (value: T) => string,
    private readonly options: WriteFileOptions = {},
  ) {}

  public save(value: T): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.next) {
        this.next.value = value;
        this.next.waiters.push({ resolve, reject });
      } else {
        this.next = { value, waiters: [{ resolve, reject }] };
      }
      this.start();
    });
  }

  /** Resolves when every save made so far is on disk. */
  public async flush(): Promise<void> {
    while (this.running) await this.running;
  }

  private start(): void {
    if (this.running) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.next) this.start(); // saved after the last loop turn
    });
  }

  private async drain(): Promise<void> {
    await Promise.resolve(); // let `start` record the run before any write begins
    while (this.next) {
      const { value, waiters } = this.next;
      this.next = undefined;
      try {
        await writeFileAtomic(this.path, this.serialize(value), this.options);
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        for (const waiter of waiters) waiter.reject(error);
      }
    }
  }
}
