import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import type { NetworkInterfaceInfo } from 'node:os';
import * as x509 from '@peculiar/x509';
import { SoftwareCertificateAuthority } from '../../../functions/adapters/local/software-ca';
import { everyInterfaceServerNames, LocalConfigError, parseLocalModeConfig, resolveListenHost, usage, type HostSystem } from '../../../local/config';
import { serverCertificateProblem, type ServerCredentials } from '../../../local/data-dir';

const NOW = new Date('2026-03-01T00:00:00Z');
const DAY_MS = 86_400_000;

const ipv4 = (address: string, internal = false): NetworkInterfaceInfo => ({ address, netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal, cidr: `${address}/24` });
const ipv6 = (address: string, internal = false): NetworkInterfaceInfo => ({ address, netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal, cidr: `${address}/64`, scopeid: 0 });

/** A LAN machine: loopback, wired and Wi-Fi interfaces, a container bridge. */
const INTERFACES = {
  lo: [ipv4('127.0.0.1', true), ipv6('::1', true)],
  eth0: [ipv4('192.168.1.20'), ipv6('fe80::1')],
  wlan0: [ipv4('10.0.0.5'), ipv4('192.168.1.20')],
  docker0: [ipv4('172.17.0.1')],
};

function system(names: Record<string, string[]> = {}, machineName = 'MyBox'): HostSystem {
  return {
    lookup: async (name) => {
      const found = names[name];
      if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      return found;
    },
    networkInterfaces: () => INTERFACES,
    hostname: () => machineName,
  };
}

describe('--host and --api-host settings', () => {
  test.each([
    [['--host', '192.168.1.20'], {}, { host: '192.168.1.20' }],
    [['--host', 'MyBox.Local.'], {}, { host: 'mybox.local' }],
    [['--host', '0.0.0.0', '--api-host', 'localhost'], {}, { host: '0.0.0.0', apiHost: 'localhost' }],
    [[], { IOTCERT_HOST: 'mybox.local', IOTCERT_API_HOST: '192.168.1.20' }, { host: 'mybox.local', apiHost: '192.168.1.20' }],
  ])('accepts an IPv4 address, a DNS name (lower-cased, without a trailing dot) or 0.0.0.0: %j %j', (argv, env, expected) => {
    const config = parseLocalModeConfig(argv, env);

    expect(config).toMatchObject(expected);
  });

  test('leaves both unset by default (127.0.0.1), and --help names them', () => {
    const config = parseLocalModeConfig([], {});

    expect(config).not.toHaveProperty('host');
    expect(config).not.toHaveProperty('apiHost');
    expect(usage()).toContain('--host <value>');
    expect(usage()).toContain('--api-host <value>');
  });

  test.each([
    ['--host', 'mqtts://mybox:8883', '--host / IOTCERT_HOST "mqtts://mybox:8883": must be an IPv4 address of this machine (e.g. 192.168.1.20), a DNS name (e.g. mybox.local), or 0.0.0.0 (every interface)'],
    ['--host', '192.168.1', '--host / IOTCERT_HOST "192.168.1": must be an IPv4 address'],
    ['--host', '256.1.1.1', '--host / IOTCERT_HOST "256.1.1.1": must be an IPv4 address'],
    ['--host', 'my_box', '--host / IOTCERT_HOST "my_box": must be an IPv4 address'],
    ['--host', '-box.example', '--host / IOTCERT_HOST "-box.example": must be an IPv4 address'],
    ['--host', '', '--host / IOTCERT_HOST "": must be an IPv4 address'],
    ['--host', 'fd00::2', '--host / IOTCERT_HOST "fd00::2": IPv6 is not supported: give an IPv4 address, a DNS name, or 0.0.0.0'],
    ['--api-host', '[::1]', '--api-host / IOTCERT_API_HOST "[::1]": IPv6 is not supported'],
  ])('fails on %s=%j, naming the flag and the variable', (flag, value, message) => {
    expect(() => parseLocalModeConfig([`${flag}=${value}`], {})).toThrow(LocalConfigError);
    expect(() => parseLocalModeConfig([`${flag}=${value}`], {})).toThrow(message);
  });
});

