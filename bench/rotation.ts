/**
 * Rotation benchmark: how many certificate rotations per second the local mode completes, as a ratio to the
 * certificates per second it issues through the API, both measured in the same run on the same server.
 *
 *   npm run bench:rotation                                    # N=200 devices, concurrency 20
 *   npm run bench:rotation -- --devices 50 --concurrency 10
 *   BENCH_DEVICES=1000 npm run bench                          # both benchmarks (flags win over the variables)
 *
 * It starts the local mode as `npm start` does (a child process, free ports, a temporary data folder, its own
 * DynamoDB Local, default settings), enrolls the devices through the API, then measures:
 *  - issuance: N `POST /devices/{id}/certificates` with fresh CSRs (made before the clock starts: a client's work),
 *    at concurrency C, on ACTIVE devices that already hold a certificate, as a rotating device does;
 *  - rotation: N full rotations (local/cli/rotate.ts `rotateDevice`, the device side firmware follows: new key,
 *    request over the current certificate, reconnect with the new one, commit) at the same concurrency;
 *  and checks every rotated device: committed, exactly one ACTIVE certificate and no rotation left on record (not
 *  stranded), and that certificate is the one in its device.pem, which connects (nothing lost).
 *
 * Neither side gets a cold start: the enrollments (issuances through the API) and a few rotations run first as a
 * warm-up, then issuance, rotation and issuance again; the issuance figure takes both runs that bracket the rotation
 * together, so a drift of the machine (other work on it, a growing table) weighs on both figures alike.
 *
 * The figure is the ratio rotations/s ÷ issuances/s; machine speed cancels out. Expect it well below 1, because a
 * rotation is an issuance and more:
 *  - the server does the issuance steps (CA; registry: thing, register, attach; the operation's record: 7 DynamoDB
 *    calls, 4 of them transactions, when this was written) plus the rotation's checks (the principal's record, the
 *    device's live certificates for the re-key rule), then a commit (its own operation record, one device write that
 *    decides it, the previous certificate INACTIVE and detached in the registry, one transaction retiring it): 22
 *    DynamoDB calls, 8 of them transactions, and 5 registry saves instead of 3;
 *  - the device makes its key pair and CSR, saves its state (files flushed to disk) at each step, and speaks MQTT over
 *    TLS: 3 connects (the request over the current certificate, a first connect with the new one, after which it never
 *    rolls back, then the commit), 2 SUBSCRIBEs, 2 QoS 1 PUBLISHes and 2 answers; an issuance is one HTTP request;
 *  - the rotation messages reach the rotation function through the topic rules' asynchronous invocation, which runs
 *    at most `--jitr-concurrency` (default 4) at once, as a Lambda's reserved concurrency would; API requests are
 *    handled as they come.
 * The MQTT counts printed are measured in the run (the server's log of connects and answers, the device's reports),
 * except the SUBSCRIBEs.
 */
import 'reflect-metadata';
import { readdir } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { certificateIdOf } from '../functions/core/x509';
import { connectOnce, enrollDevice, makeKeyAndCsr, readDeviceTls } from '../local/cli/device';
import { rotateDevice, type RotationReport } from '../local/cli/rotate';
import type { LocalModeProcess } from '../test/e2e/support/local-mode-process';
import { reportFailures, withLocalMode } from './support/local-mode';
import { latencies, mean, measure, ms, pad, percentile, rate, type Run } from './support/measure';

interface Options {
  readonly devices: number;
  readonly concurrency: number;
  readonly warmup: number;
  /** Passed to the local mode as `--jitr-concurrency` (it also bounds the rotation function); its default otherwise. */
  readonly jitrConcurrency?: number;
}

const USAGE = `Usage: tsx bench/rotation.ts [--devices N] [--concurrency C] [--warmup W] [--jitr-concurrency J]
  --devices N           devices rotated, and certificates issued in each issuance run (default 200, or BENCH_DEVICES)
  --concurrency C       requests / rotations in flight at once (default 20, or BENCH_CONCURRENCY)
  --warmup W            rotations before the timed runs (default 10)
  --jitr-concurrency J  the local mode's --jitr-concurrency, which also bounds the rotation function (default: its own, 4)`;

