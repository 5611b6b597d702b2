import 'reflect-metadata';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { connectOnce, enrollDevice, readDeviceTls, type DeviceTls } from '../../local/cli/device';
import { rotateDevice } from '../../local/cli/rotate';
import { answerTopic, rotationTopic, type RotationStep } from '../../functions/handlers/mqtt/rotation-protocol';
import { iotcert, mosquittoPub, publishOutcome, tlsFilesOf, tool } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(180_000);

interface DeviceView {
  status: string;
  rotation?: { state: string };
  certificates: { certificateId: string; status: string; source: string }[];
}

/** Resolves once `done()` holds, checked now and after each message the client receives (no polling on wall time; jest's timeout bounds it). */
function untilMessage(client: MqttClient, done: () => boolean): Promise<void> {
  if (done()) return Promise.resolve();
  return new Promise((resolve) => {
    const onMessage = () => {
      // After the recording listener (registered first) has seen this message.
      if (!done()) return;
      client.off('message', onMessage);
      resolve();
    };
    client.on('message', onMessage);
  });
}

/** A device connected over MQTT with the TLS material given, subscribed to the answers of both steps. */
async function deviceSession(local: LocalModeProcess, deviceId: string, tls: DeviceTls) {
  const client = await connectOnce(local.mqtt, deviceId, tls);
  const answers: { topic: string; body: Record<string, unknown> }[] = [];
  client.on('message', (topic, payload) => answers.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown> }));
  const filters = (['rotate', 'commit'] as RotationStep[]).flatMap((step) => [answerTopic(deviceId, step, 'accepted'), answerTopic(deviceId, step, 'rejected')]);
  await client.subscribeAsync(filters, { qos: 1 });
  /** Sends a rotation message and waits for the `n`-th answer on that step's topics. */
  const send = async (step: RotationStep, message: Record<string, unknown>, nth = 1) => {
    await client.publishAsync(rotationTopic(deviceId, step), JSON.stringify(message), { qos: 1 });
    const onStep = () => answers.filter((answer) => answer.topic.startsWith(`${rotationTopic(deviceId, step)}/`));
    await untilMessage(client, () => onStep().length >= nth);
    return onStep()[nth - 1] as { topic: string; body: Record<string, unknown> };
  };
  return { client, answers, send };
}

async function enrolled(local: LocalModeProcess, deviceId: string) {
  const dir = join(local.dataDir, 'devices', deviceId);
  await enrollDevice({ deviceId, outDir: dir, dataDir: local.dataDir });
  return { dir, tls: await readDeviceTls(dir) };
}

/** A CSR for the device's subject over the key in `keyPath` (made by the openssl CLI). */
async function csrOverKey(deviceId: string, keyPath: string): Promise<string> {
  const out = `${keyPath}.csr`;
  await tool('openssl', ['req', '-new', '-key', keyPath, '-subj', `/CN=${deviceId}`, '-out', out]);
  return (await import('node:fs/promises')).readFile(out, 'utf8');
}

