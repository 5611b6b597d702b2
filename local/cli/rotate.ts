import { X509Certificate, randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { certificateIdOf } from '../../functions/core/x509';
import { PRIVATE_FILE_MODE, writeFileAtomic } from '../../functions/adapters/local/atomic-file';
import { answerTopic, rotationTopic, type CommitAccepted, type Rejected, type RotateAccepted, type RotationStep } from '../../functions/handlers/mqtt/rotation-protocol';
import { readIfExists } from '../data-dir';
import { ApiCallError, callApi, connectOnce, deviceFiles, makeKeyAndCsr, publishAcknowledged, readDeviceTls, type DeviceTls, type MqttTarget } from './device';
import { dataFiles, readApiToken, readEndpoints } from '../data-dir';

/**
 * The device side of the rotation protocol (docs/rotation.md), as firmware should do it, with its state in files so
 * that a crash or a lost connection at any step resumes where it stopped:
 *  1. a new key and CSR, saved with a requestId in `rotation.json` before anything is sent (a resend is the same request);
 *  2. over the current certificate: `{requestId, csr}` on `.../rotate`, the new certificate from `.../rotate/accepted`;
 *  3. reconnect with the new certificate; once it has connected, it becomes the device's certificate (`device.pem`,
 *     `device.key`), and the device never goes back: it retries the commit until it is accepted;
 *  4. `{requestId, certificateId}` on `.../commit`; `.../commit/accepted` ends the rotation (the previous files go).
 * It rolls back (keeps the previous certificate) only when the new one cannot connect.
 *
 * Recovery after expiry: when `device.pem` has expired or is refused at connect and `<dir>` holds a bootstrap
 * certificate (`bootstrap.pem`, `bootstrap.key`: subject OU=bootstrap, which the fleet policy confines to the rotation
 * topics), step 2 goes over the bootstrap certificate instead; the rest is the same, and the commit retires the expired
 * certificate. The bootstrap certificate stays as it is.
 */

/** The rotation in flight, kept in `<dir>/rotation.json`. */
interface RotationState {
  readonly requestId: string;
  readonly csrPem: string;
  /** `REQUESTED`: sent, no answer yet. `ISSUED`: the new certificate is in `next.pem`. `PROMOTED`: it connected and is `device.pem` now. */
  readonly phase: 'REQUESTED' | 'ISSUED' | 'PROMOTED';
  readonly certificateId?: string;
  readonly commitDeadline?: string;
}

export interface RotationFiles {
  readonly state: string;
  readonly nextKey: string;
  readonly nextCertificate: string;
  readonly previousKey: string;
  readonly previousCertificate: string;
}

export const rotationFiles = (dir: string): RotationFiles => ({
  state: join(dir, 'rotation.json'),
  nextKey: join(dir, 'next.key'),
  nextCertificate: join(dir, 'next.pem'),
  previousKey: join(dir, 'previous.key'),
  previousCertificate: join(dir, 'previous.pem'),
});

export interface RotateOptions {
  readonly deviceId: string;
  readonly dir: string;
  readonly target: MqttTarget;
  /** How long to wait for each answer before sending the same message again. @default 15000 */
  readonly answerTimeoutMs?: number;
  /** How many times a message is sent before giving up for now (the state stays: run again to resume). @default 4 */
  readonly attempts?: number;
  readonly onProgress?: (line: string) => void;
}

export type RotationReport =
  | { readonly outcome: 'COMMITTED'; readonly requestId: string; readonly certificateId: string; readonly retiredCertificateId: string; readonly notAfter?: string }
  | { readonly outcome: 'REJECTED'; readonly requestId: string; readonly step: RotationStep; readonly code: string; readonly message: string; readonly retryAfter?: number }
  | { readonly outcome: 'ROLLED_BACK'; readonly requestId: string; readonly reason: string }
  | { readonly outcome: 'INCOMPLETE'; readonly requestId: string; readonly phase: RotationState['phase']; readonly reason: string };

export class RotationAnswerTimeout extends Error {}

export async function rotateDevice(options: RotateOptions): Promise<RotationReport> {
  const progress = options.onProgress ?? (() => undefined);
  const files = deviceFiles(options.dir);
  const rotation = rotationFiles(options.dir);
  let state = await readState(rotation.state);

  if (!state) {
    const { keyPem, csrPem } = await makeKeyAndCsr(options.deviceId);
    await writeFileAtomic(rotation.nextKey, keyPem, { mode: PRIVATE_FILE_MODE });
    state = { requestId: randomUUID(), csrPem, phase: 'REQUESTED' };
    await saveState(rotation.state, state);
    progress(`new key ${rotation.nextKey}; rotation request ${state.requestId}`);
  } else {
    progress(`resuming rotation ${state.requestId} (${state.phase})`);
  }

  if (state.phase === 'REQUESTED') {
    const requester = await requestingCredentials(options, progress);
    const answer = await exchange(options, requester.tls, 'rotate', { requestId: state.requestId, csr: state.csrPem }, state.requestId, progress, requester.connected);
    if (answer.kind === 'rejected') {
      await discard(rotation);
      return { outcome: 'REJECTED', requestId: state.requestId, step: 'rotate', code: answer.body.code, message: answer.body.message, ...(answer.body.retryAfter === undefined ? {} : { retryAfter: answer.body.retryAfter }) };
    }
    if (answer.kind === 'timeout') return { outcome: 'INCOMPLETE', requestId: state.requestId, phase: state.phase, reason: answer.reason };
    const accepted = answer.body as RotateAccepted;
    await writeFileAtomic(rotation.nextCertificate, accepted.certificatePem, { mode: 0o644 });
    state = { ...state, phase: 'ISSUED', certificateId: accepted.certificateId, commitDeadline: accepted.commitDeadline };
    await saveState(rotation.state, state);
    progress(`new certificate ${accepted.certificateId.slice(0, 12)}… (until ${accepted.notAfter}); commit before ${accepted.commitDeadline}`);
  }

  let connected: MqttClient | undefined;
  if (state.phase === 'ISSUED') {
    const [key, cert, ca] = await Promise.all([readRequired(rotation.nextKey), readRequired(rotation.nextCertificate), readRequired(files.ca)]);
    try {
      connected = await connectWithRetries(options, { key, cert, ca }, progress);
    } catch (error) {
      // The new certificate cannot connect (withdrawn after the deadline, say): the one case the device goes back.
      await discard(rotation);
      return { outcome: 'ROLLED_BACK', requestId: state.requestId, reason: `the new certificate could not connect (${(error as Error).message}); the previous one stays` };
    }
    // It connected: from here on the new certificate is the device's, whatever happens.
    await promote(files, rotation);
    state = { ...state, phase: 'PROMOTED' };
    await saveState(rotation.state, state);
    progress('connected with the new certificate: it is device.pem now');
  }

  const current = await readDeviceTls(options.dir);
  if (!connected) {
    try {
      connected = await connectWithRetries(options, current, progress);
    } catch (error) {
      return rollBackIfRefused(options, rotation, state, `the new certificate no longer connects (${(error as Error).message})`, progress);
    }
  }
  const certificateId = state.certificateId ?? (await certificateIdOf(current.cert));
  const answer = await exchange(options, current, 'commit', { requestId: state.requestId, certificateId }, state.requestId, progress, connected);
  if (answer.kind === 'timeout') return { outcome: 'INCOMPLETE', requestId: state.requestId, phase: state.phase, reason: `${answer.reason}; run again to resume the commit` };
  if (answer.kind === 'rejected') {
    if (answer.body.code === 'CERTIFICATE_WITHDRAWN') return rollBackIfRefused(options, rotation, state, `the rotation was withdrawn: ${answer.body.message}`, progress);
    return { outcome: 'REJECTED', requestId: state.requestId, step: 'commit', code: answer.body.code, message: answer.body.message };
  }
  const committed = answer.body as CommitAccepted;
  await Promise.all([rm(rotation.state, { force: true }), rm(rotation.previousKey, { force: true }), rm(rotation.previousCertificate, { force: true })]);
  progress(`committed: certificate ${committed.retiredCertificateId.slice(0, 12)}… retired`);
  return { outcome: 'COMMITTED', requestId: state.requestId, certificateId: committed.certificateId, retiredCertificateId: committed.retiredCertificateId };
}

/**
 * The new certificate is refused (its rotation was withdrawn after the deadline): the device goes back to the previous
 * certificate if that one connects, keeping the new one as `next.*` (phase ISSUED), so a later run tries it once more
 * (and drops it for good if it is refused again). If the previous one does not connect either, nothing is moved.
 */
async function rollBackIfRefused(options: RotateOptions, rotation: RotationFiles, state: RotationState, why: string, progress: (line: string) => void): Promise<RotationReport> {
  const files = deviceFiles(options.dir);
  const [previousKey, previousCertificate, ca] = await Promise.all([readIfExists(rotation.previousKey), readIfExists(rotation.previousCertificate), readRequired(files.ca)]);
  if (previousKey === undefined || previousCertificate === undefined) {
    return { outcome: 'INCOMPLETE', requestId: state.requestId, phase: state.phase, reason: `${why}, and no previous certificate is kept to go back to` };
  }
  try {
    const probe = await connectWithRetries(options, { key: previousKey, cert: previousCertificate, ca }, progress);
    await probe.endAsync();
  } catch (error) {
    return { outcome: 'INCOMPLETE', requestId: state.requestId, phase: state.phase, reason: `${why}, and the previous certificate does not connect either (${(error as Error).message}); run again later` };
  }
  await rename(files.key, rotation.nextKey);
  await rename(files.certificate, rotation.nextCertificate);
  await rename(rotation.previousKey, files.key);
  await rename(rotation.previousCertificate, files.certificate);
  await saveState(rotation.state, { ...state, phase: 'ISSUED' });
  progress('back on the previous certificate (it still connects); the new one is kept as next.pem for one more try');
  return { outcome: 'ROLLED_BACK', requestId: state.requestId, reason: `${why}; the previous certificate connects and is device.pem again` };
}

/** Where a device keeps its bootstrap certificate and key. */
export const bootstrapFiles = (dir: string): { readonly key: string; readonly certificate: string } => ({ key: join(dir, 'bootstrap.key'), certificate: join(dir, 'bootstrap.pem') });

/**
 * The certificate the rotation request goes over: `device.pem` while it is inside its validity window and connects;
 * otherwise the bootstrap certificate, when `<dir>` has one (recovery after expiry). A connection made to find out is
 * handed on, so the request uses it.
 */
async function requestingCredentials(options: RotateOptions, progress: (line: string) => void): Promise<{ tls: DeviceTls; connected?: MqttClient }> {
  const current = await readDeviceTls(options.dir);
  const files = bootstrapFiles(options.dir);
  const [bootstrapKey, bootstrapCertificate] = await Promise.all([readIfExists(files.key), readIfExists(files.certificate)]);
  if (bootstrapKey === undefined || bootstrapCertificate === undefined) return { tls: current };
  const bootstrap = { key: bootstrapKey, cert: bootstrapCertificate, ca: current.ca };
  const notAfter = new Date(new X509Certificate(current.cert).validTo);
  if (notAfter.getTime() <= Date.now()) {
    progress(`device.pem expired at ${notAfter.toISOString()}: asking over the bootstrap certificate (${files.certificate})`);
    return { tls: bootstrap };
  }
  try {
    return { tls: current, connected: await connectOnce(options.target, options.deviceId, current) };
  } catch (error) {
    progress(`device.pem is refused (${(error as Error).message}): asking over the bootstrap certificate (${files.certificate})`);
    return { tls: bootstrap };
  }
}

export interface BootstrapEnrollOptions {
  readonly deviceId: string;
  readonly dir: string;
  readonly dataDir: string;
  /** @default the running local mode's API (from `<data-dir>/endpoints.json`) */
  readonly apiUrl?: string;
}

/**
 * The factory step that gives a device its bootstrap certificate: a key and a CSR with OU=bootstrap, signed through the
 * API like any certificate (ACTIVE and attached at once), written as `<dir>/bootstrap.pem` and `bootstrap.key`.
 */
export async function enrollBootstrap(options: BootstrapEnrollOptions): Promise<{ readonly certificateId: string; readonly notAfter: string }> {
  const data = dataFiles(options.dataDir);
  const apiUrl = options.apiUrl ?? (await readEndpoints(data))?.api.url;
  if (!apiUrl) throw new Error('No API address: start the local mode (npm start) or pass --api-url.');
  const { keyPem, csrPem } = await makeKeyAndCsr(options.deviceId, { bootstrap: true });
  let answer: { certificateId: string; certificatePem: string; notAfter: string };
  try {
    answer = (await callApi(apiUrl, await readApiToken(data), 'POST', `/devices/${encodeURIComponent(options.deviceId)}/certificates`, { csr: csrPem })).body as typeof answer;
  } catch (error) {
    if (error instanceof ApiCallError) throw new Error(`The bootstrap certificate was not signed: ${error.message}`, { cause: error });
    throw error;
  }
  const files = bootstrapFiles(options.dir);
  await writeFileAtomic(files.key, keyPem, { mode: PRIVATE_FILE_MODE });
  await writeFileAtomic(files.certificate, answer.certificatePem, { mode: 0o644 });
  return { certificateId: answer.certificateId, notAfter: answer.notAfter };
}

type Exchange = { kind: 'accepted'; body: RotateAccepted | CommitAccepted } | { kind: 'rejected'; body: Rejected } | { kind: 'timeout'; reason: string };

/**
 * One request over one connection: subscribe to both answers first, then publish (QoS 1) and wait for the answer with
 * our requestId; a connection lost or no answer in time sends the same message again, over a new connection.
 */
async function exchange(
  options: RotateOptions,
  tls: DeviceTls,
  step: RotationStep,
  message: Record<string, string>,
  requestId: string,
  progress: (line: string) => void,
  /** A connection already made with `tls`, used for the first attempt (one TLS handshake fewer). */
  connected?: MqttClient,
): Promise<Exchange> {
  const attempts = options.attempts ?? 4;
  let reason = 'no attempt made';
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    let client: MqttClient | undefined;
    try {
      client = attempt === 1 && connected?.connected ? connected : await connectWithRetries(options, tls, progress);
      const accepted = answerTopic(options.deviceId, step, 'accepted');
      const rejected = answerTopic(options.deviceId, step, 'rejected');
      const answer = waitForAnswer(client, [accepted, rejected], requestId, options.answerTimeoutMs ?? 15_000);
      await client.subscribeAsync([accepted, rejected], { qos: 1 });
      await publishAcknowledged(client, rotationTopic(options.deviceId, step), JSON.stringify(message));
      progress(`${step} request ${requestId} sent (attempt ${attempt})`);
      const { topic, body } = await answer;
      return topic === accepted ? { kind: 'accepted', body: body as RotateAccepted | CommitAccepted } : { kind: 'rejected', body: body as Rejected };
    } catch (error) {
      reason = (error as Error).message;
      progress(`${step} attempt ${attempt}: ${reason}${attempt < attempts ? '; sending the same request again' : ''}`);
    } finally {
      client?.end(true);
    }
  }
  return { kind: 'timeout', reason: `no answer to the ${step} request after ${attempts} attempts (${reason})` };
}

