/**
 * Onboarding benchmark: how much the lifecycle (certificate checks, claim + activation commits,
 * registry calls) costs over the bare DynamoDB writes any recorder of a device would need.
 *
 *   tsx bench/onboarding.ts                          # N=200, concurrency 20
 *   BENCH_DEVICES=1000 tsx bench/onboarding.ts
 *
 * Baseline, measured in the same run on the same DynamoDB Local: one TransactWriteItems of four
 * items per device (device, certificate, change marker, event), the minimum our store writes once.
 * The figure reported is the ratio lifecycle / baseline; machine speed cancels out.
 *
 * DynamoDB Local is a JVM: its first thousands of requests run slower while its JIT compiles. Both
 * sides are warmed first (baseline transactions and lifecycle activations of other devices), then the
 * baseline is timed before AND after the lifecycle; the ratio takes the two baseline runs together,
 * and both are printed, so a drift of the machine during the run shows instead of biasing the figure.
 *
 * The design floor, measured in the same run: one more activation's DynamoDB calls, recorded on the wire
 * (bench/support/dynamodb-call-replay.ts), replayed bare under fresh keys once per device, timed before and after the
 * lifecycle like the baseline. lifecycle ÷ floor is our code's overhead; floor ÷ baseline is what the design's calls
 * cost against the baseline, the lowest lifecycle ÷ baseline they allow.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { DeviceLifecycle, randomIds, type RegistrationEvent } from '../functions/core/lifecycle';
import { DynamoDbDeviceStore } from '../functions/adapters/aws/dynamodb-device-store';
import { LocalDeviceRegistry } from '../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../functions/adapters/local/software-ca';
import { certificateIdOf } from '../functions/core/x509';
import { ensureDeviceTable, localDocumentClient, localDynamoDbClient, startDynamoDbLocal } from '../local/dynamodb-local';
import { makeCsr } from '../test/support/pki';
import { bareTransaction } from './support/bare-transaction';
import { DynamoDbCallRecorder, describeCalls, freshKeys, replayCalls, tokensOf } from './support/dynamodb-call-replay';

const devices = Number(process.env.BENCH_DEVICES ?? 200);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);
/** Warm-up before any timing: this many lifecycle activations, and four times as many baseline transactions. */
const warmup = Number(process.env.BENCH_WARMUP ?? 100);

