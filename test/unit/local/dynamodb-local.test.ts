import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort, isDynamoDbLocal, startDynamoDbLocal, stopStaleDynamoDbLocal } from '../../../local/dynamodb-local';

jest.setTimeout(60_000);

/** A port another process holds (listening on 127.0.0.1), as when a port found free is taken before Java binds it. */
async function holdPort(): Promise<{ port: number; release: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => sockets.add(socket)); // accepts, never answers
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const release = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return { port: (server.address() as { port: number }).port, release };
}

describe('startDynamoDbLocal: a port taken between choosing it and Java binding it', () => {
  let held: { port: number; release: () => Promise<void> };
  beforeEach(async () => (held = await holdPort()));
  afterEach(async () => held.release());

  test('tries another free port when it chose the port itself', async () => {
    const tried: number[] = [];
    const findFreePort = async () => {
      const port = tried.length === 0 ? held.port : await freeLoopbackPort();
      tried.push(port);
      return port;
    };

    const dynamo = await startDynamoDbLocal({ findFreePort });
    await dynamo.stop();

    expect(tried).toHaveLength(2);
    expect(tried[0]).toBe(held.port);
    expect(dynamo.port).toBe(tried[1]);
  });

  test('fails, without trying another port, when it was given the port', async () => {
    await expect(startDynamoDbLocal({ port: held.port })).rejects.toThrow(`DynamoDB Local could not bind port ${held.port} (taken by another process)`);
  });
});

describe('stopStaleDynamoDbLocal: a DynamoDB Local an earlier run left running', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'dynamodb-stale-'))));
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('stops the process in the pid file when it is DynamoDB Local on the same data folder, and removes the pid file', async () => {
    // Prepare: a DynamoDB Local whose parent "forgot" it (never calls stop).
    const pidFile = join(dir, 'dynamodb.pid');
    const dataDirectory = join(dir, 'dynamodb');
    await mkdir(dataDirectory);
    await startDynamoDbLocal({ dataDirectory, pidFile, ownProcessGroup: true });
    const pid = Number(await readFile(pidFile, 'utf8'));
    const runningBefore = await isDynamoDbLocal(pid, dataDirectory);

    // Act
    const stopped = await stopStaleDynamoDbLocal(pidFile, dataDirectory);

    // Assess
    expect(runningBefore).toBe(true);
    expect(stopped).toBe(pid);
    expect(await isDynamoDbLocal(pid, dataDirectory)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
  });

  test('leaves alone a process that is not DynamoDB Local (a pid reused since), and answers undefined', async () => {
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pidFile = join(dir, 'dynamodb.pid');
    await writeFile(pidFile, `${other.pid}\n`);

    const stopped = await stopStaleDynamoDbLocal(pidFile, join(dir, 'dynamodb'));
    const stillRunning = other.exitCode === null && other.signalCode === null;
    other.kill('SIGKILL');

    expect(stopped).toBeUndefined();
    expect(stillRunning).toBe(true);
    expect(existsSync(pidFile)).toBe(false);
  });

  test('answers undefined when there is no pid file', async () => {
    expect(await stopStaleDynamoDbLocal(join(dir, 'none.pid'), dir)).toBeUndefined();
  });
});
