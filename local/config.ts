import { lookup } from 'node:dns/promises';
import { isIP, isIPv4 } from 'node:net';
import { hostname, networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';

/** The repository root: `.local/` lives here whatever the current directory is. */
export const PROJECT_ROOT = resolve(__dirname, '..');
export const DEFAULT_DATA_DIR = resolve(PROJECT_ROOT, '.local');

/** What AWS IoT Core would fill in from the account; the fleet policy ARNs use them. */
export const LOCAL_REGION = 'local';
export const LOCAL_ACCOUNT_ID = '000000000000';
export const LOCAL_THING_GROUP = 'iotcert-fleet';
export const LOCAL_POLICY_NAME = 'iotcert-fleet-policy';
/** The line `npm start` prints once everything is up: tests and scripts wait for it. */
export const READY_LINE = 'iotcert local mode is ready';
/** Every server of the local mode binds here unless `--host` / `--api-host` say otherwise (the CRL server and DynamoDB Local's clients always). */
export const LOOPBACK = '127.0.0.1';
/** `--host 0.0.0.0`: every IPv4 interface of the machine. */
export const EVERY_INTERFACE = '0.0.0.0';
/** The names a server certificate always covers, so that clients on this machine can use either. */
export const LOOPBACK_NAMES = ['localhost', LOOPBACK] as const;

export interface LocalModeConfig {
  /** Where keys, the token, the registry, revocations and DynamoDB Local's files are kept. */
  readonly dataDir: string;
  /** 0 = any free port (tests). */
  readonly mqttPort: number;
  readonly apiPort: number;
  readonly crlPort: number;
  readonly dynamodbPort: number;
  /** Use this DynamoDB (e.g. a DynamoDB Local the tests started) instead of starting one. */
  readonly dynamodbEndpoint?: string;
  readonly tablePrefix: string;
  readonly enrollmentPolicy: 'open' | 'preregistered';
  readonly validityDays: number;
  /** How many JITR deliveries run at once, like a Lambda function's concurrency. */
  readonly jitrConcurrency: number;
  /** Also print the handlers' own (Powertools) logs at INFO. */
  readonly verbose: boolean;
  /**
   * Where the MQTT endpoint listens, and the name or address devices connect to (the server certificate
   * carries it): an IPv4 address of this machine, a DNS name resolving to one, or `0.0.0.0` (every interface).
   * @default 127.0.0.1
   */
  readonly host?: string;
  /** Where the device API listens, in the same forms as `host`. @default 127.0.0.1 */
  readonly apiHost?: string;
  /** How long a device has to commit a rotated certificate before it is withdrawn, in seconds. */
  readonly rotationCommitSeconds: number;
  /** How often the sweep withdraws rotations past their deadline, in seconds (the stack's schedule). */
  readonly rotationSweepSeconds: number;
}

/** Each setting: its flag, its environment variable, its default and what it means (also the `--help` text). */
export const SETTINGS = {
  dataDir: { flag: 'data-dir', env: 'IOTCERT_DATA_DIR', default: '.local', help: 'data folder (CA key, API token, registry, revocations, DynamoDB files)' },
  mqttPort: { flag: 'mqtt-port', env: 'IOTCERT_MQTT_PORT', default: '8883', help: 'MQTT over TLS port (0: any free port)' },
  apiPort: { flag: 'api-port', env: 'IOTCERT_API_PORT', default: '3000', help: 'device API port (0: any free port)' },
  crlPort: { flag: 'crl-port', env: 'IOTCERT_CRL_PORT', default: '3001', help: 'CRL server port (0: any free port)' },
  dynamodbPort: { flag: 'dynamodb-port', env: 'IOTCERT_DYNAMODB_PORT', default: '8000', help: 'DynamoDB Local port (0: any free port)' },
  dynamodbEndpoint: { flag: 'dynamodb-endpoint', env: 'IOTCERT_DYNAMODB_ENDPOINT', default: undefined, help: 'use this DynamoDB endpoint instead of starting DynamoDB Local' },
  tablePrefix: { flag: 'table-prefix', env: 'IOTCERT_TABLE_PREFIX', default: 'iotcert-local', help: 'prefix of the device table name (<prefix>-devices)' },
  enrollmentPolicy: { flag: 'enrollment-policy', env: 'IOTCERT_ENROLLMENT_POLICY', default: 'open', help: '"open" or "preregistered" (only devices created through the API may enroll)' },
  validityDays: { flag: 'validity-days', env: 'IOTCERT_VALIDITY_DAYS', default: '365', help: 'validity of certificates signed from CSRs, in days' },
  jitrConcurrency: { flag: 'jitr-concurrency', env: 'IOTCERT_JITR_CONCURRENCY', default: '16', help: 'JITR deliveries handled at once' },
  verbose: { flag: 'verbose', env: 'IOTCERT_VERBOSE', default: 'false', help: "also print the handlers' JSON logs" },
  host: {
    flag: 'host',
    env: 'IOTCERT_HOST',
    default: undefined,
    help: 'where the MQTT endpoint listens, for devices on the LAN: an IPv4 address of this machine, a DNS name, or 0.0.0.0 (every interface); the server certificate carries it (default: 127.0.0.1)',
  },
  rotationCommitSeconds: {
    flag: 'rotation-commit-seconds',
    env: 'IOTCERT_ROTATION_COMMIT_SECONDS',
    default: '21600',
    help: 'how long a device has to connect with its rotated certificate and commit it before the new certificate is withdrawn',
  },
  rotationSweepSeconds: { flag: 'rotation-sweep-seconds', env: 'IOTCERT_ROTATION_SWEEP_SECONDS', default: '60', help: 'how often rotations past their commit deadline are withdrawn' },
  apiHost: { flag: 'api-host', env: 'IOTCERT_API_HOST', default: undefined, help: 'where the device API listens, same forms as --host; plain HTTP with the bearer token (default: 127.0.0.1)' },
} as const satisfies Record<keyof LocalModeConfig, { flag: string; env: string; default: string | undefined; help: string }>;

export class LocalConfigError extends Error {
  public constructor(message: string) {
    super(message);
    this.name = 'LocalConfigError';
  }
}

const port = z.coerce.number().int().min(0).max(65535);

/** A DNS name as a certificate's dNSName and a TLS client's hostname check accept it: LDH labels, not all digits (that is an address). */
export function isDnsName(value: string): boolean {
  if (value.length > 253 || /^[\d.]+$/.test(value)) return false;
  return value.split('.').every((label) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(label));
}

/** `--host` / `--api-host`: lower case, without a trailing dot; an IPv4 address, a DNS name or 0.0.0.0. */
const host = z
  .string()
  .trim()
  .toLowerCase()
  .transform((value) => value.replace(/\.$/, ''))
  .superRefine((value, context) => {
    if (isIPv4(value) || isDnsName(value)) return;
    context.addIssue({
      code: 'custom',
      message:
        isIP(value.replace(/^\[|\]$/g, '')) === 6
          ? 'IPv6 is not supported: give an IPv4 address, a DNS name, or 0.0.0.0'
          : 'must be an IPv4 address of this machine (e.g. 192.168.1.20), a DNS name (e.g. mybox.local), or 0.0.0.0 (every interface)',
    });
  });

const schema = z.object({
  dataDir: z.string().trim().min(1),
  mqttPort: port,
  apiPort: port,
  crlPort: port,
  dynamodbPort: port,
  dynamodbEndpoint: z
    .string()
    .regex(/^http:\/\/(127\.0\.0\.1|localhost):\d{1,5}\/?$/, 'must be http://127.0.0.1:<port> (the local mode talks to a DynamoDB on this machine only)')
    .optional(),
  tablePrefix: z.string().regex(/^[a-zA-Z0-9_.-]{1,200}$/, 'must be 1-200 of a-z A-Z 0-9 _ . -'),
  enrollmentPolicy: z.enum(['open', 'preregistered']),
  validityDays: z.coerce.number().int().min(1).max(825),
  jitrConcurrency: z.coerce.number().int().min(1).max(64),
  verbose: z.enum(['true', 'false', '1', '0']).transform((value) => value === 'true' || value === '1'),
  host: host.optional(),
  apiHost: host.optional(),
  rotationCommitSeconds: z.coerce.number().int().min(1).max(30 * 86_400),
  rotationSweepSeconds: z.coerce.number().int().min(1).max(86_400),
});

/**
 * Reads the settings: a flag wins over its environment variable, which wins over the default.
 * An unknown flag or a malformed value stops the start with a message naming it.
 */
export function parseLocalModeConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): LocalModeConfig | 'HELP' {
  const options = Object.fromEntries(
    Object.values(SETTINGS).map((setting) => [setting.flag, setting.flag === 'verbose' ? { type: 'boolean' as const } : { type: 'string' as const }]),
  );
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (error) {
    throw new LocalConfigError(`${(error as Error).message}\n\n${usage()}`);
  }
  if (values.help) return 'HELP';

  const raw: Record<string, string | undefined> = {};
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const flagValue = values[setting.flag];
    const fromEnv = env[setting.env];
    raw[key] = flagValue !== undefined ? String(flagValue) : fromEnv !== undefined && fromEnv !== '' ? fromEnv : setting.default;
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const setting = SETTINGS[issue.path[0] as keyof typeof SETTINGS];
      return `--${setting.flag} / ${setting.env} ${JSON.stringify(raw[issue.path[0] as string])}: ${issue.message}`;
    });
    throw new LocalConfigError(`Invalid setting(s):\n  ${problems.join('\n  ')}`);
  }
  const { host: mqttHost, apiHost, ...config } = result.data;
  return {
    ...config,
    ...(mqttHost === undefined ? {} : { host: mqttHost }),
    ...(apiHost === undefined ? {} : { apiHost }),
    dataDir: raw.dataDir === SETTINGS.dataDir.default ? DEFAULT_DATA_DIR : resolve(config.dataDir),
    ...(config.dynamodbEndpoint === undefined ? {} : { dynamodbEndpoint: config.dynamodbEndpoint.replace(/\/$/, '') }),
  };
}

