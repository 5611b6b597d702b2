import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { deviceFiles, makeKeyAndCsr } from '../../local/cli/device';
import { readCaMaterial } from '../../local/data-dir';
import { writeFileAtomic } from '../../functions/adapters/local/atomic-file';
import { certificateIdOfFile, iotcert, mosquittoPub, mosquittoPubUntilAccepted, tlsFilesOf, tool } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess, savedRegistry } from './support/local-mode-process';

jest.setTimeout(120_000);

interface DeviceView {
  status: string;
  certificateIds: string[];
  certificates: { certificateId: string; status: string; source: string }[];
}

describe('local mode: a factory-minted device registers itself on its first connect (JITR)', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess();
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('mosquitto_pub is refused on the first connect, accepted on a later one, and the store shows the device ACTIVE with one certificate', async () => {
    // Prepare: a key and certificate signed by the local CA, registered nowhere (iotcert device mint).
    const out = join(local.dataDir, 'devices', 'factory-1');
    const minted = await iotcert(['device', 'mint', '--id', 'factory-1', '--out', out], local.dataDir);
    expect(minted.code).toBe(0);
    const files = deviceFiles(out);
    expect((await stat(files.key)).mode & 0o777).toBe(0o600);
    const certificateId = await certificateIdOfFile(files.certificate);
    await expect(local.api('GET', '/devices/factory-1')).rejects.toThrow(/404 DEVICE_NOT_FOUND/);
    const tls = tlsFilesOf(out, local.files.caCertificate);

    // Act: the first connect, then retries like a device would.
    const first = await mosquittoPub(tls, local.mqtt.port, 'factory-1', 'devices/factory-1/telemetry', 'first');
    const retries = await mosquittoPubUntilAccepted(tls, local.mqtt.port, 'factory-1', 'devices/factory-1/telemetry', 'hello');

    // Assess: refused (the connection is dropped while JITR runs), then accepted.
    expect(first.code).not.toBe(0);
    expect(first.stderr).toMatch(/connection was lost|connection was refused|Connection error/i);
    expect(retries.at(-1)?.code).toBe(0);
    const { body } = await local.api('GET', '/devices/factory-1');
    const view = body as DeviceView;
    expect(view.status).toBe('ACTIVE');
    expect(view.certificateIds).toEqual([certificateId]);
    expect(view.certificates).toEqual([expect.objectContaining({ certificateId, status: 'ACTIVE', source: 'JITR' })]);
    await expect(local.waitForOutput(new RegExp(`certificate ${certificateId.slice(0, 12)}…: ACTIVATED`), 5_000)).resolves.toBeUndefined();

    // The registry (persisted) holds the thing, in the fleet group, with the certificate attached.
    const registry = (await savedRegistry(local.files)) as unknown as {
      certificates: { certificateId: string; status: string; caCertificateId?: string }[];
      things: { thingName: string; thingGroups: string[]; principals: string[] }[];
    };
    expect(registry.certificates.find((c) => c.certificateId === certificateId)).toMatchObject({ status: 'ACTIVE', caCertificateId: local.endpoints.caCertificateId });
    expect(registry.things.filter((t) => t.thingName === 'factory-1')).toEqual([{ thingName: 'factory-1', attributes: {}, thingGroups: ['iotcert-fleet'], principals: [certificateId] }]);
  });

  test('iotcert device connect handles the JITR refusal with retries and publishes to its own topic', async () => {
    const out = join(local.dataDir, 'devices', 'cli-1');
    expect((await iotcert(['device', 'mint', '--id', 'cli-1', '--out', out], local.dataDir)).code).toBe(0);

    const connected = await iotcert(['device', 'connect', '--id', 'cli-1', '--dir', out], local.dataDir);

    expect(connected.code).toBe(0);
    expect(connected.stdout).toMatch(/attempt 1: refused .*JITR/);
    expect(connected.stdout).toMatch(/attempt \d: connected/);
    expect(connected.stdout).toContain('published');
    expect(connected.stdout).toContain('to devices/cli-1/telemetry (QoS 1, acknowledged)');
  });

  test('rejects a certificate from a CA that is not registered, at the TLS handshake, and registers nothing', async () => {
    // Prepare: another CA and a device certificate from it, with the openssl CLI.
    const dir = join(local.dataDir, 'foreign');
    await mkdir(dir, { recursive: true });
    await tool('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-subj', '/CN=Someone else', '-days', '2']);
    await tool('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'device.key'), '-out', join(dir, 'device.csr'), '-subj', '/CN=foreign-1']);
    await tool('openssl', ['x509', '-req', '-in', join(dir, 'device.csr'), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', join(dir, 'device.pem'), '-days', '1']);
    const certificateId = await certificateIdOfFile(join(dir, 'device.pem'));

    const before = local.occurrences('TLS handshake refused');
    const result = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'foreign-1', 'devices/foreign-1/telemetry', 'x');
    const again = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'foreign-1', 'devices/foreign-1/telemetry', 'x');

    expect(result.code).not.toBe(0);
    expect(again.code).not.toBe(0);
    expect(await local.waitForOccurrences('TLS handshake refused', before)).toBeGreaterThan(before);
    expect(JSON.stringify(await savedRegistry(local.files))).not.toContain(certificateId);
  });

  test('rejects an expired certificate from the registered CA, and registers nothing', async () => {
    // Prepare: the local CA signing as if it were two days ago, for one day.
    const material = await readCaMaterial(local.files);
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    const pastCa = await SoftwareCertificateAuthority.load(material!, { now: () => twoDaysAgo });
    const { keyPem, csrPem } = await makeKeyAndCsr('expired-1');
    const dir = join(local.dataDir, 'devices', 'expired-1');
    const files = deviceFiles(dir);
    await writeFileAtomic(files.key, keyPem);
    await writeFileAtomic(files.certificate, await pastCa.mintDeviceCertificate('expired-1', csrPem, 1));
    const certificateId = await certificateIdOfFile(files.certificate);

    expect(new Date((await tool('openssl', ['x509', '-in', files.certificate, '-noout', '-enddate'])).split('=')[1] as string).getTime()).toBeLessThan(Date.now());
    const before = local.occurrences('TLS handshake refused');

    const result = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'expired-1', 'devices/expired-1/telemetry', 'x');

    expect(result.code).not.toBe(0);
    expect(await local.waitForOccurrences('TLS handshake refused', before)).toBeGreaterThan(before);
    expect(JSON.stringify(await savedRegistry(local.files))).not.toContain(certificateId);
  });

  test('refuses an INACTIVE (suspended) certificate, and accepts it again once the device is resumed', async () => {
    const out = join(local.dataDir, 'devices', 'suspended-1');
    expect((await iotcert(['device', 'enroll', '--id', 'suspended-1', '--out', out], local.dataDir)).code).toBe(0);
    const tls = tlsFilesOf(out, local.files.caCertificate);
    expect((await mosquittoPub(tls, local.mqtt.port, 'suspended-1', 'devices/suspended-1/telemetry', 'x')).code).toBe(0);

    await local.api('POST', '/devices/suspended-1/suspend', {});
    const whileSuspended = await mosquittoPub(tls, local.mqtt.port, 'suspended-1', 'devices/suspended-1/telemetry', 'x');
    await local.api('POST', '/devices/suspended-1/resume', {});
    const afterResume = await mosquittoPub(tls, local.mqtt.port, 'suspended-1', 'devices/suspended-1/telemetry', 'x');

    expect(whileSuspended.code).not.toBe(0);
    await expect(local.waitForOutput(/refused, connection closed: the certificate is INACTIVE/, 5_000)).resolves.toBeUndefined();
    expect(afterResume.code).toBe(0);
  });

  test('rejects API calls without the bearer token with a 401 JSON error', async () => {
    const response = await fetch(`${local.endpoints.api.url}/devices/factory-1`);
    const wrong = await fetch(`${local.endpoints.api.url}/devices/factory-1`, { headers: { Authorization: 'Bearer not-the-token' } });

    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toEqual({ error: { code: 'UNAUTHORIZED', message: expect.stringContaining('api-token') } });
    expect(wrong.status).toBe(401);
    expect((await stat(local.files.apiToken)).mode & 0o777).toBe(0o600);
    expect((await stat(local.files.caKey)).mode & 0o777).toBe(0o600);
  });
});
