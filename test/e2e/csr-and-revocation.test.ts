import 'reflect-metadata';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { connectOnce, readDeviceTls } from '../../local/cli/device';
import { certificateIdOfFile, closesWithin, iotcert, mosquittoPub, mosquittoPubUntilAccepted, run, tlsFilesOf, tool } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(120_000);

interface IssuedCertificate {
  certificateId: string;
  certificatePem: string;
  certificateChainPem: string;
  notAfter: string;
}

describe('local mode: CSR signing through the API and revocation', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess();
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('a CSR made by the openssl CLI is signed through the API, passes openssl verify against .local/ca.pem, and connects at once with mosquitto_pub', async () => {
    // Prepare: key and CSR with openssl, the device pre-registered through the API.
    const dir = join(local.dataDir, 'devices', 'openssl-1');
    await mkdir(dir, { recursive: true });
    const [key, csr, certificate] = ['device.key', 'device.csr', 'device.pem'].map((name) => join(dir, name)) as [string, string, string];
    await tool('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=openssl-1']);
    const created = await local.api('POST', '/devices', { deviceId: 'openssl-1' });

    // Act
    const signed = await local.api('POST', '/devices/openssl-1/certificates', { csr: await readFile(csr, 'utf8') });
    const issued = signed.body as IssuedCertificate;
    await writeFile(certificate, issued.certificatePem);
    const verified = await tool('openssl', ['verify', '-CAfile', local.files.caCertificate, certificate]);
    const published = await mosquittoPub(tlsFilesOf(dir, local.files.caCertificate), local.mqtt.port, 'openssl-1', 'devices/openssl-1/telemetry', 'signed via the API');

    // Assess
    expect(created.status).toBe(201);
    expect(signed.status).toBe(201);
    expect(issued.certificateId).toBe(await certificateIdOfFile(certificate));
    expect(verified.trim()).toBe(`${certificate}: OK`);
    expect(await tool('openssl', ['x509', '-in', certificate, '-noout', '-subject'])).toMatch(/CN\s*=\s*openssl-1/);
    expect(published.code).toBe(0); // ACTIVE at once: no JITR refusal for a certificate signed through the API
    const { body } = await local.api('GET', '/devices/openssl-1');
    expect(body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: issued.certificateId, status: 'ACTIVE', source: 'CSR' }] });
  });

  test('iotcert device enroll gets a certificate through the API that connects on the first attempt', async () => {
    const dir = join(local.dataDir, 'devices', 'enrolled-1');

    const enrolled = await iotcert(['device', 'enroll', '--id', 'enrolled-1', '--out', dir], local.dataDir);
    const connected = await iotcert(['device', 'connect', '--id', 'enrolled-1', '--dir', dir], local.dataDir);

    expect(enrolled.code).toBe(0);
    expect(await tool('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, 'device.pem')])).toContain('OK');
    expect(connected.code).toBe(0);
    expect(connected.stdout).toContain('attempt 1: connected');
  });

  test('revoking through the API refuses the next connect, closes the live connection, and puts the serial on the CRL served over HTTP', async () => {
    // Prepare: a factory-minted device, onboarded by JITR and connected (MQTT.js) while we revoke.
    const dir = join(local.dataDir, 'devices', 'revoked-1');
    expect((await iotcert(['device', 'mint', '--id', 'revoked-1', '--out', dir], local.dataDir)).code).toBe(0);
    const tls = tlsFilesOf(dir, local.files.caCertificate);
    expect((await mosquittoPubUntilAccepted(tls, local.mqtt.port, 'revoked-1', 'devices/revoked-1/telemetry', 'before')).at(-1)?.code).toBe(0);
    const certificateId = await certificateIdOfFile(tls.cert);
    const serial = (await tool('openssl', ['x509', '-in', tls.cert, '-noout', '-serial'])).trim().split('=')[1] as string;
    const live = await connectOnce(local.mqtt, 'revoked-1', await readDeviceTls(dir));

    // Act
    const revokedAt = Date.now();
    const revoked = await local.api('POST', `/devices/revoked-1/certificates/${certificateId}/revoke`, { reason: 'KEY_COMPROMISE' });
    const liveClosed = closesWithin(live, 5_000);
    const after = await mosquittoPub(tls, local.mqtt.port, 'revoked-1', 'devices/revoked-1/telemetry', 'after');
    const refusedAfterMs = Date.now() - revokedAt;

    // Assess: the registry status decides at the next connect, and the live connection is dropped.
    expect(revoked.body).toMatchObject({ certificateId, status: 'REVOKED', revocationReason: 'KEY_COMPROMISE' });
    expect(after.code).not.toBe(0);
    await expect(local.waitForOutput(new RegExp(`certificate ${certificateId.slice(0, 12)}… refused, connection closed: the certificate is REVOKED`), 5_000)).resolves.toBeUndefined();
    expect(await liveClosed).toBe(true);
    console.log(`revoke → refused connect: ${refusedAfterMs} ms (API call + one mosquitto_pub)`);

    // The CRL, fetched over HTTP, lists the serial: DER read by openssl, PEM read by @peculiar/x509, both signed by the CA.
    const der = Buffer.from(await (await fetch(local.endpoints.crl.derUrl)).arrayBuffer());
    const crlDer = join(dir, 'crl.der');
    await writeFile(crlDer, der);
    const text = await tool('openssl', ['crl', '-inform', 'DER', '-in', crlDer, '-noout', '-text']);
    expect(text).toContain(`Serial Number: ${serial.toUpperCase()}`);
    expect(text).toContain('Key Compromise');
    const verifiedCrl = await run('openssl', ['crl', '-inform', 'DER', '-in', crlDer, '-CAfile', local.files.caCertificate, '-noout']);
    expect(verifiedCrl).toMatchObject({ code: 0, stderr: expect.stringMatching(/verify OK/) });
    const crlPem = await (await fetch(local.endpoints.crl.pemUrl)).text();
    const crlPemFile = join(dir, 'crl.pem');
    await writeFile(crlPemFile, crlPem);
    expect(crlPem).toMatch(/^-----BEGIN X509 CRL-----/);
    expect(await tool('openssl', ['crl', '-in', crlPemFile, '-noout', '-text'])).toContain(`Serial Number: ${serial.toUpperCase()}`);
    const crl = new x509.X509Crl(crlPem);
    expect(crl.entries.map((entry) => entry.serialNumber.toLowerCase())).toContain(serial.toLowerCase());
    expect(await crl.verify({ publicKey: await new x509.X509Certificate(await readFile(local.files.caCertificate, 'utf8')).publicKey.export() })).toBe(true);

    // The certificate names where its CRL is.
    expect(await tool('openssl', ['x509', '-in', tls.cert, '-noout', '-ext', 'crlDistributionPoints'])).toContain(local.endpoints.crl.derUrl);

    // One JSON line per revocation, appended.
    const lines = (await readFile(local.files.revocations, 'utf8')).trim().split('\n');
    expect(lines.map((line) => JSON.parse(line).serialNumber)).toContain(serial.toLowerCase());
  });
});
