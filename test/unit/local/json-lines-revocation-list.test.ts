import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonLinesRevocationList } from '../../../functions/adapters/local/json-lines-revocation-list';

describe('JsonLinesRevocationList', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'revocations-'));
    path = join(dir, 'revocations.jsonl');
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('appends one JSON line per revocation (mode 0600), ignores a repeated serial, and reads them back after a reopen', async () => {
    const list = await JsonLinesRevocationList.open(path);

    await list.add({ serialNumber: '0A1B', reason: 'KEY_COMPROMISE', revokedAt: '2026-01-01T00:00:00.000Z' });
    await list.add({ serialNumber: '0a1b', reason: 'SUPERSEDED', revokedAt: '2026-01-02T00:00:00.000Z' });
    await list.add({ serialNumber: '02', reason: 'SUPERSEDED', revokedAt: '2026-01-03T00:00:00.000Z' });
    await list.close();
    const reopened = await JsonLinesRevocationList.open(path);

    const lines = (await readFile(path, 'utf8')).trim().split('\n').map((line) => JSON.parse(line));
    expect(lines).toEqual([
      { serialNumber: '0a1b', reason: 'KEY_COMPROMISE', revokedAt: '2026-01-01T00:00:00.000Z' },
      { serialNumber: '02', reason: 'SUPERSEDED', revokedAt: '2026-01-03T00:00:00.000Z' },
    ]);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await reopened.entries()).toEqual(lines);
    await reopened.close();
  });

  test('appends lines, never rewrites: the earlier bytes stay as they were', async () => {
    const list = await JsonLinesRevocationList.open(path);
    await list.add({ serialNumber: '01', reason: 'UNSPECIFIED', revokedAt: '2026-01-01T00:00:00.000Z' });
    const before = await readFile(path, 'utf8');

    await list.add({ serialNumber: '02', reason: 'UNSPECIFIED', revokedAt: '2026-01-01T00:00:00.000Z' });
    await list.close();

    expect((await readFile(path, 'utf8')).startsWith(before)).toBe(true);
  });

  test('skips a line torn by a crash and starts the next revocation on a line of its own', async () => {
    await writeFile(path, `${JSON.stringify({ serialNumber: '01', reason: 'UNSPECIFIED', revokedAt: '2026-01-01T00:00:00.000Z' })}\n`);
    await appendFile(path, '{"serialNumber":"02","rea'); // torn mid-append

    const list = await JsonLinesRevocationList.open(path);
    await list.add({ serialNumber: '03', reason: 'KEY_COMPROMISE', revokedAt: '2026-01-03T00:00:00.000Z' });
    await list.close();
    const reopened = await JsonLinesRevocationList.open(path);

    expect(list.skippedLines).toEqual([2]);
    expect((await reopened.entries()).map((entry) => entry.serialNumber)).toEqual(['01', '03']);
    expect(reopened.skippedLines).toEqual([2]);
    await reopened.close();
  });
});
