import { createHash, createHmac } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeKeyAndCsr } from '../../../local/cli/device';
import { DeviceApiClient, RequestPacer } from '../../../local/cli/factory-client';
import { TerminalProgress, type ItemEvent, type Progress } from '../../../local/cli/factory-progress';
import { CsrFileError, factoryMain, preregisterManifest, readCsrFile, readManifest, SIGN_REPORT_FILE, signCsrDirectory, signingKey } from '../../../local/cli/factory';

/**
 * The factory runs against a fake device API on 127.0.0.1 that checks every request's SigV4 signature from
 * the bytes it received (so what is signed is what is sent), scripts throttling and refusals, and answers a
 * replayed Idempotency-Key with its first answer, as the real API does.
 */

const CREDENTIALS = { accessKeyId: 'AKIAFACTORYEXAMPLE', secretAccessKey: 'factory/secret/EXAMPLEKEY' };
const REGION = 'eu-west-1';

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

/** Checks a received request's SigV4 signature, from the specification; answers why it is wrong, or undefined. */
function signatureProblem(request: IncomingMessage, body: string): string | undefined {
  const authorization = request.headers.authorization ?? '';
  const match = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$/.exec(authorization);
  if (!match) return `not a SigV4 Authorization header: ${authorization}`;
  const [, accessKeyId, day, region, service, signedHeaderList, signature] = match as unknown as string[];
  const signed = (signedHeaderList as string).split(';');
  if (accessKeyId !== CREDENTIALS.accessKeyId || region !== REGION || service !== 'execute-api') return 'wrong scope';
  if (!signed.includes('host') || !signed.includes('x-amz-date')) return 'host and x-amz-date must be signed';
  const amzDate = String(request.headers['x-amz-date']);
  const path = (request.url ?? '/').split('?')[0] as string;
  const canonicalUri = path
    .split('/')
    .map((segment) => encodeURIComponent(segment))
    .join('/');
  const canonicalHeaders = signed.map((name) => `${name}:${String(request.headers[name] ?? '').trim()}\n`).join('');
  const canonicalRequest = [request.method, canonicalUri, '', canonicalHeaders, signed.join(';'), sha256(body)].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, `${day}/${region}/${service}/aws4_request`, sha256(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${CREDENTIALS.secretAccessKey}`, day as string), region as string), service as string), 'aws4_request');
  const expected = createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
  return expected === signature ? undefined : 'signature does not match';
}

interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly idempotencyKey: string;
  readonly body: string;
  readonly authorization: string;
}

interface FakeApi {
  readonly url: URL;
  readonly seen: SeenRequest[];
  /** The most requests handled at once. */
  maxInFlight: number;
  /** Scripted answers by path, consumed in order; a path with none left gets the normal answer. */
  readonly script: Map<string, { status: number; code: string; headers?: Record<string, string> }[]>;
  auth: 'sigv4' | 'token' | 'refuse';
  close(): Promise<void>;
}

async function startFakeApi(): Promise<FakeApi> {
  const byKey = new Map<string, { status: number; body: unknown }>();
  const devices = new Set<string>();
  let inFlight = 0;
  let serial = 0;
  const api: FakeApi = {
    url: new URL('http://127.0.0.1/'),
    seen: [],
    maxInFlight: 0,
    script: new Map(),
    auth: 'sigv4',
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      inFlight += 1;
      api.maxInFlight = Math.max(api.maxInFlight, inFlight);
      const body = Buffer.concat(chunks).toString('utf8');
      const path = request.url ?? '/';
      const key = String(request.headers['idempotency-key'] ?? '');
      api.seen.push({ method: request.method ?? '', path, idempotencyKey: key, body, authorization: request.headers.authorization ?? '' });
      const answer = (status: number, payload: unknown, headers: Record<string, string> = {}) =>
        setTimeout(() => {
          inFlight -= 1;
          response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(payload));
        }, 15);
      if (api.auth === 'refuse') return answer(403, { error: { code: 'UNAUTHORIZED', message: 'Missing or invalid authentication' } });
      const problem = api.auth === 'sigv4' ? signatureProblem(request, body) : request.headers.authorization === 'Bearer local-token' ? undefined : 'bad token';
      if (problem) return answer(403, { error: { code: 'UNAUTHORIZED', message: problem } });
      const scripted = api.script.get(path)?.shift();
      if (scripted) return answer(scripted.status, { error: { code: scripted.code, message: `scripted ${scripted.code}` } }, scripted.headers);
      const replay = byKey.get(key);
      if (replay) return answer(replay.status, replay.body);
      let result: { status: number; body: unknown };
      if (path === '/v1/devices') {
        const { deviceId, attributes } = JSON.parse(body) as { deviceId: string; attributes?: Record<string, string> };
        result = devices.has(deviceId) ? { status: 409, body: { error: { code: 'DEVICE_ALREADY_EXISTS', message: `Device ${deviceId} already exists.` } } } : { status: 201, body: { deviceId, status: 'REGISTERED', attributes: attributes ?? {} } };
        devices.add(deviceId);
        if (result.status === 409) return answer(result.status, result.body); // failures are not replayed
      } else {
        serial += 1;
        result = { status: 201, body: { certificateId: sha256(`certificate-${serial}`), certificatePem: `-----BEGIN CERTIFICATE-----\nFAKE${serial}\n-----END CERTIFICATE-----\n`, certificateChainPem: '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n', notAfter: '2027-11-30T12:00:00.000Z' } };
      }
      byKey.set(key, result);
      return answer(result.status, result.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return Object.assign(api, { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/`) });
}

