import 'reflect-metadata';
import { randomUUID, webcrypto } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import * as x509 from '@peculiar/x509';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { assertValidDeviceId } from '../../functions/core/device-id';
import { certificateIdOf } from '../../functions/core/x509';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../../functions/adapters/local/atomic-file';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { dataFiles, readApiToken, readCaMaterial, readEndpoints, readIfExists } from '../data-dir';
import { LOOPBACK } from '../config';

/**
 * What a device does against the local mode, as library functions (the `iotcert` CLI and the
 * end-to-end tests both use them): get a key and certificate the way a factory or a provisioning
 * service would, then connect over MQTT/TLS the way firmware would.
 */

const provider = webcrypto as unknown as Crypto;
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** The files of one device: `device.key` (mode 0600), `device.csr`, `device.pem` and `ca.pem` (the chain to trust). */
export interface DeviceFiles {
  readonly dir: string;
  readonly key: string;
  readonly csr: string;
  readonly certificate: string;
  readonly ca: string;
}

export function deviceFiles(dir: string): DeviceFiles {
  return { dir, key: join(dir, 'device.key'), csr: join(dir, 'device.csr'), certificate: join(dir, 'device.pem'), ca: join(dir, 'ca.pem') };
}

export interface DeviceCredentials {
  readonly deviceId: string;
  readonly files: DeviceFiles;
  readonly certificateId: string;
  readonly serialNumber: string;
  readonly notAfter: string;
}

