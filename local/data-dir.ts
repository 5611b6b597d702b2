import { createHash, createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { chmod, link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE, writeFileAtomic } from '../functions/adapters/local/atomic-file';
import type { SoftwareCaMaterial } from '../functions/adapters/local/software-ca';

/**
 * The data folder (`.local/` by default, git-ignored) and what the local mode keeps in it.
 * Other programs rely on `ca.pem` (the chain to trust) and `api-token`.
 */
export interface DataFiles {
  readonly dir: string;
  /**
   * The CA certificate, followed by the previous CAs' after a CA rotation (`iotcert ca rotate`): the bundle to trust
   * for the MQTT server's certificate and for device certificates. Its first certificate is the CA that signs.
   */
  readonly caCertificate: string;
  /** The CAs a CA rotation replaced, `<caCertificateId>.pem` and `.key` (mode 0600): still accepted until deactivated. */
  readonly previousCas: string;
  /** The CA's private key, mode 0600. */
  readonly caKey: string;
  /** The MQTT endpoint's server certificate (from the CA, for the names devices connect to); kept while it covers them. */
  readonly serverCertificate: string;
  /** Its private key, mode 0600. */
  readonly serverKey: string;
  /** The device API's bearer token, mode 0600. */
  readonly apiToken: string;
  /** The IoT registry's snapshot (certificates, things, CA, policy), replaced atomically when the journal is folded in. */
  readonly registry: string;
  /** The registry's changes since its snapshot, one JSON line each, append-only. */
  readonly registryJournal: string;
  /** One JSON line per revocation at the CA, append-only. */
  readonly revocations: string;
  /** JITR deliveries that failed after their retries (the on-failure destination), one JSON line each. */
  readonly jitrFailures: string;
  /** Where the running (or last) local mode listens, for the CLI and tests. */
  readonly endpoints: string;
  readonly dynamodb: string;
  /** The pid of the DynamoDB Local this data folder's local mode runs: a later start stops one left behind. */
  readonly dynamodbPid: string;
  /** One local mode per data folder: the running one's pid and ports (see `acquireDataDirLock`). */
  readonly lock: string;
}

export function dataFiles(dir: string): DataFiles {
  return {
    dir,
    caCertificate: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca.key'),
    previousCas: join(dir, 'previous-cas'),
    serverCertificate: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    apiToken: join(dir, 'api-token'),
    registry: join(dir, 'registry.json'),
    registryJournal: join(dir, 'registry.journal.jsonl'),
    revocations: join(dir, 'revocations.jsonl'),
    jitrFailures: join(dir, 'jitr-failures.jsonl'),
    endpoints: join(dir, 'endpoints.json'),
    dynamodb: join(dir, 'dynamodb'),
    dynamodbPid: join(dir, 'dynamodb.pid'),
    lock: join(dir, 'local.lock'),
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
  return { certificatePem: firstPemCertificate(certificatePem), privateKeyPem };
}

/** The first certificate of a PEM bundle: the signing CA of `ca.pem`. */
function firstPemCertificate(bundle: string): string {
  const match = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(bundle);
  if (!match) throw new Error('ca.pem holds no PEM certificate: restore it, or move the folder away to start with a new CA.');
  return `${match[0]}\n`;
}

/** Writes the signing CA; `ca.pem` also carries the previous CAs' certificates (the bundle devices trust). */
export async function writeCaMaterial(files: DataFiles, material: SoftwareCaMaterial, previousCertificatePems: readonly string[] = []): Promise<void> {
  // The key first: a crash in between leaves a key without certificate, which `readCaMaterial` reports.
  await writeFileAtomic(files.caKey, material.privateKeyPem, { mode: PRIVATE_FILE_MODE });
  // Without a CA rotation the file is the CA certificate exactly as before, so a restart leaves what devices trust byte for byte.
  const bundle = previousCertificatePems.length === 0 ? material.certificatePem : [material.certificatePem, ...previousCertificatePems].map((pem) => pem.trimEnd()).join('\n') + '\n';
  await writeFileAtomic(files.caCertificate, bundle, { mode: 0o644 });
}

/** A CA a CA rotation replaced: its id in the registry and its material. */
export interface PreviousCa extends SoftwareCaMaterial {
  readonly caCertificateId: string;
  readonly notBefore: Date;
}

/** The previous CAs kept in the data folder, oldest first. */
export async function readPreviousCas(files: DataFiles): Promise<PreviousCa[]> {
  let names: string[];
  try {
    names = await readdir(files.previousCas);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const ids = names.filter((name) => name.endsWith('.pem')).map((name) => name.slice(0, -'.pem'.length));
  const cas = await Promise.all(
    ids.map(async (caCertificateId) => {
      const [certificatePem, privateKeyPem] = await Promise.all([readIfExists(join(files.previousCas, `${caCertificateId}.pem`)), readIfExists(join(files.previousCas, `${caCertificateId}.key`))]);
      if (certificatePem === undefined || privateKeyPem === undefined) throw new Error(`${files.previousCas} holds ${caCertificateId}.pem without its .key: restore it.`);
      return { caCertificateId, certificatePem, privateKeyPem, notBefore: new Date(new X509Certificate(certificatePem).validFrom) };
    }),
  );
  return cas.sort((a, b) => a.notBefore.getTime() - b.notBefore.getTime());
}

/**
 * A CA rotation of the data folder (the local mode stopped): the signing CA moves to `previous-cas/` (it keeps its
 * key: the MQTT server's certificate may come from it, and devices on it stay accepted) and `next` becomes the
 * signing CA. Answers the id of the CA replaced.
 */
export async function rotateCaMaterial(files: DataFiles, next: SoftwareCaMaterial): Promise<{ readonly previousCaCertificateId: string }> {
  const current = await readCaMaterial(files);
  if (!current) throw new Error(`No CA in ${files.dir}: start the local mode once (npm start) before rotating its CA.`);
  const previousCaCertificateId = createHash('sha256').update(new X509Certificate(current.certificatePem).raw).digest('hex');
  await mkdir(files.previousCas, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
  // The old material is saved before the new replaces it: a crash in between leaves the old CA in both places.
  await writeFileAtomic(join(files.previousCas, `${previousCaCertificateId}.key`), current.privateKeyPem, { mode: PRIVATE_FILE_MODE });
  await writeFileAtomic(join(files.previousCas, `${previousCaCertificateId}.pem`), current.certificatePem, { mode: 0o644 });
  const previous = await readPreviousCas(files);
  await writeCaMaterial(files, next, previous.map((ca) => ca.certificatePem).reverse());
  return { previousCaCertificateId };
}

/** The MQTT endpoint's key and certificate, PEM. */
export interface ServerCredentials {
  readonly keyPem: string;
  readonly certificatePem: string;
}

/** The server credentials an earlier start saved; undefined when either file is missing (a new pair is issued). */
export async function readServerCredentials(files: DataFiles, warn: (message: string) => void = () => undefined): Promise<ServerCredentials | undefined> {
  const [certificatePem, keyPem] = await Promise.all([readIfExists(files.serverCertificate), readIfExists(files.serverKey)]);
  if (certificatePem === undefined || keyPem === undefined) return undefined;
  await keepPrivate(files.serverKey, warn);
  return { keyPem, certificatePem };
}

export async function writeServerCredentials(files: DataFiles, credentials: ServerCredentials): Promise<void> {
  // The key first: a crash in between leaves a certificate for another key, which `serverCertificateProblem` reports.
  await writeFileAtomic(files.serverKey, credentials.keyPem, { mode: PRIVATE_FILE_MODE });
  await writeFileAtomic(files.serverCertificate, credentials.certificatePem, { mode: 0o644 });
}

/**
 * Why saved server credentials cannot serve this start (undefined: they can): the certificate must be
 * readable, signed by the current CA, match its key, be valid now and for `minRemainingDays` more, and
 * cover every name or address devices connect to (`names`: IPv4 addresses as IP entries, the rest as DNS names).
 */
export function serverCertificateProblem(
  credentials: ServerCredentials,
  required: { readonly caCertificatePem: string; readonly names: readonly string[]; readonly now: Date; readonly minRemainingDays: number },
): string | undefined {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(credentials.certificatePem);
  } catch {
    return 'it is unreadable';
  }
  const ca = new X509Certificate(required.caCertificatePem);
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) return 'it was not issued by the current CA';
  try {
    if (!certificate.checkPrivateKey(createPrivateKey(credentials.keyPem))) return 'it does not match its key';
  } catch {
    return 'its key is unreadable';
  }
  const notAfter = new Date(certificate.validTo);
  if (new Date(certificate.validFrom) > required.now) return `it is not valid before ${new Date(certificate.validFrom).toISOString()}`;
  if (notAfter.getTime() - required.now.getTime() < required.minRemainingDays * 86_400_000) return `it expires on ${notAfter.toISOString()}`;
  const missing = required.names.filter((name) => (isIPv4(name) ? certificate.checkIP(name) === undefined : certificate.checkHost(name, { wildcards: false }) === undefined));
  if (missing.length > 0) return `it does not cover ${missing.join(', ')}`;
  return undefined;
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
  /**
   * `host`: what a client on this machine connects to (a name, or an address; 127.0.0.1 when it listens on
   * every interface). `listenAddress`: the address it binds. `serverNames`: what its server certificate covers.
   */
  readonly mqtt: { readonly host: string; readonly port: number; readonly url: string; readonly listenAddress?: string; readonly serverNames?: readonly string[] };
  readonly api: { readonly url: string; readonly listenAddress?: string };
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

/** What the lock file holds: the running local mode's pid, and its ports once it listens. */
export interface DataDirLockOwner {
  readonly pid: number;
  readonly startedAt: string;
  readonly api?: { readonly url: string };
  readonly mqtt?: { readonly host: string; readonly port: number };
}

/** A second start on a data folder a live local mode holds. Nothing was touched. */
export class LocalModeAlreadyRunningError extends Error {
  public constructor(
    public readonly owner: DataDirLockOwner,
    public readonly dataDir: string,
  ) {
    const where = owner.api && owner.mqtt ? `API ${owner.api.url}, MQTT ${owner.mqtt.host}:${owner.mqtt.port}` : 'still starting';
    super(`already running (pid ${owner.pid}, ${where}) on ${dataDir}`);
    this.name = 'LocalModeAlreadyRunningError';
  }
}

export interface DataDirLock {
  /** The pid of a dead local mode whose lock this start took over, if any. */
  readonly tookOverFrom?: number;
  /** Records where this local mode listens, for a second start's message. */
  update(ports: Pick<DataDirLockOwner, 'api' | 'mqtt'>): Promise<void>;
  /** Removes the lock if this process still holds it. Safe to call twice. */
  release(): Promise<void>;
}

/** Whether a process with this pid exists (EPERM: it exists, under another user). */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The lock's owner; undefined when the file is gone. A torn or empty file (its creator is writing it) is read again a few times. */
async function readLockOwner(path: string): Promise<DataDirLockOwner | 'UNREADABLE' | undefined> {
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const text = await readIfExists(path);
    if (text === undefined) return undefined;
    try {
      const owner = JSON.parse(text) as DataDirLockOwner;
      if (Number.isInteger(owner.pid)) return owner;
    } catch {
      // being written: `wx` creates the file, then writes it
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return 'UNREADABLE';
}

/**
 * Takes the data folder's lock, before anything else touches the folder: created with `wx` (O_EXCL),
 * so of two starts exactly one gets it. A lock whose process is alive refuses the start
 * (`LocalModeAlreadyRunningError`); a lock left by a dead process (a crash, a SIGKILL) is taken over.
 * The folder must exist.
 */
export async function acquireDataDirLock(files: DataFiles): Promise<DataDirLock> {
  const self: DataDirLockOwner = { pid: process.pid, startedAt: new Date().toISOString() };
  let tookOverFrom: number | undefined;
  for (let attempt = 0; ; attempt += 1) {
    try {
      await writeFile(files.lock, `${JSON.stringify(self)}\n`, { flag: 'wx', mode: 0o644 });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 5) throw error;
    }
    const owner = await readLockOwner(files.lock);
    if (owner === undefined) continue; // released meanwhile
    if (owner !== 'UNREADABLE' && owner.pid !== process.pid && isProcessAlive(owner.pid)) throw new LocalModeAlreadyRunningError(owner, files.dir);
    // Dead (or unreadable for good): move it aside, atomically, and make sure it is the lock we judged
    // dead, not one another start took over meanwhile (that one goes back).
    const aside = `${files.lock}.${process.pid}.stale`;
    try {
      await rename(files.lock, aside);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    const moved = await readLockOwner(aside);
    if (moved !== 'UNREADABLE' && moved !== undefined && moved.pid !== process.pid && isProcessAlive(moved.pid)) {
      await link(aside, files.lock).catch(() => undefined);
      await rm(aside, { force: true });
      throw new LocalModeAlreadyRunningError(moved, files.dir);
    }
    await rm(aside, { force: true });
    if (owner !== 'UNREADABLE') tookOverFrom = owner.pid;
  }
  let current = self;
  let released = false;
  return {
    ...(tookOverFrom === undefined ? {} : { tookOverFrom }),
    update: async (ports) => {
      current = { ...current, ...ports };
      if (!released) await writeFileAtomic(files.lock, `${JSON.stringify(current)}\n`, { mode: 0o644 });
    },
    release: async () => {
      if (released) return;
      released = true;
      const owner = await readLockOwner(files.lock);
      if (owner !== undefined && owner !== 'UNREADABLE' && owner.pid === process.pid) await rm(files.lock, { force: true });
    },
  };
}
