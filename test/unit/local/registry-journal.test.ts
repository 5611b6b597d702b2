import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalDeviceRegistry } from '../../../functions/adapters/local/local-device-registry';
import { RegistryFileError, RegistrySnapshotFile, type RegistrySnapshotFileOptions } from '../../../functions/adapters/local/registry-snapshot-file';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { fleetPolicyDocument } from '../../../functions/policy/fleet-policy';
import { makeCsr } from '../../support/pki';

const GROUP = 'fleet';

describe('RegistrySnapshotFile: snapshot + append-only journal', () => {
  let dir: string;
  let registryPath: string;
  let journalPath: string;
  let logged: string[];
  let caPem: string;
  let mint: (deviceId: string) => Promise<string>;

  beforeAll(async () => {
    const { ca, material } = await SoftwareCertificateAuthority.create('Journal test CA');
    caPem = material.certificatePem;
    // One key for every device certificate: the registry does not care, and the test stays fast.
    const { keys } = await makeCsr('any');
    mint = async (deviceId) => ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId, { keys })).csrPem, 30);
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'registry-journal-'));
    registryPath = join(dir, 'registry.json');
    journalPath = join(dir, 'registry.journal.jsonl');
    logged = [];
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  /** A start of the local mode's registry: load what is on disk, save every change through the file. */
  async function start(options: Omit<RegistrySnapshotFileOptions, 'log'> = {}) {
    const file = new RegistrySnapshotFile(registryPath, { ...options, log: (message) => logged.push(message) });
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP, snapshot: await file.load(), onChange: file.save });
    return { file, registry };
  }

  /** `count` devices through a first connect, a thing, an attachment and an activation: four changes each. */
  async function onboard(registry: LocalDeviceRegistry, from: number, count: number): Promise<void> {
    const ca = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    for (let index = from; index < from + count; index += 1) {
      const deviceId = `device-${index}`;
      const pending = await registry.registerPendingActivation(await mint(deviceId), ca.caCertificateId);
      await registry.ensureThing(deviceId, { line: 'a' });
      await registry.attachCertificate(deviceId, pending.certificateId);
      await registry.updateCertificateStatus(pending.certificateId, 'ACTIVE');
    }
  }

  const journalLines = async () => (await readFile(journalPath, 'utf8').catch(() => '')).split('\n').filter((line) => line !== '');
  const exists = (path: string) => stat(path).then(() => true, () => false);

  test('a change appends one line to the journal and leaves registry.json as it is', async () => {
    const { registry } = await start();
    await registry.registerCaCertificate(caPem, { autoRegistration: true });
    await registry.putPolicy('p', fleetPolicyDocument({ region: 'local', accountId: '000000000000' }));
    await registry.attachPolicyToThingGroup('p', GROUP);

    await onboard(registry, 0, 3);

    expect(await exists(registryPath)).toBe(false);
    expect((await journalLines()).map((line) => JSON.parse(line).kind)).toEqual([
      'caCertificate',
      'policy',
      'thingGroupPolicy',
      ...Array.from({ length: 3 }, () => ['certificate', 'thing', 'thing', 'certificate']).flat(),
    ]);
  });

  test('a restart after N changes, without a flush, has every change', async () => {
    const first = await start();
    await onboard(first.registry, 0, 10);

    const second = await start();

    expect(second.registry.snapshot()).toEqual(first.registry.snapshot());
    expect(second.registry.findCertificate(second.registry.findThing('device-7')?.principals[0] ?? '')?.status).toBe('ACTIVE');
  });

  test('a second start and a restart keep every change of both runs', async () => {
    const first = await start();
    await onboard(first.registry, 0, 3);
    const second = await start();
    await onboard(second.registry, 3, 3);
    await second.registry.updateCertificateStatus(second.registry.findThing('device-1')?.principals[0] ?? '', 'REVOKED');

    const third = await start();

    expect(third.registry.snapshot()).toEqual(second.registry.snapshot());
    expect(third.registry.snapshot().things.map((thing) => thing.thingName)).toEqual(['device-0', 'device-1', 'device-2', 'device-3', 'device-4', 'device-5']);
    expect(third.registry.findCertificate(third.registry.findThing('device-1')?.principals[0] ?? '')?.status).toBe('REVOKED');
  });

  test('skips a torn last line with a log line, and the next change starts on a line of its own', async () => {
    const first = await start();
    await onboard(first.registry, 0, 2);
    const before = first.registry.snapshot();
    await appendFile(journalPath, '{"kind":"thing","value":{"thingName":"dev'); // a crash in the middle of an append

    const second = await start();
    await second.registry.ensureThing('after-crash', {});
    const third = await start();

    expect(second.registry.snapshot()).toEqual(expect.objectContaining({ things: [...before.things, expect.objectContaining({ thingName: 'after-crash' })] }));
    expect(logged).toEqual([expect.stringContaining('skipped a torn last line (41 bytes)')]);
    expect(third.registry.snapshot()).toEqual(second.registry.snapshot());
    expect(logged).toHaveLength(1);
  });

  test('fails on a broken line that is not the last: only a torn tail is a crash', async () => {
    const first = await start();
    await onboard(first.registry, 0, 1);
    const lines = await journalLines();
    await writeFile(journalPath, `${lines[0]}\n{"kind":"thing"\n${lines.slice(1).join('\n')}\n`);

    await expect(start()).rejects.toThrow(RegistryFileError);
    await expect(start()).rejects.toThrow('line 2 is not valid JSON');
  });

  test('compacts past its bound: the snapshot is rewritten, the journal emptied, and a restart has every change', async () => {
    const first = await start({ minJournalEntries: 8 });

    await onboard(first.registry, 0, 12); // 49 changes, 25 records at the end

    // The bound is the larger of 8 and the records held (25 at the end): the journal never holds more.
    const lines = (await journalLines()).length;
    const snapshot = JSON.parse(await readFile(registryPath, 'utf8'));
    expect(lines).toBeLessThanOrEqual(25);
    expect(snapshot.version).toBe(1);
    expect(snapshot.registry.things.length).toBeGreaterThan(0);
    expect((await start()).registry.snapshot()).toEqual(first.registry.snapshot());
  });

  test('a crash between the snapshot rewrite and the journal truncation: the journal replayed again changes nothing', async () => {
    const first = await start();
    await onboard(first.registry, 0, 4);
    // The same records changed again after their first lines: the journal holds older values before newer ones.
    await first.registry.updateCertificateStatus(first.registry.findThing('device-0')?.principals[0] ?? '', 'INACTIVE');
    await first.registry.detachCertificate('device-2', first.registry.findThing('device-2')?.principals[0] ?? '');
    const journal = await readFile(journalPath, 'utf8');

    await first.file.flush(); // snapshot rewritten, journal emptied...
    expect(await journalLines()).toEqual([]);
    await writeFile(journalPath, journal); // ...but the crash came before the truncation reached the disk

    const second = await start();
    expect(second.registry.snapshot()).toEqual(first.registry.snapshot());
    await second.file.flush();
    expect((await start()).registry.snapshot()).toEqual(first.registry.snapshot());
  });

  test('flush folds the journal into registry.json, which then holds the whole registry as readable JSON', async () => {
    const { file, registry } = await start();
    await onboard(registry, 0, 3);

    await file.flush();

    expect(await journalLines()).toEqual([]);
    const saved = JSON.parse(await readFile(registryPath, 'utf8'));
    expect(saved).toEqual({ version: 1, savedAt: expect.any(String), registry: registry.snapshot() });
  });

  test('saving before any load keeps what an earlier run left on disk', async () => {
    const first = await start();
    await onboard(first.registry, 0, 2);
    await first.file.flush();
    // A registry built without the saved snapshot (as the restart e2e test does), saving through a fresh file.
    const file = new RegistrySnapshotFile(registryPath, { log: (message) => logged.push(message) });
    const registry = new LocalDeviceRegistry({ thingGroupName: GROUP, onChange: file.save });
    await registry.ensureThing('late', {});
    await file.flush();

    const things = (await start()).registry.snapshot().things.map((thing) => thing.thingName);

    expect(things).toEqual(['device-0', 'device-1', 'late']);
  });
});