/** A fresh EC P-256 key and a PKCS#10 request for `CN=<deviceId>` (with `OU=bootstrap` for a bootstrap certificate), both PEM. */
export async function makeKeyAndCsr(deviceId: string, options: { readonly bootstrap?: boolean } = {}): Promise<{ keyPem: string; csrPem: string }> {
  const keys = (await provider.subtle.generateKey(EC_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${deviceId}${options.bootstrap ? ', OU=bootstrap' : ''}`, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } }, provider);
  const keyPem = x509.PemConverter.encode(await provider.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { keyPem, csrPem: csr.toString('pem') };
}

async function writeDeviceFiles(files: DeviceFiles, contents: { keyPem: string; csrPem: string; certificatePem: string; caPem: string }): Promise<void> {
  await mkdir(files.dir, { recursive: true });
  await writeFileAtomic(files.key, contents.keyPem, { mode: PRIVATE_FILE_MODE });
  await writeFileAtomic(files.csr, contents.csrPem, { mode: 0o644 });
  await writeFileAtomic(files.certificate, contents.certificatePem, { mode: 0o644 });
  await writeFileAtomic(files.ca, contents.caPem, { mode: 0o644 });
}

async function describe(deviceId: string, files: DeviceFiles, certificatePem: string): Promise<DeviceCredentials> {
  const certificate = new x509.X509Certificate(certificatePem);
  return { deviceId, files, certificateId: await certificateIdOf(certificatePem), serialNumber: certificate.serialNumber.toLowerCase(), notAfter: certificate.notAfter.toISOString() };
}

export interface MintOptions {
  readonly deviceId: string;
  readonly outDir: string;
  /** The local mode's data folder, holding the CA. */
  readonly dataDir: string;
  /** @default 365 */
  readonly validityDays?: number;
}

/**
 * The factory path: a key and a certificate signed by the local CA directly, registered nowhere.
 * The device self-registers on its first connect (JITR).
 */
export async function mintDevice(options: MintOptions): Promise<DeviceCredentials> {
  assertValidDeviceId(options.deviceId);
  const data = dataFiles(options.dataDir);
  const material = await readCaMaterial(data);
  if (!material) throw new Error(`No CA in ${data.dir}: start the local mode once (npm start), or pass --data-dir.`);
  const crlUrl = (await readEndpoints(data))?.crl.derUrl;
  const ca = await SoftwareCertificateAuthority.load(material, crlUrl === undefined ? {} : { crlUrl });
  const { keyPem, csrPem } = await makeKeyAndCsr(options.deviceId);
  const certificatePem = await ca.mintDeviceCertificate(options.deviceId, csrPem, options.validityDays ?? 365);
  const files = deviceFiles(options.outDir);
  // ca.pem: the data folder's bundle (after a CA rotation it also holds the CA the MQTT server's certificate comes from).
  await writeDeviceFiles(files, { keyPem, csrPem, certificatePem, caPem: (await readIfExists(data.caCertificate)) ?? material.certificatePem });
  return describe(options.deviceId, files, certificatePem);
}

export interface EnrollOptions {
  readonly deviceId: string;
  readonly outDir: string;
  readonly dataDir: string;
  /** @default the running local mode's API (from `<data-dir>/endpoints.json`) */
  readonly apiUrl?: string;
}

export class ApiCallError extends Error {
  public constructor(
    public readonly status: number,
    public readonly body: unknown,
    message: string,
  ) {
    super(message);
    this.name = 'ApiCallError';
  }
}

/** How often a call that found its request still running (409 REQUEST_IN_PROGRESS) is sent again, with the same key. */
const IN_PROGRESS_RETRIES = 8;

/**
 * Calls the device API with the local token; answers the JSON body, throws `ApiCallError` on an error status. A POST
 * carries one Idempotency-Key for all its attempts, so when the API answers 409 REQUEST_IN_PROGRESS (the same request,
 * or a device activation it waits for, is still running) it is sent again as the API asks: same key, after
 * `Retry-After` (at most 2 s), a few times.
 */
export async function callApi(apiUrl: string, token: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const idempotencyKey = randomUUID();
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(`${apiUrl}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json', 'Idempotency-Key': idempotencyKey }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    if (response.ok) return { status: response.status, body: parsed };
    const error = (parsed as { error?: { code?: string; message?: string } })?.error;
    if (response.status === 409 && error?.code === 'REQUEST_IN_PROGRESS' && attempt < IN_PROGRESS_RETRIES) {
      const retryAfterSeconds = Number(response.headers.get('retry-after') ?? '1');
      await delay(Math.min(2000, Number.isFinite(retryAfterSeconds) ? retryAfterSeconds * 1000 : 1000) * (0.5 + Math.random() / 2));
      continue;
    }
    throw new ApiCallError(response.status, parsed, `${method} ${path} → ${response.status} ${error?.code ?? ''}: ${error?.message ?? text}`);
  }
}

/**
 * The provisioning-service path: a key and CSR made here, the certificate signed through the API
 * (`POST /devices`, then `POST /devices/{id}/certificates`). The certificate is registered and
 * ACTIVE at once: the first connect succeeds.
 */
export async function enrollDevice(options: EnrollOptions): Promise<DeviceCredentials & { readonly created: boolean }> {
  assertValidDeviceId(options.deviceId);
  const data = dataFiles(options.dataDir);
  const apiUrl = options.apiUrl ?? (await readEndpoints(data))?.api.url;
  if (!apiUrl) throw new Error(`No API address: start the local mode (npm start) or pass --api-url.`);
  const token = await readApiToken(data);
  const caPem = await readIfExists(data.caCertificate);
  if (!caPem) throw new Error(`No ${data.caCertificate}: start the local mode once (npm start).`);

  let created = true;
  try {
    await callApi(apiUrl, token, 'POST', '/devices', { deviceId: options.deviceId });
  } catch (error) {
    if (!(error instanceof ApiCallError && error.status === 409)) throw error;
    created = false; // pre-registered before: enroll a new certificate for it
  }
  const { keyPem, csrPem } = await makeKeyAndCsr(options.deviceId);
  const { body } = await callApi(apiUrl, token, 'POST', `/devices/${encodeURIComponent(options.deviceId)}/certificates`, { csr: csrPem });
  const { certificatePem } = body as { certificatePem: string };
  const files = deviceFiles(options.outDir);
  await writeDeviceFiles(files, { keyPem, csrPem, certificatePem, caPem });
  return { ...(await describe(options.deviceId, files, certificatePem)), created };
}

/* ------------------------------------------------------------------------------------------ MQTT */

export interface DeviceTls {
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
}

export async function readDeviceTls(dir: string): Promise<DeviceTls> {
  const files = deviceFiles(dir);
  const [key, cert, ca] = await Promise.all([readFile(files.key, 'utf8'), readFile(files.certificate, 'utf8'), readFile(files.ca, 'utf8')]);
  return { key, cert, ca };
}

export interface MqttTarget {
  readonly host: string;
  readonly port: number;
}

/** Where the local mode's MQTT endpoint is: `<data-dir>/endpoints.json`, else 127.0.0.1:8883. */
export async function localMqttTarget(dataDir: string): Promise<MqttTarget> {
  const endpoints = await readEndpoints(dataFiles(dataDir)).catch(() => undefined);
  return endpoints ? { host: endpoints.mqtt.host, port: endpoints.mqtt.port } : { host: LOOPBACK, port: 8883 };
}

/** One MQTT connect attempt; resolves with the connected client, rejects with what went wrong. */
export function connectOnce(target: MqttTarget, clientId: string, tls: DeviceTls, timeoutMs = 10_000): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const options: IClientOptions = {
      protocol: 'mqtts',
      host: target.host,
      port: target.port,
      clientId,
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      rejectUnauthorized: true,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: timeoutMs,
      keepalive: 30,
    };
    const client = connect(options);
    let settled = false;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      client.end(true);
      reject(new Error(reason));
    };
    client.once('connect', () => {
      if (settled) return;
      settled = true;
      resolve(client);
    });
    client.once('error', (error) => fail(error.message));
    client.once('close', () => fail('the server closed the connection'));
  });
}

