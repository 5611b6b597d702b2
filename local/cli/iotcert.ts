import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ValidationError } from '../../functions/core/errors';
import { SOFTWARE_CA_LIMITS } from '../../functions/adapters/local/software-ca';
import { DEFAULT_DATA_DIR } from '../config';
import { connectDevice, enrollDevice, localMqttTarget, mintDevice, readDeviceTls, type DeviceCredentials } from './device';

// The AWS SDK's Node 22 notice is irrelevant to a local device simulator.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const USAGE = `Usage: iotcert device <command> [options]

A device simulator for the local mode (npm start).

Commands:
  mint     --id <deviceId> --out <dir> [--days 365]
           Make a key and a certificate signed by the local CA, the way a factory would
           (--days: 1 to ${SOFTWARE_CA_LIMITS.maxValidityDays}, and not past the CA's own expiry).
           Nothing is registered: the device registers itself on its first connect (JITR).
  enroll   --id <deviceId> --out <dir> [--api-url <url>]
           Make a key and a CSR and have it signed through the device API
           (POST /devices, then POST /devices/{id}/certificates, with .local/api-token).
  connect  --id <deviceId> --dir <dir> [--client-id <id>] [--topic <topic>] [--message <text>]
           [--host 127.0.0.1] [--port <port>] [--attempts 8]
           Connect over MQTT/TLS with retry and backoff (a first connect is refused while the
           certificate registers itself), publish to devices/<id>/telemetry, report what happened.

Common options:
  --data-dir <dir>   the local mode's data folder (default: .local in the repository; env IOTCERT_DATA_DIR)
  --json             print the result as JSON

Files in <dir>: device.key (mode 600), device.csr, device.pem, ca.pem.
Exit codes: 0 done, 1 failed, 2 usage error or a request the CA refused.`;

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

export async function main(argv: readonly string[]): Promise<number> {
  const [group, command, ...rest] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    console.log(USAGE);
    return 0;
  }
  if (group !== 'device' || command === undefined || !['mint', 'enroll', 'connect'].includes(command)) {
    throw new UsageError(`Unknown command "${[group, command].filter(Boolean).join(' ')}".`);
  }
  const { values } = parseArgs({
    args: rest,
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
      'data-dir': { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const dataDir = values['data-dir'] ? resolve(values['data-dir']) : process.env.IOTCERT_DATA_DIR ? resolve(process.env.IOTCERT_DATA_DIR) : DEFAULT_DATA_DIR;
  const deviceId = required(values, 'id');
  const json = values.json ?? false;

  switch (command) {
    case 'mint': {
      const days = positiveInteger(values.days, 'days');
      const credentials = await mintDevice({ deviceId, outDir: resolve(required(values, 'out')), dataDir, ...(days === undefined ? {} : { validityDays: days }) });
      printCredentials('Minted (not registered: it registers itself on its first connect)', credentials, json);
      return 0;
    }
    case 'enroll': {
      const credentials = await enrollDevice({ deviceId, outDir: resolve(required(values, 'out')), dataDir, ...(values['api-url'] ? { apiUrl: values['api-url'] } : {}) });
      printCredentials(`Enrolled through the API (${credentials.created ? 'device created' : 'existing device'}; certificate ACTIVE)`, credentials, json);
      return 0;
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
