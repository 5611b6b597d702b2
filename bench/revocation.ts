/**
 * Revocation → refusal: how long after an operator revokes a certificate through the local API a connect with it
 * is refused, and its live connection closed, against the least such a round trip can take on the same servers.
 *
 *   tsx bench/revocation.ts                           # N=200 devices, concurrency 10
 *   tsx bench/revocation.ts --devices 50 --concurrency 5
 *
 * Per device (enrolled through the API beforehand, connected and holding its MQTT connection open): the bench sends
 * `POST /devices/{id}/certificates/{certificateId}/revoke` and, at the same moment, starts connecting with the
 * certificate back to back until a connect is refused. Printed, from the moment the request is sent:
 *  - the API's answer; the live connection closed by the endpoint; the first refused connect (p50/p99);
 *  - the limit, measured in the same run at the same concurrency: a GET /devices/{id} round trip plus a connect of
 *    an ACTIVE device (one API call to write, one connect to observe) — the ratio is p50 refusal ÷ p50 limit.
 * Checked: every connect that starts after the API answered is refused (the run exits non-zero otherwise).
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import { connectOnce, makeKeyAndCsr, type DeviceTls } from '../local/cli/device';
import { readIfExists } from '../local/data-dir';
import type { LocalModeProcess } from '../test/e2e/support/local-mode-process';
import { reportFailures, withLocalMode } from './support/local-mode';
import { integerOptions, latencies, loadNow, machineLine, measure, ms, pad, percentile } from './support/measure';

const USAGE = `Usage: tsx bench/revocation.ts [--devices N] [--concurrency C]
  --devices N      certificates revoked (default 200, or BENCH_REVOCATION_DEVICES)
  --concurrency C  revocations in flight at once (default 10)`;

interface Enrolled {
  readonly deviceId: string;
  readonly certificateId: string;
  readonly tls: DeviceTls;
}

async function enroll(local: LocalModeProcess, deviceId: string, caPem: string): Promise<Enrolled> {
  await local.api('POST', '/devices', { deviceId });
  const { keyPem, csrPem } = await makeKeyAndCsr(deviceId);
  const { body } = await local.api('POST', `/devices/${encodeURIComponent(deviceId)}/certificates`, { csr: csrPem });
  const { certificateId, certificatePem } = body as { certificateId: string; certificatePem: string };
  return { deviceId, certificateId, tls: { key: keyPem, cert: certificatePem, ca: caPem } };
}

interface Timing {
  readonly answeredMs: number;
  readonly closedMs: number;
  readonly refusedMs: number;
  /** Connects accepted although they started after the API's answer (must be 0). */
  readonly acceptedAfterAnswer: number;
}

async function revokeAndProbe(local: LocalModeProcess, device: Enrolled): Promise<Timing> {
  const live = await connectOnce(local.mqtt, device.deviceId, device.tls);
  const started = performance.now();
  let closedMs = Number.NaN;
  const closed = new Promise<void>((resolve) =>
    live.once('close', () => {
      closedMs = performance.now() - started;
      resolve();
    }),
  );
  let answeredMs = Number.NaN;
  const answered = local.api('POST', `/devices/${encodeURIComponent(device.deviceId)}/certificates/${device.certificateId}/revoke`, { reason: 'KEY_COMPROMISE' }).then(() => {
    answeredMs = performance.now() - started;
  });
  // A second client id: the live connection keeps its own, so a takeover cannot be mistaken for a refusal.
  let refusedMs = Number.NaN;
  let acceptedAfterAnswer = 0;
  for (let attempt = 0; attempt < 1000 && Number.isNaN(refusedMs); attempt += 1) {
    const afterAnswer = !Number.isNaN(answeredMs);
    try {
      await (await connectOnce(local.mqtt, `${device.deviceId}-probe`, device.tls)).endAsync();
      if (afterAnswer) acceptedAfterAnswer += 1;
    } catch {
      refusedMs = performance.now() - started;
    }
  }
  await answered;
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  live.end(true);
  return { answeredMs, closedMs, refusedMs, acceptedAfterAnswer };
}

