import { join } from 'node:path';
import { deviceFiles } from '../../local/cli/device';
import { certificateIdOfFile, iotcert, mosquittoPub, tlsFilesOf } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(120_000);

describe('local mode, enrollment policy "preregistered": a device that connects before it is pre-registered', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--enrollment-policy', 'preregistered'] });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('is refused, is not revoked, and connects on its first attempt once pre-registered', async () => {
    const out = join(local.dataDir, 'devices', 'early-1');
    expect((await iotcert(['device', 'mint', '--id', 'early-1', '--out', out], local.dataDir)).code).toBe(0);
    const certificateId = await certificateIdOfFile(deviceFiles(out).certificate);
    const tls = tlsFilesOf(out, local.files.caCertificate);

    const early = await mosquittoPub(tls, local.mqtt.port, 'early-1', 'devices/early-1/telemetry', 'too early');
    await local.waitForOutput(new RegExp(`certificate ${certificateId.slice(0, 12)}…: waiting: device early-1 is not pre-registered`), 10_000);
    const stillEarly = await mosquittoPub(tls, local.mqtt.port, 'early-1', 'devices/early-1/telemetry', 'still too early');

    const created = await local.api('POST', '/devices', { deviceId: 'early-1' });
    const afterwards = await mosquittoPub(tls, local.mqtt.port, 'early-1', 'devices/early-1/telemetry', 'hello');

    expect(early.code).not.toBe(0);
    expect(stillEarly.code).not.toBe(0);
    expect(created.status).toBe(201);
    expect(afterwards.code).toBe(0);
    const { body } = await local.api('GET', '/devices/early-1');
    expect(body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId, status: 'ACTIVE', source: 'JITR' }] });
  });
});