/** Progress that records the events (the CLI's plain and terminal forms have tests of their own). */
function recordingProgress(): Progress & { events: ItemEvent[]; notes: string[] } {
  const events: ItemEvent[] = [];
  const notes: string[] = [];
  return { events, notes, start: () => undefined, item: (event) => events.push(event), note: (line) => notes.push(line), finish: () => undefined };
}

const noSleep = () => Promise.resolve();

describe('factory sign and preregister against a fake API', () => {
  let api: FakeApi;
  let dir: string;
  let csrDir: string;
  let outDir: string;
  const sigv4Client = () => new DeviceApiClient({ apiUrl: api.url, auth: { kind: 'sigv4', region: REGION, credentials: CREDENTIALS } });

  beforeEach(async () => {
    api = await startFakeApi();
    dir = await mkdtemp(join(tmpdir(), 'iotcert-factory-'));
    csrDir = join(dir, 'csrs');
    outDir = join(dir, 'out');
    await mkdir(csrDir);
    for (const deviceId of ['line:1', 'line:2', 'line:3', 'line:4', 'line:5']) await writeFile(join(csrDir, `${deviceId}.csr`), (await makeKeyAndCsr(deviceId)).csrPem);
  });

  afterEach(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('signs every CSR with SigV4 requests the API verifies from the bytes it received, at most --concurrency at once', async () => {
    const progress = recordingProgress();

    const summary = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, concurrency: 2, ratePerSecond: 0, progress });

    expect(summary).toMatchObject({ total: 5, done: 5, skipped: 0, failed: 0, notAttempted: 0 });
    expect(api.seen).toHaveLength(10); // POST /devices and POST /devices/{id}/certificates for each
    expect(api.seen.every((request) => request.authorization.startsWith('AWS4-HMAC-SHA256 '))).toBe(true);
    expect(api.seen.filter((request) => request.path.endsWith('/certificates')).map((request) => request.path)).toContain('/v1/devices/line%3A1/certificates');
    expect(api.maxInFlight).toBeLessThanOrEqual(2);
    expect(await readFile(join(outDir, 'line:1.crt'), 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----\nFAKE\d+\n/);
    expect(await readFile(join(outDir, 'line:1.chain.pem'), 'utf8')).toContain('CA');
    const lines = (await readFile(join(outDir, SIGN_REPORT_FILE), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.map((line) => line.outcome)).toEqual(['SIGNED', 'SIGNED', 'SIGNED', 'SIGNED', 'SIGNED']);
    expect(progress.events.map((event) => event.outcome)).toEqual(['SIGNED', 'SIGNED', 'SIGNED', 'SIGNED', 'SIGNED']);
  });

  test('retries a throttled request with the same Idempotency-Key, after the Retry-After the API asked for', async () => {
    api.script.set('/v1/devices/line%3A2/certificates', [
      { status: 429, code: 'UPSTREAM_THROTTLED', headers: { 'Retry-After': '2' } },
      { status: 503, code: 'UPSTREAM_THROTTLED' },
    ]);
    const waits: number[] = [];
    const sleep = (ms: number) => {
      waits.push(ms);
      return Promise.resolve();
    };

    const summary = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, ratePerSecond: 0, sleep });

    expect(summary).toMatchObject({ done: 5, failed: 0 });
    const attempts = api.seen.filter((request) => request.path === '/v1/devices/line%3A2/certificates');
    expect(attempts).toHaveLength(3);
    expect(new Set(attempts.map((request) => request.idempotencyKey)).size).toBe(1);
    expect(attempts[0]?.idempotencyKey).toBe(signingKey('line:2', (await readCsrFile(join(csrDir, 'line:2.csr'))).der));
    expect(waits[0]).toBe(2000);
  });

  test('reports a refusal with the API status and code, goes on with the others, and a rerun retries only it', async () => {
    api.script.set('/v1/devices/line%3A3/certificates', [{ status: 422, code: 'INVALID_CSR' }]);
    await writeFile(join(csrDir, 'not-a-csr.csr'), 'hello\n');

    const first = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, ratePerSecond: 0, sleep: noSleep });
    const requestsAfterFirst = api.seen.length;
    const second = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, ratePerSecond: 0, sleep: noSleep });

    expect(first).toMatchObject({ total: 6, done: 4, failed: 2 });
    expect(first.failures).toEqual(
      expect.arrayContaining([
        { deviceId: 'line:3', httpStatus: 422, code: 'INVALID_CSR', message: 'scripted INVALID_CSR' },
        { deviceId: 'not-a-csr', code: 'INVALID_CSR_FILE', message: 'not-a-csr.csr: not a PKCS#10 certificate request (CSR), in PEM or DER' },
      ]),
    );
    expect(second).toMatchObject({ done: 1, skipped: 4, failed: 1 }); // line:3 signed now; the file is still not a CSR
    expect(api.seen.slice(requestsAfterFirst).map((request) => request.path)).toEqual(['/v1/devices', '/v1/devices/line%3A3/certificates']);
  });

  test('without the report, a rerun sends the same keys and gets the same certificates back (nothing issued twice)', async () => {
    await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, ratePerSecond: 0 });
    const first = await readFile(join(outDir, 'line:4.crt'), 'utf8');
    await rm(outDir, { recursive: true });

    const again = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, ratePerSecond: 0 });

    expect(again).toMatchObject({ done: 5, skipped: 0 });
    expect(await readFile(join(outDir, 'line:4.crt'), 'utf8')).toBe(first);
  });

  test('aborts the run at the first refusal of the credentials, recording nothing for the devices', async () => {
    api.auth = 'refuse';

    const summary = await signCsrDirectory({ client: sigv4Client(), csrDir, outDir, concurrency: 1, ratePerSecond: 0 });

    expect(summary.aborted).toMatch(/^the API refused the request \(403 UNAUTHORIZED: Missing or invalid authentication\): check the AWS credentials/);
    expect(summary).toMatchObject({ failed: 0, done: 0, notAttempted: 5 });
    expect(await readFile(join(outDir, SIGN_REPORT_FILE), 'utf8')).toBe('');
  });

  test('preregister creates each device of the manifest once; a rerun skips them, a device made elsewhere is EXISTS', async () => {
    api.auth = 'token';
    const manifest = join(dir, 'devices.jsonl');
    await writeFile(manifest, ['{"deviceId":"m-1","attributes":{"line":"7"}}', '', '{"deviceId":"m-2"}', '{"deviceId":"m-3","attributes":{"batch":"b1"}}'].join('\n'));
    const client = new DeviceApiClient({ apiUrl: api.url, auth: { kind: 'token', token: 'local-token' } });
    await client.post('/devices', { deviceId: 'm-3' }, 'made-elsewhere-1');

    const first = await preregisterManifest({ client, manifest, ratePerSecond: 0 });
    const second = await preregisterManifest({ client, manifest, ratePerSecond: 0 });

    expect(first).toMatchObject({ total: 3, created: 2, existing: 1, failed: 0, report: join(dir, 'devices.report.jsonl') });
    expect(second).toMatchObject({ created: 0, existing: 0, skipped: 3 });
    expect(JSON.parse(api.seen.find((request) => request.body.includes('m-1'))?.body ?? '{}')).toEqual({ deviceId: 'm-1', attributes: { line: '7' } });
  });

  test('with --sigv4, iotcert factory sign signs with the credentials of the default AWS chain (here the environment)', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey });
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    let stdout = '';
    const io = { stdout: { write: (text: string) => (stdout += text) }, stderr: { write: () => true }, env: { IOTCERT_DATA_DIR: join(dir, 'no-local-mode') } };

    try {
      const exit = await factoryMain(['sign', '--api-url', api.url.href, '--sigv4', '--region', REGION, '--csr-dir', csrDir, '--out-dir', outDir, '--rate', '0'], io);

      expect(exit).toBe(0);
    } finally {
      process.env = saved;
    }
    expect(stdout).toContain('Signing the CSRs of');
    expect(stdout).toContain('(AWS SigV4)');
    expect(stdout).toMatch(/^\[5\/5\] signed line:\d: certificate [0-9a-f]{12}…, valid until 2027-11-30T12:00:00.000Z/m);
    expect(stdout).toMatch(/Done in \d+\.\d s: 5 signed, 0 already signed, 0 failed of 5\./);
    expect(api.seen.every((request) => request.authorization.startsWith(`AWS4-HMAC-SHA256 Credential=${CREDENTIALS.accessKeyId}/`))).toBe(true);
  });

  test('paces the start of requests to --rate a second across all workers', async () => {
    let clock = 0;
    const starts: number[] = [];
    const pacer = new RequestPacer(
      4,
      async (ms) => {
        clock += ms;
      },
      () => clock,
    );

    for (let i = 0; i < 5; i += 1) {
      await pacer.take();
      starts.push(clock);
    }

    expect(starts).toEqual([0, 250, 500, 750, 1000]);
  });
});

