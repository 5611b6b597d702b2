import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IClientPublishOptions, MqttClient } from 'mqtt';
import { PROJECT_ROOT } from '../../../local/config';
import { deviceFiles } from '../../../local/cli/device';

/** What a command line tool did. */
export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(command: string, args: readonly string[], options: { timeoutMs?: number; input?: string; cwd?: string } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd ?? PROJECT_ROOT, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      reject(missing ? new Error(`${command} is not installed: the end-to-end tests need mosquitto-clients (apt-get install mosquitto-clients), openssl and coreutils`) : error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    if (options.input !== undefined) {
      child.stdin?.on('error', () => undefined); // a tool that exits without reading its input
      child.stdin?.end(options.input);
    }
  });
}

/** `npx iotcert ...` without npx: the bin shim, run by node. */
export function iotcert(args: readonly string[], dataDir: string): Promise<ToolResult> {
  return run(process.execPath, [join(PROJECT_ROOT, 'bin/iotcert.js'), ...args, '--data-dir', dataDir], { timeoutMs: 60_000 });
}

export interface TlsFiles {
  readonly cafile: string;
  readonly cert: string;
  readonly key: string;
}

export const tlsFilesOf = (dir: string, cafile: string): TlsFiles => {
  const files = deviceFiles(dir);
  return { cafile, cert: files.certificate, key: files.key };
};

const tlsArgs = (tls: TlsFiles, port: number, clientId: string) => ['--cafile', tls.cafile, '--cert', tls.cert, '--key', tls.key, '-h', '127.0.0.1', '-p', String(port), '-i', clientId];

/** `mosquitto_pub` with a client certificate, QoS 1 (so a refused publish shows as a lost connection). */
export function mosquittoPub(tls: TlsFiles, port: number, clientId: string, topic: string, message: string): Promise<ToolResult> {
  return run('mosquitto_pub', [...tlsArgs(tls, port, clientId), '-t', topic, '-m', message, '-q', '1'], { timeoutMs: 15_000 });
}

/** Retries `mosquitto_pub` until it succeeds (a device retrying after the JITR refusal); answers every attempt. */
export async function mosquittoPubUntilAccepted(tls: TlsFiles, port: number, clientId: string, topic: string, message: string, deadlineMs = 20_000): Promise<ToolResult[]> {
  const attempts: ToolResult[] = [];
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const result = await mosquittoPub(tls, port, clientId, topic, message);
    attempts.push(result);
    if (result.code === 0 || Date.now() > deadline) return attempts;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

export interface MosquittoSubscription {
  /** Resolves once the SUBACK is in, with the granted QoS (128: refused). */
  readonly subscribed: Promise<number>;
  /** Stops the subscriber; answers what it printed. */
  stop(): Promise<ToolResult>;
}

/** Subscribers still running: `stopAllSubscribers` ends them, so a failed test cannot leave one reconnecting forever. */
const runningSubscribers = new Set<MosquittoSubscription>();

/**
 * `mosquitto_sub -d -v` on one topic filter; `subscribed` reads the granted QoS from its debug output.
 * It is killed after `maxLifetimeMs` whatever happens (mosquitto_sub reconnects forever on its own).
 */
export function mosquittoSub(tls: TlsFiles, port: number, clientId: string, filter: string, maxLifetimeMs = 60_000): MosquittoSubscription {
  // stdbuf: line-buffered stdout, so the SUBACK line arrives when it happens (a pipe is block-buffered).
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', ...tlsArgs(tls, port, clientId), '-t', filter, '-q', '1', '-v', '-d'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let onOutput = () => undefined as void;
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    onOutput();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    onOutput();
  });
  child.once('error', (error) => (stderr += `\n${error.message}`)); // not installed: reported through `subscribed`
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
  const lifetime = setTimeout(() => child.kill('SIGKILL'), maxLifetimeMs);
  const subscribed = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no SUBACK within 10 s:\n${stdout}\n${stderr}`)), 10_000);
    onOutput = () => {
      const match = /Subscribed \(mid: \d+\): (\d+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    void closed.then(() => {
      clearTimeout(timer);
      onOutput();
      reject(new Error(`mosquitto_sub exited before its SUBACK:\n${stdout}\n${stderr}`));
    });
  });
  subscribed.catch(() => undefined);
  const subscription: MosquittoSubscription = {
    subscribed,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 2_000).unref();
      }
      const code = await closed;
      clearTimeout(lifetime);
      runningSubscribers.delete(subscription);
      return { code, stdout, stderr };
    },
  };
  runningSubscribers.add(subscription);
  return subscription;
}

export async function stopAllSubscribers(): Promise<void> {
  await Promise.all([...runningSubscribers].map((subscription) => subscription.stop()));
}

/** The messages a `mosquitto_sub -v -d` printed (`<topic> <payload>` lines), without its debug lines. */
export function receivedMessages(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('Client ') && !line.startsWith('Subscribed'));
}

/** AWS IoT's certificate id: the SHA-256 of the certificate's DER. */
export async function certificateIdOfFile(path: string): Promise<string> {
  const pem = await readFile(path, 'utf8');
  const base64 = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return createHash('sha256').update(Buffer.from(base64, 'base64')).digest('hex');
}

/** Messages an MQTT.js client receives, recorded from now on. */
export function recordMessages(client: MqttClient): { topic: string; payload: string }[] {
  const messages: { topic: string; payload: string }[] = [];
  client.on('message', (topic, payload) => messages.push({ topic, payload: payload.toString() }));
  return messages;
}

/** Subscribes and answers the granted QoS of each filter (128: refused), whether or not MQTT.js treats a refusal as an error. */
export async function subscribeGranted(client: MqttClient, filter: string): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filter, { qos: 1 })).map((grant) => grant.qos);
  } catch (error) {
    const granted = (error as { packet?: { granted?: (number | { qos: number })[] } }).packet?.granted;
    if (!granted) throw error;
    return granted.map((grant) => (typeof grant === 'number' ? grant : grant.qos));
  }
}

/** Publishes and tells what the broker did: acknowledged it (at the publish's QoS), or closed the connection instead. */
export function publishOutcome(client: MqttClient, topic: string, payload: string | Buffer, options: IClientPublishOptions): Promise<'ACKNOWLEDGED' | 'CLOSED'> {
  return new Promise((resolve) => {
    const onClose = () => resolve('CLOSED');
    client.once('close', onClose);
    client.publish(topic, payload, options, (error) => {
      client.off('close', onClose);
      resolve(error ? 'CLOSED' : 'ACKNOWLEDGED');
    });
  });
}

/** Resolves `true` when the client closes within `timeoutMs`, `false` otherwise. */
export function closesWithin(client: MqttClient, timeoutMs: number): Promise<boolean> {
  if (!client.connected) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.off('close', onClose);
      resolve(false);
    }, timeoutMs);
    const onClose = () => {
      clearTimeout(timer);
      resolve(true);
    };
    client.once('close', onClose);
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it answers a value or the deadline passes. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 15_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Execs a tool and answers stdout; throws with stderr on a non-zero exit. */
export function tool(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { cwd: PROJECT_ROOT }, (error, stdout, stderr) => (error ? reject(new Error(`${command} ${args.join(' ')}: ${stderr || error.message}`)) : resolve(stdout)));
  });
}