async function newCsr(dir: string, deviceId: string): Promise<{ csr: string; key: string }> {
  const key = join(dir, `${Date.now()}-${Math.random().toString(16).slice(2)}.key`);
  await tool('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  return { csr: await csrOverKey(deviceId, key), key };
}

const view = async (local: LocalModeProcess, deviceId: string) => (await local.api('GET', `/devices/${deviceId}`)).body as DeviceView;

describe('local mode: certificate rotation over MQTT', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--jitr-concurrency', '8'] });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('iotcert device rotate: the old certificate is refused after the commit, the new one publishes, and device connect uses it', async () => {
    const { dir } = await enrolled(local, 'rotating-1');
    const old = join(dir, 'old');
    await mkdir(old);
    await Promise.all([copyFile(join(dir, 'device.pem'), join(old, 'device.pem')), copyFile(join(dir, 'device.key'), join(old, 'device.key'))]);

    const rotated = await iotcert(['device', 'rotate', '--id', 'rotating-1', '--dir', dir], local.dataDir);

    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain('OK: rotated');
    const refused = await mosquittoPub(tlsFilesOf(old, local.files.caCertificate), local.mqtt.port, 'rotating-1', 'devices/rotating-1/telemetry', 'old');
    expect(refused.code).not.toBe(0);
    const accepted = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'rotating-1', 'devices/rotating-1/telemetry', 'new');
    expect(accepted.code).toBe(0);
    expect((await iotcert(['device', 'connect', '--id', 'rotating-1', '--dir', dir], local.dataDir)).code).toBe(0);
    const device = await view(local, 'rotating-1');
    expect(device.certificates.map((c) => [c.source, c.status])).toEqual([
      ['CSR', 'RETIRED'],
      ['ROTATION', 'ACTIVE'],
    ]);
    expect(device.rotation).toBeUndefined();
    expect(await tool('openssl', ['verify', '-CAfile', local.files.caCertificate, join(dir, 'device.pem')])).toContain(': OK');
  });

  test('the same requestId twice gives one certificate', async () => {
    const { dir, tls } = await enrolled(local, 'rotating-2');
    const session = await deviceSession(local, 'rotating-2', tls);
    const { csr } = await newCsr(dir, 'rotating-2');

    const first = await session.send('rotate', { requestId: 'same-1', csr }, 1);
    const second = await session.send('rotate', { requestId: 'same-1', csr }, 2);
    await session.client.endAsync();

    expect(first.topic).toBe(answerTopic('rotating-2', 'rotate', 'accepted'));
    expect(second.body.certificateId).toBe(first.body.certificateId);
    expect((await view(local, 'rotating-2')).certificates).toHaveLength(2);
  });

  test('a CSR over the current key is refused, and so is a request on another device\'s topic', async () => {
    const { dir, tls } = await enrolled(local, 'rotating-3');
    await enrolled(local, 'rotating-3b');
    const session = await deviceSession(local, 'rotating-3', tls);

    const reused = await session.send('rotate', { requestId: 'reuse-1', csr: await csrOverKey('rotating-3', join(dir, 'device.key')) });
    const foreign = await publishOutcome(session.client, rotationTopic('rotating-3b', 'rotate'), JSON.stringify({ requestId: 'x-1', csr: (await newCsr(dir, 'rotating-3b')).csr }), { qos: 1 });

    expect(reused.topic).toBe(answerTopic('rotating-3', 'rotate', 'rejected'));
    expect(reused.body).toMatchObject({ requestId: 'reuse-1', code: 'INVALID_CSR' });
    expect(foreign).toBe('CLOSED'); // the fleet policy keeps a device inside its own topics
    expect((await view(local, 'rotating-3')).certificates).toHaveLength(1);
    expect((await view(local, 'rotating-3b')).rotation).toBeUndefined();
  });

  test('a suspended device cannot rotate; a revoked one neither', async () => {
    const { dir: suspendedDir } = await enrolled(local, 'rotating-4');
    const { dir: revokedDir } = await enrolled(local, 'rotating-5');
    await local.api('POST', '/devices/rotating-4/suspend', {});
    await local.api('POST', '/devices/rotating-5/revoke', { reason: 'KEY_COMPROMISE' });

    const suspended = await rotateDevice({ deviceId: 'rotating-4', dir: suspendedDir, target: local.mqtt, attempts: 1, answerTimeoutMs: 5_000 });
    const revoked = await rotateDevice({ deviceId: 'rotating-5', dir: revokedDir, target: local.mqtt, attempts: 1, answerTimeoutMs: 5_000 });

    expect(suspended.outcome).toBe('INCOMPLETE'); // refused at connect: its certificate is INACTIVE
    expect(revoked.outcome).toBe('INCOMPLETE');
    expect((await view(local, 'rotating-4')).certificates).toHaveLength(1);
    expect((await view(local, 'rotating-5')).certificates).toHaveLength(1);
  });

  test('a commit sent over the old certificate is refused; the device goes offline, comes back with the new one and commits', async () => {
    const { dir, tls } = await enrolled(local, 'rotating-6');
    const session = await deviceSession(local, 'rotating-6', tls);
    const { csr, key } = await newCsr(dir, 'rotating-6');
    const issued = await session.send('rotate', { requestId: 'offline-1', csr });
    const certificateId = issued.body.certificateId as string;

    const overOld = await session.send('commit', { requestId: 'offline-1', certificateId });
    await session.client.endAsync();
    expect(overOld.body).toMatchObject({ requestId: 'offline-1', code: 'PRINCIPAL_NOT_ALLOWED' });
    expect((await view(local, 'rotating-6')).rotation).toMatchObject({ state: 'PENDING' });

    // Offline for a while, then back with the new certificate.
    const newTls: DeviceTls = { key: await (await import('node:fs/promises')).readFile(key, 'utf8'), cert: issued.body.certificatePem as string, ca: tls.ca };
    const back = await deviceSession(local, 'rotating-6', newTls);
    const committed = await back.send('commit', { requestId: 'offline-1', certificateId });
    const again = await back.send('commit', { requestId: 'offline-1', certificateId }, 2);
    await back.client.endAsync();

    expect(committed.topic).toBe(answerTopic('rotating-6', 'commit', 'accepted'));
    expect(committed.body).toEqual({ requestId: 'offline-1', certificateId, retiredCertificateId: expect.any(String) });
    expect(again.body).toEqual(committed.body);
    await expect(connectOnce(local.mqtt, 'rotating-6', tls)).rejects.toThrow();
  });

  test('a backend asks a device to rotate now: the device hears it on its expiring topic; a suspended device is refused', async () => {
    const { tls } = await enrolled(local, 'rotating-7');
    await enrolled(local, 'rotating-8');
    const client = await connectOnce(local.mqtt, 'rotating-7', tls);
    const heard: Record<string, unknown>[] = [];
    client.on('message', (_topic, payload) => heard.push(JSON.parse(payload.toString('utf8')) as Record<string, unknown>));
    await client.subscribeAsync('devices/rotating-7/certificates/expiring', { qos: 1 });
    await local.api('POST', '/devices/rotating-8/suspend', {});

    const asked = await local.api('POST', '/devices/rotating-7/rotate', {});
    const refused = await local.api('POST', '/devices/rotating-8/rotate', {}).catch((error: { status: number; body: unknown }) => error);

    await untilMessage(client, () => heard.length > 0);
    await client.endAsync();
    const { certificates } = await view(local, 'rotating-7');
    expect(asked.body).toMatchObject({ deviceId: 'rotating-7', notices: [{ certificateId: certificates[0]?.certificateId }] });
    expect(heard).toEqual([{ certificateId: certificates[0]?.certificateId, notAfter: expect.any(String), renewBy: expect.any(String) }]);
    expect(refused).toMatchObject({ status: 409, body: { error: { code: 'INVALID_TRANSITION' } } });
  });

  test('100 devices rotating at once: 100 committed, none stranded, nothing lost', async () => {
    const ids = Array.from({ length: 100 }, (_, index) => `fleet-${String(index).padStart(3, '0')}`);
    const dirs = new Map<string, string>();
    for (let index = 0; index < ids.length; index += 20) {
      await Promise.all(ids.slice(index, index + 20).map(async (id) => dirs.set(id, (await enrolled(local, id)).dir)));
    }

    const reports = await Promise.all(ids.map((id) => rotateDevice({ deviceId: id, dir: dirs.get(id) as string, target: local.mqtt, answerTimeoutMs: 30_000 })));

    expect(reports.filter((report) => report.outcome === 'COMMITTED')).toHaveLength(100);
    for (const id of ids.slice(0, 100)) {
      const device = await view(local, id);
      expect(device.rotation).toBeUndefined();
      expect(device.certificates.map((c) => c.status)).toEqual(['RETIRED', 'ACTIVE']);
    }
    const probes = await Promise.all(ids.slice(0, 10).map(async (id) => connectOnce(local.mqtt, id, await readDeviceTls(dirs.get(id) as string))));
    await Promise.all(probes.map((client: MqttClient) => client.endAsync()));
  });
});

