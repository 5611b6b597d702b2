/**
 * The local mode as a benchmark runs it: `npm start`'s code in a child process (its own DynamoDB Local, free ports,
 * a temporary data folder), stopped on Ctrl-C, its data folder removed unless the run failed. Device credentials
 * are minted in the bench process with the local mode's CA, before any clock starts (a factory's work).
 */
import 'reflect-metadata';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { makeKeyAndCsr, type DeviceTls } from '../../local/cli/device';
import { dataFiles, readCaMaterial, readEndpoints } from '../../local/data-dir';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from '../../test/e2e/support/local-mode-process';

export interface BenchLocalMode {
  readonly local: LocalModeProcess;
  readonly dataDir: string;
}

/**
 * Runs `body` against a fresh local mode; answers the failures it reported (empty when all went well). The local
 * mode's own exit code counts: a shutdown that loses work fails the run.
 */
export async function withLocalMode(extraArgs: readonly string[], body: (bench: BenchLocalMode, failures: string[]) => Promise<void>): Promise<string[]> {
  const dataDir = await mkdtemp(join(tmpdir(), 'iotcert-bench-'));
  const local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true, extraArgs, readyTimeoutMs: 120_000 });
  const stopOnSignal = (signal: NodeJS.Signals) => {
    void local.stop().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  const failures: string[] = [];
  try {
    await body({ local, dataDir }, failures);
  } catch (error) {
    failures.push((error as Error).stack ?? String(error));
  } finally {
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
    const stopped = await local.stop();
    if (stopped.code !== 0) failures.push(`the local mode exited with ${stopped.code}`);
    if (failures.length === 0) await removeDataDir(dataDir);
    else console.error(`data folder kept for inspection: ${dataDir}; the local mode's last output:\n${stopped.output.split('\n').slice(-30).join('\n')}`);
  }
  return failures;
}

/** Prints the failures (at most 20) and sets a failing exit code; answers whether there were any. */
export function reportFailures(failures: readonly string[]): boolean {
  for (const failure of failures.slice(0, 20)) console.error(`FAIL ${failure}`);
  if (failures.length > 20) console.error(`FAIL ... and ${failures.length - 20} more`);
  if (failures.length > 0) process.exitCode = 1;
  return failures.length > 0;
}

export interface MintedDevice {
  readonly deviceId: string;
  readonly tls: DeviceTls;
}

/**
 * Devices as a factory makes them for just-in-time registration: a key and a certificate from the local mode's CA,
 * registered nowhere.
 */
export async function mintDevices(dataDir: string, deviceIds: readonly string[]): Promise<MintedDevice[]> {
  const files = dataFiles(dataDir);
  const material = await readCaMaterial(files);
  if (!material) throw new Error(`no CA in ${files.dir}`);
  const crlUrl = (await readEndpoints(files))?.crl.derUrl;
  const ca = await SoftwareCertificateAuthority.load(material, crlUrl === undefined ? {} : { crlUrl });
  const minted: MintedDevice[] = [];
  for (const deviceId of deviceIds) {
    const { keyPem, csrPem } = await makeKeyAndCsr(deviceId);
    const cert = await ca.mintDeviceCertificate(deviceId, csrPem, 365);
    minted.push({ deviceId, tls: { key: keyPem, cert, ca: material.certificatePem } });
  }
  return minted;
}
