import { createInterface } from 'node:readline/promises';
import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import { DEVICE_STATUSES, type DeviceStatus } from '../../functions/core/model';
import { dataFiles, readApiToken, readEndpoints, readIfExists, type DataFiles, type LocalEndpoints } from '../data-dir';
import { stopStaleDynamoDbLocal } from '../dynamodb-local';
import { callApi } from './device';

/**
 * The overview commands of `iotcert`, as library functions: list the devices through the API, say
 * whether the local mode runs on a data folder (and what it holds), and reset a data folder.
 */

/** A device as `GET /devices` answers it (the fields the overview shows). */
export interface ListedDevice {
  readonly deviceId: string;
  readonly status: DeviceStatus;
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly statusReason?: string;
  readonly revocationReason?: string;
}

/** With `--details`: what `GET /devices/{id}` adds. */
export interface DeviceDetails {
  readonly certificates: number;
  readonly activeCertificates: number;
}

export interface ApiAccess {
  readonly apiUrl: string;
  readonly token: string;
}

/** The running local mode's API address (or the one given) and the local token. */
export async function apiAccess(dataDir: string, apiUrl?: string): Promise<ApiAccess> {
  const files = dataFiles(dataDir);
  const url = apiUrl ?? (await readEndpoints(files).catch(() => undefined))?.api.url;
  if (!url) throw new Error(`No API address in ${files.dir}: start the local mode (npm start), or pass --api-url.`);
  return { apiUrl: url, token: await readApiToken(files) };
}

/** Every device (or those in one state), page after page through `GET /devices`; `pageSize` is the API's `limit`. */
export async function* listDevices(access: ApiAccess, options: { status?: DeviceStatus; pageSize?: number } = {}): AsyncGenerator<ListedDevice> {
  let nextToken: string | undefined;
  const seenTokens = new Set<string>();
  do {
    const query = new URLSearchParams({ limit: String(options.pageSize ?? 100), ...(options.status ? { status: options.status } : {}), ...(nextToken ? { nextToken } : {}) });
    const { body } = await callApi(access.apiUrl, access.token, 'GET', `/devices?${query.toString()}`);
    const page = body as { items: ListedDevice[]; nextToken?: string };
    yield* page.items;
    nextToken = page.nextToken;
    if (nextToken !== undefined) {
      if (seenTokens.has(nextToken)) throw new Error('the API answered the same page token twice; stopped listing');
      seenTokens.add(nextToken);
    }
  } while (nextToken !== undefined);
}

export async function deviceDetails(access: ApiAccess, deviceId: string): Promise<DeviceDetails> {
  const { body } = await callApi(access.apiUrl, access.token, 'GET', `/devices/${encodeURIComponent(deviceId)}`);
  const certificates = (body as { certificates?: { status: string }[] }).certificates ?? [];
  return { certificates: certificates.length, activeCertificates: certificates.filter((certificate) => certificate.status === 'ACTIVE').length };
}

/** Left-aligned columns, two spaces apart. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/* -------------------------------------------------------------------------------------- status */

export type LocalModeState =
  /** The recorded process is alive and its API answers. */
  | 'RUNNING'
  /** The recorded process is alive but its API does not answer (starting, stopping, or that pid is now another program's). */
  | 'NOT_ANSWERING'
  | 'STOPPED';

export interface LocalModeStatus {
  readonly dataDir: string;
  readonly state: LocalModeState;
  /** The pid of the local mode, from its lock or `endpoints.json`. */
  readonly pid?: number;
  readonly startedAt?: string;
  readonly endpoints?: Pick<LocalEndpoints, 'mqtt' | 'api' | 'crl' | 'dynamodb'>;
  /** Devices by state, from the API (RUNNING only). */
  readonly devices?: { readonly total: number; readonly byStatus: Readonly<Record<DeviceStatus, number>> };
}

