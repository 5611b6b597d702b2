/**
 * End-to-end onboarding through the local MQTT/TLS endpoint, as a fleet of factory-made devices does it, against the
 * limit the same endpoint sets: full mTLS connects of devices that are already ACTIVE, at the same concurrency.
 *
 *   tsx bench/local-onboarding.ts                          # N=1000 devices, concurrency 50
 *   tsx bench/local-onboarding.ts --devices 200 --concurrency 20 --jitr-concurrency 8
 *
 * One onboarding is what firmware does (local/cli/device.ts `connectDevice`): a first connect the endpoint refuses
 * (the unknown certificate is registered PENDING_ACTIVATION and its registration event goes to the JITR function),
 * retries with backoff and jitter until a connect is accepted, then a QoS 1 PUBLISH acknowledged. Timed from the
 * first connect to the PUBACK; the devices' keys and certificates are minted before any clock starts.
 *
 * The limit: an onboarding needs at least two full handshakes (the refused one and the accepted one), so the rate
 * it cannot beat on this endpoint is (connects/s of ACTIVE devices) ÷ 2. A connect here is the whole of it: TCP,
 * TLS with a client certificate (no session resumption), MQTT CONNECT/CONNACK, DISCONNECT. It is measured before and
 * after the onboarding run and both are taken together, so a drift of the machine weighs on both figures alike.
 *
 * Checked: every device published (0 lost); the run exits non-zero otherwise.
 */
import 'reflect-metadata';
import { connectDevice, connectOnce, type ConnectReport } from '../local/cli/device';
import { bracketed, integerOptions, latencies, loadNow, machineLine, measure, mean, ms, pad, percentile, rate } from './support/measure';
import { mintDevices, reportFailures, withLocalMode, type MintedDevice } from './support/local-mode';
import { LogTimeline } from './support/log-timeline';
import { cpuPer, cpuSnapshot, type CpuSnapshot } from './support/process-cpu';
import { availableParallelism } from 'node:os';
import { certificateIdOf } from '../functions/core/x509';
import { performance } from 'node:perf_hooks';

const USAGE = `Usage: tsx bench/local-onboarding.ts [--devices N] [--concurrency C] [--handshakes H] [--jitr-concurrency J]
  --devices N           devices onboarded (default 1000, or BENCH_DEVICES)
  --concurrency C       devices (and connects) in flight at once (default 50, or BENCH_CONCURRENCY)
  --handshakes H        connects of ACTIVE devices in each of the two baseline runs (default: N)
  --jitr-concurrency J  the local mode's --jitr-concurrency (default 0: its own default)`;

