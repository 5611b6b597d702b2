import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ValidationError } from '../../functions/core/errors';
import { SOFTWARE_CA_LIMITS } from '../../functions/adapters/local/software-ca';
import { DEFAULT_DATA_DIR } from '../config';
import { DEVICE_STATUSES, type DeviceStatus } from '../../functions/core/model';
import { callApi, connectDevice, enrollDevice, localMqttTarget, mintDevice, readDeviceTls, type DeviceCredentials } from './device';
import { factoryMain } from './factory';
import { enrollBootstrap, rotateDevice, type RotationReport } from './rotate';
import { rotateLocalCa } from './ca-rotate';
import {
  apiAccess,
  askOnStdin,
  deviceDetails,
  formatStatus,
  formatTable,
  listDevices,
  localModeStatus,
  LocalModeRunningError,
  resetDataDir,
  type DeviceDetails,
  type ListedDevice,
} from './overview';

// The AWS SDK's Node 22 notice is irrelevant to a local device simulator.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const USAGE = `Usage: iotcert <command> [options]

A device simulator and an overview for the local mode (npm start), and factory commands
that sign CSRs and pre-register devices in bulk through the device API (local or deployed).

Commands:
  status   Whether the local mode runs on the data folder: its pid, addresses and devices by state
           (from the API). Exit code 0 when it runs, 1 when not.
  device list [--status <state>] [--details] [--page-size 100] [--api-url <url>]
           Every device (or those in one state) through the API, page after page: id, state, last change.
           --details also fetches each device for its certificate counts (one request per device).
  ca rotate
           A CA rotation of the data folder (the local mode stopped): a new CA signs from the next start;
           the old one stays registered and accepted (JITR, rotation, connects), so devices move over by
           rotating (device rotate). Refused while the local mode runs.
  ca deactivate --id <caCertificateId> [--force] [--api-url <url>]
           Retire a previous CA once its devices have rotated over (POST /certificate-authorities/{id}/deactivate):
           its certificates are refused at connect from then on. Refused for the current CA, and while live
           certificates remain on it unless --force (the answer counts the certificates it stranded).
  local reset [--yes]
           Delete the local mode's state in the data folder (CA, API token, devices, certificates,
           DynamoDB Local files) after a confirmation (--yes: none). Refused while the local mode runs.
  device mint --id <deviceId> --out <dir> [--days 365]
           Make a key and a certificate signed by the local CA, the way a factory would
           (--days: 1 to ${SOFTWARE_CA_LIMITS.maxValidityDays}, and not past the CA's own expiry).
           Nothing is registered: the device registers itself on its first connect (JITR).
  device enroll --id <deviceId> --out <dir> [--api-url <url>] [--bootstrap]
           Make a key and a CSR and have it signed through the device API
           (POST /devices, then POST /devices/{id}/certificates, with .local/api-token).
           --bootstrap: also a bootstrap certificate (OU=bootstrap) in <dir>/bootstrap.pem and .key,
           which may only rotate: device rotate uses it when device.pem has expired or is refused.
  device connect --id <deviceId> --dir <dir> [--client-id <id>] [--topic <topic>] [--message <text>]
           [--host 127.0.0.1] [--port <port>] [--attempts 8]
           Connect over MQTT/TLS with retry and backoff (a first connect is refused while the
           certificate registers itself), publish to devices/<id>/telemetry, report what happened.
  device rotate --id <deviceId> --dir <dir> [--host 127.0.0.1] [--port <port>]
           Renew the certificate in <dir> over MQTT (docs/rotation.md): a new key, the request over
           the current certificate, a reconnect with the new one, the commit. Interrupted, it resumes
           from <dir>/rotation.json when run again. Exit code 0 committed, 1 rejected or incomplete.
           When device.pem has expired or is refused, the request goes over <dir>/bootstrap.pem.
  factory sign --api-url <url> --csr-dir <dir> --out-dir <dir> [--concurrency 4] [--rate 8] [--region <r>]
           [--token <t> | --local | --sigv4] [--registered-only]
           Sign every <deviceId>.csr of a folder through the device API (AWS SigV4 against the deployed
           API, the bearer token against the local mode): <deviceId>.crt and .chain.pem in --out-dir,
           a resumable report there (a rerun skips what is signed and retries what failed).
  factory preregister --api-url <url> --manifest <file.jsonl>
           Pre-register the devices of a JSON-lines manifest through POST /devices, paced, resumable.
           \`iotcert factory --help\` says more.

Common options:
  --data-dir <dir>   the local mode's data folder (default: .local in the repository; env IOTCERT_DATA_DIR)
  --json             print the result as JSON

Files in <dir>: device.key (mode 600), device.csr, device.pem, ca.pem; while a rotation is in flight
also rotation.json, next.key, next.pem and previous.key, previous.pem.
Exit codes: 0 done, 1 failed (status: not running; local reset: cancelled or refused), 2 usage error or a request the CA refused.`;

class UsageError extends Error {}

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required.`);
  return value;
}

function positiveInteger(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new UsageError(`--${name} must be a positive integer (got "${value}").`);
  return parsed;
}

function printCredentials(what: string, credentials: DeviceCredentials, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(credentials, null, 2));
    return;
  }
  const { files } = credentials;
  console.log(`${what} ${credentials.deviceId}`);
  console.log(`  certificate id  ${credentials.certificateId}`);
  console.log(`  serial number   ${credentials.serialNumber}`);
  console.log(`  valid until     ${credentials.notAfter}`);
  console.log(`  files           ${files.key} (mode 600), ${files.csr}, ${files.certificate}, ${files.ca}`);
}

const COMMANDS: Readonly<Record<string, readonly string[]>> = { device: ['mint', 'enroll', 'connect', 'rotate', 'list'], ca: ['rotate', 'deactivate'], local: ['reset'], status: [] };

function parseOptions(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    options: {
      id: { type: 'string' },
      out: { type: 'string' },
      dir: { type: 'string' },
      days: { type: 'string' },
      'api-url': { type: 'string' },
      'client-id': { type: 'string' },
      topic: { type: 'string' },
      message: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      attempts: { type: 'string' },
      status: { type: 'string' },
      details: { type: 'boolean' },
      'page-size': { type: 'string' },
      yes: { type: 'boolean', short: 'y' },
      'data-dir': { type: 'string' },
      json: { type: 'boolean' },
      bootstrap: { type: 'boolean' },
      force: { type: 'boolean' },
    },
  }).values;
}

type Options = ReturnType<typeof parseOptions>;

export async function main(argv: readonly string[]): Promise<number> {
  const [group, ...afterGroup] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    console.log(USAGE);
    return 0;
  }
  // \`factory\` parses its own options (local/cli/factory.ts) and reports its own usage errors.
  if (group === 'factory') return factoryMain(afterGroup);
  const commands = COMMANDS[group];
  const command = commands && commands.length > 0 ? afterGroup[0] : undefined;
  if (!commands || (commands.length > 0 && (command === undefined || !commands.includes(command)))) {
    throw new UsageError(`Unknown command "${[group, afterGroup[0]].filter(Boolean).join(' ')}".`);
  }
  const values = parseOptions(commands.length > 0 ? afterGroup.slice(1) : afterGroup);
  const dataDir = values['data-dir'] ? resolve(values['data-dir']) : process.env.IOTCERT_DATA_DIR ? resolve(process.env.IOTCERT_DATA_DIR) : DEFAULT_DATA_DIR;
  const json = values.json ?? false;
  if (group === 'status') return statusCommand(dataDir, json);
  if (group === 'local') return resetCommand(dataDir, values, json);
  if (group === 'ca' && command === 'deactivate') {
    const caCertificateId = required(values, 'id');
    const access = await apiAccess(dataDir, values['api-url']);
    const { body } = await callApi(access.apiUrl, access.token, 'POST', `/certificate-authorities/${encodeURIComponent(caCertificateId)}/deactivate`, values.force ? { force: true } : {});
    const answer = body as { caCertificateId: string; strandedCertificates: number };
    if (json) console.log(JSON.stringify(answer, null, 2));
    else console.log(`CA ${answer.caCertificateId} is INACTIVE (auto-registration off): its certificates are refused at connect.${answer.strandedCertificates > 0 ? ` ${answer.strandedCertificates} live certificate(s) stranded.` : ''}`);
    return 0;
  }
  if (group === 'ca') {
    const report = await rotateLocalCa({ dataDir });
    if (json) console.log(JSON.stringify(report, null, 2));
    else console.log(`New CA ${report.caCertificateId} signs from the next start; CA ${report.previousCaCertificateId} is kept as a previous CA (still accepted). Devices trust ${report.caCertificateFile}.`);
    return 0;
  }
  if (command === 'list') return listCommand(dataDir, values, json);
  const deviceId = required(values, 'id');

  switch (command) {
    case 'mint': {
      const days = positiveInteger(values.days, 'days');
      const credentials = await mintDevice({ deviceId, outDir: resolve(required(values, 'out')), dataDir, ...(days === undefined ? {} : { validityDays: days }) });
      printCredentials('Minted (not registered: it registers itself on its first connect)', credentials, json);
      return 0;
    }
    case 'enroll': {
      const outDir = resolve(required(values, 'out'));
      const apiUrl = values['api-url'] ? { apiUrl: values['api-url'] } : {};
      const credentials = await enrollDevice({ deviceId, outDir, dataDir, ...apiUrl });
      printCredentials(`Enrolled through the API (${credentials.created ? 'device created' : 'existing device'}; certificate ACTIVE)`, credentials, json);
      if (values.bootstrap) {
        const bootstrap = await enrollBootstrap({ deviceId, dir: outDir, dataDir, ...apiUrl });
        if (json) console.log(JSON.stringify({ bootstrap }, null, 2));
        else console.log(`Bootstrap certificate ${bootstrap.certificateId} (OU=bootstrap, until ${bootstrap.notAfter}): ${outDir}/bootstrap.pem, bootstrap.key; it may only rotate`);
      }
      return 0;
    }
    case 'rotate': {
      const dir = resolve(required(values, 'dir'));
      const target = await localMqttTarget(dataDir);
      const port = positiveInteger(values.port, 'port');
      const report = await rotateDevice({ deviceId, dir, target: { host: values.host ?? target.host, port: port ?? target.port }, onProgress: json ? undefined : (line) => console.log(line) });
      if (json) console.log(JSON.stringify(report, null, 2));
      else console.log(describeRotationReport(report));
      return report.outcome === 'COMMITTED' ? 0 : 1;
    }
    default: {
      const dir = resolve(required(values, 'dir'));
      const target = await localMqttTarget(dataDir);
      const port = positiveInteger(values.port, 'port');
      const attempts = positiveInteger(values.attempts, 'attempts');
      const report = await connectDevice({
        deviceId,
        tls: await readDeviceTls(dir),
        target: { host: values.host ?? target.host, port: port ?? target.port },
        ...(values['client-id'] ? { clientId: values['client-id'] } : {}),
        ...(values.topic ? { topic: values.topic } : {}),
        ...(values.message !== undefined ? { message: values.message } : {}),
        ...(attempts === undefined ? {} : { attempts }),
        onProgress: json ? undefined : (line) => console.log(line),
      });
      if (json) console.log(JSON.stringify(report, null, 2));
      else if (report.published) console.log(`OK: ${deviceId} connected on attempt ${report.attempts.length} and published (${report.totalMs} ms in all)`);
      else console.log(`FAILED: ${report.connected ? `connected, but ${report.publishError ?? 'the publish failed'}` : `not connected after ${report.attempts.length} attempts`}`);
      return report.published ? 0 : 1;
    }
  }
}

function describeRotationReport(report: RotationReport): string {
  switch (report.outcome) {
    case 'COMMITTED':
      return `OK: rotated; certificate ${report.certificateId} is the device's, ${report.retiredCertificateId} is retired`;
    case 'REJECTED':
      return `REJECTED (${report.step}): ${report.code}: ${report.message}${report.retryAfter === undefined ? '' : ` (retry after ${report.retryAfter} s)`}`;
    case 'ROLLED_BACK':
      return `ROLLED BACK: ${report.reason}`;
    case 'INCOMPLETE':
      return `INCOMPLETE (${report.phase}): ${report.reason}`;
  }
}

