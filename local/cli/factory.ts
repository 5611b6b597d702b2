import 'reflect-metadata';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as x509 from '@peculiar/x509';
import { isValidDeviceId } from '../../functions/core/device-id';
import { createDeviceBody } from '../../functions/handlers/http/requests';
import { writeFileAtomic } from '../../functions/adapters/local/atomic-file';
import { DEFAULT_DATA_DIR } from '../config';
import { dataFiles, readApiToken, readEndpoints } from '../data-dir';
import { ApiNetworkError, classify, DeviceApiClient, errorOf, RequestPacer, retryAfterMs, type ApiAnswer, type ApiAuth } from './factory-client';
import { progressFor, type ItemOutcome, type Progress, type ProgressStream } from './factory-progress';
import { readReport, ReportWriter, type ReportLine } from './factory-report';
import { defaultCredentialChain, regionOfApiUrl } from './factory-sigv4';

/**
 * `iotcert factory`: what a factory line (or a provisioning backend) runs against the device API, in bulk.
 *
 * - `sign`: every `<deviceId>.csr` in a folder is signed through `POST /devices/{deviceId}/certificates`
 *   (the device is pre-registered first with `POST /devices` unless it exists), writing `<deviceId>.crt` and
 *   `<deviceId>.chain.pem`. The key stays on the device (or in the factory's HSM): only CSRs travel.
 * - `preregister`: every device of a JSON-lines manifest is created through `POST /devices`.
 *
 * Both send each change with an Idempotency-Key derived from its input (a rerun is answered, never redone),
 * retry what the API says to retry with the same key, pace their requests under the API stage's throttling,
 * and keep a JSON-lines report that a rerun reads to skip what is done and retry what failed.
 */

/* ----------------------------------------------------------------------------------------- inputs */

/** A CSR file larger than this is not a CSR (the API refuses CSRs over 16 KB). */
const MAX_CSR_FILE_BYTES = 64 * 1024;
const CSR_LABELS: ReadonlySet<string> = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);

/** A file that is not a usable CSR: reported for its device, the others go on. */
export class CsrFileError extends Error {
  public override readonly name = 'CsrFileError';
}

/** Bad input for the whole run (a missing folder, an unreadable manifest): nothing was sent. */
export class FactoryInputError extends Error {
  public override readonly name = 'FactoryInputError';
}

export interface CsrFile {
  /** The CSR re-encoded as one PEM block (from PEM or DER input). */
  readonly pem: string;
  readonly der: Buffer;
}

/** Reads a PKCS#10 request in PEM or DER; throws `CsrFileError` saying what the file is instead. */
export async function readCsrFile(path: string): Promise<CsrFile> {
  const { size } = await stat(path);
  if (size === 0) throw new CsrFileError('the file is empty');
  if (size > MAX_CSR_FILE_BYTES) throw new CsrFileError(`the file is ${size} bytes: too large for a CSR`);
  const raw = await readFile(path);
  let der: Buffer = raw;
  const text = raw.toString('latin1');
  if (text.includes('-----BEGIN ')) {
    const blocks = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)];
    if (blocks.length === 0) throw new CsrFileError('no complete PEM block (a "-----BEGIN CERTIFICATE REQUEST-----" ... "-----END CERTIFICATE REQUEST-----" pair)');
    const requests = blocks.filter((block) => CSR_LABELS.has(block[1] ?? ''));
    if (requests.length === 0) throw new CsrFileError(`not a CSR: the file holds a PEM ${blocks[0]?.[1]}, not a CERTIFICATE REQUEST`);
    if (requests.length > 1) throw new CsrFileError(`the file holds ${requests.length} CSRs: put one per file, named <deviceId>.csr`);
    der = Buffer.from((requests[0]?.[2] ?? '').replace(/\s+/g, ''), 'base64');
  }
  try {
    new x509.Pkcs10CertificateRequest(new Uint8Array(der));
  } catch {
    throw new CsrFileError('not a PKCS#10 certificate request (CSR), in PEM or DER');
  }
  return { pem: `${x509.PemConverter.encode(new Uint8Array(der), 'CERTIFICATE REQUEST').trim()}\n`, der };
}

const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/** The Idempotency-Key of a signing: the same device and CSR always get the same key, so a rerun is answered with the first certificate. */
export function signingKey(deviceId: string, csrDer: Buffer): string {
  return `iotcert-sign-${sha256Hex(Buffer.concat([Buffer.from(`${deviceId}\n`), csrDer]))}`;
}

