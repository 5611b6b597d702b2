import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dataFiles } from '../../../local/data-dir';
import { formatStatus, formatTable, localModeStatus, LocalModeRunningError, resetDataDir } from '../../../local/cli/overview';

/** The pid of a process that has exited (spawned and waited for): no live process has it now. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid as number;
}

async function fakeDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'iotcert-overview-'));
  const files = dataFiles(dir);
  await writeFile(files.caCertificate, 'cert');
  await writeFile(files.caKey, 'key');
  await writeFile(files.apiToken, 'token\n');
  await writeFile(files.registry, '{}');
  await mkdir(files.dynamodb);
  await writeFile(join(files.dynamodb, 'shared-local-instance.db'), 'db');
  return dir;
}

const endpointsFor = (pid: number) => ({
  pid,
  startedAt: '2026-11-30T10:00:00.000Z',
  mqtt: { host: '127.0.0.1', port: 1, url: 'mqtts://127.0.0.1:1' },
  // A port nothing listens on: the API does not answer.
  api: { url: 'http://127.0.0.1:1' },
  crl: { pemUrl: 'http://127.0.0.1:1/crl.pem', derUrl: 'http://127.0.0.1:1/crl.der' },
  dynamodb: { endpoint: 'http://127.0.0.1:1', deviceTable: 't' },
  caCertificateId: 'x',
});

describe('iotcert local reset', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  test('asks first, and deletes nothing when the answer is not yes', async () => {
    const dir = await fakeDataDir();
    dirs.push(dir);
    const questions: string[] = [];
    const report = await resetDataDir({ dataDir: dir, confirm: async (question) => (questions.push(question), false) });
    expect(report.cancelled).toBe(true);
    expect(questions[0]).toContain(dataFiles(dir).caKey);
    expect((await readdir(dir)).sort()).toEqual(['api-token', 'ca.key', 'ca.pem', 'dynamodb', 'registry.json']);
  });

  test('after a yes (or with --yes), deletes the local mode\'s files, keeps any other, and removes the folder once empty', async () => {
    const dir = await fakeDataDir();
    dirs.push(dir);
    await writeFile(dataFiles(dir).endpoints, JSON.stringify(endpointsFor(await deadPid())));
    await writeFile(join(dir, 'notes.txt'), 'mine');
    const report = await resetDataDir({ dataDir: dir, confirm: async () => true });
    expect(report).toMatchObject({ cancelled: false, kept: ['notes.txt'], folderRemoved: false });
    expect(report.deleted).toHaveLength(6);
    expect(await readdir(dir)).toEqual(['notes.txt']);

    const other = await fakeDataDir();
    dirs.push(other);
    const confirm = jest.fn(async () => false);
    expect(await resetDataDir({ dataDir: other, confirm, yes: true })).toMatchObject({ cancelled: false, folderRemoved: true });
    expect(confirm).not.toHaveBeenCalled();
    expect(existsSync(other)).toBe(false);
  });

  test('is refused while the process recorded for the folder is alive, before asking anything', async () => {
    const dir = await fakeDataDir();
    dirs.push(dir);
    await writeFile(dataFiles(dir).endpoints, JSON.stringify(endpointsFor(process.pid)));
    const confirm = jest.fn(async () => true);
    await expect(resetDataDir({ dataDir: dir, confirm, yes: true })).rejects.toBeInstanceOf(LocalModeRunningError);
    expect(confirm).not.toHaveBeenCalled();
    expect(existsSync(dataFiles(dir).caKey)).toBe(true);
  });

  test('an empty or missing folder has nothing to reset', async () => {
    const report = await resetDataDir({ dataDir: join(tmpdir(), 'iotcert-overview-none'), confirm: async () => true });
    expect(report).toMatchObject({ deleted: [], cancelled: false });
  });
});

describe('iotcert status without a running local mode', () => {
  test('a folder without endpoints, or with a dead pid, is not running', async () => {
    const dir = await fakeDataDir();
    try {
      expect(await localModeStatus(dir)).toEqual({ dataDir: dir, state: 'STOPPED' });
      await writeFile(dataFiles(dir).endpoints, JSON.stringify(endpointsFor(await deadPid())));
      const status = await localModeStatus(dir);
      expect(status.state).toBe('STOPPED');
      expect(formatStatus(status)).toBe(`local mode: not running on ${dir}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a live pid whose API does not answer is said so, not counted as running', async () => {
    const dir = await fakeDataDir();
    try {
      await writeFile(dataFiles(dir).endpoints, JSON.stringify(endpointsFor(process.pid)));
      const status = await localModeStatus(dir);
      expect(status).toMatchObject({ state: 'NOT_ANSWERING', pid: process.pid });
      expect(formatStatus(status)).toContain('does not answer');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test('the device table aligns its columns', () => {
  expect(formatTable(['DEVICE ID', 'STATUS'], [['a-long-device', 'ACTIVE'], ['b', 'REVOKED']])).toBe('DEVICE ID      STATUS\na-long-device  ACTIVE\nb              REVOKED');
});
