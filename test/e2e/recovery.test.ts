import 'reflect-metadata';
import { X509Certificate, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connectOnce, enrollDevice, readDeviceTls, type DeviceTls } from '../../local/cli/device';
import { bootstrapFiles, enrollBootstrap } from '../../local/cli/rotate';
import { iotcert, mosquittoPub, publishOutcome, subscribeGranted, tlsFilesOf } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(300_000);

interface DeviceView {
  status: string;
  certificates: { certificateId: string; status: string; source: string }[];
}

/** The device's bootstrap certificate and key from `<dir>`, with the fleet CA. */
async function bootstrapTls(dir: string): Promise<DeviceTls> {
  const files = bootstrapFiles(dir);
  const [key, cert, current] = await Promise.all([readFile(files.key, 'utf8'), readFile(files.certificate, 'utf8'), readDeviceTls(dir)]);
  return { key, cert, ca: current.ca };
}

/** The error a connect with `tls` fails with; throws if it connects. */
async function refusal(local: LocalModeProcess, deviceId: string, tls: DeviceTls): Promise<Error> {
  try {
    const client = await connectOnce(local.mqtt, deviceId, tls, 5_000);
    await client.endAsync();
  } catch (error) {
    return error as Error;
  }
  throw new Error(`${deviceId} connected, but a refusal was expected`);
}

describe('local mode: recovery after expiry with a bootstrap certificate (OU=bootstrap)', () => {
  let local: LocalModeProcess;
  const tablePrefix = `e2e-recovery-${randomBytes(4).toString('hex')}`;
  const dirOf = (deviceId: string) => join(local.dataDir, 'devices', deviceId);
  const view = async (deviceId: string) => (await local.api('GET', `/devices/${deviceId}`)).body as DeviceView;

  beforeAll(async () => {
    // The CA's clock 400 days back: the operational certificate it signs (365 days) has expired when it is issued.
    const past = await startLocalModeProcess({ tablePrefix, env: { IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS: '-400' } });
    try {
      await enrollDevice({ deviceId: 'recovering-1', outDir: join(past.dataDir, 'devices', 'recovering-1'), dataDir: past.dataDir });
    } finally {
      await past.stop();
    }
    local = await startLocalModeProcess({ dataDir: past.dataDir, tablePrefix });
    // The factory's bootstrap certificate, long after (real time): valid.
    await enrollBootstrap({ deviceId: 'recovering-1', dir: dirOf('recovering-1'), dataDir: local.dataDir });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('the expired operational certificate is refused at the TLS handshake, although it is ACTIVE on record', async () => {
    const tls = await readDeviceTls(dirOf('recovering-1'));
    expect(new Date(new X509Certificate(tls.cert).validTo).getTime()).toBeLessThan(Date.now());
    expect((await view('recovering-1')).certificates.map((c) => c.status)).toEqual(['EXPIRED', 'ACTIVE']); // ACTIVE on record, shown EXPIRED past its notAfter

    const handshakesRefused = local.occurrences('TLS handshake refused');

    const error = await refusal(local, 'recovering-1', tls);

    expect(error.message).not.toContain('Not authorized'); // refused before MQTT: no CONNACK at all
    expect(await local.waitForOccurrences('TLS handshake refused', handshakesRefused)).toBeGreaterThan(handshakesRefused);
    const published = await mosquittoPub(tlsFilesOf(dirOf('recovering-1'), local.files.caCertificate), local.mqtt.port, 'recovering-1', 'devices/recovering-1/telemetry', 'expired');
    expect(published.code).not.toBe(0);
  });

  test('the bootstrap certificate connects, subscribes to the rotation answers, and is refused everything else', async () => {
    const client = await connectOnce(local.mqtt, 'recovering-1', await bootstrapTls(dirOf('recovering-1')));

    expect(await subscribeGranted(client, 'devices/recovering-1/certificates/rotate/+')).toEqual([1]);
    expect(await subscribeGranted(client, 'devices/recovering-1/telemetry')).toEqual([128]);
    expect(await subscribeGranted(client, 'devices/recovering-1/#')).toEqual([128]);
    expect(await publishOutcome(client, 'devices/recovering-1/telemetry', 'from bootstrap', { qos: 1 })).toBe('CLOSED');
    client.end(true);
  });

  test('iotcert device rotate recovers over the bootstrap certificate: the new certificate commits, the expired one is RETIRED, the bootstrap stays ACTIVE', async () => {
    const dir = dirOf('recovering-1');
    const expiredId = (await view('recovering-1')).certificates.find((c) => c.source === 'CSR')?.certificateId;

    const rotated = await iotcert(['device', 'rotate', '--id', 'recovering-1', '--dir', dir], local.dataDir);

    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain('expired');
    expect(rotated.stdout).toContain('asking over the bootstrap certificate');
    expect(rotated.stdout).toContain(`OK: rotated`);
    expect(rotated.stdout).toContain(`${expiredId} is retired`);
    const published = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'recovering-1', 'devices/recovering-1/telemetry', 'back');
    expect(published.code).toBe(0);
    const device = await view('recovering-1');
    expect(device.status).toBe('ACTIVE');
    expect(device.certificates.map((c) => [c.source, c.status])).toEqual([
      ['CSR', 'RETIRED'],
      ['CSR', 'ACTIVE'],
      ['ROTATION', 'ACTIVE'],
    ]);
    const bootstrap = await connectOnce(local.mqtt, 'recovering-1', await bootstrapTls(dir));
    await bootstrap.endAsync();
  });

  test.each([
    ['suspended', 'suspend', {}],
    ['revoked', 'revoke', { reason: 'KEY_COMPROMISE' }],
  ] as const)('a %s device never recovers: its bootstrap certificate is refused at connect', async (state, action, body) => {
    const deviceId = `recovering-${state}`;
    await enrollDevice({ deviceId, outDir: dirOf(deviceId), dataDir: local.dataDir });
    await enrollBootstrap({ deviceId, dir: dirOf(deviceId), dataDir: local.dataDir });
    const bootstrap = await bootstrapTls(dirOf(deviceId));
    await (await connectOnce(local.mqtt, deviceId, bootstrap)).endAsync();

    await local.api('POST', `/devices/${deviceId}/${action}`, body);

    expect((await refusal(local, deviceId, bootstrap)).message).toBeTruthy();
    const rotated = await iotcert(['device', 'rotate', '--id', deviceId, '--dir', dirOf(deviceId)], local.dataDir);
    expect(rotated.code).toBe(1);
  });
});
