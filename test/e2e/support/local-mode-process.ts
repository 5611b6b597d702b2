import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, READY_LINE } from '../../../local/config';
import { dataFiles, readEndpoints, type DataFiles, type LocalEndpoints } from '../../../local/data-dir';
import { callApi } from '../../../local/cli/device';

/**
 * The local mode as `npm start` runs it, in a child process, on free ports and a temporary data
 * folder. By default it uses the DynamoDB Local the jest global setup started (fresh tables per
 * process); `embeddedDynamoDb` makes it start and own its DynamoDB Local, as `npm start` does.
 */
export interface LocalModeProcess {
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
  /** Sends the signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; output: string }>;
}

export interface StartProcessOptions {
  /** Reuse a data folder (a restart); a fresh temporary one otherwise. */
  readonly dataDir?: string;
  readonly embeddedDynamoDb?: boolean;
  /** Table prefix when sharing the global DynamoDB Local; keep it across a restart. */
  readonly tablePrefix?: string;
  readonly extraArgs?: readonly string[];
  readonly readyTimeoutMs?: number;
}

export async function newDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'iotcert-e2e-'));
}

export async function removeDataDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export async function startLocalModeProcess(options: StartProcessOptions = {}): Promise<LocalModeProcess> {
  const dataDir = options.dataDir ?? (await newDataDir());
  const dynamoArgs = options.embeddedDynamoDb
    ? ['--dynamodb-port', '0']
    : ['--dynamodb-endpoint', sharedDynamoDbEndpoint(), '--table-prefix', options.tablePrefix ?? `e2e-${randomBytes(4).toString('hex')}`];
  const args = ['--import', 'tsx', 'local/start.ts', '--data-dir', dataDir, '--mqtt-port', '0', '--api-port', '0', '--crl-port', '0', ...dynamoArgs, ...(options.extraArgs ?? [])];
  const started = Date.now();
  const child: ChildProcess = spawn(process.execPath, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
  let output = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const listener of listeners) listener();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

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

  try {
    await waitForOutput(new RegExp(READY_LINE), options.readyTimeoutMs ?? 90_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const startupMs = Date.now() - started;
  const files = dataFiles(dataDir);
  const endpoints = (await readEndpoints(files)) as LocalEndpoints;
  const token = (await readFile(files.apiToken, 'utf8')).trim();

  return {
    dataDir,
    files,
    endpoints,
    token,
    mqtt: { host: endpoints.mqtt.host, port: endpoints.mqtt.port },
    startupMs,
    output: () => output,
    waitForOutput,
    occurrences: (text) => output.split(text).length - 1,
    waitForOccurrences: async (text, times, timeoutMs = 5_000) => {
      const count = () => output.split(text).length - 1;
      const deadline = Date.now() + timeoutMs;
      while (count() <= times && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      return count();
    },
    api: (method, path, body) => callApi(endpoints.api.url, token, method, path, body),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
      const code = await exited;
      clearTimeout(timer);
      return { code, output };
    },
  };
}

function sharedDynamoDbEndpoint(): string {
  const endpoint = process.env.DYNAMODB_ENDPOINT;
  if (!endpoint) throw new Error('DYNAMODB_ENDPOINT is not set: the jest global setup starts DynamoDB Local.');
  return endpoint;
}
