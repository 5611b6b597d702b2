/**
 * Issuance through the local API against two limits measured in the same run: the bare DynamoDB transaction rate
 * (on the same DynamoDB Local the local mode uses) and raw P-256 signatures per second (node:crypto, one core).
 *
 *   tsx bench/issuance.ts                              # N=500 certificates, concurrency 20
 *   tsx bench/issuance.ts --devices 100 --concurrency 10
 *
 * The local mode runs as `npm start` does (a child process, its own DynamoDB Local). N devices are created first
 * (`POST /devices`, not timed) with a CSR each made beforehand (a client's work); the timed part is N
 * `POST /devices/{id}/certificates`. Warm-up first (issuances for other devices, bare transactions: the JVM's JIT),
 * then bare transactions, issuance, bare transactions again: the baseline takes both runs that bracket the issuance.
 *
 * The design floor, in the same run: one warm issuance's DynamoDB calls, recorded in-process through the local mode's
 * wiring (bench/support/local-api-calibration.ts) and replayed bare under fresh keys on the same DynamoDB Local (each
 * replayed device pre-registered first by replaying POST /devices' calls, not timed), before and after the issuance.
 *
 * Also printed: the mean latency of the first and the last tenth of the issuances, to see a per-change cost that
 * grows with the fleet (the registry, the table).
 */
import 'reflect-metadata';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ensureDeviceTable, localDocumentClient, localDynamoDbClient } from '../local/dynamodb-local';
import { makeKeyAndCsr } from '../local/cli/device';
import type { LocalModeProcess } from '../test/e2e/support/local-mode-process';
import { bareTransaction } from './support/bare-transaction';
import { describeCalls, freshKeys, replayCalls, tokensOf, type RecordedCall } from './support/dynamodb-call-replay';
import { localApiCalibration } from './support/local-api-calibration';
import { reportFailures, withLocalMode } from './support/local-mode';
import { bracketed, integerOptions, latencies, loadNow, machineLine, mean, measure, ms, pad, rate } from './support/measure';

const USAGE = `Usage: tsx bench/issuance.ts [--devices N] [--concurrency C] [--warmup W]
  --devices N      certificates issued in the timed run, one per device (default 500, or BENCH_ISSUANCE_DEVICES)
  --concurrency C  requests in flight at once (default 20, or BENCH_CONCURRENCY)
  --warmup W       issuances before timing (default 50)`;

/** P-256 ECDSA signatures (SHA-256) per second on this process's one thread, over `durationMs`. */
function p256SignaturesPerSecond(durationMs: number): number {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const data = Buffer.alloc(256, 7); // about a TBSCertificate's size
  let count = 0;
  const started = performance.now();
  while (performance.now() - started < durationMs) {
    for (let index = 0; index < 50; index += 1) sign('sha256', data, privateKey);
    count += 50;
  }
  return rate(count, performance.now() - started);
}

async function issue(local: LocalModeProcess, deviceId: string, csr: string): Promise<void> {
  const { body } = await local.api('POST', `/devices/${encodeURIComponent(deviceId)}/certificates`, { csr });
  if (typeof (body as { certificateId?: unknown }).certificateId !== 'string') throw new Error(`POST /devices/${deviceId}/certificates answered no certificateId: ${JSON.stringify(body).slice(0, 200)}`);
}