export function usage(): string {
  const lines = Object.values(SETTINGS).map((setting) => {
    const flag = `--${setting.flag}${setting.flag === 'verbose' ? '' : ' <value>'}`;
    const fallback = setting.default === undefined ? '' : ` (default: ${setting.default})`;
    return `  ${flag.padEnd(32)} ${setting.env.padEnd(26)} ${setting.help}${fallback}`;
  });
  return ['Usage: npm start -- [options]', '', '  flag                             environment variable', ...lines].join('\n');
}

export const deviceTableName = (config: Pick<LocalModeConfig, 'tablePrefix'>): string => `${config.tablePrefix}-devices`;

/** Where one server listens, and how clients reach it. */
export interface ListenHost {
  /** The address the server binds: an IPv4 address of this machine, or 0.0.0.0. */
  readonly bindAddress: string;
  /** What a client on this machine connects to (and checks the certificate against): the name or address given, 127.0.0.1 for 0.0.0.0. */
  readonly connectHost: string;
  /** The names and addresses a device may connect to; the MQTT server certificate must cover every one. */
  readonly serverNames: readonly string[];
}

/** What `resolveListenHost` asks the machine; replaced in tests. */
export interface HostSystem {
  /** The IPv4 addresses a name resolves to (rejects when it resolves to none). */
  readonly lookup: (name: string) => Promise<string[]>;
  readonly networkInterfaces: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  readonly hostname: () => string;
}