describe('everyInterfaceServerNames: what the server certificate covers for --host 0.0.0.0', () => {
  test('the host name and <name>.local, every non-internal IPv4 address once, then localhost and 127.0.0.1', () => {
    expect(everyInterfaceServerNames(INTERFACES, 'MyBox')).toEqual(['mybox', 'mybox.local', '192.168.1.20', '10.0.0.5', '172.17.0.1', 'localhost', '127.0.0.1']);
  });

  test('a fully qualified host name is kept as it is, with no .local added', () => {
    expect(everyInterfaceServerNames(INTERFACES, 'box.lab.example.com.')).toEqual(['box.lab.example.com', '192.168.1.20', '10.0.0.5', '172.17.0.1', 'localhost', '127.0.0.1']);
  });

  test('leaves out a host name that is no DNS name, and works on a machine with loopback only', () => {
    expect(everyInterfaceServerNames({ lo: INTERFACES.lo }, 'my_box')).toEqual(['localhost', '127.0.0.1']);
  });

  test('the CA puts the addresses in IP entries and the names in DNS entries of the subjectAltName', async () => {
    // Prepare
    const { ca } = await SoftwareCertificateAuthority.create('LAN host test CA', { now: () => NOW });
    const keys = await newKeys();

    // Act
    const pem = await ca.issueServerCertificate(everyInterfaceServerNames(INTERFACES, 'MyBox'), keys.publicKey, 30);

    // Assess
    expect(new X509Certificate(pem).subjectAltName).toBe(
      'DNS:mybox, DNS:mybox.local, IP Address:192.168.1.20, IP Address:10.0.0.5, IP Address:172.17.0.1, DNS:localhost, IP Address:127.0.0.1',
    );
  });
});

describe('resolveListenHost: where to bind, checked against this machine before anything binds', () => {
  test('unset or 127.0.0.1: loopback, for localhost and 127.0.0.1', async () => {
    const expected = { bindAddress: '127.0.0.1', connectHost: '127.0.0.1', serverNames: ['localhost', '127.0.0.1'] };

    await expect(resolveListenHost('host', undefined, system())).resolves.toEqual(expected);
    await expect(resolveListenHost('host', '127.0.0.1', system())).resolves.toEqual(expected);
  });

  test('0.0.0.0: binds every interface, clients on this machine use 127.0.0.1, the certificate covers every LAN address and the host name', async () => {
    await expect(resolveListenHost('host', '0.0.0.0', system())).resolves.toEqual({
      bindAddress: '0.0.0.0',
      connectHost: '127.0.0.1',
      serverNames: ['mybox', 'mybox.local', '192.168.1.20', '10.0.0.5', '172.17.0.1', 'localhost', '127.0.0.1'],
    });
  });

  test('an address of this machine: binds it, and the certificate covers it', async () => {
    await expect(resolveListenHost('host', '192.168.1.20', system())).resolves.toEqual({
      bindAddress: '192.168.1.20',
      connectHost: '192.168.1.20',
      serverNames: ['192.168.1.20', 'localhost', '127.0.0.1'],
    });
  });

  test('a name: binds the first of its addresses that is this machine\'s; clients use the name, which the certificate covers with that address', async () => {
    const names = { 'mybox.local': ['203.0.113.9', '10.0.0.5'] };

    await expect(resolveListenHost('host', 'mybox.local', system(names))).resolves.toEqual({
      bindAddress: '10.0.0.5',
      connectHost: 'mybox.local',
      serverNames: ['mybox.local', '10.0.0.5', 'localhost', '127.0.0.1'],
    });
  });

  test('fails on an address that is not this machine\'s, naming the flag and listing the machine\'s addresses', async () => {
    const refused = resolveListenHost('host', '198.51.100.7', system());

    await expect(refused).rejects.toThrow(LocalConfigError);
    await expect(resolveListenHost('host', '198.51.100.7', system())).rejects.toThrow(
      '--host / IOTCERT_HOST "198.51.100.7": not an address of this machine (this machine\'s IPv4 addresses: 127.0.0.1, 192.168.1.20, 10.0.0.5, 172.17.0.1; or 0.0.0.0 for every interface)',
    );
  });

  test('fails on a name that does not resolve, or resolves elsewhere, naming the flag it came from', async () => {
    await expect(resolveListenHost('apiHost', 'nowhere.invalid', system())).rejects.toThrow('--api-host / IOTCERT_API_HOST "nowhere.invalid": does not resolve to an IPv4 address (ENOTFOUND)');
    await expect(resolveListenHost('host', 'elsewhere.example', system({ 'elsewhere.example': ['203.0.113.9'] }))).rejects.toThrow(
      '--host / IOTCERT_HOST "elsewhere.example": resolves to 203.0.113.9, not to an address of this machine',
    );
  });
});