async function main(): Promise<void> {
  const options = integerOptions(
    process.argv.slice(2),
    {
      devices: { env: 'BENCH_DEVICES', fallback: 1000, min: 1 },
      concurrency: { env: 'BENCH_CONCURRENCY', fallback: 50, min: 1 },
      handshakes: { fallback: 0, min: 0 },
      'jitr-concurrency': { fallback: 0, min: 0 },
    },
    USAGE,
  );
  if (options === 'HELP') return console.log(USAGE);
  const { devices, concurrency } = options;
  const handshakes = options.handshakes || devices;
  const jitrArgs = options['jitr-concurrency'] > 0 ? ['--jitr-concurrency', String(options['jitr-concurrency'])] : [];
  const loadAtStart = loadNow();

  const failures = await withLocalMode(jitrArgs, async ({ local, dataDir }, failures) => {
    console.log(`devices: ${devices}, concurrency: ${concurrency}, connects per baseline run: ${handshakes}`);
    console.log(`local mode: npm start's defaults${jitrArgs.length > 0 ? ` but ${jitrArgs.join(' ')}` : ''}, its own DynamoDB Local, ready in ${(local.startupMs / 1000).toFixed(1)} s`);

    // One ACTIVE device per connecting worker (a client id connects once at a time); onboarding them warms the path.
    const warm = await mintDevices(dataDir, Array.from({ length: concurrency }, (_, index) => `bench-warm-${pad(index)}`));
    const onboarding = await mintDevices(dataDir, Array.from({ length: devices }, (_, index) => `bench-dev-${pad(index)}`));
    const warmRun = await measure(warm, concurrency, (device) => onboard(local.mqtt, device));
    const warmLost = warmRun.results.filter((report) => !report?.published).length;
    if (warmLost > 0) throw new Error(`warm-up: ${warmLost} of ${warm.length} devices did not onboard`);
    console.log(`warm-up: ${warm.length} devices onboarded in ${ms(warmRun.wallMs)} (they are the ACTIVE devices of the baseline)`);

    const connectRun = async () => {
      let worker = 0;
      const slots = Array.from({ length: handshakes }, (_, index) => index);
      const started = process.hrtime.bigint();
      const perWorker = Array.from({ length: Math.min(concurrency, handshakes) }, () => warm[worker++ % warm.length] as MintedDevice);
      let next = 0;
      const latenciesMs: number[] = [];
      const errors: unknown[] = [];
      await Promise.all(
        perWorker.map(async (device) => {
          while (next < slots.length) {
            next += 1;
            const begun = process.hrtime.bigint();
            try {
              await (await connectOnce(local.mqtt, device.deviceId, device.tls)).endAsync();
              latenciesMs.push(Number(process.hrtime.bigint() - begun) / 1e6);
            } catch (error) {
              errors.push(error);
            }
          }
        }),
      );
      if (errors.length > 0) failures.push(`baseline: ${errors.length} connect(s) of ACTIVE devices failed, first: ${(errors[0] as Error).message}`);
      return { count: latenciesMs.length, wallMs: Number(process.hrtime.bigint() - started) / 1e6, latenciesMs };
    };

    const cpu0 = cpuSnapshot(local.pid);
    const before = await connectRun();
    const cpu1 = cpuSnapshot(local.pid);
    // When the JITR function finished each certificate (its log line), to split the latency: JITR vs the device's backoff.
    const shortIds = await Promise.all(onboarding.map(async (device) => (await certificateIdOf(device.tls.cert)).slice(0, 12)));
    const activated = new LogTimeline(local.output, /\[jitr\] certificate ([0-9a-f]{12})…: ACTIVATED/);
    const firstConnectAt: number[] = [];
    const run = await measure(onboarding, concurrency, (device, index) => {
      firstConnectAt[index] = performance.now();
      return onboard(local.mqtt, device);
    });
    activated.stop();
    const cpu2 = cpuSnapshot(local.pid);
    const after = await connectRun();
    const cpu3 = cpuSnapshot(local.pid);

    const connects = bracketed(before, after);
    const reports = run.results.filter((report): report is ConnectReport => report !== undefined);
    const published = reports.filter((report) => report.published);
    const lost = devices - published.length;
    const onboardingRate = rate(published.length, run.wallMs);
    const attempts = reports.map((report) => report.attempts.length);
    const untilAccepted = published.map((report) => report.attempts.find((attempt) => attempt.outcome === 'CONNECTED')?.atMs ?? Number.NaN);

    console.log(`baseline: connects of ACTIVE devices (TLS + MQTT CONNECT/DISCONNECT): ${connects.before.toFixed(1)}/s before, ${connects.after.toFixed(1)}/s after, ${connects.rate.toFixed(1)}/s together; ${latencies([...before.latenciesMs, ...after.latenciesMs])}`);
    if (connects.drift > 0.25) console.log(`  note: the two baseline runs differ by ${(connects.drift * 100).toFixed(0)}%: the machine's speed changed during the run (other load?)`);
    console.log(`onboarding (first connect → refused → JITR → accepted connect → QoS 1 PUBLISH acked): ${published.length} devices in ${ms(run.wallMs)}, ${onboardingRate.toFixed(1)} devices/s; ${latencies(published.map((report) => report.totalMs))} (first connect → PUBACK)`);
    console.log(`  first connect → accepted connect: p50 ${ms(percentile(untilAccepted, 50))}, p99 ${ms(percentile(untilAccepted, 99))}`);
    const jitrMs: number[] = [];
    const idleMs: number[] = [];
    onboarding.forEach((_, index) => {
      const at = activated.at(shortIds[index] as string);
      const accepted = run.results[index]?.attempts.find((attempt) => attempt.outcome === 'CONNECTED')?.atMs;
      if (at === undefined) return;
      const jitr = at - (firstConnectAt[index] as number);
      jitrMs.push(jitr);
      if (accepted !== undefined) idleMs.push(accepted - jitr);
    });
    console.log(`  first connect → JITR's ACTIVATED logged: p50 ${ms(percentile(jitrMs, 50))}, p99 ${ms(percentile(jitrMs, 99))} (${jitrMs.length} seen); ACTIVATED → accepted connect (the device's backoff): p50 ${ms(percentile(idleMs, 50))}, p99 ${ms(percentile(idleMs, 99))}`);
    console.log(`  connect attempts per device: mean ${mean(attempts).toFixed(2)}, p50 ${percentile(attempts, 50)}, max ${Math.max(...attempts)}`);
    console.log(`  lost: ${lost} (devices that did not publish)`);
    console.log(`CPU per connect of an ACTIVE device (first baseline run): ${cpuPer(cpu0, cpu1, before.count)}; second run: ${cpuPer(cpu2, cpu3, after.count)}`);
    console.log(`CPU per onboarded device: ${cpuPer(cpu1, cpu2, Math.max(1, published.length))}`);
    console.log(machineLine(loadAtStart));
    const measuredRatio = onboardingRate / (connects.rate / 2);
    console.log(`ratio onboarding ÷ (connects/s ÷ 2): ${measuredRatio.toFixed(2)} (goal ≥ 0.5)`);
    const ceiling = cpuCeiling({ connects: [cpu0, cpu1, cpu2, cpu3], connectRuns: [before, after], onboardingWallMs: run.wallMs, onboarded: published.length });
    if (ceiling !== undefined) {
      console.log(
        `ratio ceiling on this machine: ${ceiling.ratio.toFixed(2)} = 2c ÷ (2c + d), c = ${ceiling.perConnectMs.toFixed(1)} ms of CPU per connect (all processes), d = ${ceiling.dynamoPerDeviceMs.toFixed(1)} ms of DynamoDB Local CPU per onboarded device beyond its background (${ceiling.dynamoBackgroundMsPerS.toFixed(0)} ms/s); ` +
          `at the CPU each run got (connects ${ceiling.connectCores.toFixed(2)}, onboarding ${ceiling.onboardingCores.toFixed(2)} of ${availableParallelism()} CPUs) ${ceiling.atMeasuredShares.toFixed(2)}. ` +
          `An onboarding needs at least its two connects and DynamoDB Local's work for its JITR calls: no local-mode code passes this; (2c + d) ÷ CPU per onboarding = ${ceiling.mandatedShare.toFixed(2)} (the rest is our code)`,
      );
    }

    for (const { index, error } of run.errors) failures.push(`${onboarding[index]?.deviceId}: ${(error as Error).message}`);
    for (const report of reports) if (!report.published) failures.push(`lost: a device did not publish after ${report.attempts.length} attempts: ${report.attempts.at(-1)?.reason ?? report.publishError ?? ''}`);
  });
  reportFailures(failures);
}

