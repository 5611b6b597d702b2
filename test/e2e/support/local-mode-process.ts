import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, READY_LINE } from '../../../local/config';
import { dataFiles, readEndpoints, type DataFiles, type LocalEndpoints } from '../../../local/data-dir';
import { callApi } from '../../../local/cli/device';
import { RegistrySnapshotFile } from '../../../functions/adapters/local/registry-snapshot-file';
import type { LocalRegistrySnapshot } from '../../../functions/adapters/local/local-device-registry';

/**
 * The local mode as `npm start` runs it, in a child process, on free ports and a temporary data
 * folder. By default it uses the DynamoDB Local the jest global setup started (fresh tables per
 * process); `embeddedDynamoDb` makes it start and own its DynamoDB Local, as `npm start` does.
 */
export interface LocalModeProcess {
  /** The spawned process: the server itself, or npm with `viaNpmStart`. */
  readonly pid: number;
  readonly dataDir: string;
  readonly files: DataFiles;
  readonly endpoints: LocalEndpoints;
  readonly token: string;
  readonly mqtt: { readonly host: string; readonly port: number };
  /** Milliseconds from spawning the process to the ready line. */
  readonly startupMs: number;
  /** Everything the process printed so far. */
  output(): string;
  /** Waits until the output matches `pattern` (its log lines reach us a moment after the client saw the effect). */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** How many times `text` occurs in the output so far. */
  occurrences(text: string): number;
  /** Waits until `text` occurs more than `times` times in the output; answers the count. */
  waitForOccurrences(text: string, times: number, timeoutMs?: number): Promise<number>;
  api(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  /**
   * Sends the signal and waits for the exit (with `viaNpmStart`: until every process writing to its
   * output is gone). `processGroup` signals the whole group, as a terminal's Ctrl-C does.
   */
  stop(signal?: NodeJS.Signals, options?: StopOptions): Promise<{ code: number | null; output: string }>;
}

export interface StopOptions {
  readonly processGroup?: boolean;
  /** SIGKILL (to the group with `processGroup`) after this long. @default 45_000 */
  readonly killAfterMs?: number;
}

export interface StartProcessOptions {
  /** Reuse a data folder (a restart); a fresh temporary one otherwise. */
  readonly dataDir?: string;
  readonly embeddedDynamoDb?: boolean;
  /** Table prefix when sharing the global DynamoDB Local; keep it across a restart. */
  readonly tablePrefix?: string;
  readonly extraArgs?: readonly string[];
  /** Extra environment variables for the process (e.g. the test-only IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS). */
  readonly env?: Readonly<Record<string, string>>;
  readonly readyTimeoutMs?: number;
  /** Run it as a developer does, `npm start -- <flags>`, in its own process group (a terminal's foreground job). */
  readonly viaNpmStart?: boolean;
}

/** The local IoT registry as saved (registry.json with its journal replayed), read without disturbing a running local mode. */
export async function savedRegistry(files: Pick<DataFiles, 'registry' | 'registryJournal'>): Promise<LocalRegistrySnapshot> {
  const saved = await new RegistrySnapshotFile(files.registry, { journalPath: files.registryJournal, log: () => undefined }).load();
  if (!saved) throw new Error(`${files.registry}: no registry saved yet`);
  return saved;
}

export async function newDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'iotcert-e2e-'));
}

export async function removeDataDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