/** Publishes with QoS 1 and waits for the PUBACK; rejects if the broker closes the connection instead (a refused publish). */
export function publishAcknowledged(client: MqttClient, topic: string, message: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error(`the broker closed the connection instead of acknowledging the publish to ${topic} (not allowed by the policy)`));
    client.once('close', onClose);
    client.publish(topic, message, { qos: 1 }, (error) => {
      client.off('close', onClose);
      if (error) reject(error);
      else resolve();
    });
  });
}

export interface ConnectOptions {
  readonly deviceId: string;
  /** The MQTT client id. @default deviceId */
  readonly clientId?: string;
  readonly tls: DeviceTls;
  readonly target: MqttTarget;
  /** @default `devices/<deviceId>/telemetry` */
  readonly topic?: string;
  /** @default a small JSON document */
  readonly message?: string;
  /** @default 10 */
  readonly attempts?: number;
  /** The backoff's base: the n-th retry waits a random time up to min(maxDelayMs, initialDelayMs × 2^(n-1)). @default 500 */
  readonly initialDelayMs?: number;
  /** @default 5000 */
  readonly maxDelayMs?: number;
  /** Random numbers in [0, 1) for the jitter. @default Math.random */
  readonly random?: () => number;
  /** Told of each step, for a human-readable report. */
  readonly onProgress?: (line: string) => void;
}

export interface ConnectReport {
  readonly connected: boolean;
  readonly published: boolean;
  /** The attempts made, with why each failed. */
  readonly attempts: readonly { readonly attempt: number; readonly outcome: 'CONNECTED' | 'REFUSED'; readonly reason?: string; readonly atMs: number }[];
  readonly topic: string;
  readonly publishError?: string;
  readonly totalMs: number;
}

/**
 * The wait before retry `retry` (1 for the first): exponential backoff with full jitter, a random time
 * between 0 and min(cap, base × 2^(retry-1)). It is the schedule of the AWS IoT Device SDK for Embedded
 * C's backoffAlgorithm library (its MQTT demos: base 500 ms, cap 5 s): a fleet powered on at once spreads
 * its reconnects instead of returning in waves, and a device retries soon after its certificate is
 * activated on average (half the ceiling) instead of sleeping out a fixed doubling.
 */
export function retryDelayMs(retry: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(retry - 1, 30));
  return Math.round(random() * ceiling);
}

/**
 * Connects the way device firmware should: a refused first connect is expected (the certificate
 * registers itself just in time), so retry with exponential backoff and full jitter (`retryDelayMs`);
 * then publish to the device's own topic and wait for the acknowledgement.
 */
export async function connectDevice(options: ConnectOptions): Promise<ConnectReport> {
  const started = Date.now();
  const progress = options.onProgress ?? (() => undefined);
  const topic = options.topic ?? `devices/${options.deviceId}/telemetry`;
  const maxAttempts = options.attempts ?? 10;
  const attempts: { attempt: number; outcome: 'CONNECTED' | 'REFUSED'; reason?: string; atMs: number }[] = [];
  for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
    let client: MqttClient;
    try {
      client = await connectOnce(options.target, options.clientId ?? options.deviceId, options.tls);
    } catch (error) {
      const reason = (error as Error).message;
      attempts.push({ attempt, outcome: 'REFUSED', reason, atMs: Date.now() - started });
      if (attempt === maxAttempts) {
        progress(`attempt ${attempt}: refused (${reason}); giving up`);
        break;
      }
      const wait = retryDelayMs(attempt, options.initialDelayMs ?? 500, options.maxDelayMs ?? 5000, options.random);
      progress(`attempt ${attempt}: refused (${reason})${attempt === 1 ? ' - expected on a first connect while the certificate registers itself (JITR)' : ''}; retrying in ${(wait / 1000).toFixed(1)} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      continue;
    }
    attempts.push({ attempt, outcome: 'CONNECTED', atMs: Date.now() - started });
    progress(`attempt ${attempt}: connected to ${options.target.host}:${options.target.port} as "${options.clientId ?? options.deviceId}"`);
    const message = options.message ?? JSON.stringify({ deviceId: options.deviceId, at: new Date().toISOString(), hello: true });
    try {
      await publishAcknowledged(client, topic, message);
      progress(`published ${Buffer.byteLength(message)} bytes to ${topic} (QoS 1, acknowledged)`);
      await client.endAsync();
      return { connected: true, published: true, attempts, topic, totalMs: Date.now() - started };
    } catch (error) {
      const publishError = (error as Error).message;
      progress(`publish to ${topic} failed: ${publishError}`);
      client.end(true);
      return { connected: true, published: false, attempts, topic, publishError, totalMs: Date.now() - started };
    }
  }
  return { connected: false, published: false, attempts, topic, totalMs: Date.now() - started };
}