/** The body of `POST /devices` for a device and its attributes (none: no `attributes` field). */
export function registrationBody(deviceId: string, attributes: Readonly<Record<string, string>> = {}): { deviceId: string; attributes?: Record<string, string> } {
  const names = Object.keys(attributes).sort();
  return names.length === 0 ? { deviceId } : { deviceId, attributes: Object.fromEntries(names.map((name) => [name, attributes[name] as string])) };
}

/**
 * The Idempotency-Key of a pre-registration, from its body (attributes in name order) and the command that
 * sends it: `factory sign` and `factory preregister` use keys of their own, so that one never replays the
 * other's 201 (a device `sign` created is found existing by `preregister`, and the other way round).
 */
export function registrationKey(body: ReturnType<typeof registrationBody>, by: 'sign' | 'preregister'): string {
  return `iotcert-${by}-register-${sha256Hex(JSON.stringify(body))}`;
}

/* ------------------------------------------------------------------------------------ calling the API */

export interface CallSettings {
  readonly client: DeviceApiClient;
  readonly pacer: RequestPacer;
  /** Tries per request, the first included. @default 5 */
  readonly attempts?: number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Told of each retry. */
  readonly onRetry?: (line: string) => void;
}

/** The run cannot go on: the API refused the credentials, or cannot be reached at all. */
export class RunAbortedError extends Error {
  public override readonly name = 'RunAbortedError';
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * POSTs with the given key until the API answers something final: 2xx, a refusal, or a retryable answer on
 * the last try. Throttling, a busy key, a race and upstream failures are retried with the same key, after
 * the API's `Retry-After` or an exponential backoff with jitter.
 */
export async function postWithRetries(settings: CallSettings, path: string, body: unknown, key: string): Promise<{ answer: ApiAnswer; attempts: number }> {
  const attempts = settings.attempts ?? 5;
  const sleep = settings.sleep ?? defaultSleep;
  for (let attempt = 1; ; attempt += 1) {
    await settings.pacer.take();
    const backoff = Math.min(8_000, 500 * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
    let answer: ApiAnswer;
    try {
      answer = await settings.client.post(path, body, key);
    } catch (error) {
      if (!(error instanceof ApiNetworkError)) throw error;
      if (error.unreachable) throw new RunAbortedError(`the API cannot be reached: ${error.message}`, { cause: error });
      if (attempt >= attempts) throw error;
      settings.onRetry?.(`retrying POST ${path} (${error.message}) in ${(backoff / 1000).toFixed(1)} s`);
      await sleep(backoff);
      continue;
    }
    const verdict = classify(answer);
    if (verdict === 'UNAUTHORIZED') {
      const { code, message } = errorOf(answer);
      const hint =
        settings.client.authKind === 'sigv4'
          ? 'check the AWS credentials (an IAM identity allowed execute-api:Invoke on the API) and that --api-url is the stack output ApiUrl, stage included'
          : 'check the token (--token, or the data folder the local mode runs on)';
      throw new RunAbortedError(`the API refused the request (${answer.status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}): ${hint}`);
    }
    if (verdict !== 'RETRY' || attempt >= attempts) return { answer, attempts: attempt };
    const wait = Math.min(retryAfterMs(answer) ?? backoff, 30_000);
    settings.onRetry?.(`retrying POST ${path} (${answer.status} ${errorOf(answer).code ?? ''}) in ${(wait / 1000).toFixed(1)} s`);
    await sleep(wait);
  }
}

/** Runs `work` over the items, `concurrency` at a time, until done or `stop()` says no more are to be started. */
async function pool<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>, stop: () => boolean): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop()) {
      const item = items[next] as T;
      next += 1;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

/* ---------------------------------------------------------------------------------------- the runs */

export interface RunSummary {
  readonly command: 'sign' | 'preregister';
  readonly total: number;
  /** Signed (or created / found existing) in this run. */
  readonly done: number;
  readonly created?: number;
  readonly existing?: number;
  /** Already done by an earlier run (the report says so), not sent again. */
  readonly skipped: number;
  readonly failed: number;
  /** Not attempted because the run was aborted. */
  readonly notAttempted: number;
  readonly aborted?: string;
  readonly report: string;
  readonly outDir?: string;
  readonly durationMs: number;
  readonly failures: readonly { readonly deviceId: string; readonly httpStatus?: number; readonly code: string; readonly message: string }[];
}

interface RunCommon {
  readonly client: DeviceApiClient;
  /** @default 4 */
  readonly concurrency?: number;
  /** Requests a second, all workers together; 0: unpaced. @default 8 (the stack's API stage allows 10 by default) */
  readonly ratePerSecond?: number;
  /** @default 5 */
  readonly attempts?: number;
  readonly progress?: Progress;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => Date;
}

export interface SignOptions extends RunCommon {
  readonly csrDir: string;
  readonly outDir: string;
  /** Sign only for devices that exist already; a device missing is reported (DEVICE_NOT_FOUND), not created. @default false */
  readonly registeredOnly?: boolean;
}

export const SIGN_REPORT_FILE = 'factory-report.jsonl';

const silentProgress: Progress = { start: () => undefined, item: () => undefined, note: () => undefined, finish: () => undefined };

class Tally {
  public readonly counts: Record<ItemOutcome, number> = { SIGNED: 0, CREATED: 0, EXISTS: 0, SKIPPED: 0, FAILED: 0 };
  public readonly failures: { deviceId: string; httpStatus?: number; code: string; message: string }[] = [];
  public aborted: string | undefined;
}

async function listCsrFiles(csrDir: string): Promise<{ deviceId: string; path: string }[]> {
  let entries;
  try {
    if (!(await stat(csrDir)).isDirectory()) throw new FactoryInputError(`--csr-dir ${csrDir} is not a folder.`);
    entries = await readdir(csrDir, { withFileTypes: true });
  } catch (error) {
    if (error instanceof FactoryInputError) throw error;
    throw new FactoryInputError(`--csr-dir ${csrDir} cannot be read: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such folder' : (error as Error).message}.`);
  }
  const files = entries
    .filter((entry) => entry.isFile() && entry.name.endsWith('.csr') && entry.name.length > '.csr'.length)
    .map((entry) => ({ deviceId: entry.name.slice(0, -'.csr'.length), path: join(csrDir, entry.name) }))
    .sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
  if (files.length === 0) throw new FactoryInputError(`--csr-dir ${csrDir} holds no <deviceId>.csr file.`);
  return files;
}

/** The certificate and chain files of a device in the output folder. */
export function certificateFiles(outDir: string, deviceId: string): { certificate: string; chain: string } {
  return { certificate: join(outDir, `${deviceId}.crt`), chain: join(outDir, `${deviceId}.chain.pem`) };
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

/** `factory sign`: signs every `<deviceId>.csr` of `csrDir` through the API, resumably. */
export async function signCsrDirectory(options: SignOptions): Promise<RunSummary> {
  const started = Date.now();
  const now = options.now ?? (() => new Date());
  const progress = options.progress ?? silentProgress;
  const files = await listCsrFiles(options.csrDir);
  await mkdir(options.outDir, { recursive: true });
  const reportPath = join(options.outDir, SIGN_REPORT_FILE);
  const previous = await readReport(reportPath);
  const report = await ReportWriter.open(reportPath);
  const tally = new Tally();
  const calls: CallSettings = {
    client: options.client,
    pacer: new RequestPacer(options.ratePerSecond ?? 8, options.sleep),
    attempts: options.attempts ?? 5,
    ...(options.sleep ? { sleep: options.sleep } : {}),
    onRetry: (line) => progress.note(line),
  };
  const record = async (deviceId: string, outcome: ItemOutcome, detail: string, line?: { readonly inputSha256: string; readonly [field: string]: unknown }) => {
    if (line) await report.append({ deviceId, outcome: outcome as ReportLine['outcome'], at: now().toISOString(), ...line });
    tally.counts[outcome] += 1;
    progress.item({ deviceId, outcome, detail });
  };
  const fail = async (deviceId: string, csrFile: string, inputSha256: string, failure: { stage: string; httpStatus?: number; code: string; message: string; attempts?: number; idempotencyKey?: string }) => {
    tally.failures.push({ deviceId, ...(failure.httpStatus !== undefined ? { httpStatus: failure.httpStatus } : {}), code: failure.code, message: failure.message });
    await record(deviceId, 'FAILED', `${failure.httpStatus !== undefined ? `${failure.httpStatus} ` : ''}${failure.code}: ${failure.message}`, { csrFile, inputSha256, ...failure });
  };

  progress.start(files.length, `Signing the CSRs of ${options.csrDir} through ${options.client.apiUrl.href} (${options.client.authKind === 'sigv4' ? 'AWS SigV4' : 'bearer token'})`);
  try {
    await pool(
      files,
      options.concurrency ?? 4,
      async ({ deviceId, path }) => {
        const csrFile = basename(path);
        if (!isValidDeviceId(deviceId)) {
          await fail(deviceId, csrFile, '', { stage: 'CSR_FILE', code: 'INVALID_DEVICE_ID', message: `"${deviceId}" (from the file name) is not a valid device id: 1 to 128 of a-z, A-Z, 0-9, ":", "_" and "-"` });
          return;
        }
        let csr: CsrFile;
        try {
          csr = await readCsrFile(path);
        } catch (error) {
          if (!(error instanceof CsrFileError)) throw error;
          await fail(deviceId, csrFile, '', { stage: 'CSR_FILE', code: 'INVALID_CSR_FILE', message: `${csrFile}: ${error.message}` });
          return;
        }
        const inputSha256 = sha256Hex(csr.der);
        const outputs = certificateFiles(options.outDir, deviceId);
        const earlier = previous.get(deviceId);
        if (earlier?.outcome === 'SIGNED' && earlier.inputSha256 === inputSha256 && (await exists(outputs.certificate))) {
          await record(deviceId, 'SKIPPED', `already signed (certificate ${String(earlier.certificateId ?? '').slice(0, 12)}…, ${outputs.certificate})`);
          return;
        }

        let deviceCreated: boolean | undefined;
        if (!options.registeredOnly) {
          const body = registrationBody(deviceId);
          const { answer, attempts } = await postWithRetries(calls, '/devices', body, registrationKey(body, 'sign'));
          const error = errorOf(answer);
          if (answer.status === 201) deviceCreated = true;
          else if (answer.status === 409 && error.code === 'DEVICE_ALREADY_EXISTS') deviceCreated = false;
          else {
            await fail(deviceId, csrFile, inputSha256, { stage: 'REGISTER', httpStatus: answer.status, code: error.code ?? 'HTTP_ERROR', message: error.message ?? `POST /devices answered ${answer.status}`, attempts });
            return;
          }
        }

        const key = signingKey(deviceId, csr.der);
        const { answer, attempts } = await postWithRetries(calls, `/devices/${encodeURIComponent(deviceId)}/certificates`, { csr: csr.pem }, key);
        if (answer.status !== 201) {
          const error = errorOf(answer);
          await fail(deviceId, csrFile, inputSha256, { stage: 'SIGN', httpStatus: answer.status, code: error.code ?? 'HTTP_ERROR', message: error.message ?? `the API answered ${answer.status}`, attempts, idempotencyKey: key });
          return;
        }
        const issued = answer.body as { certificateId?: string; certificatePem?: string; certificateChainPem?: string; notAfter?: string };
        if (typeof issued.certificatePem !== 'string' || !issued.certificatePem.includes('BEGIN CERTIFICATE')) {
          await fail(deviceId, csrFile, inputSha256, { stage: 'SIGN', httpStatus: answer.status, code: 'UNEXPECTED_ANSWER', message: 'the API answered 201 without a certificatePem', attempts, idempotencyKey: key });
          return;
        }
        const withNewline = (pem: string) => (pem.endsWith('\n') ? pem : `${pem}\n`);
        await writeFileAtomic(outputs.certificate, withNewline(issued.certificatePem), { mode: 0o644 });
        const chain = issued.certificateChainPem ?? '';
        if (chain.trim() !== '') await writeFileAtomic(outputs.chain, withNewline(chain), { mode: 0o644 });
        await record(deviceId, 'SIGNED', `certificate ${issued.certificateId?.slice(0, 12) ?? '?'}…, valid until ${issued.notAfter ?? '?'}${deviceCreated ? ' (device registered)' : ''}`, {
          csrFile,
          inputSha256,
          idempotencyKey: key,
          certificateId: issued.certificateId,
          notAfter: issued.notAfter,
          certificateFile: basename(outputs.certificate),
          ...(chain.trim() !== '' ? { chainFile: basename(outputs.chain) } : {}),
          ...(deviceCreated === undefined ? {} : { deviceRegistered: deviceCreated }),
          attempts,
        });
      },
      () => tally.aborted !== undefined,
    ).catch((error: unknown) => {
      if (!(error instanceof RunAbortedError)) throw error;
      tally.aborted = error.message;
    });
  } finally {
    progress.finish();
    await report.close();
  }
  const { counts } = tally;
  const handled = counts.SIGNED + counts.SKIPPED + counts.FAILED;
  return {
    command: 'sign',
    total: files.length,
    done: counts.SIGNED,
    skipped: counts.SKIPPED,
    failed: counts.FAILED,
    notAttempted: files.length - handled,
    ...(tally.aborted ? { aborted: tally.aborted } : {}),
    report: reportPath,
    outDir: options.outDir,
    durationMs: Date.now() - started,
    failures: tally.failures,
  };
}

export interface ManifestEntry {
  readonly line: number;
  readonly deviceId: string;
  readonly attributes: Readonly<Record<string, string>>;
}

/** Reads and checks a whole manifest (one `{"deviceId", "attributes"?}` per line) before anything is sent. */
export async function readManifest(path: string): Promise<ManifestEntry[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new FactoryInputError(`--manifest ${path} cannot be read: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}.`);
  }
  const entries: ManifestEntry[] = [];
  const problems: string[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      problems.push(`line ${line}: not JSON`);
      return;
    }
    const parsed = createDeviceBody.safeParse(value);
    if (!parsed.success) {
      problems.push(`line ${line}: ${parsed.error.issues.map((issue) => `${issue.path.join('.') || 'entry'}: ${issue.message}`).join('; ')}`);
      return;
    }
    const first = seen.get(parsed.data.deviceId);
    if (first !== undefined) {
      problems.push(`line ${line}: device ${parsed.data.deviceId} is already on line ${first}`);
      return;
    }
    seen.set(parsed.data.deviceId, line);
    entries.push({ line, deviceId: parsed.data.deviceId, attributes: parsed.data.attributes ?? {} });
  });
  if (problems.length > 0) {
    const shown = problems.slice(0, 10).join('\n  ');
    throw new FactoryInputError(`--manifest ${path} has ${problems.length} bad line${problems.length === 1 ? '' : 's'}; nothing was sent:\n  ${shown}${problems.length > 10 ? `\n  ... and ${problems.length - 10} more` : ''}`);
  }
  if (entries.length === 0) throw new FactoryInputError(`--manifest ${path} lists no device.`);
  return entries;
}

