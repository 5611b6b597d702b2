import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { certificateIdOfFile, iotcert, mosquittoPub, tool } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(180_000);

/**
 * `iotcert factory` against the local mode's API, as a factory line runs it: CSRs made by the openssl CLI in
 * a folder, signed in bulk, verified with `openssl verify`, and run again (idempotent, resumable).
 */

interface ReportLine {
  deviceId: string;
  outcome: string;
  code?: string;
  httpStatus?: number;
  certificateId?: string;
}

const GOOD = ['press-1', 'press-2', 'press-3', 'press-4', 'press-5'];

async function opensslCsr(dir: string, deviceId: string, commonName = deviceId): Promise<void> {
  await tool('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'keys', `${deviceId}.key`), '-out', join(dir, 'csrs', `${deviceId}.csr`), '-subj', `/CN=${commonName}`]);
}

async function reportLines(outDir: string): Promise<ReportLine[]> {
  return (await readFile(join(outDir, 'factory-report.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as ReportLine);
}

describe('iotcert factory against the local mode', () => {
  let local: LocalModeProcess;
  let work: string;
  let csrDir: string;
  let outDir: string;
  const sign = (extra: readonly string[] = []) => iotcert(['factory', 'sign', '--api-url', local.endpoints.api.url, '--csr-dir', csrDir, '--out-dir', outDir, ...extra], local.dataDir);
  const signingRequests = () => local.output().split('\n').filter((line) => /\[api\] POST \/devices\/[^/ ]+\/certificates /.test(line)).length;

  beforeAll(async () => {
    local = await startLocalModeProcess();
    work = join(local.dataDir, 'factory');
    csrDir = join(work, 'csrs');
    outDir = join(work, 'out');
    await mkdir(join(work, 'keys'), { recursive: true });
    await mkdir(csrDir, { recursive: true });
    for (const deviceId of GOOD) await opensslCsr(work, deviceId);
    await writeFile(join(csrDir, 'broken-1.csr'), 'this is not a CSR\n'); // not a CSR at all: refused before any request
    await opensslCsr(work, 'mismatch-1', 'someone-else'); // a CSR whose CN is not its device: the API refuses it
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('signs every CSR of the folder; the bad ones are reported with their error code and the others succeed', async () => {
    const result = await sign();

    expect(result.code).toBe(1); // two devices failed
    expect(result.stdout).toMatch(/^\[\d\/7\] signed press-1: certificate [0-9a-f]{12}…, valid until \S+ \(device registered\)$/m);
    expect(result.stdout).toContain('FAILED broken-1: INVALID_CSR_FILE: broken-1.csr: not a PKCS#10 certificate request (CSR), in PEM or DER');
    expect(result.stdout).toMatch(/FAILED mismatch-1: 422 INVALID_CSR: .*someone-else/);
    expect(result.stdout).toMatch(/Done in \d+\.\d s: 5 signed, 0 already signed, 2 failed of 7\./);
    const lines = await reportLines(outDir);
    expect(lines.filter((line) => line.outcome === 'SIGNED').map((line) => line.deviceId).sort()).toEqual(GOOD);
    expect(lines.filter((line) => line.outcome === 'FAILED').map((line) => [line.deviceId, line.httpStatus, line.code]).sort()).toEqual([
      ['broken-1', undefined, 'INVALID_CSR_FILE'],
      ['mismatch-1', 422, 'INVALID_CSR'],
    ]);
    expect((await readdir(outDir)).sort()).toEqual([...GOOD.flatMap((id) => [`${id}.chain.pem`, `${id}.crt`]), 'factory-report.jsonl'].sort());
  });

  test('the certificates verify with openssl against the chain the API returned and against the local CA, and are ACTIVE at once', async () => {
    for (const deviceId of GOOD) {
      const certificate = join(outDir, `${deviceId}.crt`);
      expect((await tool('openssl', ['verify', '-CAfile', join(outDir, `${deviceId}.chain.pem`), certificate])).trim()).toBe(`${certificate}: OK`);
      expect((await tool('openssl', ['verify', '-CAfile', local.files.caCertificate, certificate])).trim()).toBe(`${certificate}: OK`);
      expect(await tool('openssl', ['x509', '-in', certificate, '-noout', '-subject'])).toMatch(new RegExp(`CN\\s*=\\s*${deviceId}`));
    }
    const { body } = await local.api('GET', '/devices/press-1');
    const certificateId = await certificateIdOfFile(join(outDir, 'press-1.crt'));
    expect(body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId, status: 'ACTIVE', source: 'CSR' }] });
    // Registered ACTIVE by the API: the first connect succeeds, no JITR round.
    const published = await mosquittoPub({ cafile: local.files.caCertificate, cert: join(outDir, 'press-1.crt'), key: join(work, 'keys', 'press-1.key') }, local.mqtt.port, 'press-1', 'devices/press-1/telemetry', 'from the factory');
    expect(published.code).toBe(0);
  });

  test('a rerun skips the signed devices without a request and retries only the failed ones', async () => {
    const certificateBefore = await readFile(join(outDir, 'press-2.crt'), 'utf8');
    const modifiedBefore = (await stat(join(outDir, 'press-2.crt'))).mtimeMs;
    const requestsBefore = signingRequests();

    const result = await sign();

    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/Done in \d+\.\d s: 0 signed, 5 already signed, 2 failed of 7\./);
    expect(result.stdout).toMatch(/^\[\d\/7\] skipped press-2: already signed \(certificate [0-9a-f]{12}…/m);
    await local.waitForOutput(/\[api\] POST \/devices\/mismatch-1\/certificates → 422[\s\S]*\[api\] POST \/devices\/mismatch-1\/certificates → 422/);
    expect(signingRequests() - requestsBefore).toBe(1); // mismatch-1 only
    expect(await readFile(join(outDir, 'press-2.crt'), 'utf8')).toBe(certificateBefore);
    expect((await stat(join(outDir, 'press-2.crt'))).mtimeMs).toBe(modifiedBefore);
    const { body } = await local.api('GET', '/devices/press-2');
    expect((body as { certificates: unknown[] }).certificates).toHaveLength(1);
  });

  test('once the bad CSRs are replaced, a rerun signs them and exits 0', async () => {
    await rm(join(csrDir, 'broken-1.csr'));
    await opensslCsr(work, 'broken-1');
    await opensslCsr(work, 'mismatch-1');

    const result = await sign(['--concurrency', '2']);

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Done in \d+\.\d s: 2 signed, 5 already signed, 0 failed of 7\./);
    for (const deviceId of ['broken-1', 'mismatch-1']) {
      const certificate = join(outDir, `${deviceId}.crt`);
      expect((await tool('openssl', ['verify', '-CAfile', join(outDir, `${deviceId}.chain.pem`), certificate])).trim()).toBe(`${certificate}: OK`);
    }
  });

  test('with the report and certificates gone, a rerun gets the same certificates back: the Idempotency-Key comes from the CSR', async () => {
    const before = new Map(await Promise.all(GOOD.map(async (id) => [id, await certificateIdOfFile(join(outDir, `${id}.crt`))] as const)));
    await rm(outDir, { recursive: true });

    const result = await sign();

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Done in \d+\.\d s: 7 signed, 0 already signed, 0 failed of 7\./);
    for (const id of GOOD) expect(await certificateIdOfFile(join(outDir, `${id}.crt`))).toBe(before.get(id));
    const { body } = await local.api('GET', '/devices/press-3');
    expect((body as { certificates: unknown[] }).certificates).toHaveLength(1); // nothing issued twice
  });

  test('a wrong token aborts the run at the first answer, saying why, with nothing recorded for the devices', async () => {
    const elsewhere = join(work, 'out-wrong-token');

    const result = await iotcert(['factory', 'sign', '--api-url', local.endpoints.api.url, '--token', 'not-the-token', '--csr-dir', csrDir, '--out-dir', elsewhere, '--concurrency', '1'], local.dataDir);

    expect(result.code).toBe(1);
    expect(result.stdout).toContain('Aborted: the API refused the request (401 UNAUTHORIZED');
    expect(result.stdout).toContain('check the token');
    expect(await readFile(join(elsewhere, 'factory-report.jsonl'), 'utf8')).toBe('');
  });

  test('factory preregister creates the devices of a manifest with their attributes; a rerun changes nothing', async () => {
    const manifest = join(work, 'line-7.jsonl');
    await writeFile(manifest, ['{"deviceId":"oven-1","attributes":{"line":"7","batch":"2026-48"}}', '{"deviceId":"oven-2","attributes":{"line":"7"}}', '{"deviceId":"press-1"}', ''].join('\n'));

    const first = await iotcert(['factory', 'preregister', '--api-url', local.endpoints.api.url, '--manifest', manifest], local.dataDir);
    const second = await iotcert(['factory', 'preregister', '--local', '--manifest', manifest, '--json'], local.dataDir);

    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/Done in \d+\.\d s: 2 created, 1 existed, 0 already done, 0 failed of 3\./);
    expect(JSON.parse(second.stdout)).toMatchObject({ command: 'preregister', created: 0, existing: 0, skipped: 3, failed: 0, report: join(work, 'line-7.report.jsonl') });
    const { body } = await local.api('GET', '/devices/oven-1');
    expect(body).toMatchObject({ deviceId: 'oven-1', status: 'REGISTERED', attributes: { line: '7', batch: '2026-48' } });
  });

  test('refuses a missing CSR folder with exit code 2 and sends nothing', async () => {
    const result = await iotcert(['factory', 'sign', '--api-url', local.endpoints.api.url, '--csr-dir', join(work, 'nope'), '--out-dir', join(work, 'nope-out')], local.dataDir);

    expect(result.code).toBe(2);
    expect(result.stderr).toBe(`iotcert factory: --csr-dir ${join(work, 'nope')} cannot be read: no such folder.\n`);
  });
});
