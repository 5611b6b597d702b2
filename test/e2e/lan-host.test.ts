import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { dataFiles, ensureDataDir, writeCaMaterial, writeServerCredentials } from '../../local/data-dir';
import { certificateIdOfFile, iotcert, run, tlsFilesOf, tool, type ToolResult } from './support/clients';
import { newDataDir, removeDataDir, runLocalModeProcess, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(120_000);

// The machine's rule: tests bind to 127.0.0.1 only. So --host is exercised with 127.0.0.1 and with a name
// that resolves to it (localhost); what 0.0.0.0 covers is a unit test (test/unit/local/lan-host.test.ts).

/** The server certificate's subjectAltName, as openssl prints it. */
async function subjectAltName(certificatePath: string): Promise<string> {
  const text = await tool('openssl', ['x509', '-in', certificatePath, '-noout', '-ext', 'subjectAltName']);
  return text.split('\n')[1]?.trim() ?? '';
}

/**
 * `openssl s_client` with no client certificate (so nothing registers): it verifies the server's chain
 * against the CA file and its name (`-verify_hostname`, with SNI) or address (`-verify_ip`).
 */
function verifyServer(port: number, caFile: string, check: { hostname: string } | { ip: string }): Promise<ToolResult> {
  const args = 'hostname' in check ? ['-connect', `localhost:${port}`, '-servername', check.hostname, '-verify_hostname', check.hostname] : ['-connect', `127.0.0.1:${port}`, '-verify_ip', check.ip];
  return run('openssl', ['s_client', ...args, '-CAfile', caFile, '-brief'], { input: '', timeoutMs: 15_000 });
}

/**
 * A new device's first two connects with `mosquitto_pub -h <host>` (which checks the host against the server
 * certificate): the first is refused while JITR registers the certificate; the second, once the log says it
 * is ACTIVATED, publishes.
 */
async function onboardVia(local: LocalModeProcess, host: string, deviceId: string): Promise<{ first: ToolResult; second: ToolResult }> {
  const out = join(local.dataDir, 'devices', deviceId);
  expect((await iotcert(['device', 'mint', '--id', deviceId, '--out', out], local.dataDir)).code).toBe(0);
  const tls = tlsFilesOf(out, local.files.caCertificate);
  const publish = () =>
    run('mosquitto_pub', ['--cafile', tls.cafile, '--cert', tls.cert, '--key', tls.key, '-h', host, '-p', String(local.mqtt.port), '-i', deviceId, '-t', `devices/${deviceId}/telemetry`, '-m', 'hello', '-q', '1'], {
      timeoutMs: 15_000,
    });
  const first = await publish();
  await local.waitForOutput(new RegExp(`certificate ${(await certificateIdOfFile(tls.cert)).slice(0, 12)}…: ACTIVATED`), 15_000);
  return { first, second: await publish() };
}

describe('npm start -- --host localhost: the MQTT endpoint for devices that connect by name', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--host', 'localhost'] });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('the banner and endpoints.json say where devices connect, which CA file they trust and who they must be', async () => {
    const output = local.output();

    expect(output).toContain(`MQTT over TLS   mqtts://localhost:${local.mqtt.port}`);
    expect(output).toContain('Devices on the LAN (guide: docs/devices.md)');
    expect(output).toContain(`connect to    localhost, port ${local.mqtt.port}, MQTT 3.1.1 over TLS`);
    expect(output).toContain(`server certificate ${local.files.serverCertificate} covers localhost, 127.0.0.1`);
    expect(output).toContain(`CA file       ${local.files.caCertificate}: copy it to the device`);
    expect(output).toContain("client id = thing name = the certificate's CN");
    expect(output).toContain('127.0.0.1 is a loopback address: only this machine can connect');
    expect(output).toContain('the API and CRL servers on 127.0.0.1 (--api-host moves the API)');
    expect(local.endpoints.mqtt).toEqual({
      host: 'localhost',
      port: local.mqtt.port,
      url: `mqtts://localhost:${local.mqtt.port}`,
      listenAddress: '127.0.0.1',
      serverNames: ['localhost', '127.0.0.1'],
    });
  });

  test('the server certificate carries the name, and openssl verifies the server by that name with SNI, or by address', async () => {
    const byName = await verifyServer(local.mqtt.port, local.files.caCertificate, { hostname: 'localhost' });
    const byAddress = await verifyServer(local.mqtt.port, local.files.caCertificate, { ip: '127.0.0.1' });
    const wrongName = await verifyServer(local.mqtt.port, local.files.caCertificate, { hostname: 'elsewhere.example' });

    expect(await subjectAltName(local.files.serverCertificate)).toBe('DNS:localhost, IP Address:127.0.0.1');
    expect(byName.stderr).toMatch(/Verification: OK\nVerified peername: localhost/);
    expect(byAddress.stderr).toContain('Verification: OK');
    expect(wrongName.stderr).toContain('hostname mismatch');
  });

  test('mosquitto_pub connecting to the name (checked against the certificate) onboards a device through JITR', async () => {
    const { first, second } = await onboardVia(local, 'localhost', 'by-name-1');

    // Refused once (JITR), then published; the device is ACTIVE.
    expect(first.stderr).toContain('The connection was lost');
    expect(second).toMatchObject({ code: 0, stderr: '' });
    expect((await local.api('GET', '/devices/by-name-1')).body).toMatchObject({ status: 'ACTIVE' });
  });
});