function parseOptions(argv: readonly string[]): Options | 'HELP' {
  const values: Record<string, string | undefined> = { devices: process.env.BENCH_DEVICES, concurrency: process.env.BENCH_CONCURRENCY, warmup: undefined, 'jitr-concurrency': undefined };
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    if (arg === '--help' || arg === '-h') return 'HELP';
    const [flag, inline] = arg.split('=', 2) as [string, string | undefined];
    const name = flag.replace(/^--/, '');
    if (!flag.startsWith('--') || !(name in values)) throw new Error(`unknown argument ${arg}\n${USAGE}`);
    values[name] = inline ?? argv[++index];
  }
  const count = (name: string, fallback: number | undefined, min: number): number | undefined => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min) throw new Error(`--${name} must be an integer of at least ${min}, not ${JSON.stringify(raw)}\n${USAGE}`);
    return value;
  };
  const jitrConcurrency = count('jitr-concurrency', undefined, 1);
  return {
    devices: count('devices', 200, 1) as number,
    concurrency: count('concurrency', 20, 1) as number,
    warmup: count('warmup', 10, 0) as number,
    ...(jitrConcurrency === undefined ? {} : { jitrConcurrency }),
  };
}

/* ---------------------------------------------------------------------------------------------- the steps */


/** A certificate through the API for a device that exists; answers its id. */
async function issue(local: LocalModeProcess, deviceId: string, csr: string): Promise<string> {
  const { body } = await local.api('POST', `/devices/${encodeURIComponent(deviceId)}/certificates`, { csr });
  const { certificateId } = body as { certificateId?: string };
  if (typeof certificateId !== 'string') throw new Error(`POST /devices/${deviceId}/certificates answered no certificateId: ${JSON.stringify(body).slice(0, 200)}`);
  return certificateId;
}

/** The moments a rotation reported (rotateDevice's progress lines), from its start, in milliseconds. */
interface RotationTrace {
  readonly marks: Partial<Record<Mark, number>>;
  publishes: number;
  resends: number;
  refusedConnects: number;
}

type Mark = 'keySaved' | 'rotateSent' | 'issued' | 'promoted' | 'commitSent' | 'committed';

const MARKS: readonly [RegExp, Mark][] = [
  [/^new key /, 'keySaved'],
  [/^rotate request \S+ sent /, 'rotateSent'],
  [/^new certificate /, 'issued'],
  [/^connected with the new certificate/, 'promoted'],
  [/^commit request \S+ sent /, 'commitSent'],
  [/^committed: /, 'committed'],
];

/** The segments of one rotation between its marks, as the device sees them. */
const STEPS: readonly { readonly from: Mark | 'start'; readonly to: Mark; readonly label: string }[] = [
  { from: 'start', to: 'keySaved', label: 'new key + CSR, state saved (device)' },
  { from: 'keySaved', to: 'rotateSent', label: 'TLS connect (current cert) + SUBSCRIBE + rotate PUBLISH acked' },
  { from: 'rotateSent', to: 'issued', label: 'rotate answered (queue + rotation function), next.pem saved' },
  { from: 'issued', to: 'promoted', label: 'TLS connect with the new cert + disconnect, files promoted' },
  { from: 'promoted', to: 'commitSent', label: 'TLS connect (new cert) + SUBSCRIBE + commit PUBLISH acked' },
  { from: 'commitSent', to: 'committed', label: 'commit answered (queue + rotation function), files removed' },
];

async function rotateTraced(local: LocalModeProcess, deviceId: string, dir: string): Promise<{ report: RotationReport; trace: RotationTrace; totalMs: number }> {
  const started = performance.now();
  const trace: RotationTrace = { marks: {}, publishes: 0, resends: 0, refusedConnects: 0 };
  const report = await rotateDevice({
    deviceId,
    dir,
    target: local.mqtt,
    answerTimeoutMs: 30_000,
    onProgress: (line) => {
      const at = performance.now() - started;
      for (const [pattern, mark] of MARKS) if (pattern.test(line)) trace.marks[mark] = at;
      const sent = /^(rotate|commit) request \S+ sent \(attempt (\d+)\)/.exec(line);
      if (sent) {
        trace.publishes += 1;
        if (sent[2] !== '1') trace.resends += 1;
      }
      if (/^connect attempt \d+ refused/.test(line)) trace.refusedConnects += 1;
    },
  });
  return { report, trace, totalMs: performance.now() - started };
}