async function statusCommand(dataDir: string, json: boolean): Promise<number> {
  const status = await localModeStatus(dataDir);
  console.log(json ? JSON.stringify(status, null, 2) : formatStatus(status));
  return status.state === 'RUNNING' ? 0 : 1;
}

async function listCommand(dataDir: string, values: Options, json: boolean): Promise<number> {
  const status = values.status;
  if (status !== undefined && !(DEVICE_STATUSES as readonly string[]).includes(status)) {
    throw new UsageError(`--status must be one of ${DEVICE_STATUSES.join(', ')} (got "${status}").`);
  }
  const pageSize = positiveInteger(values['page-size'], 'page-size');
  if (pageSize !== undefined && pageSize > 100) throw new UsageError(`--page-size must be at most 100 (got ${pageSize}).`);
  const access = await apiAccess(dataDir, values['api-url']);
  const rows: (ListedDevice & Partial<DeviceDetails>)[] = [];
  for await (const device of listDevices(access, { ...(status ? { status: status as DeviceStatus } : {}), ...(pageSize ? { pageSize } : {}) })) {
    rows.push(values.details ? { ...device, ...(await deviceDetails(access, device.deviceId)) } : device);
  }
  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return 0;
  }
  const header = ['DEVICE ID', 'STATUS', 'UPDATED', ...(values.details ? ['CERTIFICATES', 'ACTIVE'] : [])];
  const table = rows.map((row) => [row.deviceId, row.status, row.updatedAt, ...(values.details ? [String(row.certificates ?? 0), String(row.activeCertificates ?? 0)] : [])]);
  console.log(formatTable(header, table));
  console.log(`${rows.length} device${rows.length === 1 ? '' : 's'}${status ? ` ${status}` : ''}`);
  return 0;
}