describe('npm start -- --host 127.0.0.1 on a data folder whose saved server certificate does not cover it', () => {
  let dataDir: string;
  let caPem: string;
  let local: LocalModeProcess | undefined;

  beforeAll(async () => {
    // Prepare: a data folder as an earlier start left it, but with a server certificate for another name only.
    dataDir = await newDataDir();
    const files = dataFiles(dataDir);
    await ensureDataDir(files);
    const { ca, material } = await SoftwareCertificateAuthority.create('iotcert local device CA');
    await writeCaMaterial(files, material);
    caPem = material.certificatePem;
    const provider = webcrypto as unknown as Crypto;
    const keys = (await provider.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    await writeServerCredentials(files, {
      certificatePem: await ca.issueServerCertificate(['elsewhere.example'], keys.publicKey, 30),
      keyPem: x509.PemConverter.encode(await provider.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    });
  });

  afterAll(async () => {
    await local?.stop();
    await removeDataDir(dataDir);
  });

  test('re-issues the server certificate for the address (keeping the CA), which openssl and mosquitto then verify', async () => {
    // Act
    local = await startLocalModeProcess({ dataDir, extraArgs: ['--host', '127.0.0.1', '--api-host', '127.0.0.1'] });

    // Assess
    expect(local.output()).toContain(
      `issued the MQTT server certificate for localhost, 127.0.0.1, 30 days: ${local.files.serverCertificate} (the saved one could not serve: it does not cover localhost, 127.0.0.1; the CA is unchanged)`,
    );
    expect(await subjectAltName(local.files.serverCertificate)).toBe('DNS:localhost, IP Address:127.0.0.1');
    expect(await readFile(local.files.caCertificate, 'utf8')).toBe(caPem);
    expect((await verifyServer(local.mqtt.port, local.files.caCertificate, { ip: '127.0.0.1' })).stderr).toContain('Verification: OK');
    expect(local.output()).toContain(`connect to    127.0.0.1, port ${local.mqtt.port}`);
    const { second } = await onboardVia(local, '127.0.0.1', 'by-address-1');
    expect(second).toMatchObject({ code: 0, stderr: '' });
  });

  test('keeps the saved server certificate at the next start when it covers the host', async () => {
    // Prepare
    const before = await readFile(dataFiles(dataDir).serverCertificate, 'utf8');
    await local?.stop();
    local = undefined;

    // Act
    local = await startLocalModeProcess({ dataDir, extraArgs: ['--host', '127.0.0.1'] });

    // Assess
    expect(await readFile(local.files.serverCertificate, 'utf8')).toBe(before);
    expect(local.output()).not.toContain('issued the MQTT server certificate');
  });
});

describe('npm start refuses a --host / --api-host this machine cannot serve, before touching anything', () => {
  let dataDir: string;

  beforeAll(async () => {
    dataDir = await newDataDir();
  });

  afterAll(async () => {
    await removeDataDir(dataDir);
  });

  test.each([
    [['--host', 'not_a_host'], '--host / IOTCERT_HOST "not_a_host": must be an IPv4 address of this machine (e.g. 192.168.1.20), a DNS name (e.g. mybox.local), or 0.0.0.0 (every interface)'],
    [['--host', 'fd00::2'], '--host / IOTCERT_HOST "fd00::2": IPv6 is not supported'],
    // TEST-NET-2: on no interface of this machine (checked before binding: nothing binds to it).
    [['--host', '198.51.100.7'], '--host / IOTCERT_HOST "198.51.100.7": not an address of this machine (this machine\'s IPv4 addresses: 127.0.0.1'],
    // .invalid never resolves (RFC 6761).
    [['--api-host', 'nowhere.invalid'], '--api-host / IOTCERT_API_HOST "nowhere.invalid": does not resolve to an IPv4 address'],
  ])('fails on %j with exit code 2 and a message naming the flag', async (args, message) => {
    const refused = await runLocalModeProcess({ dataDir, extraArgs: args, readyTimeoutMs: 30_000 });

    expect(refused.becameReady).toBe(false);
    expect(refused.code).toBe(2);
    expect(refused.output).toContain(message);
    expect(await readdir(dataDir)).toEqual([]);
  });
});