/** What the server logged in a stretch of its output: MQTT connects, rotation answers, retried invocations. */
function serverCounts(text: string): { connects: number; accepted: number; rejected: number; retried: number } {
  const count = (pattern: RegExp) => (text.match(pattern) ?? []).length;
  return {
    connects: count(/\[mqtt\] "[^"\n]*" connected \(certificate /g),
    accepted: count(/\[rotation\] [^\n]*: (rotate|commit) accepted \(/g),
    rejected: count(/\[rotation\] [^\n]*: (rotate|commit) rejected \(/g),
    retried: count(/\[rotation\] [^\n]*: attempt \d+ failed \(/g),
  };
}

/** The output from `from` on, once it has stopped growing (its log lines reach us a moment after the effect). */
async function settledOutput(local: LocalModeProcess, from: number): Promise<string> {
  let length = -1;
  for (let tries = 0; tries < 40 && local.output().length !== length; tries += 1) {
    length = local.output().length;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return local.output().slice(from);
}

interface DeviceView {
  readonly status: string;
  readonly rotation?: unknown;
  readonly certificates: readonly { readonly certificateId: string; readonly status: string }[];
}

/** Why a rotated device is stranded or lost, if it is; undefined when all is well. */
async function checkRotated(local: LocalModeProcess, deviceId: string, dir: string, before: string, report: RotationReport | undefined): Promise<{ stranded?: string; lost?: string }> {
  const view = (await local.api('GET', `/devices/${encodeURIComponent(deviceId)}`)).body as DeviceView;
  const active = view.certificates.filter((certificate) => certificate.status === 'ACTIVE');
  if (view.rotation !== undefined || active.length !== 1) {
    return { stranded: `${deviceId}: ${active.length} ACTIVE certificate(s)${view.rotation === undefined ? '' : `, rotation on record ${JSON.stringify(view.rotation)}`}` };
  }
  const held = await certificateIdOf((await readDeviceTls(dir)).cert);
  const current = active[0]?.certificateId;
  const previous = view.certificates.find((certificate) => certificate.certificateId === before);
  if (report?.outcome !== 'COMMITTED' || held !== current || current !== report.certificateId || current === before) {
    return { lost: `${deviceId}: holds ${held.slice(0, 12)}, ACTIVE on record ${current?.slice(0, 12)}, reported ${report?.outcome === 'COMMITTED' ? report.certificateId.slice(0, 12) : report?.outcome}` };
  }
  if (previous?.status !== 'RETIRED') return { lost: `${deviceId}: the previous certificate ${before.slice(0, 12)} is ${previous?.status ?? 'not on record'}, not RETIRED` };
  if ((await readdir(dir)).some((name) => /^(rotation\.json|next\.|previous\.)/.test(name))) return { lost: `${deviceId}: rotation files left in ${dir}` };
  return {};
}

/* ---------------------------------------------------------------------------------------------- the run */

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options === 'HELP') {
    console.log(USAGE);
    return;
  }
  const { devices, concurrency, warmup } = options;
  const extraArgs = options.jitrConcurrency === undefined ? [] : ['--jitr-concurrency', String(options.jitrConcurrency)];
  reportFailures(
    await withLocalMode(extraArgs, async ({ local, dataDir }, failures) => {
    const loadAtStart = loadavg()[0] as number;
    console.log(`devices: ${devices}, concurrency: ${concurrency}, warm-up rotations: ${warmup}`);
    console.log(`local mode: npm start's defaults${options.jitrConcurrency === undefined ? '' : ` but --jitr-concurrency ${options.jitrConcurrency}`}, its own DynamoDB Local, ready in ${(local.startupMs / 1000).toFixed(1)} s (data ${dataDir})`);

    // Setup, which also warms the API's issuance path: rotating devices (with their files) and issuing devices, all ACTIVE with one certificate.
    const rotating = Array.from({ length: devices }, (_, index) => `bench-rot-${pad(index)}`);
    const warming = Array.from({ length: warmup }, (_, index) => `bench-warm-${pad(index)}`);
    const issuing = Array.from({ length: devices }, (_, index) => `bench-issue-${pad(index)}`);
    const dirOf = (deviceId: string) => join(dataDir, 'bench-devices', deviceId);
    const setup = await measure([...rotating, ...warming, ...issuing], concurrency, async (deviceId) => {
      if (deviceId.startsWith('bench-issue-')) {
        await local.api('POST', '/devices', { deviceId });
        return issue(local, deviceId, (await makeKeyAndCsr(deviceId)).csrPem);
      }
      return (await enrollDevice({ deviceId, outDir: dirOf(deviceId), dataDir, apiUrl: local.endpoints.api.url })).certificateId;
    });
    if (setup.errors.length > 0) throw new Error(`setup: ${setup.errors.length} enrollment(s) failed, first: ${(setup.errors[0]?.error as Error).message}`);
    const enrolledCertificate = new Map([...rotating, ...warming, ...issuing].map((deviceId, index) => [deviceId, setup.results[index] as string]));
    const warm = await measure(warming, concurrency, (deviceId) => rotateTraced(local, deviceId, dirOf(deviceId)));
    const warmFailed = warmup - warm.results.filter((result) => result?.report.outcome === 'COMMITTED').length;
    if (warmFailed > 0) failures.push(`warm-up: ${warmFailed} of ${warmup} rotations did not commit`);
    console.log(`warm-up: ${setup.results.length} enrollments through the API in ${ms(setup.wallMs)}, ${warmup} rotations in ${ms(warm.wallMs)}`);
    console.log('order: warm-up, then issuance run 1, rotation, issuance run 2; the issuance figure takes both runs that bracket the rotation');

    const issuanceRun = async () => {
      const csrs = await Promise.all(issuing.map(async (deviceId) => (await makeKeyAndCsr(deviceId)).csrPem));
      return measure(issuing, concurrency, (deviceId, index) => issue(local, deviceId, csrs[index] as string));
    };

    const issuance1 = await issuanceRun();

    const outputBefore = local.output().length;
    const rotation = await measure(rotating, concurrency, (deviceId) => rotateTraced(local, deviceId, dirOf(deviceId)));
    const server = serverCounts(await settledOutput(local, outputBefore));

    const issuance2 = await issuanceRun();

    // Figures.
    const issuanceLine = (name: string, run: Run<string>) =>
      `${name}: ${run.latenciesMs.length} certificates in ${ms(run.wallMs)}, ${rate(run.latenciesMs.length, run.wallMs).toFixed(1)} certificates/s, ${latencies(run.latenciesMs)}`;
    console.log(issuanceLine('issuance run 1 (POST /devices/{id}/certificates, fresh CSR)', issuance1));
    console.log(issuanceLine('issuance run 2', issuance2));
    const issued = issuance1.latenciesMs.length + issuance2.latenciesMs.length;
    const issuanceWallMs = issuance1.wallMs + issuance2.wallMs;
    const issuanceRate = rate(issued, issuanceWallMs);
    console.log(`issuance (both runs): ${issuanceRate.toFixed(1)} certificates/s, ${latencies([...issuance1.latenciesMs, ...issuance2.latenciesMs])}`);
    const drift = Math.abs(issuance1.wallMs - issuance2.wallMs) / ((issuance1.wallMs + issuance2.wallMs) / 2);
    if (drift > 0.25) console.log(`  note: the two issuance runs differ by ${(drift * 100).toFixed(0)}%: the machine's speed changed during the run (other load?); compare ratios, not absolute figures`);
    for (const [name, run] of [['1', issuance1], ['2', issuance2]] as const) {
      if (run.errors.length > 0) failures.push(`issuance run ${name}: ${run.errors.length} request(s) failed, first: ${(run.errors[0]?.error as Error).message}`);
    }

    const traces = rotation.results.flatMap((result) => (result ? [result.trace] : []));
    const committed = rotation.results.flatMap((result) => (result?.report.outcome === 'COMMITTED' ? [result] : []));
    const rotationRate = rate(committed.length, rotation.wallMs);
    console.log(`rotation (rotateDevice: new key, request, reconnect, commit): ${committed.length} committed in ${ms(rotation.wallMs)}, ${rotationRate.toFixed(1)} rotations/s, ${latencies(committed.map((result) => result.totalMs))}`);
    for (const step of STEPS) {
      const spans = traces.flatMap((trace) => {
        const from = step.from === 'start' ? 0 : trace.marks[step.from];
        const to = trace.marks[step.to];
        return from === undefined || to === undefined ? [] : [to - from];
      });
      console.log(`  rotation step: ${step.label}: p50 ${ms(percentile(spans, 50))}, mean ${ms(mean(spans))}`);
    }

    // Checks: every device committed, none stranded, none lost.
    for (const { index, error } of rotation.errors) failures.push(`${rotating[index]}: rotation threw ${(error as Error).message}`);
    rotation.results.forEach((result, index) => {
      if (result && result.report.outcome !== 'COMMITTED') failures.push(`${rotating[index]}: rotation ${result.report.outcome}: ${JSON.stringify(result.report).slice(0, 300)}`);
    });
    const checks = await measure(rotating, concurrency, (deviceId, index) => checkRotated(local, deviceId, dirOf(deviceId), enrolledCertificate.get(deviceId) as string, rotation.results[index]?.report));
    const stranded = checks.results.flatMap((check) => (check?.stranded ? [check.stranded] : []));
    const lost = checks.results.flatMap((check) => (check?.lost ? [check.lost] : []));
    for (const { index, error } of checks.errors) lost.push(`${rotating[index]}: check failed: ${(error as Error).message}`);
    // Nothing lost: every device connects with the certificate it holds now.
    const probes = await measure(rotating, concurrency, async (deviceId) => (await connectOnce(local.mqtt, deviceId, await readDeviceTls(dirOf(deviceId)))).endAsync());
    for (const { index, error } of probes.errors) lost.push(`${rotating[index]}: cannot connect with its new certificate: ${(error as Error).message}`);
    failures.push(...stranded.map((line) => `stranded: ${line}`), ...lost.map((line) => `lost: ${line}`));
    console.log(`rotation checks: ${committed.length}/${devices} committed, ${stranded.length} stranded (a rotation left on record, or not exactly one ACTIVE certificate), ${lost.length} lost (the device does not hold, or cannot connect with, its ACTIVE certificate)`);

    // MQTT per rotation, as counted in the run: the server's log (connects, answers) and the device's reports (publishes).
    const per = (value: number) => (value / devices).toFixed(2);
    const resends = traces.reduce((sum, trace) => sum + trace.resends, 0);
    const refusedConnects = traces.reduce((sum, trace) => sum + trace.refusedConnects, 0);
    console.log(
      `MQTT per rotation: ${per(server.connects)} TLS connects, ${per(traces.reduce((sum, trace) => sum + trace.publishes, 0))} PUBLISHes by the device, ${per(server.accepted + server.rejected)} answers (${server.rejected} rejected in all), 2 SUBSCRIBEs (by the protocol, not counted); ${resends} resends, ${refusedConnects} refused connects, ${server.retried} retried invocations of the rotation function`,
    );
    console.log('  (an issuance is one HTTP request; a rotation is an issuance plus its checks and a commit on the server, and the MQTT above on the device)');
    console.log(`machine: ${availableParallelism()} CPUs, 1-minute load average ${loadAtStart.toFixed(1)} at the start, ${(loadavg()[0] as number).toFixed(1)} at the end`);
    console.log(`ratio rotations/s ÷ issuances/s: ${(rotationRate / issuanceRate).toFixed(2)}`);
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