export const thisMachine: HostSystem = {
  lookup: async (name) => (await lookup(name, { family: 4, all: true })).map((entry) => entry.address),
  networkInterfaces,
  hostname,
};

/** Every IPv4 address of this machine's interfaces, loopback included. */
function ipv4Addresses(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string[] {
  return [...new Set(Object.values(interfaces).flatMap((entries) => (entries ?? []).filter((entry) => entry.family === 'IPv4').map((entry) => entry.address)))];
}

/**
 * What a server certificate for `--host 0.0.0.0` must cover: the machine's non-internal IPv4 addresses, its
 * host name (and `<name>.local`, the name mDNS answers on most LANs, when the host name has no dot), then
 * `localhost` and `127.0.0.1`. Names that are no valid DNS name are left out.
 */
export function everyInterfaceServerNames(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>, machineName: string): string[] {
  const addresses = Object.values(interfaces).flatMap((entries) => (entries ?? []).filter((entry) => entry.family === 'IPv4' && !entry.internal).map((entry) => entry.address));
  const name = machineName.trim().toLowerCase().replace(/\.$/, '');
  const names = isDnsName(name) && name !== 'localhost' ? (name.includes('.') ? [name] : [name, `${name}.local`]) : [];
  return [...new Set([...names, ...addresses, ...LOOPBACK_NAMES])];
}

/**
 * Turns a `--host` / `--api-host` value (already validated by `parseLocalModeConfig`) into where to bind
 * and what the server certificate must cover, checking it against this machine before anything binds:
 * an address must be one of this machine's, a name must resolve to one. A refusal names the setting.
 */
export async function resolveListenHost(setting: 'host' | 'apiHost', value: string | undefined, system: HostSystem = thisMachine): Promise<ListenHost> {
  if (value === undefined || value === LOOPBACK) return { bindAddress: LOOPBACK, connectHost: LOOPBACK, serverNames: [...LOOPBACK_NAMES] };
  if (value === EVERY_INTERFACE) {
    return { bindAddress: EVERY_INTERFACE, connectHost: LOOPBACK, serverNames: everyInterfaceServerNames(system.networkInterfaces(), system.hostname()) };
  }
  const { flag, env } = SETTINGS[setting];
  const refuse = (problem: string) => new LocalConfigError(`Invalid setting:\n  --${flag} / ${env} ${JSON.stringify(value)}: ${problem}`);
  const local = ipv4Addresses(system.networkInterfaces());
  const choices = `this machine's IPv4 addresses: ${local.join(', ')}; or 0.0.0.0 for every interface`;
  if (isIPv4(value)) {
    if (!local.includes(value)) throw refuse(`not an address of this machine (${choices})`);
    return { bindAddress: value, connectHost: value, serverNames: [...new Set([value, ...LOOPBACK_NAMES])] };
  }
  let resolved: string[];
  try {
    resolved = await system.lookup(value);
  } catch (error) {
    throw refuse(`does not resolve to an IPv4 address (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); give an address instead (${choices})`);
  }
  const bindAddress = resolved.find((address) => local.includes(address));
  if (bindAddress === undefined) throw refuse(`resolves to ${resolved.join(', ') || 'nothing'}, not to an address of this machine (${choices})`);
  return { bindAddress, connectHost: value, serverNames: [...new Set([value, bindAddress, ...LOOPBACK_NAMES])] };
}
