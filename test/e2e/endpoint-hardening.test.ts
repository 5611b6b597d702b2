import { readdir, readFile } from 'node:fs/promises';
import { connect as tcpConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { X509Crl } from '@peculiar/x509';
import { deviceFiles } from '../../local/cli/device';
import { HANDSHAKE_TIMEOUT_VARIABLE } from '../../local/iot-core/limits';
import { certificateIdOfFile, iotcert, run, tool } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(120_000);

/** Short, so the tests wait for closes in seconds; the default is 10 s. */
const HANDSHAKE_TIMEOUT_MS = 2_000;
/** A close must come well before the 10-second default would have closed it. */
const CLOSED_WELL_BEFORE_MS = 8_000;

/** Resolves with the milliseconds until the socket closed, or `undefined` if it is still open after `timeoutMs`. */
function closedWithin(socket: Socket, timeoutMs: number): Promise<number | undefined> {
  const started = Date.now();
  if (socket.destroyed) return Promise.resolve(0);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

function openTcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** A TLS connection with a device's certificate, handshake done. */
async function openTls(port: number, dir: string): Promise<TLSSocket> {
  const files = deviceFiles(dir);
  const [key, cert, ca] = await Promise.all([readFile(files.key), readFile(files.certificate), readFile(files.ca)]);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, key, cert, ca }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** An MQTT remaining length (variable byte integer). */
function remainingLength(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    bytes.push(byte);
  } while (rest > 0);
  return Buffer.from(bytes);
}

const utf8Field = (value: string): Buffer => {
  const bytes = Buffer.from(value);
  return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
};

/** An MQTT 3.1.1 CONNECT: clean session, no will, no credentials. */
function connectPacket(clientId: string): Buffer {
  const body = Buffer.concat([utf8Field('MQTT'), Buffer.from([4, 0x02, 0, 60]), utf8Field(clientId)]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** The first `length` bytes the socket receives. */
function receive(socket: Socket, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < length) return;
      socket.off('data', onData);
      resolve(received.subarray(0, length));
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed after ${received.length} of ${length} bytes`)));
  });
}

/** Writes chunks until the socket closes or `maxBytes` are written, honouring backpressure; answers what was written. */
async function streamUntilClosed(socket: Socket, chunk: Buffer, maxBytes: number): Promise<number> {
  const closed = new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
  let written = 0;
  while (written < maxBytes && !socket.destroyed && socket.writable) {
    const flushed = socket.write(chunk);
    written += chunk.length;
    if (!flushed) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), closed]);
  }
  return written;
}

/** A raw HTTP/1.1 exchange: what the server answers to `request`, read until it closes the connection. */
function rawHttp(port: number, request: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1', () => socket.write(request));
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('utf8')));
    socket.once('error', (error) => (received ? undefined : reject(error)));
    socket.once('close', () => {
      const [head = '', body = ''] = received.split('\r\n\r\n', 2);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head, body });
    });
  });
}

const rssBytes = async (pid: number): Promise<number> => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
const openFiles = async (pid: number): Promise<number> => (await readdir(`/proc/${pid}/fd`)).length;
const median = (values: readonly number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

describe('local mode: the endpoint holds against hostile clients', () => {
  let local: LocalModeProcess;
  /** A device enrolled through the API: its certificate is ACTIVE, so its connections get past the registry. */
  let deviceDir: string;

  beforeAll(async () => {
    process.env[HANDSHAKE_TIMEOUT_VARIABLE] = String(HANDSHAKE_TIMEOUT_MS);
    try {
      local = await startLocalModeProcess();
    } finally {
      delete process.env[HANDSHAKE_TIMEOUT_VARIABLE];
    }
    deviceDir = join(local.dataDir, 'devices', 'hardening-1');
    expect((await iotcert(['device', 'enroll', '--id', 'hardening-1', '--out', deviceDir], local.dataDir)).code).toBe(0);
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  describe('the CRL', () => {
    const fetchCrls = async (count: number) => {
      const started = Date.now();
      const timed = await Promise.all(
        Array.from({ length: count }, async () => {
          const requestStarted = Date.now();
          const der = Buffer.from(await (await fetch(local.endpoints.crl.derUrl)).arrayBuffer());
          return { der, ms: Date.now() - requestStarted };
        }),
      );
      return { ders: timed.map((each) => each.der), medianMs: median(timed.map((each) => each.ms)), totalMs: Date.now() - started };
    };

    test('is signed once per revocation: 50 concurrent fetches get the same bytes until a revocation, then one new CRL listing it', async () => {
      // Prepare: a second device, whose certificate is revoked in the middle.
      const dir = join(local.dataDir, 'devices', 'crl-1');
      expect((await iotcert(['device', 'enroll', '--id', 'crl-1', '--out', dir], local.dataDir)).code).toBe(0);
      const certificateId = await certificateIdOfFile(deviceFiles(dir).certificate);
      const serial = ((await tool('openssl', ['x509', '-in', deviceFiles(dir).certificate, '-noout', '-serial'])).trim().split('=')[1] as string).toLowerCase();

      // Act
      const before = await fetchCrls(50);
      const revoked = await local.api('POST', `/devices/crl-1/certificates/${certificateId}/revoke`, { reason: 'KEY_COMPROMISE' });
      const after = await fetchCrls(50);
      const pem = await (await fetch(local.endpoints.crl.pemUrl)).text();

      // Assess
      expect(revoked.status).toBe(200);
      expect(new Set(before.ders.map((der) => der.toString('hex'))).size).toBe(1);
      expect(new Set(after.ders.map((der) => der.toString('hex'))).size).toBe(1);
      const [crlBefore, crlAfter] = [new X509Crl(new Uint8Array(before.ders[0] as Buffer)), new X509Crl(new Uint8Array(after.ders[0] as Buffer))];
      expect(crlBefore.entries.map((entry) => entry.serialNumber.toLowerCase())).not.toContain(serial);
      expect(crlAfter.entries.map((entry) => entry.serialNumber.toLowerCase())).toContain(serial);
      expect(new X509Crl(pem).rawData).toEqual(crlAfter.rawData); // the PEM is the same CRL
      console.log(`CRL, 50 concurrent fetches: median ${before.medianMs} ms (all in ${before.totalMs} ms); after a revocation: median ${after.medianMs} ms (all in ${after.totalMs} ms)`);
    });
  });

  describe('connections that never finish their handshake', () => {
    test('closes TCP connections that never start TLS within the handshake timeout', async () => {
      // Prepare
      const openBefore = await openFiles(local.pid);

      // Act
      const sockets = await Promise.all(Array.from({ length: 50 }, () => openTcp(local.mqtt.port)));
      const closedAfterMs = await Promise.all(sockets.map((socket) => closedWithin(socket, 30_000)));

      // Assess
      expect(closedAfterMs.filter((ms) => ms === undefined || ms > CLOSED_WELL_BEFORE_MS)).toEqual([]);
      await local.waitForOutput(new RegExp(`127\\.0\\.0\\.1:\\d+: no TLS handshake within ${HANDSHAKE_TIMEOUT_MS} ms, connection closed`));
      expect(await openFiles(local.pid)).toBeLessThanOrEqual(openBefore + 5);
    });

    test('closes a connection that trickles its TLS ClientHello a byte at a time', async () => {
      // Prepare: the start of a ClientHello record (handshake, TLS 1.0 record version, 512 bytes to come).
      const socket = await openTcp(local.mqtt.port);
      const hello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), Buffer.alloc(501, 0x2a)]);
      let sent = 0;
      const trickle = setInterval(() => {
        if (!socket.destroyed && sent < hello.length) socket.write(hello.subarray(sent, ++sent));
      }, 200);

      // Act
      const closedAfterMs = await closedWithin(socket, 30_000);
      clearInterval(trickle);

      // Assess: bytes still arriving do not extend the handshake's time.
      expect(closedAfterMs).toBeDefined();
      expect(closedAfterMs).toBeLessThan(CLOSED_WELL_BEFORE_MS);
      expect(sent).toBeGreaterThan(0);
    });

    test('closes a connection that completes TLS with an active certificate but never sends CONNECT', async () => {
      // Act
      const socket = await openTls(local.mqtt.port, deviceDir);
      const closedAfterMs = await closedWithin(socket, 30_000);

      // Assess
      expect(closedAfterMs).toBeDefined();
      expect(closedAfterMs).toBeLessThan(CLOSED_WELL_BEFORE_MS);
      await local.waitForOutput(new RegExp(`127\\.0\\.0\\.1:\\d+: no MQTT CONNECT within ${HANDSHAKE_TIMEOUT_MS} ms of the TLS handshake, connection closed`));
    });
  });

  describe('oversized packets', () => {
    const declared = 200 * 1024 * 1024;
    /** A PUBLISH fixed header declaring `declared` bytes, its topic, and the first bytes of its payload. */
    const publishStart = Buffer.concat([Buffer.from([0x30]), remainingLength(declared), utf8Field('devices/hardening-1/telemetry'), Buffer.alloc(4 * 1024, 0x61)]);

    test.each([
      ['a PUBLISH after an accepted CONNECT', true, 'PUBLISH'],
      ['a CONNECT, before any authentication', false, 'CONNECT'],
    ])('refuses %s declaring 200 MB from its fixed header, closing the connection before buffering it', async (_name, connectFirst, packetType) => {
      // Prepare
      const socket = await openTls(local.mqtt.port, deviceDir);
      if (connectFirst) {
        socket.write(connectPacket('hardening-1'));
        expect([...(await receive(socket, 4))]).toEqual([0x20, 0x02, 0x00, 0x00]); // CONNACK, accepted
      }
      const rssBefore = await rssBytes(local.pid);
      const header = connectFirst ? publishStart : Buffer.concat([Buffer.from([0x10]), remainingLength(declared), Buffer.alloc(4 * 1024, 0x61)]);

      // Act: the header and a few KB, then more until the server hangs up (it would need 200 MB to finish the packet).
      socket.write(header);
      const closed = closedWithin(socket, 20_000);
      const streamed = await streamUntilClosed(socket, Buffer.alloc(64 * 1024, 0x62), 32 * 1024 * 1024);
      const closedAfterMs = await closed;

      // Assess
      expect(closedAfterMs).toBeDefined();
      await local.waitForOutput(new RegExp(`${packetType} declaring ${declared} bytes refused, connection closed`), 5_000);
      const rssAfter = await rssBytes(local.pid);
      expect(rssAfter - rssBefore).toBeLessThan(64 * 1024 * 1024);
      console.log(`${packetType} declaring 200 MB: closed after ${closedAfterMs} ms, ${(streamed / 1024).toFixed(0)} KiB written by then; server RSS ${(rssBefore / 2 ** 20).toFixed(0)} → ${(rssAfter / 2 ** 20).toFixed(0)} MiB`);
    });
  });

  describe('TLS cipher suites', () => {
    const sClient = (args: readonly string[]) => {
      const files = deviceFiles(deviceDir);
      return run('openssl', ['s_client', '-connect', `127.0.0.1:${local.mqtt.port}`, '-cert', files.certificate, '-key', files.key, '-CAfile', files.ca, '-brief', ...args], { input: '' });
    };

    test.each(['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-ECDSA-AES128-CCM8', 'ECDHE-ECDSA-AES128-CCM', 'ECDHE-ECDSA-ARIA128-GCM-SHA256'])(
      'refuses a TLS 1.2 client offering only %s',
      async (suite) => {
        const result = await sClient(['-tls1_2', '-cipher', suite]);

        expect(result.code).not.toBe(0);
        expect(result.stderr).toMatch(/alert handshake failure/); // the server refused: the client did offer it
      },
    );

    test.each(['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305'])('accepts a TLS 1.2 client offering %s', async (suite) => {
      const result = await sClient(['-tls1_2', '-cipher', suite]);

      expect(result.code).toBe(0);
      expect(`${result.stdout}${result.stderr}`).toMatch(new RegExp(`Ciphersuite: ${suite}\\b`));
    });

    test('still negotiates TLS 1.3', async () => {
      const result = await sClient(['-tls1_3']);

      expect(result.code).toBe(0);
      expect(`${result.stdout}${result.stderr}`).toMatch(/Protocol version: TLSv1\.3/);
    });
  });

  describe('the API and CRL servers', () => {
    test('never write the API token into the log, whatever part of a request carries it', async () => {
      // Prepare
      const apiPort = Number(new URL(local.endpoints.api.url).port);
      const logged = local.occurrences('[api] ');

      // Act: the token in a query string, with and without the header; in an absolute-form target; in a request Node cannot parse.
      const withoutHeader = await fetch(`${local.endpoints.api.url}/devices?access_token=${local.token}`, { method: 'POST', body: '{}' });
      const withHeader = await fetch(`${local.endpoints.api.url}/devices/hardening-1?access_token=${local.token}`, { headers: { Authorization: `Bearer ${local.token}` } });
      const absolute = await rawHttp(apiPort, `GET http://user:${local.token}@127.0.0.1:${apiPort}/devices?token=${local.token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      const malformed = await rawHttp(apiPort, `GET /devices?access_token=${local.token} HTTP/1.1 ${local.token}\r\n\r\n`);
      await local.waitForOccurrences('[api] ', logged + 3);

      // Assess
      expect([withoutHeader.status, withHeader.status, absolute.status, malformed.status]).toEqual([401, 200, 401, 400]);
      expect(local.output()).toMatch(/\[api\] POST \/devices\?… → 401/);
      expect(local.output()).not.toContain(local.token);
    });

    const bigHeader = `X-Filler: ${'a'.repeat(20_000)}`;
    test.each([
      { server: 'API', name: 'a malformed request line', request: 'NOT-HTTP /devices\r\n\r\n', status: 400, code: 'INVALID_REQUEST' },
      { server: 'API', name: 'a request line with a bad version', request: 'GET /devices HTTP/9\r\nHost: x\r\n\r\n', status: 400, code: 'INVALID_REQUEST' },
      { server: 'API', name: 'headers over 16 KB', request: `GET /devices HTTP/1.1\r\nHost: x\r\n${bigHeader}\r\n\r\n`, status: 431, code: 'PAYLOAD_TOO_LARGE' },
      { server: 'CRL', name: 'a malformed request line', request: 'NOT-HTTP /crl\r\n\r\n', status: 400, code: 'INVALID_REQUEST' },
      { server: 'CRL', name: 'headers over 16 KB', request: `GET /crl HTTP/1.1\r\nHost: x\r\n${bigHeader}\r\n\r\n`, status: 431, code: 'PAYLOAD_TOO_LARGE' },
      { server: 'CRL', name: 'an unknown path', request: 'GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', status: 404, code: 'ROUTE_NOT_FOUND' },
      { server: 'CRL', name: 'a method other than GET and HEAD', request: 'DELETE /crl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', status: 405, code: 'METHOD_NOT_ALLOWED' },
    ])('the $server server answers $name with $status and a JSON error body', async ({ server, request, status, code }) => {
      const url = server === 'API' ? local.endpoints.api.url : local.endpoints.crl.derUrl;

      const answer = await rawHttp(Number(new URL(url).port), request);

      expect(answer.status).toBe(status);
      expect(answer.headers).toMatch(/^Content-Type: application\/json/im);
      expect(JSON.parse(answer.body)).toEqual({ error: { code, message: expect.any(String) } });
    });
  });
});