describe('serverCertificateProblem: a saved server certificate is kept only while it suits', () => {
  let ca: SoftwareCertificateAuthority;
  let caPem: string;
  let saved: ServerCredentials;
  const required = (names: readonly string[], now = NOW, minRemainingDays = 10) => ({ caCertificatePem: caPem, names, now, minRemainingDays });

  beforeAll(async () => {
    ({ ca } = await SoftwareCertificateAuthority.create('LAN host test CA', { now: () => NOW }));
    caPem = (await ca.getCaCertificates()).certificatePem;
    saved = await issueServer(ca, ['localhost', '127.0.0.1', 'mybox.local']);
  });

  test('keeps one from the current CA, matching its key, covering every name and valid long enough', () => {
    expect(serverCertificateProblem(saved, required(['mybox.local', '127.0.0.1', 'localhost']))).toBeUndefined();
  });

  test.each([
    [['192.168.1.20'], 'it does not cover 192.168.1.20'],
    [['box.local', '127.0.0.1', '10.0.0.5'], 'it does not cover box.local, 10.0.0.5'],
    [['sub.mybox.local'], 'it does not cover sub.mybox.local'],
  ])('re-issues one that does not cover %j', (names, problem) => {
    expect(serverCertificateProblem(saved, required(names))).toBe(problem);
  });

  test('re-issues one signed by another CA (a new CA was made), one whose key does not match, and an unreadable one', async () => {
    const { ca: otherCa } = await SoftwareCertificateAuthority.create('Another CA', { now: () => NOW });
    const fromOtherCa = await issueServer(otherCa, ['localhost']);
    const otherKey = await issueServer(ca, ['localhost']);

    expect(serverCertificateProblem(fromOtherCa, required(['localhost']))).toBe('it was not issued by the current CA');
    expect(serverCertificateProblem({ ...saved, keyPem: otherKey.keyPem }, required(['localhost']))).toBe('it does not match its key');
    expect(serverCertificateProblem({ ...saved, certificatePem: 'not a certificate' }, required(['localhost']))).toBe('it is unreadable');
  });

  test('re-issues one with fewer days left than asked, and keeps it one day before that', () => {
    // The certificate is valid 30 days from NOW.
    expect(serverCertificateProblem(saved, required(['localhost'], new Date(NOW.getTime() + 20 * DAY_MS + 1)))).toBe('it expires on 2026-03-31T00:00:00.000Z');
    expect(serverCertificateProblem(saved, required(['localhost'], new Date(NOW.getTime() + 19 * DAY_MS)))).toBeUndefined();
  });
});

async function newKeys(): Promise<CryptoKeyPair> {
  const provider = webcrypto as unknown as Crypto;
  return (await provider.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function issueServer(ca: SoftwareCertificateAuthority, names: readonly string[]): Promise<ServerCredentials> {
  const keys = await newKeys();
  const certificatePem = await ca.issueServerCertificate(names, keys.publicKey, 30);
  const keyPem = x509.PemConverter.encode(await (webcrypto as unknown as Crypto).subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { keyPem, certificatePem };
}