async function main(): Promise<void> {
  const options = integerOptions(
    process.argv.slice(2),
    { devices: { env: 'BENCH_REVOCATION_DEVICES', fallback: 200, min: 1 }, concurrency: { fallback: 10, min: 1 } },
    USAGE,
  );
  if (options === 'HELP') return console.log(USAGE);
  const { devices, concurrency } = options;
  const loadAtStart = loadNow();

  const failures = await withLocalMode([], async ({ local }, failures) => {
    console.log(`devices: ${devices}, concurrency: ${concurrency}`);
    const caPem = (await readIfExists(local.files.caCertificate)) as string;
    const ids = Array.from({ length: devices }, (_, index) => `bench-rev-${pad(index)}`);
    const enrolled = await measure(ids, concurrency, (deviceId) => enroll(local, deviceId, caPem));
    if (enrolled.errors.length > 0) throw new Error(`setup: ${enrolled.errors.length} enrollment(s) failed, first: ${(enrolled.errors[0]?.error as Error).message}`);
    const fleet = enrolled.results as Enrolled[];

    // The limit: one API round trip and one connect, at the same concurrency (the devices are still ACTIVE).
    const limit = await measure(fleet, concurrency, async (device) => {
      const begun = performance.now();
      await local.api('GET', `/devices/${encodeURIComponent(device.deviceId)}`);
      const apiMs = performance.now() - begun;
      const connectBegun = performance.now();
      await (await connectOnce(local.mqtt, device.deviceId, device.tls)).endAsync();
      return { apiMs, connectMs: performance.now() - connectBegun };
    });
    for (const { index, error } of limit.errors) failures.push(`${ids[index]}: baseline connect failed: ${(error as Error).message}`);

    const run = await measure(fleet, concurrency, (device) => revokeAndProbe(local, device));
    for (const { index, error } of run.errors) failures.push(`${ids[index]}: ${(error as Error).message}`);
    const timings = run.results.filter((timing): timing is Timing => timing !== undefined);
    const accepted = timings.reduce((sum, timing) => sum + timing.acceptedAfterAnswer, 0);
    if (accepted > 0) failures.push(`${accepted} connect(s) started after the revocation was answered were accepted`);
    const neverRefused = timings.filter((timing) => Number.isNaN(timing.refusedMs)).length;
    if (neverRefused > 0) failures.push(`${neverRefused} revoked certificate(s) never refused`);
    const notClosed = timings.filter((timing) => Number.isNaN(timing.closedMs)).length;
    if (notClosed > 0) failures.push(`${notClosed} live connection(s) of a revoked certificate not closed within 10 s`);

    const limits = limit.results.flatMap((result) => (result ? [result.apiMs + result.connectMs] : []));
    const refused = timings.map((timing) => timing.refusedMs).filter((value) => !Number.isNaN(value));
    console.log(`limit: GET /devices/{id} + one connect of an ACTIVE device: ${latencies(limits)}`);
    console.log(`revocation (POST .../revoke): answered ${latencies(timings.map((timing) => timing.answeredMs))}`);
    console.log(`  live connection closed by the endpoint: ${latencies(timings.map((timing) => timing.closedMs).filter((value) => !Number.isNaN(value)))}`);
    console.log(`  first refused connect: ${latencies(refused)} (from the request sent)`);
    console.log(`  connects accepted after the API answered: ${accepted}`);
    console.log(machineLine(loadAtStart));
    console.log(`ratio p50 revocation → refusal ÷ p50 (API round trip + connect): ${(percentile(refused, 50) / percentile(limits, 50)).toFixed(2)} (p99: ${ms(percentile(refused, 99))} vs ${ms(percentile(limits, 99))})`);
  });
  reportFailures(failures);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