export interface PreregisterOptions extends RunCommon {
  readonly manifest: string;
  /** @default `<manifest without .jsonl>.report.jsonl`, next to the manifest */
  readonly reportFile?: string;
}

export function defaultPreregisterReport(manifest: string): string {
  return join(dirname(manifest), `${basename(manifest).replace(/\.(jsonl|ndjson|json)$/i, '')}.report.jsonl`);
}

/** `factory preregister`: creates every device of the manifest through `POST /devices`, paced and resumably. */
export async function preregisterManifest(options: PreregisterOptions): Promise<RunSummary> {
  const started = Date.now();
  const now = options.now ?? (() => new Date());
  const progress = options.progress ?? silentProgress;
  const entries = await readManifest(options.manifest);
  const reportPath = options.reportFile ?? defaultPreregisterReport(options.manifest);
  await mkdir(dirname(reportPath), { recursive: true });
  const previous = await readReport(reportPath);
  const report = await ReportWriter.open(reportPath);
  const tally = new Tally();
  const calls: CallSettings = {
    client: options.client,
    pacer: new RequestPacer(options.ratePerSecond ?? 8, options.sleep),
    attempts: options.attempts ?? 5,
    ...(options.sleep ? { sleep: options.sleep } : {}),
    onRetry: (line) => progress.note(line),
  };

  progress.start(entries.length, `Pre-registering the devices of ${options.manifest} through ${options.client.apiUrl.href} (${options.client.authKind === 'sigv4' ? 'AWS SigV4' : 'bearer token'})`);
  try {
    await pool(
      entries,
      options.concurrency ?? 4,
      async (entry) => {
        const body = registrationBody(entry.deviceId, entry.attributes);
        const inputSha256 = sha256Hex(JSON.stringify(body));
        const earlier = previous.get(entry.deviceId);
        if ((earlier?.outcome === 'CREATED' || earlier?.outcome === 'EXISTS') && earlier.inputSha256 === inputSha256) {
          tally.counts.SKIPPED += 1;
          progress.item({ deviceId: entry.deviceId, outcome: 'SKIPPED', detail: `already ${earlier.outcome === 'CREATED' ? 'created' : 'there'} (earlier run)` });
          return;
        }
        const key = registrationKey(body, 'preregister');
        const { answer, attempts } = await postWithRetries(calls, '/devices', body, key);
        const error = errorOf(answer);
        const outcome: ItemOutcome = answer.status === 201 ? 'CREATED' : answer.status === 409 && error.code === 'DEVICE_ALREADY_EXISTS' ? 'EXISTS' : 'FAILED';
        const base = { inputSha256, idempotencyKey: key, manifestLine: entry.line, attempts };
        if (outcome === 'FAILED') {
          const failure = { httpStatus: answer.status, code: error.code ?? 'HTTP_ERROR', message: error.message ?? `POST /devices answered ${answer.status}` };
          tally.failures.push({ deviceId: entry.deviceId, ...failure });
          await report.append({ deviceId: entry.deviceId, outcome, at: now().toISOString(), ...base, ...failure });
          tally.counts.FAILED += 1;
          progress.item({ deviceId: entry.deviceId, outcome, detail: `${failure.httpStatus} ${failure.code}: ${failure.message}` });
          return;
        }
        await report.append({ deviceId: entry.deviceId, outcome, at: now().toISOString(), ...base });
        tally.counts[outcome] += 1;
        progress.item({ deviceId: entry.deviceId, outcome, detail: outcome === 'CREATED' ? 'pre-registered (REGISTERED)' : 'exists already (its attributes are left as they are)' });
      },
      () => tally.aborted !== undefined,
    ).catch((error: unknown) => {
      if (!(error instanceof RunAbortedError)) throw error;
      tally.aborted = error.message;
    });
  } finally {
    progress.finish();
    await report.close();
  }
  const { counts } = tally;
  const handled = counts.CREATED + counts.EXISTS + counts.SKIPPED + counts.FAILED;
  return {
    command: 'preregister',
    total: entries.length,
    done: counts.CREATED + counts.EXISTS,
    created: counts.CREATED,
    existing: counts.EXISTS,
    skipped: counts.SKIPPED,
    failed: counts.FAILED,
    notAttempted: entries.length - handled,
    ...(tally.aborted ? { aborted: tally.aborted } : {}),
    report: reportPath,
    durationMs: Date.now() - started,
    failures: tally.failures,
  };
}

