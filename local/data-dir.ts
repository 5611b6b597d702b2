import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE, writeFileAtomic } from '../functions/adapters/local/atomic-file';
import type { SoftwareCaMaterial } from '../functions/adapters/local/software-ca';

/**
 * The data folder (`.local/` by default, git-ignored) and what the local mode keeps in it.
 * Other programs rely on `ca.pem` (the chain to trust) and `api-token`.
 */
export interface DataFiles {
  readonly dir: string;
  /** The CA certificate: trust it for the MQTT server's certificate and for device certificates. */
  readonly caCertificate: string;
  /** The CA's private key, mode 0600. */
  readonly caKey: string;
  /** The device API's bearer token, mode 0600. */
  readonly apiToken: string;
  /** The IoT registry (certificates, things, CA, policy), replaced atomically after each change. */
  readonly registry: string;
  /** One JSON line per revocation at the CA, append-only. */
  readonly revocations: string;
  /** JITR deliveries that failed after their retries (the on-failure destination), one JSON line each. */
  readonly jitrFailures: string;
  /** Where the running (or last) local mode listens, for the CLI and tests. */
  readonly endpoints: string;
  readonly dynamodb: string;
  /** The pid of the DynamoDB Local this data folder's local mode runs: a later start stops one left behind. */
  readonly dynamodbPid: string;
}

export function dataFiles(dir: string): DataFiles {
  return {
    dir,
    caCertificate: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    apiToken: join(dir, 'api-token'),
    registry: join(dir, 'registry.json'),
    revocations: join(dir, 'revocations.jsonl'),
    jitrFailures: join(dir, 'jitr-failures.jsonl'),
    endpoints: join(dir, 'endpoints.json'),
    dynamodb: join(dir, 'dynamodb'),
    dynamodbPid: join(dir, 'dynamodb.pid'),
  };
}

export async function ensureDataDir(files: DataFiles): Promise<void> {
  await mkdir(files.dir, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
  await mkdir(files.dynamodb, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
}

export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** A secret file must be readable by its owner only; a wider mode is narrowed (and said). */
async function keepPrivate(path: string, warn: (message: string) => void): Promise<void> {
  const { mode } = await stat(path);
  if ((mode & 0o077) !== 0) {
    await chmod(path, PRIVATE_FILE_MODE);
    warn(`${path} was readable by others (mode ${(mode & 0o777).toString(8)}); set to 600.`);
  }
}

/** The CA material saved by an earlier start, or undefined on a first start. */
export async function readCaMaterial(files: DataFiles, warn: (message: string) => void = () => undefined): Promise<SoftwareCaMaterial | undefined> {
  const [certificatePem, privateKeyPem] = await Promise.all([readIfExists(files.caCertificate), readIfExists(files.caKey)]);
  if (certificatePem === undefined && privateKeyPem === undefined) return undefined;
  if (certificatePem === undefined || privateKeyPem === undefined) {
    throw new Error(`${files.dir} holds only one of ca.pem and ca.key: restore the other, or move the folder away to start with a new CA.`);
  }
  await keepPrivate(files.caKey, warn);
  return { certificatePem, privateKeyPem };
}

export async function writeCaMaterial(files: DataFiles, material: SoftwareCaMaterial): Promise<void> {
  // The key first: a crash in between leaves a key without certificate, which `readCaMaterial` reports.
  await writeFileAtomic(files.caKey, material.privateKeyPem, { mode: PRIVATE_FILE_MODE });
  await writeFileAtomic(files.caCertificate, material.certificatePem, { mode: 0o644 });
}

/** The API token: generated on the first start (256 random bits), then reused. */
export async function loadOrCreateApiToken(files: DataFiles, warn: (message: string) => void = () => undefined): Promise<string> {
  const existing = (await readIfExists(files.apiToken))?.trim();
  if (existing) {
    await keepPrivate(files.apiToken, warn);
    return existing;
  }
  const token = randomBytes(32).toString('base64url');
  await writeFileAtomic(files.apiToken, `${token}\n`, { mode: PRIVATE_FILE_MODE });
  return token;
}

export async function readApiToken(files: DataFiles): Promise<string> {
  const token = (await readIfExists(files.apiToken))?.trim();
  if (!token) throw new Error(`No API token at ${files.apiToken}: start the local mode once (npm start).`);
  return token;
}

/** Where the local mode listens; written once everything is up. */
export interface LocalEndpoints {
  readonly pid: number;
  readonly startedAt: string;
  readonly mqtt: { readonly host: string; readonly port: number; readonly url: string };
  readonly api: { readonly url: string };
  readonly crl: { readonly pemUrl: string; readonly derUrl: string };
  readonly dynamodb: { readonly endpoint: string; readonly deviceTable: string };
  readonly caCertificateId: string;
}

export async function writeEndpoints(files: DataFiles, endpoints: LocalEndpoints): Promise<void> {
  await writeFileAtomic(files.endpoints, `${JSON.stringify(endpoints, null, 2)}\n`, { mode: 0o644 });
}

export async function readEndpoints(files: DataFiles): Promise<LocalEndpoints | undefined> {
  const text = await readIfExists(files.endpoints);
  return text === undefined ? undefined : (JSON.parse(text) as LocalEndpoints);
}