describe('factory inputs', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iotcert-factory-input-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test.each([
    ['an empty file', '', 'the file is empty'],
    ['a certificate', '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', 'not a CSR: the file holds a PEM CERTIFICATE, not a CERTIFICATE REQUEST'],
    ['a CSR block with garbage inside', '-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n', 'not a PKCS#10 certificate request (CSR), in PEM or DER'],
    ['binary that is not DER', '\x00\x01\x02', 'not a PKCS#10 certificate request (CSR), in PEM or DER'],
    ['a PEM block cut short', '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n', 'no complete PEM block (a "-----BEGIN CERTIFICATE REQUEST-----" ... "-----END CERTIFICATE REQUEST-----" pair)'],
  ])('rejects %s as a CSR file', async (_what, content, message) => {
    const path = join(dir, 'x.csr');
    await writeFile(path, content, 'latin1');

    await expect(readCsrFile(path)).rejects.toThrow(new CsrFileError(message));
  });

  test('rejects a file with two CSRs, and reads a DER CSR as the same request as its PEM', async () => {
    const { csrPem } = await makeKeyAndCsr('two-1');
    await writeFile(join(dir, 'two.csr'), csrPem + csrPem);
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    await writeFile(join(dir, 'der.csr'), der);
    await writeFile(join(dir, 'pem.csr'), csrPem);

    await expect(readCsrFile(join(dir, 'two.csr'))).rejects.toThrow('the file holds 2 CSRs: put one per file, named <deviceId>.csr');
    const [fromDer, fromPem] = await Promise.all([readCsrFile(join(dir, 'der.csr')), readCsrFile(join(dir, 'pem.csr'))]);
    expect(fromDer.pem).toBe(fromPem.pem);
    expect(signingKey('two-1', fromDer.der)).toBe(signingKey('two-1', fromPem.der));
  });

  test('rejects a manifest with bad lines before sending anything, naming each line', async () => {
    const manifest = join(dir, 'bad.jsonl');
    await writeFile(manifest, ['{"deviceId":"ok-1"}', 'nope', '{"deviceId":"bad id"}', '{"deviceId":"ok-1"}', '{"deviceId":"a-1","attributes":{"k":"v","l":"v","m":"v","n":"v"}}'].join('\n'));

    await expect(readManifest(manifest)).rejects.toThrow(
      /has 4 bad lines; nothing was sent:\n {2}line 2: not JSON\n {2}line 3: deviceId: use 1 to 128 characters.*\n {2}line 4: device ok-1 is already on line 1\n {2}line 5: attributes: a device has at most 3 attributes/,
    );
  });

  test.each([
    [['sign', '--api-url', 'http://127.0.0.1:9/', '--csr-dir', '/nonexistent/csrs', '--out-dir', '/tmp/x'], 2, 'iotcert factory: --csr-dir /nonexistent/csrs cannot be read: no such folder.'],
    [['sign', '--csr-dir', '.', '--out-dir', '/tmp/x'], 2, '--api-url is required'],
    [['sign', '--api-url', 'https://api.example.com/v1/', '--token', 't', '--sigv4', '--csr-dir', '.', '--out-dir', '/tmp/x'], 2, '--token and --sigv4 exclude each other.'],
    [['sign', '--api-url', 'http://api.example.com/v1/', '--token', 't', '--csr-dir', '.', '--out-dir', '/tmp/x'], 2, 'Refused: sending the token over plain http to api.example.com would expose it; use https.'],
    [['sign', '--api-url', 'https://api.example.com/v1/', '--concurrency', '0', '--csr-dir', '.', '--out-dir', '/tmp/x'], 2, '--concurrency must be a whole number from 1 to 64 (got "0").'],
    [['rotate'], 2, 'Unknown command "factory rotate".'],
  ])('iotcert factory %j exits %i saying what is wrong', async (argv, code, message) => {
    const csrs = join(dir, 'one');
    await mkdir(csrs, { recursive: true });
    await writeFile(join(csrs, 'one-1.csr'), (await makeKeyAndCsr('one-1')).csrPem);
    let stderr = '';
    const io = { stdout: { write: () => true }, stderr: { write: (text: string) => (stderr += text) }, env: { IOTCERT_DATA_DIR: join(dir, 'no-local-mode') } };

    const exit = await factoryMain(
      argv.map((arg) => (arg === '.' ? csrs : arg)),
      io,
    );

    expect(exit).toBe(code);
    expect(stderr).toContain(message);
  });
});

describe('factory progress on a terminal', () => {
  test('redraws one line in place with a bar, the counts and the pace, and prints failures above it', () => {
    let written = '';
    let now = 0;
    const progress = new TerminalProgress({ isTTY: true, columns: 120, write: (text: string) => (written += text) }, () => now);

    progress.start(4, 'Signing');
    now = 2000;
    progress.item({ deviceId: 'a', outcome: 'SIGNED', detail: '' });
    progress.item({ deviceId: 'b', outcome: 'FAILED', detail: '422 INVALID_CSR: bad' });
    progress.finish();

    expect(progress.line()).toBe('[############------------] 2/4  signed 1, failed 1  1.0/s  ~2s left');
    expect(written).toContain('\r\x1b[2KFAILED b: 422 INVALID_CSR: bad\n');
    expect(written.endsWith('\n')).toBe(true);
  });
});