/** Whether a process with this pid exists (EPERM: it exists, under another user). */
function isAlive(pid: unknown): pid is number {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const readJson = async (path: string | undefined): Promise<Record<string, unknown> | undefined> => {
  if (path === undefined) return undefined;
  try {
    const text = await readIfExists(path);
    return text === undefined ? undefined : (JSON.parse(text) as Record<string, unknown>);
  } catch {
    return undefined; // torn or not ours: as if absent
  }
};

/** Whether anything answers HTTP at the API's address (any status: a 401 is still the local mode answering). */
async function apiAnswers(url: string, token: string | undefined, timeoutMs = 3_000): Promise<boolean> {
  try {
    const response = await fetch(`${url}/devices?limit=1`, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(timeoutMs) });
    await response.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

/**
 * What runs on the data folder: the pid of a live local mode (its lock file when the local mode keeps one,
 * else `endpoints.json`, written once it listens) and whether its API answers.
 */
async function probe(files: DataFiles): Promise<{ state: LocalModeState; pid?: number; endpoints?: LocalEndpoints; token?: string }> {
  const endpoints = (await readJson(files.endpoints)) as LocalEndpoints | undefined;
  // The lock (a newer local mode keeps one, named in DataFiles) names the running pid even while it starts.
  const lock = await readJson((files as unknown as Record<string, string | undefined>).lock);
  const token = (await readIfExists(files.apiToken))?.trim() || undefined;
  const livePid = [lock?.pid, endpoints?.pid].find(isAlive);
  if (livePid === undefined) return { state: 'STOPPED', ...(endpoints ? { endpoints } : {}), ...(token ? { token } : {}) };
  // The API at the recorded address answering tells a live local mode from a pid now another program's (or one still starting).
  const answers = endpoints?.pid === livePid && endpoints.api?.url !== undefined ? await apiAnswers(endpoints.api.url, token) : false;
  return { state: answers ? 'RUNNING' : 'NOT_ANSWERING', pid: livePid, ...(endpoints ? { endpoints } : {}), ...(token ? { token } : {}) };
}

export async function localModeStatus(dataDir: string): Promise<LocalModeStatus> {
  const files = dataFiles(dataDir);
  const found = await probe(files);
  const base = { dataDir, state: found.state, ...(found.pid !== undefined ? { pid: found.pid } : {}) };
  if (found.state !== 'RUNNING' || !found.endpoints || !found.token) return base;
  const { mqtt, api, crl, dynamodb, startedAt } = found.endpoints;
  const byStatus = Object.fromEntries(DEVICE_STATUSES.map((status) => [status, 0])) as Record<DeviceStatus, number>;
  let total = 0;
  for await (const device of listDevices({ apiUrl: api.url, token: found.token })) {
    byStatus[device.status] = (byStatus[device.status] ?? 0) + 1;
    total += 1;
  }
  return { ...base, startedAt, endpoints: { mqtt, api, crl, dynamodb }, devices: { total, byStatus } };
}

export function formatStatus(status: LocalModeStatus): string {
  const lines: string[] = [];
  if (status.state === 'STOPPED') return `local mode: not running on ${status.dataDir}`;
  if (status.state === 'NOT_ANSWERING') {
    return `local mode: process ${status.pid} holds ${status.dataDir} but its API does not answer (starting or stopping; if that pid is not the local mode, it is not running)`;
  }
  lines.push(`local mode: running (pid ${status.pid}${status.startedAt ? `, since ${status.startedAt}` : ''}) on ${status.dataDir}`);
  if (status.endpoints) {
    const { api, mqtt, crl, dynamodb } = status.endpoints;
    lines.push(`  API        ${api.url}`, `  MQTT       ${mqtt.url}`, `  CRL        ${crl.pemUrl}`, `  DynamoDB   ${dynamodb.endpoint} (table ${dynamodb.deviceTable})`);
  }
  if (status.devices) {
    lines.push(`devices: ${status.devices.total}`);
    for (const state of DEVICE_STATUSES) lines.push(`  ${state.padEnd(15)}${status.devices.byStatus[state]}`);
  }
  return lines.join('\n');
}

/* --------------------------------------------------------------------------------------- reset */

export class LocalModeRunningError extends Error {}

export interface ResetOptions {
  readonly dataDir: string;
  /** Asked before anything is deleted; answers whether to go on. Not asked with `yes`. */
  readonly confirm: (question: string) => Promise<boolean>;
  readonly yes?: boolean;
  readonly log?: (line: string) => void;
}

export interface ResetReport {
  readonly deleted: readonly string[];
  /** Files the local mode does not write, left in the folder. */
  readonly kept: readonly string[];
  readonly folderRemoved: boolean;
  readonly stoppedDynamoDbLocal?: number;
  readonly cancelled: boolean;
}

/**
 * Deletes what the local mode keeps in the data folder (its CA and key, the API token, the registry, the
 * revocations, the DynamoDB Local files...): the next `npm start` begins afresh. Only the local mode's own
 * files are deleted (a folder given by mistake loses nothing else); the folder itself goes when it is then empty.
 * Refused while a local mode runs on the folder.
 */
export async function resetDataDir(options: ResetOptions): Promise<ResetReport> {
  const files = dataFiles(options.dataDir);
  const log = options.log ?? (() => undefined);
  const running = await probe(files);
  if (running.state !== 'STOPPED') {
    throw new LocalModeRunningError(`the local mode is running on ${files.dir} (pid ${running.pid}): stop it first (Ctrl-C in its terminal), then reset.`);
  }
  const ours = Object.entries(files)
    .filter(([name]) => name !== 'dir')
    .map(([, path]) => path as string);
  const present = (await Promise.all(ours.map(async (path) => ((await exists(path)) ? path : undefined)))).filter((path): path is string => path !== undefined);
  if (present.length === 0) {
    log(`nothing to reset in ${files.dir}`);
    return { deleted: [], kept: await others(files.dir, ours), folderRemoved: false, cancelled: false };
  }
  if (!options.yes) {
    const question = `Delete the local mode's state in ${files.dir} (the CA and its key, the API token, every device, certificate and revocation)?\n  ${present.join('\n  ')}\nThis cannot be undone. Type "yes" to delete: `;
    if (!(await options.confirm(question))) return { deleted: [], kept: [], folderRemoved: false, cancelled: true };
  }
  // A DynamoDB Local a dead run left on these files: stopped as the next start would.
  const stoppedDynamoDbLocal = await stopStaleDynamoDbLocal(files.dynamodbPid, files.dynamodb);
  for (const path of present) await rm(path, { recursive: true, force: true });
  const kept = await others(files.dir, ours);
  let folderRemoved = false;
  if (kept.length === 0) {
    await rmdir(files.dir).then(
      () => (folderRemoved = true),
      () => undefined,
    );
  }
  return { deleted: present, kept, folderRemoved, cancelled: false, ...(stoppedDynamoDbLocal !== undefined ? { stoppedDynamoDbLocal } : {}) };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The names in the folder that are not the local mode's (and the atomic writer's leftovers, which are). */
async function others(dir: string, ours: readonly string[]): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const ourNames = new Set(ours.map((path) => path.slice(dir.length + 1)));
  return names.filter((name) => !ourNames.has(name));
}

/** Asks on the terminal (or reads the answer from a pipe); only "y" or "yes" goes on. */
export async function askOnStdin(question: string): Promise<boolean> {
  const readline = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  try {
    const answer = await new Promise<string | undefined>((resolve) => {
      readline.once('close', () => resolve(undefined));
      readline.question(question).then(resolve, () => resolve(undefined));
    });
    return answer !== undefined && /^\s*y(es)?\s*$/i.test(answer);
  } finally {
    readline.close();
  }
}