function waitForAnswer(client: MqttClient, topics: readonly string[], requestId: string, timeoutMs: number): Promise<{ topic: string; body: unknown }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new RotationAnswerTimeout(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (topic: string, payload: Buffer) => {
      if (!topics.includes(topic)) return;
      let body: unknown;
      try {
        body = JSON.parse(payload.toString('utf8'));
      } catch {
        return;
      }
      // An answer to an earlier request of ours (a resend) may arrive too: only ours ends the wait.
      const answered = (body as { requestId?: unknown }).requestId;
      if (answered !== requestId && answered !== null) return;
      finish(undefined, { topic, body });
    };
    const onClose = () => finish(new Error('the connection closed before the answer came'));
    const finish = (error?: Error, value?: { topic: string; body: unknown }) => {
      clearTimeout(timer);
      client.off('message', onMessage);
      client.off('close', onClose);
      if (error) reject(error);
      else resolve(value as { topic: string; body: unknown });
    };
    client.on('message', onMessage);
    client.once('close', onClose);
  });
}

/** A connect with a short backoff: a device rotating is not on its first connect, a refusal is rarely passing. */
async function connectWithRetries(options: RotateOptions, tls: DeviceTls, progress: (line: string) => void): Promise<MqttClient> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    try {
      return await connectOnce(options.target, options.deviceId, tls);
    } catch (error) {
      lastError = error;
      progress(`connect attempt ${attempt} refused (${(error as Error).message})`);
      if (attempt < 3) await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    }
  }
  throw lastError;
}

