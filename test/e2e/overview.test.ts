import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../local/config';
import { iotcert, run } from './support/clients';
import { newDataDir, removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(240_000);

/** `iotcert` with an answer typed on its standard input. */
const iotcertAnswering = (args: readonly string[], dataDir: string, input: string) =>
  run(process.execPath, [join(PROJECT_ROOT, 'bin/iotcert.js'), ...args, '--data-dir', dataDir], { timeoutMs: 60_000, input });

/**
 * The overview a developer has of the local mode: `iotcert device list` (every device, through the API's
 * listing without a status, page after page), `iotcert status`, the `--verbose` line per accepted publish,
 * and `iotcert local reset`, refused while the local mode runs.
 */
describe('local mode: the overview commands', () => {
  let local: LocalModeProcess | undefined;
  let dataDir: string;
  const enrolled = ['ov-active-1', 'ov-active-2', 'ov-suspended'];
  const preRegistered = ['ov-registered-1', 'ov-registered-2'];

  beforeAll(async () => {
    dataDir = await newDataDir();
    local = await startLocalModeProcess({ dataDir, extraArgs: ['--verbose'] });
    for (const id of enrolled) {
      const result = await iotcert(['device', 'enroll', '--id', id, '--out', join(dataDir, 'devices', id)], dataDir);
      expect(result).toMatchObject({ code: 0 });
    }
    for (const id of preRegistered) await local.api('POST', '/devices', { deviceId: id });
    await local.api('POST', '/devices/ov-suspended/suspend');
  });

  afterAll(async () => {
    await local?.stop();
    await removeDataDir(dataDir);
  });

  test('`iotcert device list` pages through every device; --status and --details narrow and widen it', async () => {
    const all = await iotcert(['device', 'list', '--page-size', '2'], dataDir);
    expect(all.code).toBe(0);
    const rows = all.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^DEVICE ID\s+STATUS\s+UPDATED$/);
    const listed = rows.slice(1, -1).map((row) => row.split(/\s+/).slice(0, 2));
    expect(listed).toEqual([
      ['ov-registered-1', 'REGISTERED'],
      ['ov-registered-2', 'REGISTERED'],
      ['ov-active-1', 'ACTIVE'],
      ['ov-active-2', 'ACTIVE'],
      ['ov-suspended', 'SUSPENDED'],
    ]);
    expect(rows.at(-1)).toBe('5 devices');

    const active = await iotcert(['device', 'list', '--status', 'ACTIVE', '--details', '--json'], dataDir);
    expect(active.code).toBe(0);
    expect(JSON.parse(active.stdout)).toEqual([
      expect.objectContaining({ deviceId: 'ov-active-1', status: 'ACTIVE', certificates: 1, activeCertificates: 1 }),
      expect.objectContaining({ deviceId: 'ov-active-2', status: 'ACTIVE', certificates: 1, activeCertificates: 1 }),
    ]);

    const wrong = await iotcert(['device', 'list', '--status', 'HAPPY'], dataDir);
    expect(wrong.code).toBe(2);
  });

  test('`iotcert status` names the running instance, its addresses and the devices by state', async () => {
    const { endpoints } = local as LocalModeProcess;
    const text = await iotcert(['status'], dataDir);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`local mode: running (pid ${endpoints.pid}`);
    expect(text.stdout).toContain(endpoints.api.url);
    expect(text.stdout).toContain(endpoints.mqtt.url);
    expect(text.stdout).toMatch(/devices: 5\n\s+REGISTERED\s+2\n\s+ACTIVE\s+2\n\s+SUSPENDED\s+1\n\s+REVOKED\s+0\n\s+DECOMMISSIONED\s+0/);

    const json = JSON.parse((await iotcert(['status', '--json'], dataDir)).stdout);
    expect(json).toMatchObject({ state: 'RUNNING', pid: endpoints.pid, endpoints: { api: { url: endpoints.api.url } }, devices: { total: 5 } });
  });

  test('with --verbose, each accepted publish is one log line: client id, topic, size and the payload escaped', async () => {
    const result = await iotcert(['device', 'connect', '--id', 'ov-active-1', '--dir', join(dataDir, 'devices', 'ov-active-1'), '--message', 'hello\n[jitr] forged'], dataDir);
    expect(result.code).toBe(0);
    await (local as LocalModeProcess).waitForOutput(/\[mqtt\] "ov-active-1": PUBLISH to "devices\/ov-active-1\/telemetry" accepted \(QoS 1, 19 bytes\): "hello\\n\[jitr\] forged"/);
    expect((local as LocalModeProcess).output()).not.toMatch(/^\[jitr\] forged/m);
  });

  test('`iotcert local reset` is refused while the local mode runs, and deletes the state only after a yes once it stopped', async () => {
    const refused = await iotcert(['local', 'reset', '--yes'], dataDir);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('refused, nothing deleted');
    expect(existsSync(join(dataDir, 'ca.key'))).toBe(true);

    await (local as LocalModeProcess).stop();
    local = undefined;
    const stopped = await iotcert(['status'], dataDir);
    expect(stopped).toMatchObject({ code: 1 });
    expect(stopped.stdout).toContain('not running');

    const declined = await iotcertAnswering(['local', 'reset'], dataDir, 'no\n');
    expect(declined.code).toBe(1);
    expect(declined.stdout).toContain('Cancelled');
    expect(existsSync(join(dataDir, 'ca.key'))).toBe(true);

    const confirmed = await iotcertAnswering(['local', 'reset'], dataDir, 'yes\n');
    expect(confirmed.code).toBe(0);
    expect(confirmed.stderr).toContain('Type "yes" to delete');
    for (const name of ['ca.key', 'ca.pem', 'api-token', 'registry.json', 'endpoints.json']) expect(existsSync(join(dataDir, name))).toBe(false);
    // The device folders this test made are not the local mode's: kept.
    expect(confirmed.stdout).toContain('Kept (not the local mode\'s): devices');
  });
});