/* ------------------------------------------------------------------------------------------- the CLI */

export const FACTORY_USAGE = `Usage: iotcert factory <sign|preregister> [options]

  factory sign --api-url <url> --csr-dir <dir> --out-dir <dir>
           Sign every <deviceId>.csr (PEM or DER) of --csr-dir through the device API
           (POST /devices, unless the device exists, then POST /devices/{deviceId}/certificates).
           Writes <deviceId>.crt and <deviceId>.chain.pem to --out-dir, and the report
           factory-report.jsonl there. A rerun skips the devices already signed (same CSR)
           and retries the failed ones; each request's Idempotency-Key comes from its input,
           so nothing is issued twice. --registered-only: do not create missing devices.
  factory preregister --api-url <url> --manifest <file.jsonl> [--report <file>]
           Create every device of the manifest, one {"deviceId": "...", "attributes": {...}}
           per line, through POST /devices. Report: <manifest>.report.jsonl (or --report).

How requests are authorized:
  the deployed API (the stack output ApiUrl): AWS SigV4, service execute-api, credentials from the
           default AWS chain (AWS_ACCESS_KEY_ID..., AWS_PROFILE, SSO, instance/container role);
           --region when the URL does not name one (a custom domain)
  the local mode: --local (its API address and token from the data folder), or an --api-url on
           127.0.0.1/localhost or the local mode's address (token from the data folder), or --token <t>
  --sigv4  sign even an address that looks local (a tunnel, a proxy)

Options:
  --concurrency <n>  requests in flight at once (default 4)
  --rate <n>         requests a second, all together (default 8; the stack's API stage allows 10, burst 20; 0: unpaced)
  --attempts <n>     tries per request when the API says to retry (throttled, busy, upstream failure) (default 5)
  --data-dir <dir>   the local mode's data folder (default .local; env IOTCERT_DATA_DIR)
  --json             print the summary as JSON (no line per device)

Progress: one line redrawn in place on a terminal, one line per device otherwise.
Exit codes: 0 every device done, 1 some failed (see the report; rerun to retry them) or the run was
aborted (credentials refused, API unreachable), 2 bad usage or input (nothing was sent).`;

