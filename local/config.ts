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
/** Every server of the local mode binds here and only here. */
export const LOOPBACK = '127.0.0.1';

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
  jitrConcurrency: { flag: 'jitr-concurrency', env: 'IOTCERT_JITR_CONCURRENCY', default: '4', help: 'JITR deliveries handled at once' },
  verbose: { flag: 'verbose', env: 'IOTCERT_VERBOSE', default: 'false', help: "also print the handlers' JSON logs" },
} as const satisfies Record<keyof LocalModeConfig, { flag: string; env: string; default: string | undefined; help: string }>;

export class LocalConfigError extends Error {
  public constructor(message: string) {
    super(message);
    this.name = 'LocalConfigError';
  }
}

const port = z.coerce.number().int().min(0).max(65535);

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
  const config = result.data;
  return {
    ...config,
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
