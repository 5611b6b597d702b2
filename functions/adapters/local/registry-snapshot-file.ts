import { readFile } from 'node:fs/promises';
import { CoalescingFileWriter } from './atomic-file';
import type { LocalRegistrySnapshot } from './local-device-registry';

/** The file format's version, so a later change of shape can be recognised instead of misread. */
export const REGISTRY_FILE_VERSION = 1;

interface RegistryFile {
  readonly version: number;
  readonly savedAt: string;
  readonly registry: LocalRegistrySnapshot;
}

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

/**
 * The local IoT registry on disk: one JSON document replaced atomically (temporary file + rename)
 * after every change, with bursts of changes coalesced into one write. Pass `save` as the
 * registry's `onChange`: a registry change resolves once it is on disk.
 */
export class RegistrySnapshotFile {
  private readonly writer: CoalescingFileWriter<LocalRegistrySnapshot>;

  public constructor(
    public readonly path: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.writer = new CoalescingFileWriter(path, (registry) => `${JSON.stringify({ version: REGISTRY_FILE_VERSION, savedAt: this.now().toISOString(), registry } satisfies RegistryFile)}\n`);
  }

  /** The saved registry, or undefined when none was saved yet. Throws `RegistryFileError` on a file it cannot read back. */
  public async load(): Promise<LocalRegistrySnapshot | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
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

  public save = (snapshot: LocalRegistrySnapshot): Promise<void> => this.writer.save(snapshot);

  /** Resolves when every change saved so far is on disk. */
  public flush(): Promise<void> {
    return this.writer.flush();
  }
}