class FactoryUsageError extends Error {}

export interface FactoryIo {
  readonly stdout: ProgressStream;
  readonly stderr: ProgressStream;
  readonly env: NodeJS.ProcessEnv;
}

function parseFactoryOptions(args: readonly string[]) {
  return parseArgs({
    args: [...args],
    strict: true,
    allowPositionals: false,
    options: {
      'api-url': { type: 'string' },
      'csr-dir': { type: 'string' },
      'out-dir': { type: 'string' },
      manifest: { type: 'string' },
      report: { type: 'string' },
      region: { type: 'string' },
      token: { type: 'string' },
      local: { type: 'boolean' },
      sigv4: { type: 'boolean' },
      concurrency: { type: 'string' },
      rate: { type: 'string' },
      attempts: { type: 'string' },
      'registered-only': { type: 'boolean' },
      'data-dir': { type: 'string' },
      json: { type: 'boolean' },
    },
  }).values;
}

type FactoryValues = ReturnType<typeof parseFactoryOptions>;

function whole(value: string | undefined, name: string, fallback: number, minimum: number, maximum: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < minimum || parsed > maximum) throw new FactoryUsageError(`--${name} must be a whole number from ${minimum} to ${maximum} (got "${value}").`);
  return parsed;
}

const isLoopbackHost = (hostname: string): boolean => hostname === 'localhost' || hostname === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(hostname);

