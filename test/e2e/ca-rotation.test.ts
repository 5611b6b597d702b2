import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ApiCallError, connectDevice, connectOnce, enrollDevice, mintDevice, readDeviceTls } from '../../local/cli/device';
import { rotateDevice } from '../../local/cli/rotate';
import { rotateLocalCa, type CaRotationReport } from '../../local/cli/ca-rotate';
import { dataFiles, readCaMaterial, readPreviousCas } from '../../local/data-dir';
import { localDocumentClient } from '../../local/dynamodb-local';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { FleetCaCensus } from '../../functions/core/expiry';
import { systemClock } from '../../functions/core/ports';
import { certificateIdOf } from '../../functions/core/x509';
import { iotcert, run } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(300_000);

/** `openssl verify` of a device certificate against exactly one CA certificate file. */
const opensslVerify = (caFile: string, certificateFile: string) => run('openssl', ['verify', '-CAfile', caFile, certificateFile]);

/** One ACCEPTED/REFUSED connect with the TLS material in `dir` (no retry). */
async function connectsOnce(local: LocalModeProcess, deviceId: string, tls: Awaited<ReturnType<typeof readDeviceTls>>): Promise<boolean> {
  try {
    const client = await connectOnce(local.mqtt, deviceId, tls);
    await client.endAsync();
    return true;
  } catch {
    return false;
  }
}

/** A call of the local API, its refusals answered like its successes (status and body). */
async function apiAnswer(local: LocalModeProcess, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  try {
    return await local.api(method, path, body);
  } catch (error) {
    if (error instanceof ApiCallError) return { status: error.status, body: error.body };
    throw error;
  }
}

/** The census the expiry monitor runs, on the local mode's table and CAs. */
async function census(local: LocalModeProcess) {
  const files = dataFiles(local.dataDir);
  const material = await readCaMaterial(files);
  const previousCaCertificatePems = (await readPreviousCas(files)).map((previous) => previous.certificatePem);
  const ca = await SoftwareCertificateAuthority.load(material!, { previousCaCertificatePems });
  const documentClient = localDocumentClient(local.endpoints.dynamodb.endpoint);
  try {
    const store = new DynamoDbDeviceStore({ tableName: local.endpoints.dynamodb.deviceTable, documentClient });
    return await new FleetCaCensus({ store, ca, clock: systemClock }).run();
  } finally {
    documentClient.destroy();
  }
}