async function inBatches<T>(items: readonly T[], work: (item: T) => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await work(items[next++] as T);
    }),
  );
  return Number(process.hrtime.bigint() - started) / 1e6;
}

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal();
  try {
    const client = localDynamoDbClient(dynamo.endpoint);
    const documentClient = localDocumentClient(dynamo.endpoint);
    const replayClient = localDynamoDbClient(dynamo.endpoint);
    const tableName = `bench-${randomUUID()}`;
    await ensureDeviceTable(client, tableName);
    const { ca, material } = await SoftwareCertificateAuthority.create('Bench CA');
    const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
    const caCertificateId = await certificateIdOf(material.certificatePem);
    const lifecycle = new DeviceLifecycle({ store: new DynamoDbDeviceStore({ tableName, documentClient }), registry, ca, clock: { now: () => new Date() }, ids: randomIds });

    // Certificates are minted before timing: the factory's work is not the lifecycle's.
    const events: RegistrationEvent[] = [];
    const warmEvents: RegistrationEvent[] = [];
    const mint = async (deviceId: string): Promise<RegistrationEvent> => {
      const pem = await ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
      const registered = await registry.registerPendingActivation(pem, caCertificateId);
      return { certificateId: registered.certificateId, caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '0', certificateRegistrationTimestamp: '0' };
    };
    for (let index = 0; index < devices + warmup; index += 1) {
      const deviceId = index < devices ? `bench-${index}` : `bench-warm-${index}`;
      (index < devices ? events : warmEvents).push(await mint(deviceId));
    }
    const calibrationDeviceId = 'bench-floor-calibration';
    const calibrationEvent = await mint(calibrationDeviceId);

    const baseline = (run: string, items: readonly RegistrationEvent[]) =>
      inBatches(items, (event) => bareTransaction(documentClient, tableName, `${run}#${event.certificateId}`));
    const activateOne = async (event: RegistrationEvent) => {
      const outcome = await lifecycle.registerOnFirstConnect(event);
      if (outcome.outcome !== 'ACTIVATED') throw new Error(`device not activated: ${JSON.stringify(outcome)}`);
    };
    const activate = (items: readonly RegistrationEvent[]) => inBatches(items, activateOne);

    // Warm-up: the JVM's JIT, the SDK clients' connections, the CA's and the registry's first calls.
    const warmupMs = (await baseline('WARM', [...warmEvents, ...warmEvents, ...warmEvents, ...warmEvents].map((event, index) => ({ ...event, certificateId: `${event.certificateId}-${index}` })))) + (await activate(warmEvents));

    // The design floor: one warm activation's DynamoDB calls, recorded on the wire, replayed bare under fresh keys.
    const recorder = new DynamoDbCallRecorder(documentClient);
    const { calls: calibration } = await recorder.record(() => activateOne(calibrationEvent));
    recorder.detach(); // the timed runs go through the client as it was
    const tokens = tokensOf(calibration, [calibrationDeviceId, calibrationEvent.certificateId], [caCertificateId]);
    const floor = (items: readonly unknown[]) => inBatches(items, () => replayCalls(replayClient, freshKeys(calibration, tokens)));
    const floorWarmupMs = await floor(warmEvents);

    const beforeMs = await baseline('BEFORE', events);
    const floorBeforeMs = await floor(events);
    const lifecycleMs = await activate(events);
    const floorAfterMs = await floor(events);
    const afterMs = await baseline('AFTER', events);
    const baselineMs = (beforeMs + afterMs) / 2;
    const floorMs = (floorBeforeMs + floorAfterMs) / 2;

    const perDevice = (value: number) => `${value.toFixed(0)} ms (${(value / devices).toFixed(2)} ms/device)`;
    console.log(`devices: ${devices}, concurrency: ${concurrency}, warm-up: ${warmup} activations + ${4 * warmup} baseline transactions + ${warmup} floor replays in ${(warmupMs + floorWarmupMs).toFixed(0)} ms`);
    console.log(`design floor, per device (one activation's DynamoDB calls, recorded, replayed bare with fresh keys): ${describeCalls(calibration)}`);
    console.log(`baseline (one 4-item transaction per device), before: ${perDevice(beforeMs)}`);
    console.log(`design floor, before: ${perDevice(floorBeforeMs)}`);
    console.log(`lifecycle JITR (check, claim, registry, activate): ${perDevice(lifecycleMs)}`);
    console.log(`design floor, after: ${perDevice(floorAfterMs)}`);
    console.log(`baseline, after: ${perDevice(afterMs)}`);
    const drift = (first: number, second: number) => Math.abs(first - second) / ((first + second) / 2);
    if (drift(beforeMs, afterMs) > 0.25 || drift(floorBeforeMs, floorAfterMs) > 0.25) console.log(`  note: the runs before and after differ by ${(drift(beforeMs, afterMs) * 100).toFixed(0)}% (baseline) and ${(drift(floorBeforeMs, floorAfterMs) * 100).toFixed(0)}% (floor): the machine's speed changed during the run (other load?)`);
    console.log(`ratio lifecycle/baseline: ${(lifecycleMs / baselineMs).toFixed(2)}x (against the mean of both baseline runs; ${(lifecycleMs / beforeMs).toFixed(2)}x against the one before, ${(lifecycleMs / afterMs).toFixed(2)}x against the one after; goal ≤ 1.5x)`);
    console.log(`ratio lifecycle/floor: ${(lifecycleMs / floorMs).toFixed(2)}x (our code's overhead over the design's own DynamoDB calls; 1.00x = none)`);
    console.log(`ratio floor/baseline: ${(floorMs / baselineMs).toFixed(2)}x (what the design's calls cost against one bare 4-item transaction: the lowest lifecycle/baseline these calls allow)`);
    replayClient.destroy();
    client.destroy();
    documentClient.destroy();
  } finally {
    await dynamo.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