/** Decides where requests go and how they are authorized, from the flags, the URL and the local data folder. */
export async function resolveApiAccess(values: FactoryValues, env: NodeJS.ProcessEnv): Promise<{ apiUrl: URL; auth: ApiAuth }> {
  if (values.token !== undefined && values.sigv4) throw new FactoryUsageError('--token and --sigv4 exclude each other.');
  if (values.local && values.sigv4) throw new FactoryUsageError('--local and --sigv4 exclude each other.');
  const dataDir = values['data-dir'] ? resolve(values['data-dir']) : env.IOTCERT_DATA_DIR ? resolve(env.IOTCERT_DATA_DIR) : DEFAULT_DATA_DIR;
  const files = dataFiles(dataDir);
  const endpoints = await readEndpoints(files).catch(() => undefined);
  const urlText = values['api-url'] ?? (values.local ? endpoints?.api.url : undefined);
  if (urlText === undefined) {
    throw new FactoryUsageError(values.local ? `No running local mode in ${files.dir} (no endpoints.json): start it (npm start), or pass --api-url.` : '--api-url is required: the stack output ApiUrl, or --local.');
  }
  let apiUrl: URL;
  try {
    apiUrl = new URL(urlText);
  } catch {
    throw new FactoryUsageError(`--api-url "${urlText}" is not a URL.`);
  }
  if (apiUrl.protocol !== 'https:' && apiUrl.protocol !== 'http:') throw new FactoryUsageError(`--api-url must be http(s) (got "${apiUrl.protocol}").`);
  const localOrigin = endpoints?.api.url ? new URL(endpoints.api.url).origin : undefined;
  const looksLocal = isLoopbackHost(apiUrl.hostname) || apiUrl.origin === localOrigin;

  if (values.token !== undefined) {
    if (values.token.trim() === '') throw new FactoryUsageError('--token is empty.');
    if (apiUrl.protocol === 'http:' && !looksLocal) throw new FactoryUsageError(`Refused: sending the token over plain http to ${apiUrl.host} would expose it; use https.`);
    return { apiUrl, auth: { kind: 'token', token: values.token.trim() } };
  }
  if (values.local || (looksLocal && !values.sigv4)) {
    const token = await readApiToken(files).catch(() => undefined);
    if (!token) throw new FactoryUsageError(`No API token in ${files.dir} for ${apiUrl.origin}: pass --token, or the --data-dir the local mode runs on.`);
    return { apiUrl, auth: { kind: 'token', token } };
  }
  const region = values.region ?? regionOfApiUrl(apiUrl) ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  if (!region) throw new FactoryUsageError(`Cannot tell the AWS Region of ${apiUrl.host}: pass --region (or set AWS_REGION).`);
  const chain = await defaultCredentialChain();
  try {
    await chain();
  } catch (error) {
    throw new FactoryUsageError(
      `No AWS credentials to sign the requests with (${(error as Error).message}). The default chain reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), AWS_PROFILE and ~/.aws, SSO, web identity and the container or instance role.`,
    );
  }
  return { apiUrl, auth: { kind: 'sigv4', region, credentials: chain } };
}