/**
 * The best onboarding ÷ (connects/s ÷ 2) this machine allows: a connect costs c ms of CPU (all processes: local mode,
 * DynamoDB Local, devices), an onboarding at least 2c (the refused and the accepted connect) plus d, DynamoDB Local's
 * CPU for the JITR calls the architecture mandates. A rate is the CPU a run gets per second ÷ the CPU per unit, so
 * at equal CPU the ratio cannot exceed 2c ÷ (2c + d); at the CPU each run actually got, that times their shares.
 * DynamoDB Local's background CPU (its rate while only connects ran, which touch no table) is taken out of d, so the
 * ceiling errs high, never low. Undefined off Linux.
 */
function cpuCeiling(input: { connects: readonly [CpuSnapshot, CpuSnapshot, CpuSnapshot, CpuSnapshot]; connectRuns: readonly { count: number; wallMs: number }[]; onboardingWallMs: number; onboarded: number }): { ratio: number; perConnectMs: number; dynamoPerDeviceMs: number; dynamoBackgroundMsPerS: number; connectCores: number; onboardingCores: number; atMeasuredShares: number; mandatedShare: number } | undefined {
  const [cpu0, cpu1, cpu2, cpu3] = input.connects;
  const total = (snapshot: CpuSnapshot) => (snapshot.server === undefined || snapshot.dynamo === undefined ? undefined : snapshot.server + snapshot.dynamo + snapshot.bench);
  const [t0, t1, t2, t3] = [total(cpu0), total(cpu1), total(cpu2), total(cpu3)];
  if (t0 === undefined || t1 === undefined || t2 === undefined || t3 === undefined || input.onboarded === 0) return undefined;
  const connectCount = input.connectRuns.reduce((sum, runOf) => sum + runOf.count, 0);
  const connectWallMs = input.connectRuns.reduce((sum, runOf) => sum + runOf.wallMs, 0);
  const connectCpu = t1 - t0 + (t3 - t2);
  const perConnectMs = connectCpu / connectCount;
  const dynamoDuringConnects = (cpu1.dynamo as number) - (cpu0.dynamo as number) + ((cpu3.dynamo as number) - (cpu2.dynamo as number));
  const dynamoBackgroundMsPerS = dynamoDuringConnects / (connectWallMs / 1000);
  const dynamoOnboarding = (cpu2.dynamo as number) - (cpu1.dynamo as number);
  const dynamoPerDeviceMs = Math.max(0, dynamoOnboarding - dynamoBackgroundMsPerS * (input.onboardingWallMs / 1000)) / input.onboarded;
  const ratio = (2 * perConnectMs) / (2 * perConnectMs + dynamoPerDeviceMs);
  const connectCores = connectCpu / connectWallMs;
  const onboardingCores = (t2 - t1) / input.onboardingWallMs;
  const perOnboardingMs = (t2 - t1) / input.onboarded;
  return { ratio, perConnectMs, dynamoPerDeviceMs, dynamoBackgroundMsPerS, connectCores, onboardingCores, atMeasuredShares: (ratio * onboardingCores) / connectCores, mandatedShare: (2 * perConnectMs + dynamoPerDeviceMs) / perOnboardingMs };
}

/** A device keeps trying for about 5 minutes (60 attempts, at most 5 s apart): a slow machine is not a lost device. */
function onboard(target: { host: string; port: number }, device: MintedDevice): Promise<ConnectReport> {
  return connectDevice({ deviceId: device.deviceId, tls: device.tls, target, attempts: 60 });
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