/** The new key and certificate become `device.key` / `device.pem`; the previous ones are kept until the commit is accepted. */
async function promote(files: ReturnType<typeof deviceFiles>, rotation: RotationFiles): Promise<void> {
  if ((await readIfExists(rotation.nextCertificate)) === undefined) return; // promoted already (a crash after the renames)
  await rename(files.key, rotation.previousKey).catch(ignoreMissing);
  await rename(files.certificate, rotation.previousCertificate).catch(ignoreMissing);
  await rename(rotation.nextKey, files.key);
  await rename(rotation.nextCertificate, files.certificate);
}

async function discard(rotation: RotationFiles): Promise<void> {
  await Promise.all([rm(rotation.state, { force: true }), rm(rotation.nextKey, { force: true }), rm(rotation.nextCertificate, { force: true })]);
}

const ignoreMissing = (error: NodeJS.ErrnoException): void => {
  if (error.code !== 'ENOENT') throw error;
};

async function readState(path: string): Promise<RotationState | undefined> {
  const text = await readIfExists(path);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as RotationState;
  } catch (error) {
    throw new Error(`${path} is not readable JSON: remove it to start a new rotation.`, { cause: error });
  }
}

const saveState = (path: string, state: RotationState): Promise<void> => writeFileAtomic(path, `${JSON.stringify(state, null, 2)}\n`, { mode: PRIVATE_FILE_MODE });

async function readRequired(path: string): Promise<string> {
  const text = await readIfExists(path);
  if (text === undefined) throw new Error(`${path} is missing: the rotation state is inconsistent; remove rotation.json to start a new rotation.`);
  return text;
}