function formatSummary(summary: RunSummary): string {
  const seconds = (summary.durationMs / 1000).toFixed(1);
  const parts =
    summary.command === 'sign'
      ? [`${summary.done} signed`, `${summary.skipped} already signed`, `${summary.failed} failed`]
      : [`${summary.created ?? 0} created`, `${summary.existing ?? 0} existed`, `${summary.skipped} already done`, `${summary.failed} failed`];
  if (summary.notAttempted > 0) parts.push(`${summary.notAttempted} not attempted`);
  const lines = [`${summary.aborted ? 'Aborted' : 'Done'} in ${seconds} s: ${parts.join(', ')} of ${summary.total}.`];
  if (summary.aborted) lines.push(`Aborted: ${summary.aborted}`);
  for (const failure of summary.failures.slice(0, 20)) lines.push(`  FAILED ${failure.deviceId}: ${failure.httpStatus !== undefined ? `${failure.httpStatus} ` : ''}${failure.code}: ${failure.message}`);
  if (summary.failures.length > 20) lines.push(`  ... and ${summary.failures.length - 20} more (see the report)`);
  if (summary.command === 'sign' && summary.outDir) lines.push(`Certificates in ${summary.outDir} (<deviceId>.crt, <deviceId>.chain.pem).`);
  lines.push(`Report: ${summary.report}`);
  if (summary.failed > 0 || summary.notAttempted > 0) lines.push('Run the same command again to retry what failed or was not attempted; what is done is skipped.');
  return lines.join('\n');
}