describe('local mode: a rotation not committed in time', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--rotation-commit-seconds', '2', '--rotation-sweep-seconds', '1'] });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('the sweep withdraws the new certificate after the deadline: it is refused, the old one still works, a late commit is refused', async () => {
    const { dir, tls } = await enrolled(local, 'late-1');
    const session = await deviceSession(local, 'late-1', tls);
    const { csr, key } = await newCsr(dir, 'late-1');
    const issued = await session.send('rotate', { requestId: 'late-r1', csr });
    await session.client.endAsync();

    await local.waitForOutput(/sweep: 1 rotation\(s\) withdrawn/, 30_000);

    const newTls: DeviceTls = { key: await (await import('node:fs/promises')).readFile(key, 'utf8'), cert: issued.body.certificatePem as string, ca: tls.ca };
    await expect(connectOnce(local.mqtt, 'late-1', newTls)).rejects.toThrow();
    const oldSession = await deviceSession(local, 'late-1', tls);
    const late = await oldSession.send('commit', { requestId: 'late-r1', certificateId: issued.body.certificateId });
    await oldSession.client.endAsync();
    expect(late.body).toMatchObject({ code: 'PRINCIPAL_NOT_ALLOWED' });
    const device = await view(local, 'late-1');
    expect(device.rotation).toBeUndefined();
    expect(device.certificates.map((c) => [c.source, c.status])).toEqual([
      ['CSR', 'ACTIVE'],
      ['ROTATION', 'REVOKED'],
    ]);
    await writeFile(join(dir, 'unused'), '');
  });

  test('a device whose new certificate was withdrawn after it connected goes back to the previous one, which still works', async () => {
    const { dir, tls } = await enrolled(local, 'late-2');
    const withdrawnBefore = local.occurrences('rotation(s) withdrawn');
    const session = await deviceSession(local, 'late-2', tls);
    const { csr, key } = await newCsr(dir, 'late-2');
    const issued = await session.send('rotate', { requestId: 'late-r2', csr });
    await session.client.endAsync();
    // The device's files as iotcert device rotate leaves them once the new certificate connected (phase PROMOTED).
    const { rename, readFile } = await import('node:fs/promises');
    await rename(join(dir, 'device.key'), join(dir, 'previous.key'));
    await rename(join(dir, 'device.pem'), join(dir, 'previous.pem'));
    await writeFile(join(dir, 'device.key'), await readFile(key, 'utf8'));
    await writeFile(join(dir, 'device.pem'), issued.body.certificatePem as string);
    await writeFile(join(dir, 'rotation.json'), JSON.stringify({ requestId: 'late-r2', csrPem: csr, phase: 'PROMOTED', certificateId: issued.body.certificateId }));
    expect(await local.waitForOccurrences('rotation(s) withdrawn', withdrawnBefore, 30_000)).toBeGreaterThan(withdrawnBefore);

    const report = await rotateDevice({ deviceId: 'late-2', dir, target: local.mqtt, attempts: 1, answerTimeoutMs: 5_000 });

    expect(report.outcome).toBe('ROLLED_BACK');
    expect(await readFile(join(dir, 'device.pem'), 'utf8')).toBe(tls.cert);
    expect((await iotcert(['device', 'connect', '--id', 'late-2', '--dir', dir], local.dataDir)).code).toBe(0);
    // Run again: the withdrawn certificate is tried once more, refused, and dropped for good.
    expect((await rotateDevice({ deviceId: 'late-2', dir, target: local.mqtt, attempts: 1, answerTimeoutMs: 5_000 })).outcome).toBe('ROLLED_BACK');
    expect(await readFile(join(dir, 'device.pem'), 'utf8')).toBe(tls.cert);
    await expect(readFile(join(dir, 'rotation.json'), 'utf8')).rejects.toThrow();
  });
});