interface Spawned {
  readonly child: ChildProcess;
  /** The exit; with `viaNpmStart`, once every process holding its output (npm and what it ran) is gone. */
  readonly exited: Promise<number | null>;
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

function spawnLocalMode(dataDir: string, options: StartProcessOptions): Spawned {
  const dynamoArgs = options.embeddedDynamoDb
    ? ['--dynamodb-port', '0']
    : ['--dynamodb-endpoint', sharedDynamoDbEndpoint(), '--table-prefix', options.tablePrefix ?? `e2e-${randomBytes(4).toString('hex')}`];
  const flags = ['--data-dir', dataDir, '--mqtt-port', '0', '--api-port', '0', '--crl-port', '0', ...dynamoArgs, ...(options.extraArgs ?? [])];
  const env = { ...process.env, ...options.env, FORCE_COLOR: '0' };
  const child: ChildProcess = options.viaNpmStart
    ? spawn('npm', ['start', '--silent', '--', ...flags], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env, detached: true })
    : spawn(process.execPath, ['--import', 'tsx', 'local/start.ts', ...flags], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const listener of listeners) listener();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once(options.viaNpmStart ? 'close' : 'exit', (code: number | null) => resolve(code)));

  const waitForOutput = (pattern: RegExp, timeoutMs = 30_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) {
          cleanup();
          resolve();
        } else if (child.exitCode !== null) {
          cleanup();
          reject(new Error(`the local mode exited (${child.exitCode}) before printing ${pattern}:\n${output}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}; output:\n${output}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', check);
      };
      listeners.add(check);
      child.once('exit', check);
      check();
    });
  return { child, exited, output: () => output, waitForOutput };
}

/**
 * A start that is expected to refuse: answers its exit code and output. One that becomes ready
 * instead is stopped (SIGTERM), and says so with `becameReady`.
 */
export async function runLocalModeProcess(options: StartProcessOptions & { dataDir: string }): Promise<{ code: number | null; output: string; becameReady: boolean }> {
  const { child, exited, output, waitForOutput } = spawnLocalMode(options.dataDir, options);
  const becameReady = await waitForOutput(new RegExp(READY_LINE), options.readyTimeoutMs ?? 90_000).then(
    () => true,
    () => false,
  );
  if (becameReady) child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await exited;
  clearTimeout(timer);
  return { code, output: output(), becameReady };
}

export async function startLocalModeProcess(options: StartProcessOptions = {}): Promise<LocalModeProcess> {
  const dataDir = options.dataDir ?? (await newDataDir());
  const started = Date.now();
  const { child, exited, output: outputSoFar, waitForOutput } = spawnLocalMode(dataDir, options);
  const kill = (signal: NodeJS.Signals, processGroup = false) => {
    try {
      // Only `npm start` runs in its own process group.
      if (processGroup && options.viaNpmStart && child.pid !== undefined) process.kill(-child.pid, signal);
      else child.kill(signal);
    } catch {
      // gone already
    }
  };

  try {
    await waitForOutput(new RegExp(READY_LINE), options.readyTimeoutMs ?? 90_000);
  } catch (error) {
    kill('SIGKILL', options.viaNpmStart);
    throw error;
  }
  const startupMs = Date.now() - started;
  const files = dataFiles(dataDir);
  const endpoints = (await readEndpoints(files)) as LocalEndpoints;
  const token = (await readFile(files.apiToken, 'utf8')).trim();

  return {
    pid: child.pid as number,
    dataDir,
    files,
    endpoints,
    token,
    mqtt: { host: endpoints.mqtt.host, port: endpoints.mqtt.port },
    startupMs,
    output: outputSoFar,
    waitForOutput,
    occurrences: (text) => outputSoFar().split(text).length - 1,
    waitForOccurrences: async (text, times, timeoutMs = 5_000) => {
      const count = () => outputSoFar().split(text).length - 1;
      const deadline = Date.now() + timeoutMs;
      while (count() <= times && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      return count();
    },
    api: (method, path, body) => callApi(endpoints.api.url, token, method, path, body),
    stop: async (signal = 'SIGTERM', stopOptions = {}) => {
      if (child.exitCode === null || stopOptions.processGroup) kill(signal, stopOptions.processGroup);
      const timer = setTimeout(() => kill('SIGKILL', stopOptions.processGroup ?? options.viaNpmStart), stopOptions.killAfterMs ?? 45_000);
      const code = await exited;
      clearTimeout(timer);
      return { code, output: outputSoFar() };
    },
  };
}

function sharedDynamoDbEndpoint(): string {
  const endpoint = process.env.DYNAMODB_ENDPOINT;
  if (!endpoint) throw new Error('DYNAMODB_ENDPOINT is not set: the jest global setup starts DynamoDB Local.');
  return endpoint;
}