/** `iotcert factory ...`; answers the exit code. */
export async function factoryMain(argv: readonly string[], io: FactoryIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    io.stdout.write(`${FACTORY_USAGE}\n`);
    return 0;
  }
  try {
    if (command !== 'sign' && command !== 'preregister') throw new FactoryUsageError(`Unknown command "factory ${command}".`);
    const values = parseFactoryOptions(rest);
    const required = (name: 'csr-dir' | 'out-dir' | 'manifest'): string => {
      const value = values[name];
      if (typeof value !== 'string' || value === '') throw new FactoryUsageError(`--${name} is required for factory ${command}.`);
      return resolve(value);
    };
    const common = {
      concurrency: whole(values.concurrency, 'concurrency', 4, 1, 64),
      ratePerSecond: whole(values.rate, 'rate', 8, 0, 10_000),
      attempts: whole(values.attempts, 'attempts', 5, 1, 20),
    };
    const json = values.json ?? false;
    // Inputs first: a missing folder or a bad manifest is reported before any credential is looked up.
    const csrDir = command === 'sign' ? required('csr-dir') : undefined;
    const outDir = command === 'sign' ? required('out-dir') : undefined;
    const manifest = command === 'preregister' ? required('manifest') : undefined;
    if (csrDir !== undefined) await listCsrFiles(csrDir);
    if (manifest !== undefined) await readManifest(manifest);
    const { apiUrl, auth } = await resolveApiAccess(values, io.env);
    const client = new DeviceApiClient({ apiUrl, auth });
    const progress = progressFor({ stdout: io.stdout, stderr: io.stderr, quiet: json });
    const summary =
      csrDir !== undefined && outDir !== undefined
        ? await signCsrDirectory({ client, csrDir, outDir, registeredOnly: values['registered-only'] ?? false, progress, ...common })
        : await preregisterManifest({ client, manifest: manifest as string, ...(values.report ? { reportFile: resolve(values.report) } : {}), progress, ...common });
    io.stdout.write(`${json ? JSON.stringify(summary, null, 2) : formatSummary(summary)}\n`);
    return summary.failed > 0 || summary.aborted !== undefined ? 1 : 0;
  } catch (error) {
    if (error instanceof FactoryUsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`${(error as Error).message}\n\n${FACTORY_USAGE}\n`);
      return 2;
    }
    if (error instanceof FactoryInputError) {
      io.stderr.write(`iotcert factory: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}