async function main(): Promise<void> {
  const options = integerOptions(
    process.argv.slice(2),
    {
      devices: { env: 'BENCH_ISSUANCE_DEVICES', fallback: 500, min: 1 },
      concurrency: { env: 'BENCH_CONCURRENCY', fallback: 20, min: 1 },
      warmup: { fallback: 50, min: 0 },
    },
    USAGE,
  );
  if (options === 'HELP') return console.log(USAGE);
  const { devices, concurrency, warmup } = options;
  const loadAtStart = loadNow();

  const failures = await withLocalMode([], async ({ local }, failures) => {
    console.log(`devices: ${devices}, concurrency: ${concurrency}, warm-up issuances: ${warmup}`);
    const dynamoClient = localDynamoDbClient(local.endpoints.dynamodb.endpoint);
    const documentClient = localDocumentClient(local.endpoints.dynamodb.endpoint);
    const replayClient = localDynamoDbClient(local.endpoints.dynamodb.endpoint);
    const calibration = await localApiCalibration(local.endpoints.dynamodb.endpoint);
    const bareTable = `bench-bare-${randomUUID()}`;
    await ensureDeviceTable(dynamoClient, bareTable);
    try {
      const warming = Array.from({ length: warmup }, (_, index) => `bench-warm-${pad(index)}`);
      const issuing = Array.from({ length: devices }, (_, index) => `bench-issue-${pad(index)}`);
      const all = [...warming, ...issuing];
      const csrs = new Map<string, string>();
      for (const deviceId of all) csrs.set(deviceId, (await makeKeyAndCsr(deviceId)).csrPem);
      const created = await measure(all, concurrency, (deviceId) => local.api('POST', '/devices', { deviceId }));
      if (created.errors.length > 0) throw new Error(`setup: ${created.errors.length} POST /devices failed, first: ${(created.errors[0]?.error as Error).message}`);

      const bare = async (run: string, count: number) => {
        const result = await measure(Array.from({ length: count }, (_, index) => `${run}-${index}`), concurrency, (key) => bareTransaction(documentClient, bareTable, key));
        if (result.errors.length > 0) failures.push(`bare transactions (${run}): ${result.errors.length} failed, first: ${(result.errors[0]?.error as Error).message}`);
        return { count: result.latenciesMs.length, wallMs: result.wallMs };
      };
      const warm = await measure(warming, concurrency, (deviceId) => issue(local, deviceId, csrs.get(deviceId) as string));
      if (warm.errors.length > 0) failures.push(`warm-up: ${warm.errors.length} issuance(s) failed, first: ${(warm.errors[0]?.error as Error).message}`);
      await bare('warm', 4 * Math.max(warmup, 50));

      // The design floor: the DynamoDB calls of one warm POST /devices/{id}/certificates, recorded in-process through
      // the local mode's code (bench/support/local-api-calibration.ts), replayed bare under fresh keys on the same
      // DynamoDB Local. Each replay's device is first pre-registered by replaying POST /devices' calls, not timed.
      const expectStatus = (answer: { status: number; body: unknown }, status: number, what: string) => {
        if (answer.status !== status) throw new Error(`floor calibration: ${what} answered ${answer.status}: ${JSON.stringify(answer.body).slice(0, 200)}`);
      };
      const calibrate = async (deviceId: string) => {
        const { csrPem } = await makeKeyAndCsr(deviceId);
        const { calls: setup } = await calibration.recorder.record(async () => expectStatus(await calibration.request('POST', '/devices', { deviceId }), 201, 'POST /devices'));
        const { calls: timed } = await calibration.recorder.record(async () => expectStatus(await calibration.request('POST', `/devices/${deviceId}/certificates`, { csr: csrPem }), 201, 'POST /devices/{id}/certificates'));
        return { setup, timed, tokens: tokensOf([...setup, ...timed], [deviceId], calibration.sharedValues) };
      };
      const floorStarted = performance.now();
      await calibrate('bench-floor-warm-up'); // the in-process code's first calls (caches, connections) are not a warm function's
      const recorded = await calibrate('bench-floor-calibration');
      const prepareFloor = async (count: number) => {
        const prepared = await measure(Array.from({ length: count }), concurrency, async () => {
          const fresh = freshKeys([...recorded.setup, ...recorded.timed], recorded.tokens);
          await replayCalls(replayClient, fresh.slice(0, recorded.setup.length));
          return fresh.slice(recorded.setup.length);
        });
        if (prepared.errors.length > 0) throw new Error(`floor: ${prepared.errors.length} pre-registration replay(s) failed, first: ${(prepared.errors[0]?.error as Error).message}`);
        return prepared.results as RecordedCall[][];
      };
      const floor = async (run: string, instances: readonly RecordedCall[][]) => {
        const result = await measure(instances, concurrency, (calls) => replayCalls(replayClient, calls));
        if (result.errors.length > 0) failures.push(`floor replays (${run}): ${result.errors.length} failed, first: ${(result.errors[0]?.error as Error).message}`);
        return { count: result.latenciesMs.length, wallMs: result.wallMs };
      };
      // Half as many replays as issuances on each side (each needs its pre-registration replayed first): a rate, as precise
      // over N/2, and the suite stays within its 10 minutes.
      const floorReplays = Math.max(Math.min(devices, 50), Math.ceil(devices / 2));
      await floor('warm', await prepareFloor(Math.max(warmup, 50)));
      const floorBefore = await prepareFloor(floorReplays);
      const floorAfter = await prepareFloor(floorReplays);

      const before = await bare('before', devices);
      const floorBeforeRun = await floor('before', floorBefore);
      const run = await measure(issuing, concurrency, (deviceId) => issue(local, deviceId, csrs.get(deviceId) as string));
      const floorAfterRun = await floor('after', floorAfter);
      const floorWallMs = performance.now() - floorStarted - run.wallMs - before.wallMs;
      const after = await bare('after', devices);
      const signatures = p256SignaturesPerSecond(1000);

      for (const { index, error } of run.errors) failures.push(`${issuing[index]}: ${(error as Error).message}`);
      const transactions = bracketed(before, after);
      const floorRate = bracketed(floorBeforeRun, floorAfterRun);
      const issuanceRate = rate(run.latenciesMs.length, run.wallMs);
      const tenth = Math.max(1, Math.floor(run.latenciesMs.length / 10));
      console.log(`baseline: bare 4-item transactions on the same DynamoDB Local: ${transactions.before.toFixed(1)}/s before, ${transactions.after.toFixed(1)}/s after, ${transactions.rate.toFixed(1)}/s together`);
      if (transactions.drift > 0.25) console.log(`  note: the two baseline runs differ by ${(transactions.drift * 100).toFixed(0)}%: the machine's speed changed during the run (other load?)`);
      console.log(`design floor, per certificate (one issuance's DynamoDB calls, recorded, replayed bare with fresh keys): ${describeCalls(recorded.timed)}`);
      console.log(`design floor (${floorReplays} replays before, ${floorReplays} after): ${floorRate.before.toFixed(1)}/s before, ${floorRate.after.toFixed(1)}/s after, ${floorRate.rate.toFixed(1)}/s together`);
      console.log(`  the floor's share of this benchmark's wall time (recording, pre-registration replays, warm-up and timed replays): ${ms(floorWallMs)}`);
      if (floorRate.drift > 0.25) console.log(`  note: the two floor runs differ by ${(floorRate.drift * 100).toFixed(0)}%: the machine's speed changed during the run (other load?)`);
      console.log(`limit: P-256 signatures (node:crypto sign, one thread): ${signatures.toFixed(0)}/s`);
      console.log(`issuance (POST /devices/{id}/certificates): ${run.latenciesMs.length} certificates in ${ms(run.wallMs)}, ${issuanceRate.toFixed(1)} certificates/s, ${latencies(run.latenciesMs)}`);
      console.log(`  mean latency of the first tenth to complete ${ms(mean(run.latenciesMs.slice(0, tenth)))}, of the last tenth ${ms(mean(run.latenciesMs.slice(-tenth)))} (a cost growing with the fleet shows here)`);
      console.log(machineLine(loadAtStart));
      console.log(`ratio issuance ÷ bare transactions: ${(issuanceRate / transactions.rate).toFixed(2)} (goal ≥ 0.5); issuance ÷ P-256 signatures: ${(issuanceRate / signatures).toFixed(4)}`);
      console.log(`ratio issuance ÷ floor: ${(issuanceRate / floorRate.rate).toFixed(2)} (1.00 = our code costs nothing beyond the design's own DynamoDB calls)`);
      console.log(`ratio floor ÷ bare transactions: ${(floorRate.rate / transactions.rate).toFixed(2)} (the highest issuance ÷ bare transactions these calls allow)`);
    } finally {
      dynamoClient.destroy();
      documentClient.destroy();
      replayClient.destroy();
      calibration.close();
    }
  });
  reportFailures(failures);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
