import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { connectDevice, makeKeyAndCsr, type ConnectReport } from '../../local/cli/device';
import { readCaMaterial, readEndpoints } from '../../local/data-dir';
import { isDynamoDbLocal } from '../../local/dynamodb-local';
import { newDataDir, removeDataDir, runLocalModeProcess, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(180_000);

/** Devices connecting at once while the stop signal arrives. */
const BURST_DEVICES = 100;

/** Whether something accepts TCP connections on 127.0.0.1:port. */
const isListening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

const portOf = (url: string) => Number(new URL(url).port);

/** Every port a local mode listens on: MQTT, API, CRL and its DynamoDB Local. */
const portsOf = (local: LocalModeProcess) => ({
  mqtt: local.mqtt.port,
  api: portOf(local.endpoints.api.url),
  crl: portOf(local.endpoints.crl.derUrl),
  dynamodb: portOf(local.endpoints.dynamodb.endpoint),
});

/** The data folder's lock, read as a file (the test runs against older code too, where there is none). */
const lockOf = (local: LocalModeProcess) => join(local.dataDir, 'local.lock');
const readLock = async (local: LocalModeProcess) =>
  JSON.parse(await readFile(lockOf(local), 'utf8')) as { pid: number; api?: { url: string }; mqtt?: { host: string; port: number } };

const isProcessAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Devices with certificates from the local CA, as a factory makes them (unknown to the registry: JITR on first connect). */
async function factoryDevices(local: LocalModeProcess, prefix: string, count: number) {
  const material = await readCaMaterial(local.files);
  const ca = await SoftwareCertificateAuthority.load(material!);
  const devices = [];
  for (let index = 0; index < count; index += 1) {
    const deviceId = `${prefix}-${String(index).padStart(3, '0')}`;
    const { keyPem, csrPem } = await makeKeyAndCsr(deviceId);
    const certificatePem = await ca.mintDeviceCertificate(deviceId, csrPem, 30);
    devices.push({ deviceId, tls: { key: keyPem, cert: certificatePem, ca: material!.certificatePem } });
  }
  return devices;
}

describe('local mode: one instance per data folder, stopped cleanly by its signals', () => {
  const dataDirs: string[] = [];
  const running: LocalModeProcess[] = [];
  /** Java pids to make sure of after each test (a failing test may leave its DynamoDB Local behind). */
  const javas: { pid: number; dir: string }[] = [];

  const start = async (options: Parameters<typeof startLocalModeProcess>[0]) => {
    const local = await startLocalModeProcess(options);
    running.push(local);
    javas.push({ pid: Number(await readFile(local.files.dynamodbPid, 'utf8')), dir: local.files.dynamodb });
    return local;
  };

  afterEach(async () => {
    for (const local of running.splice(0)) {
      await local.stop('SIGTERM', { processGroup: true, killAfterMs: 20_000 });
      if (isProcessAlive(local.endpoints.pid)) process.kill(local.endpoints.pid, 'SIGKILL');
    }
    for (const java of javas.splice(0)) if (await isDynamoDbLocal(java.pid, java.dir)) process.kill(java.pid, 'SIGKILL');
  });

  afterAll(async () => {
    await Promise.all(dataDirs.map(removeDataDir));
  });

  test('a second start on the same data folder refuses before touching anything, naming the running one; the first stays healthy (API and MQTT)', async () => {
    // Prepare: a running local mode with its own DynamoDB Local.
    const dataDir = await newDataDir();
    dataDirs.push(dataDir);
    const first = await start({ dataDir, embeddedDynamoDb: true });
    const javaPid = Number(await readFile(first.files.dynamodbPid, 'utf8'));

    // Act: a second start on the same folder.
    const second = await runLocalModeProcess({ dataDir, embeddedDynamoDb: true });

    // Assess: refused with the running one's pid and ports, nothing of the first touched.
    expect(second.becameReady).toBe(false);
    expect(second.code).not.toBeNull();
    expect(second.code).not.toBe(0);
    expect(second.output).toContain(`already running (pid ${first.endpoints.pid}, API ${first.endpoints.api.url}, MQTT 127.0.0.1:${first.mqtt.port}) on ${dataDir}`);
    expect(second.output).not.toContain('stopped the DynamoDB Local');
    expect(await isDynamoDbLocal(javaPid, first.files.dynamodb)).toBe(true);
    expect(Number(await readFile(first.files.dynamodbPid, 'utf8'))).toBe(javaPid);
    expect((await readEndpoints(first.files))?.pid).toBe(first.endpoints.pid);
    expect((await readLock(first)).pid).toBe(first.endpoints.pid);

    // The first still answers the API, and a new device onboards over MQTT (JITR, then a publish).
    const listed = await first.api('GET', '/devices?status=ACTIVE');
    expect(listed.status).toBe(200);
    const [device] = await factoryDevices(first, 'after-refusal', 1);
    const report = await connectDevice({ deviceId: device!.deviceId, tls: device!.tls, target: first.mqtt, attempts: 30, initialDelayMs: 200, maxDelayMs: 1_000 });
    expect(report.published).toBe(true);
    expect((await first.api('GET', `/devices/${device!.deviceId}`)).body).toMatchObject({ status: 'ACTIVE' });

    // A clean stop removes the lock.
    running.splice(running.indexOf(first), 1);
    const stopped = await first.stop('SIGTERM');
    expect(stopped.code).toBe(0);
    expect(existsSync(lockOf(first))).toBe(false);
  });

  test.each([
    ['SIGINT', 'to the whole process group, as Ctrl-C in the terminal', true],
    ['SIGTERM', "to npm's pid", false],
  ] as const)('%s %s during a burst of first connects: `npm start` stops cleanly, leaving no listener, no DynamoDB Local and no lock', async (signal, _to, processGroup) => {
    // Prepare: `npm start` as a developer runs it, and a burst of devices connecting at once.
    const dataDir = await newDataDir();
    dataDirs.push(dataDir);
    const local = await start({ dataDir, embeddedDynamoDb: true, viaNpmStart: true });
    const javaPid = Number(await readFile(local.files.dynamodbPid, 'utf8'));
    const serverPid = local.endpoints.pid;
    const ports = portsOf(local);
    expect(serverPid).not.toBe(local.pid); // npm runs it
    expect(await isListening(ports.mqtt)).toBe(true);
    expect((await readLock(local)).pid).toBe(serverPid);
    const devices = await factoryDevices(local, `burst-${signal.toLowerCase()}`, BURST_DEVICES);
    const burst = Promise.allSettled(
      devices.map((device): Promise<ConnectReport> => connectDevice({ deviceId: device.deviceId, tls: device.tls, target: local.mqtt, attempts: 3, initialDelayMs: 300, maxDelayMs: 1_000 })),
    );

    // Act: the signal, once the first device of the burst is activated (the others are registering, connecting or retrying).
    await local.waitForOutput(/\[jitr\] certificate \S+: ACTIVATED/, 60_000);
    const activatedAtSignal = local.occurrences(': ACTIVATED, device ');
    const stopped = await local.stop(signal, { processGroup, killAfterMs: 30_000 });
    await burst;

    // Assess: the server itself stopped cleanly, and took everything with it.
    expect(stopped.output).toMatch(new RegExp(`\\[local\\] ${signal}: stopping[\\s\\S]*\\[local\\] stopped cleanly`));
    expect(stopped.code).toBe(0);
    expect(isProcessAlive(serverPid)).toBe(false);
    expect(await isDynamoDbLocal(javaPid, local.files.dynamodb)).toBe(false);
    const listening = Object.fromEntries(await Promise.all(Object.entries(ports).map(async ([name, port]) => [name, await isListening(port)] as const)));
    expect(listening).toEqual({ mqtt: false, api: false, crl: false, dynamodb: false });
    expect(existsSync(lockOf(local))).toBe(false);
    expect(existsSync(local.files.dynamodbPid)).toBe(false);
    expect(activatedAtSignal).toBeLessThan(BURST_DEVICES); // the signal came in the middle of the burst
    running.splice(running.indexOf(local), 1);
    console.log(`${signal}: ${activatedAtSignal} of ${BURST_DEVICES} devices activated at the signal, ${local.occurrences(': ACTIVATED, device ')} when it had stopped cleanly`);
  });

  test('a lock left by a run that was killed (its pid dead) is taken over, and its DynamoDB Local is stopped', async () => {
    // Prepare: a run killed with SIGKILL: its lock and its DynamoDB Local are left behind.
    const dataDir = await newDataDir();
    dataDirs.push(dataDir);
    const killed = await start({ dataDir, embeddedDynamoDb: true });
    const javaPid = Number(await readFile(killed.files.dynamodbPid, 'utf8'));
    expect(existsSync(lockOf(killed))).toBe(true);
    running.splice(running.indexOf(killed), 1);
    await killed.stop('SIGKILL');
    const left = await readLock(killed);
    expect(left.pid).toBe(killed.endpoints.pid);
    expect(isProcessAlive(left.pid)).toBe(false);
    expect(await isDynamoDbLocal(javaPid, killed.files.dynamodb)).toBe(true);

    // Act: the next start on the same folder.
    const next = await start({ dataDir, embeddedDynamoDb: true });

    // Assess: the stale lock is now the new run's, with its ports; the old DynamoDB Local is gone.
    expect(next.output()).toContain(`took over the lock of an earlier run (pid ${left.pid}, no longer running) on ${dataDir}`);
    expect(next.output()).toContain(`stopped the DynamoDB Local (pid ${javaPid}) an earlier run left running`);
    expect(await isDynamoDbLocal(javaPid, killed.files.dynamodb)).toBe(false);
    expect(await readLock(next)).toMatchObject({ pid: next.endpoints.pid, api: { url: next.endpoints.api.url }, mqtt: { host: '127.0.0.1', port: next.mqtt.port } });
    expect((await next.api('GET', '/devices?status=ACTIVE')).status).toBe(200);
    running.splice(running.indexOf(next), 1);
    expect((await next.stop('SIGTERM')).code).toBe(0);
    expect(existsSync(lockOf(next))).toBe(false);
  });
});