async function resetCommand(dataDir: string, values: Options, json: boolean): Promise<number> {
  const report = await resetDataDir({ dataDir, yes: values.yes ?? false, confirm: askOnStdin, log: (line) => console.log(line) });
  if (json) console.log(JSON.stringify(report, null, 2));
  else if (report.cancelled) console.log('Cancelled: nothing deleted.');
  else if (report.deleted.length > 0) {
    if (report.stoppedDynamoDbLocal !== undefined) console.log(`Stopped the DynamoDB Local (pid ${report.stoppedDynamoDbLocal}) an earlier run left running.`);
    console.log(`Deleted ${report.deleted.length} item(s) from ${dataDir}${report.folderRemoved ? ' and the folder' : ''}. The next npm start makes a new CA and API token.`);
    if (report.kept.length > 0) console.log(`Kept (not the local mode's): ${report.kept.join(', ')}`);
  }
  return report.cancelled ? 1 : 0;
}

/** Runs the CLI and sets the process exit code (bin/iotcert.js calls this). */
export function run(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  return main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
        console.error(`${(error as Error).message}\n\n${USAGE}`);
        process.exitCode = 2;
      } else if (error instanceof LocalModeRunningError) {
        console.error(`iotcert: refused, nothing deleted: ${error.message}`);
        process.exitCode = 1;
      } else if (error instanceof ValidationError) {
        // A limit of the CA (--days) or an invalid device id: nothing was written.
        console.error(`iotcert: refused, nothing written: ${error.message}`);
        process.exitCode = 2;
      } else {
        console.error(`iotcert: ${(error as Error).message}`);
        process.exitCode = 1;
      }
    },
  );
}

if (require.main === module) void run();