describe('local mode: a CA rotation strands nobody', () => {
  const tablePrefix = `carot-${randomBytes(4).toString('hex')}`;
  let local: LocalModeProcess;
  let dataDir: string;
  let rotation: CaRotationReport;
  const dirOf = (deviceId: string) => join(dataDir, 'devices', deviceId);

  beforeAll(async () => {
    // Before the switch: one device on the old CA, enrolled and connected, and one a factory made with the old CA
    // that has never connected yet.
    local = await startLocalModeProcess({ tablePrefix });
    dataDir = local.dataDir;
    await enrollDevice({ deviceId: 'old-enrolled', outDir: dirOf('old-enrolled'), dataDir });
    await mintDevice({ deviceId: 'old-factory', outDir: dirOf('old-factory'), dataDir });
    // Made with the old CA too, but it first connects only after the old CA is deactivated.
    await mintDevice({ deviceId: 'old-factory-late', outDir: dirOf('old-factory-late'), dataDir });
    const first = await connectDevice({ deviceId: 'old-enrolled', target: local.mqtt, tls: await readDeviceTls(dirOf('old-enrolled')) });
    expect(first.connected).toBe(true);
    await copyFile(dataFiles(dataDir).caCertificate, join(dataDir, 'old-ca.pem'));

    // The switch: `iotcert ca rotate` while stopped, then a start with the same folder and table.
    await local.stop();
    rotation = await rotateLocalCa({ dataDir });
    local = await startLocalModeProcess({ dataDir, tablePrefix });
  });

  afterAll(async () => {
    await local?.stop();
    if (dataDir) await removeDataDir(dataDir);
  });

  test('the new CA signs what is issued from now on, and only it', async () => {
    await enrollDevice({ deviceId: 'new-enrolled', outDir: dirOf('new-enrolled'), dataDir });
    const newCaFile = join(dataDir, 'new-ca.pem');
    await writeFile(newCaFile, (await readCaMaterial(dataFiles(dataDir)))!.certificatePem);

    expect(await certificateIdOf(await readFile(newCaFile, 'utf8'))).toBe(rotation.caCertificateId);
    expect((await opensslVerify(newCaFile, join(dirOf('new-enrolled'), 'device.pem'))).code).toBe(0);
    expect((await opensslVerify(join(dataDir, 'old-ca.pem'), join(dirOf('new-enrolled'), 'device.pem'))).code).not.toBe(0);
  });

  test('devices on both CAs connect, and a device the old CA signed before the switch still registers itself (JITR)', async () => {
    const report = await Promise.all(
      ['old-enrolled', 'new-enrolled', 'old-factory'].map(async (deviceId) => (await connectDevice({ deviceId, target: local.mqtt, tls: await readDeviceTls(dirOf(deviceId)) })).connected),
    );
    expect(report).toEqual([true, true, true]);
    expect((await opensslVerify(join(dataDir, 'old-ca.pem'), join(dirOf('old-factory'), 'device.pem'))).code).toBe(0);
  });

  test('the census counts the live certificates still on each CA', async () => {
    const report = await census(local);
    const byRole = Object.fromEntries(report.cas.map((ca) => [ca.role, ca]));
    expect(byRole.current).toMatchObject({ caCertificateId: rotation.caCertificateId, liveCertificates: 1, deviceIds: ['new-enrolled'] });
    expect(byRole.previous).toMatchObject({ caCertificateId: rotation.previousCaCertificateId, liveCertificates: 2 });
    expect([...(byRole.previous?.deviceIds ?? [])].sort()).toEqual(['old-enrolled', 'old-factory']);
    expect(report).toMatchObject({ unknownIssuer: 0, devicesExpiredWithoutRotation: 0 });
  });

  test('a device moves to the new CA by rotating: its new certificate chains to the new CA, its old one is refused after the commit', async () => {
    const dir = dirOf('old-enrolled');
    await copyFile(join(dir, 'device.pem'), join(dir, 'old.pem'));
    await copyFile(join(dir, 'device.key'), join(dir, 'old.key'));

    const rotated = await rotateDevice({ deviceId: 'old-enrolled', dir, target: local.mqtt });

    expect(rotated.outcome).toBe('COMMITTED');
    expect((await opensslVerify(join(dataDir, 'new-ca.pem'), join(dir, 'device.pem'))).code).toBe(0);
    expect(await connectsOnce(local, 'old-enrolled', await readDeviceTls(dir))).toBe(true);
    const oldTls = { ...(await readDeviceTls(dir)), cert: await readFile(join(dir, 'old.pem'), 'utf8'), key: await readFile(join(dir, 'old.key'), 'utf8') };
    expect(await connectsOnce(local, 'old-enrolled', oldTls)).toBe(false);

    const report = await census(local);
    expect(report.cas.find((ca) => ca.role === 'current')?.liveCertificates).toBe(2);
    expect(report.cas.find((ca) => ca.role === 'previous')?.deviceIds).toEqual(['old-factory']);
  });

  test('the old CA cannot be deactivated while a device remains on it, nor the current CA at all', async () => {
    const onOld = await apiAnswer(local, 'POST', `/certificate-authorities/${rotation.previousCaCertificateId}/deactivate`, {});
    const current = await apiAnswer(local, 'POST', `/certificate-authorities/${rotation.caCertificateId}/deactivate`, {});

    expect(onOld).toMatchObject({ status: 409, body: { error: { code: 'CA_STILL_IN_USE', details: { liveCertificates: 1, deviceIds: ['old-factory'] } } } });
    expect(current).toMatchObject({ status: 409, body: { error: { code: 'CA_IS_CURRENT' } } });
    expect(await connectsOnce(local, 'old-factory', await readDeviceTls(dirOf('old-factory')))).toBe(true);
  });

  test('once the last device rotated over, the old CA is deactivated: its certificates are refused at connect, new-CA devices connect', async () => {
    const rotated = await rotateDevice({ deviceId: 'old-factory', dir: dirOf('old-factory'), target: local.mqtt });
    expect(rotated.outcome).toBe('COMMITTED');

    const deactivated = await iotcert(['ca', 'deactivate', '--id', rotation.previousCaCertificateId, '--json'], dataDir);

    expect(deactivated.code).toBe(0);
    expect(JSON.parse(deactivated.stdout)).toMatchObject({ caCertificateId: rotation.previousCaCertificateId, status: 'INACTIVE', liveCertificates: 0, strandedCertificates: 0, forced: false });
    const lateTls = await readDeviceTls(dirOf('old-factory-late'));
    expect((await opensslVerify(join(dataDir, 'old-ca.pem'), join(dirOf('old-factory-late'), 'device.pem'))).code).toBe(0);
    // Refused for its CA, not as a first connect that registers it (JITR): the endpoint says why.
    const refusals = local.occurrences('no registered CA signed it');
    expect(await connectsOnce(local, 'old-factory-late', lateTls)).toBe(false);
    await local.waitForOccurrences('no registered CA signed it', refusals);
    const connected = await Promise.all(['old-enrolled', 'new-enrolled', 'old-factory'].map(async (deviceId) => connectsOnce(local, deviceId, await readDeviceTls(dirOf(deviceId)))));
    expect(connected).toEqual([true, true, true]);
    expect(await apiAnswer(local, 'GET', '/devices/old-factory-late')).toMatchObject({ status: 404, body: { error: { code: 'DEVICE_NOT_FOUND' } } });
  });
});
