import 'reflect-metadata';
import { readFile } from 'node:fs/promises';
import { X509Crl } from '@peculiar/x509';
import { join } from 'node:path';
import { certificateIdOfFile, iotcert, mosquittoPub, mosquittoPubUntilAccepted, tlsFilesOf } from './support/clients';
import { newDataDir, removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(240_000);

/**
 * `npm start` as a developer runs it: its own DynamoDB Local with files under the data folder.
 * A stop with Ctrl-C (SIGINT) and a start again keep every device, certificate status and revocation.
 */
describe('local mode: a restart keeps every device and certificate', () => {
  let dataDir: string;
  let local: LocalModeProcess | undefined;

  beforeAll(async () => {
    dataDir = await newDataDir();
  });

  afterAll(async () => {
    await local?.stop();
    await removeDataDir(dataDir);
  });

  test('devices onboarded before a Ctrl-C (one of them revoked, one still registering) are as they were after the next start', async () => {
    // Prepare: a first run with a JITR device, an API-enrolled device that gets revoked, and a device whose first connect comes just before the stop.
    local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true });
    const firstStartupMs = local.startupMs;
    const caPem = await readFile(local.files.caCertificate, 'utf8');
    const token = local.token;
    const dirOf = (id: string) => join(dataDir, 'devices', id);
    for (const id of ['kept-1', 'late-1']) expect((await iotcert(['device', 'mint', '--id', id, '--out', dirOf(id)], dataDir)).code).toBe(0);
    expect((await iotcert(['device', 'enroll', '--id', 'revoked-1', '--out', dirOf('revoked-1')], dataDir)).code).toBe(0);
    const tls = (id: string) => tlsFilesOf(dirOf(id), local!.files.caCertificate);
    expect((await mosquittoPubUntilAccepted(tls('kept-1'), local.mqtt.port, 'kept-1', 'devices/kept-1/telemetry', 'first run')).at(-1)?.code).toBe(0);
    const revokedId = await certificateIdOfFile(tls('revoked-1').cert);
    await local.api('POST', `/devices/revoked-1/certificates/${revokedId}/revoke`, { reason: 'SUPERSEDED' });
    const crlBefore = await (await fetch(local.endpoints.crl.pemUrl)).text();
    const registering = await mosquittoPub(tls('late-1'), local.mqtt.port, 'late-1', 'devices/late-1/telemetry', 'just before the stop');
    expect(registering.code).not.toBe(0); // the JITR refusal: its registration is now in flight, and the stop below drains it

    // Act: Ctrl-C, then start again on the same data folder.
    const stopped = await local.stop('SIGINT');
    local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true });

    // Assess: a clean stop, then the same CA, token and registry.
    expect(stopped.code).toBe(0);
    expect(stopped.output).toMatch(/stopped cleanly/);
    expect(await readFile(local.files.caCertificate, 'utf8')).toBe(caPem);
    expect(local.token).toBe(token);
    const keptFirstTry = await mosquittoPub(tls('kept-1'), local.mqtt.port, 'kept-1', 'devices/kept-1/telemetry', 'second run');
    expect(keptFirstTry.code).toBe(0); // still ACTIVE: no second JITR
    const revokedTry = await mosquittoPub(tls('revoked-1'), local.mqtt.port, 'revoked-1', 'devices/revoked-1/telemetry', 'second run');
    expect(revokedTry.code).not.toBe(0);
    await expect(local.waitForOutput(/refused, connection closed: the certificate is REVOKED/, 5_000)).resolves.toBeUndefined();
    const lateTries = await mosquittoPubUntilAccepted(tls('late-1'), local.mqtt.port, 'late-1', 'devices/late-1/telemetry', 'second run');
    expect(lateTries.at(-1)?.code).toBe(0); // its registration was finished before the stop, or delivered again at the start

    const kept = (await local.api('GET', '/devices/kept-1')).body;
    expect(kept).toMatchObject({ status: 'ACTIVE', certificates: [{ status: 'ACTIVE', source: 'JITR' }] });
    const revoked = (await local.api('GET', '/devices/revoked-1')).body;
    expect(revoked).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: revokedId, status: 'REVOKED', revocationReason: 'SUPERSEDED' }] });
    const late = (await local.api('GET', '/devices/late-1')).body;
    expect(late).toMatchObject({ status: 'ACTIVE', certificates: [{ status: 'ACTIVE' }] });
    const crlAfter = await (await fetch(local.endpoints.crl.pemUrl)).text();
    expect(crlAfter).not.toBe(''); // re-signed at each fetch, so compare the entries
    expect(serialsOf(crlAfter)).toEqual(serialsOf(crlBefore));
    expect(serialsOf(crlAfter)).toHaveLength(1);

    console.log(`startup with DynamoDB Local: first ${firstStartupMs} ms, restart ${local.startupMs} ms (process spawn to ready)`);
  });
});

function serialsOf(crlPem: string): string[] {
  return new X509Crl(crlPem).entries.map((entry) => entry.serialNumber.toLowerCase());
}
