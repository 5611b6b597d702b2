import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoalescingFileWriter, writeFileAtomic } from '../../../functions/adapters/local/atomic-file';

describe('writeFileAtomic', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'atomic-'))));
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('writes the content with mode 0600 by default and leaves no temporary file', async () => {
    const path = join(dir, 'nested', 'secret');

    await writeFileAtomic(path, 'first');
    await writeFileAtomic(path, 'second');

    expect(await readFile(path, 'utf8')).toBe('second');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(join(dir, 'nested'))).toEqual(['secret']);
  });

  test('writes the mode asked for', async () => {
    const path = join(dir, 'public.pem');

    await writeFileAtomic(path, 'x', { mode: 0o644 });

    expect((await stat(path)).mode & 0o777).toBe(0o644);
  });
});

describe('CoalescingFileWriter', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'coalesce-'))));
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('coalesces a burst of saves into fewer writes, ending with the last document, each save resolving once on disk', async () => {
    const path = join(dir, 'doc.json');
    let writes = 0;
    const writer = new CoalescingFileWriter<number>(path, (value) => {
      writes += 1;
      return JSON.stringify({ value });
    });

    const saves = Array.from({ length: 50 }, (_, index) => writer.save(index));
    await saves[10];
    const afterTenth = JSON.parse(await readFile(path, 'utf8')).value as number;
    await Promise.all(saves);
    await writer.flush();

    expect(afterTenth).toBeGreaterThanOrEqual(10);
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ value: 49 });
    expect(writes).toBeLessThanOrEqual(3);
  });

  test('rejects the saves of a failed write, and writes again on the next save', async () => {
    const path = join(dir, 'doc.json');
    let fail = true;
    const writer = new CoalescingFileWriter<string>(path, (value) => {
      if (fail) throw new Error('disk full');
      return value;
    });

    await expect(writer.save('a')).rejects.toThrow('disk full');
    fail = false;
    await writer.save('b');

    expect(await readFile(path, 'utf8')).toBe('b');
  });
});
