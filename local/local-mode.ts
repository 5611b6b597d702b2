import 'reflect-metadata';
import { appendFile, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { Logger } from '@aws-lambda-powertools/logger';
import { DeviceLifecycle, randomIds, type RegistrationEvent } from '../functions/core/lifecycle';
import { systemClock, type DeviceMessenger } from '../functions/core/ports';
import { DynamoDbDeviceStore } from '../functions/adapters/aws/dynamodb-device-store';
import { deviceTableDefinition } from '../functions/adapters/aws/device-table';
import { PRIVATE_DIRECTORY_MODE, PRIVATE_FILE_MODE } from '../functions/adapters/local/atomic-file';
import { JsonLinesRevocationList } from '../functions/adapters/local/json-lines-revocation-list';
import { LocalDeviceRegistry } from '../functions/adapters/local/local-device-registry';
import { RegistrySnapshotFile } from '../functions/adapters/local/registry-snapshot-file';
import { SoftwareCertificateAuthority } from '../functions/adapters/local/software-ca';
import { createApiHandler } from '../functions/handlers/api';
import { createJitrHandler } from '../functions/handlers/jitr';
import { createRotationHandler, ROTATION_CAMPAIGN_JOB_EVENT, type RotationResult } from '../functions/handlers/rotation';
import { ROTATION_TOPIC_FILTERS, ruleMessageOf, type RotationStep, type RuleMessage } from '../functions/handlers/mqtt/rotation-protocol';
import { fleetPolicyDocument } from '../functions/policy/fleet-policy';
import { AsyncInvoker } from './async-invoker';
import { lambdaContext } from './lambda-context';
import { startApiServer, type ApiServer } from './api-server';
import {
  deviceTableName,
  LOCAL_ACCOUNT_ID,
  LOCAL_POLICY_NAME,
  LOCAL_REGION,
  LOCAL_THING_GROUP,
  LocalConfigError,
  LOOPBACK,
  resolveListenHost,
  SETTINGS,
  type ListenHost,
  type LocalModeConfig,
} from './config';
import { startCrlServer, type CrlServer } from './crl-server';
import {
  acquireDataDirLock,
  dataFiles,
  ensureDataDir,
  loadOrCreateApiToken,
  readCaMaterial,
  readPreviousCas,
  readServerCredentials,
  serverCertificateProblem,
  writeCaMaterial,
  writeEndpoints,
  writeServerCredentials,
  type DataDirLock,
  type DataFiles,
  type LocalEndpoints,
  type ServerCredentials,
} from './data-dir';
import { ensureTable, localDocumentClient, localDynamoDbClient, startDynamoDbLocal, stopStaleDynamoDbLocal, type DynamoDbLocal } from './dynamodb-local';
import { JITR_MAX_REDELIVERIES, JITR_REDELIVERY_DELAY_MS, jitrDeliveryId } from './jitr-delivery';
import { escaped } from './log-text';
import { CertificateGate, registrationTopic, short } from './iot-core/certificate-gate';
import { startMqttEndpoint, type MqttEndpoint } from './iot-core/mqtt-endpoint';
import { PolicyAuthorizer } from './iot-core/policy-authorizer';
import { TopicRules } from './iot-core/topic-rules';

export const CA_COMMON_NAME = 'iotcert local device CA';
/** The MQTT server's certificate (`<data-dir>/server.pem`) is kept across starts while it covers the names devices use. */
const SERVER_CERTIFICATE_DAYS = 30;
/** A saved server certificate with fewer days left is issued again. */
const SERVER_CERTIFICATE_RENEW_DAYS = 10;
/** How long a shutdown waits for JITR deliveries in flight; what is left is delivered again at the next start. */
const DRAIN_TIMEOUT_MS = 30_000;
/** The JITR function's timeout in the stack. */
const JITR_TIMEOUT_MS = 30_000;
/** The rotation function's timeout in the stack. */
const ROTATION_TIMEOUT_MS = 30_000;
/** The rotation campaigns' run: the stack runs it every minute on a 60-second function; locally a run follows the last at once. */
const CAMPAIGN_RUN_TIMEOUT_MS = 60_000;
const CAMPAIGN_TICK_SECONDS = 1;
/** How long a shutdown waits for rotation messages in flight. */
const ROTATION_DRAIN_TIMEOUT_MS = 10_000;

export interface LocalMode {
  readonly config: LocalModeConfig;
  readonly files: DataFiles;
  readonly endpoints: LocalEndpoints;
  /** How long the start took, in milliseconds. */
  readonly startupMs: number;
  /** Stops accepting, drains JITR deliveries, flushes the registry, stops DynamoDB Local. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly log?: (message: string) => void;
}

type JitrResult = Awaited<ReturnType<ReturnType<typeof createJitrHandler>>>;

/**
 * Brings up the whole lifecycle on 127.0.0.1: DynamoDB Local with the stack's device table, the software CA
 * and its CRL, the local IoT registry (CA registered with auto-registration, fleet policy on the
 * fleet's thing group), the MQTT-over-TLS endpoint and the device API. The handlers and the core are
 * the ones Lambda runs; this file only wires them to local stand-ins of the AWS services.
 */
export async function startLocalMode(config: LocalModeConfig, options: StartOptions = {}): Promise<LocalMode> {
  const started = Date.now();
  const log = options.log ?? ((message: string) => console.log(message));
  const files = dataFiles(config.dataDir);
  const parts: Parts = {};
  const stopAll = () => stopParts(parts, log);
  // Where devices and API clients reach it (`--host`, `--api-host`): checked against this machine before anything is touched.
  const mqttHost = await resolveListenHost('host', config.host);
  const apiHost = await resolveListenHost('apiHost', config.apiHost);

  // One local mode per data folder. The lock comes first: a second start refuses (naming the running
  // one's pid and ports) before it stops any DynamoDB Local or binds any port. A lock left by a dead
  // run is taken over, and only then is that run's DynamoDB Local stopped (in startDynamoDb).
  await mkdir(files.dir, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
  const lock = await acquireDataDirLock(files);
  parts.lock = lock;
  if (lock.tookOverFrom !== undefined) log(`[local] took over the lock of an earlier run (pid ${lock.tookOverFrom}, no longer running) on ${files.dir}`);

  try {
    await ensureDataDir(files);
    const warn = (message: string) => log(`[local] warning: ${message}`);

    // DynamoDB Local takes seconds to boot: start it first, and prepare everything else meanwhile.
    parts.dynamoStarting = startDynamoDb(config, files, log);
    parts.dynamoStarting.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile

    const token = await loadOrCreateApiToken(files, warn);
    parts.revocations = await JsonLinesRevocationList.open(files.revocations);
    const revocations = parts.revocations;
    if (revocations.skippedLines.length > 0) warn(`${files.revocations}: skipped unreadable line(s) ${revocations.skippedLines.join(', ')}`);

    let ca: SoftwareCertificateAuthority | undefined;
    const crl = await listenOrExplain('crlPort', () =>
      startCrlServer({
        host: LOOPBACK,
        port: config.crlPort,
        crlPem: () => requireCa(ca).generateCrlPem(),
        caPem: async () => (await requireCa(ca).getCaCertificates()).certificatePem,
        log,
      }),
    );
    parts.crl = crl;
    const crlUrl = `${crl.url}/crl`;

    const material = await readCaMaterial(files, warn);
    // The CAs a CA rotation (`iotcert ca rotate`) replaced: they sign nothing, their devices stay accepted.
    const previousCas = await readPreviousCas(files);
    const previousCaCertificatePems = previousCas.map((previous) => previous.certificatePem);
    if (material) {
      ca = await SoftwareCertificateAuthority.load(material, { revocations, crlUrl, previousCaCertificatePems });
    } else {
      const created = await SoftwareCertificateAuthority.create(CA_COMMON_NAME, { revocations, crlUrl });
      await writeCaMaterial(files, created.material);
      ca = created.ca;
      log(`[local] created a new CA: key ${files.caKey} (mode 600), certificate ${files.caCertificate}`);
    }
    const caPem = (await ca.getCaCertificates()).certificatePem;

    const registryFile = new RegistrySnapshotFile(files.registry, { journalPath: files.registryJournal, log });
    parts.registryFile = registryFile;
    const registry = new LocalDeviceRegistry({ thingGroupName: LOCAL_THING_GROUP, snapshot: await registryFile.load(), onChange: registryFile.save });
    const registeredCa = await registry.registerCaCertificate(caPem, { autoRegistration: true });
    // A previous CA stays as its registration is: ACTIVE with auto-registration on after the rotation (devices a
    // factory made with it still register on first connect), or INACTIVE once an operator deactivated it.
    for (const previous of previousCas) {
      if (!registry.findCaCertificate(previous.caCertificateId)) await registry.registerCaCertificate(previous.certificatePem, { autoRegistration: true });
    }
    await registry.putPolicy(LOCAL_POLICY_NAME, fleetPolicyDocument({ region: LOCAL_REGION, accountId: LOCAL_ACCOUNT_ID }));
    await registry.attachPolicyToThingGroup(LOCAL_POLICY_NAME, LOCAL_THING_GROUP);

    const dynamo = await parts.dynamoStarting;
    parts.dynamo = dynamo;
    const dynamoClient = localDynamoDbClient(dynamo.endpoint);
    const documentClient = localDocumentClient(dynamo.endpoint);
    parts.clients = [dynamoClient, documentClient];
    await ensureTable(dynamoClient, deviceTableDefinition(deviceTableName(config)));

    // The same wiring as functions/handlers/aws-wiring.ts, with local stand-ins for AWS IoT and Private CA.
    const logLevel = config.verbose ? 'INFO' : 'WARN';
    const store = new DynamoDbDeviceStore({ tableName: deviceTableName(config), documentClient });
    const migrated = await store.migrateCertificateLists();
    if (migrated > 0) log(`[local] linked the certificates of ${migrated} device(s) written by iotcert 0.1.0`);
    const lifecycle = new DeviceLifecycle(
      { store, registry, ca: await testIssuingCa(ca, files, { revocations, crlUrl }, warn), clock: systemClock, ids: randomIds },
      { enrollmentPolicy: config.enrollmentPolicy, validityDays: config.validityDays, rotationCommitSeconds: config.rotationCommitSeconds },
    );
    const jitrHandler = createJitrHandler({ lifecycle, logger: new Logger({ serviceName: 'jitr', logLevel }) });
    // Messages to devices go out through the MQTT endpoint, once it listens (AWS IoT's data plane in the stack).
    const messenger: DeviceMessenger = { publish: async (topic, message) => requireMqtt(parts.mqtt).publish(topic, JSON.stringify(message), 1) };
    const apiHandler = createApiHandler({ lifecycle, clock: systemClock, messenger, logger: new Logger({ serviceName: 'device-api', logLevel }) });

    // The registration topic rule: its action invokes the JITR function asynchronously.
    const jitr = new AsyncInvoker<RegistrationEvent, JitrResult>({
      handler: (event) => jitrHandler(event, lambdaContext('iotcert-local-jitr', jitrDeliveryId(event.certificateId), JITR_TIMEOUT_MS)),
      concurrency: config.jitrConcurrency,
      keyOf: (event) => event.certificateId,
      redeliverWhen: (result) => result.outcome === 'IN_PROGRESS',
      redeliveryDelayMs: JITR_REDELIVERY_DELAY_MS,
      maxRedeliveries: JITR_MAX_REDELIVERIES,
      onResult: (event, result) => log(`[jitr] certificate ${short(event.certificateId)}: ${escaped(describeOutcome(result))}`),
      onRetry: (event, error, attempt, delayMs) => log(`[jitr] certificate ${short(event.certificateId)}: attempt ${attempt} failed (${escaped((error as Error).message)}); retry in ${delayMs} ms`),
      onRedelivery: (event, _result, redelivery, delayMs) =>
        log(`[jitr] certificate ${short(event.certificateId)}: another delivery holds its activation; delivered again in ${delayMs} ms (${redelivery}/${JITR_MAX_REDELIVERIES})`),
      onFailure: async (event, error, attempts) => {
        log(`[jitr] certificate ${short(event.certificateId)}: failed after ${attempts} attempts (${escaped((error as Error).message)}); recorded in ${files.jitrFailures}; its next connect tries again`);
        const line = JSON.stringify({ at: new Date().toISOString(), attempts, error: (error as Error).message, event });
        await appendFile(files.jitrFailures, `${line}\n`, { mode: PRIVATE_FILE_MODE });
      },
    });
    parts.jitr = jitr;

    // The rotation rules and schedule: the same function as in AWS, answering devices through the MQTT endpoint.
    // A shutdown cuts a campaign's pause short: the run saves its cursor and the next start goes on from it.
    const campaignPauses = new AbortController();
    parts.campaignPauses = campaignPauses;
    const rotationHandler = createRotationHandler({
      lifecycle,
      messenger,
      logger: new Logger({ serviceName: 'rotation', logLevel }),
      pacing: { clock: systemClock, wait: (ms) => sleep(ms, undefined, { signal: campaignPauses.signal }) },
    });
    const rotation = new AsyncInvoker<RuleMessage, RotationResult>({
      handler: (message) => rotationHandler(message, lambdaContext('iotcert-local-rotation', randomIds.next(), ROTATION_TIMEOUT_MS)),
      concurrency: config.jitrConcurrency,
      keyOf: (message) => `${message.mqttTopic}\u0000${JSON.stringify(message.requestId ?? null)}\u0000${message.mqttPrincipal ?? ''}`,
      onResult: (_message, result) => log(`[rotation] ${escaped(describeRotation(result))}`),
      onRetry: (message, error, attempt, delayMs) => log(`[rotation] ${escaped(message.mqttTopic)}: attempt ${attempt} failed (${escaped((error as Error).message)}); retry in ${delayMs} ms`),
      onFailure: async (message, error, attempts) => {
        log(`[rotation] ${escaped(message.mqttTopic)}: failed after ${attempts} attempts (${escaped((error as Error).message)}); the device's retry tries again`);
      },
    });
    parts.rotation = rotation;
    const rotationRule = (step: RotationStep) => ({
      name: `rotation-${step}`,
      topicFilter: ROTATION_TOPIC_FILTERS[step],
      action: (payload: unknown, topic: string, sender?: { clientId: string; principal: string }) => {
        if (sender) rotation.invoke(ruleMessageOf(step, payload, topic, sender));
      },
    });
    const rules = new TopicRules([
      { name: 'jitr-registration', topicFilter: '$aws/events/certificates/registered/+', action: (payload) => void jitr.invoke(payload as RegistrationEvent) },
      rotationRule('rotate'),
      rotationRule('commit'),
    ]);
    parts.sweep = startRotationSweep(config.rotationSweepSeconds, async () => {
      const result = await rotationHandler({ 'detail-type': 'Scheduled Event', source: 'iotcert.local' }, lambdaContext('iotcert-local-rotation', randomIds.next(), ROTATION_TIMEOUT_MS));
      if (result.kind === 'swept' && result.withdrawn + result.committed > 0) log(`[rotation] ${describeRotation(result)}`);
    }, (error) => log(`[rotation] sweep failed (${escaped((error as Error).message)}); the next one tries again`));
    // The rotation campaigns' schedule: the same job, on a one-second tick, one run at a time.
    parts.campaigns = startRotationSweep(CAMPAIGN_TICK_SECONDS, async () => {
      const result = await rotationHandler({ ...ROTATION_CAMPAIGN_JOB_EVENT }, lambdaContext('iotcert-local-rotation', randomIds.next(), CAMPAIGN_RUN_TIMEOUT_MS));
      if (result.kind === 'campaigns' && result.campaigns.length > 0) log(`[rotation] ${describeRotation(result)}`);
    }, (error) => log(`[rotation] campaign run failed (${escaped((error as Error).message)}); the next one goes on from its cursor`));

    // The MQTT server's certificate comes from the oldest CA of the folder: devices made before a CA rotation trust only
    // that one, and `ca.pem` (the bundle every later device gets) holds it too. (AWS IoT's server certificate is Amazon's.)
    const oldest = previousCas[0];
    const serverCa = oldest ? await SoftwareCertificateAuthority.load(oldest) : ca;
    const server = await serverCredentials(serverCa, files, oldest?.certificatePem ?? caPem, mqttHost, log);
    const gate = new CertificateGate(registry, { accountId: LOCAL_ACCOUNT_ID });
    parts.mqtt = await listenOrExplain('mqttPort', () =>
      startMqttEndpoint({
        host: mqttHost.bindAddress,
        port: config.mqttPort,
        serverKeyPem: server.keyPem,
        serverCertificatePem: server.certificatePem,
        trustedCaPems: registry.activeCaCertificates().map((registered) => registered.certificatePem),
        registry,
        gate,
        authorizer: new PolicyAuthorizer(registry, { region: LOCAL_REGION, accountId: LOCAL_ACCOUNT_ID }),
        publishEvent: (topic, event) => rules.publish(topic, event),
        onAcceptedPublish: (topic, payload, identity) => rules.publish(topic, parseJsonPayload(payload), { clientId: identity.clientId, principal: identity.certificateId }),
        log,
        verbose: config.verbose,
      }),
    );
    const mqtt = parts.mqtt;

    parts.api = await listenOrExplain('apiPort', () =>
      startApiServer({
        host: apiHost.bindAddress,
        port: config.apiPort,
        token,
        handler: (event, context) => apiHandler(event, context),
        log,
      }),
    );
    const api = parts.api;

    // At-least-once: registrations a previous run left pending are delivered again. So are those it
    // left half done: ACTIVE in the registry (saved), but not yet in the store (the crash came between).
    const pending = gate.pendingRegistrations();
    for (const event of pending) rules.publish(registrationTopic(event.caCertificateId), event);
    if (pending.length > 0) log(`[local] delivering ${pending.length} registration(s) left pending by the previous run`);
    const halfDone = await halfDoneActivations(registry, store, gate);
    for (const event of halfDone) rules.publish(registrationTopic(event.caCertificateId), event);
    if (halfDone.length > 0) log(`[local] delivering ${halfDone.length} registration(s) the previous run activated in the registry but did not record: finishing them`);

    const endpoints: LocalEndpoints = {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      mqtt: {
        host: mqttHost.connectHost,
        port: mqtt.port,
        url: `mqtts://${mqttHost.connectHost}:${mqtt.port}`,
        listenAddress: mqttHost.bindAddress,
        serverNames: mqttHost.serverNames,
      },
      api: { url: `http://${apiHost.connectHost}:${api.port}`, listenAddress: apiHost.bindAddress },
      crl: { pemUrl: `${crl.url}/crl.pem`, derUrl: `${crl.url}/crl` },
      dynamodb: { endpoint: dynamo.endpoint, deviceTable: deviceTableName(config) },
      caCertificateId: registeredCa.caCertificateId,
    };
    await writeEndpoints(files, endpoints);
    await lock.update({ api: endpoints.api, mqtt: { host: endpoints.mqtt.host, port: endpoints.mqtt.port } });

    let stopping: Promise<void> | undefined;
    return { config, files, endpoints, startupMs: Date.now() - started, stop: () => (stopping ??= stopAll()) };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** What a start has brought up so far: a failed start stops exactly these. */
interface Parts {
  dynamoStarting?: Promise<Pick<DynamoDbLocal, 'endpoint' | 'stop'>>;
  dynamo?: Pick<DynamoDbLocal, 'endpoint' | 'stop'>;
  clients?: { destroy(): void }[];
  revocations?: JsonLinesRevocationList;
  crl?: CrlServer;
  registryFile?: RegistrySnapshotFile;
  jitr?: AsyncInvoker<RegistrationEvent, JitrResult>;
  rotation?: AsyncInvoker<RuleMessage, RotationResult>;
  sweep?: { stop(): Promise<void> };
  campaigns?: { stop(): Promise<void> };
  campaignPauses?: AbortController;
  mqtt?: MqttEndpoint;
  api?: ApiServer;
  lock?: DataDirLock;
}

/** The shutdown that loses nothing: stop accepting, drain JITR deliveries, flush the registry, stop DynamoDB Local. */
async function stopParts(parts: Parts, log: (message: string) => void): Promise<void> {
  const step = async (name: string, run: () => Promise<unknown>) => {
    try {
      await run();
    } catch (error) {
      log(`[local] ${name} failed: ${(error as Error).message}`);
    }
  };
  await step('stopping the rotation sweep', async () => parts.sweep?.stop());
  await step('stopping the rotation campaigns', async () => {
    parts.campaignPauses?.abort();
    await parts.campaigns?.stop();
  });
  // Before the servers stop: the answers to rotation messages in flight go out through the MQTT endpoint (what does not finish is the device's to send again).
  await step('draining rotation messages', async () => parts.rotation?.drain(ROTATION_DRAIN_TIMEOUT_MS));
  await step('stopping the servers', () => Promise.all([parts.api?.stop(), parts.mqtt?.stop(), parts.crl?.stop()]));
  const { jitr } = parts;
  if (jitr) {
    await step('draining JITR deliveries', async () => {
      if (jitr.pending > 0) log(`[local] waiting for ${jitr.pending} JITR deliver${jitr.pending === 1 ? 'y' : 'ies'} in flight...`);
      if (!(await jitr.drain(DRAIN_TIMEOUT_MS))) log(`[local] ${jitr.pending} JITR deliveries did not finish in time; they are delivered again at the next start`);
    });
  }
  await step('saving the registry', async () => parts.registryFile?.flush());
  await step('closing the revocation list', async () => parts.revocations?.close());
  for (const client of parts.clients ?? []) client.destroy();
  await step('stopping DynamoDB Local', async () => {
    const dynamo = parts.dynamo ?? (await parts.dynamoStarting?.catch(() => undefined));
    await dynamo?.stop();
  });
  // Last: until here, a second start must still find this run holding the folder.
  await step('removing the lock', async () => parts.lock?.release());
}

/**
 * The registration events of certificates ACTIVE in the registry whose store record is still
 * PENDING_ACTIVATION: a run stopped between the registry's activation and the store's commit.
 * Delivered again, the core finishes the activation (the claim is this mode's own delivery id).
 */
async function halfDoneActivations(registry: LocalDeviceRegistry, store: DynamoDbDeviceStore, gate: CertificateGate): Promise<RegistrationEvent[]> {
  const active = registry
    .snapshot()
    .certificates.filter((certificate) => certificate.status === 'ACTIVE' && certificate.caCertificateId !== undefined)
    .map((certificate) => certificate.certificateId);
  if (active.length === 0) return [];
  const records = await store.getCertificates(active);
  return records.filter((record) => record.status === 'PENDING_ACTIVATION').flatMap((record) => gate.registrationEventOf(record.certificateId) ?? []);
}

function requireMqtt(mqtt: MqttEndpoint | undefined): MqttEndpoint {
  if (!mqtt) throw new Error('the MQTT endpoint is not listening');
  return mqtt;
}

/** The payload as a topic rule reads it: JSON when it parses, else nothing the rule can select fields from. */
function parseJsonPayload(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** The sweep on a timer, one run at a time (EventBridge's schedule in the stack). */
function startRotationSweep(everySeconds: number, run: () => Promise<void>, onError: (error: unknown) => void): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = run()
      .catch(onError)
      .finally(() => {
        running = undefined;
      });
  }, everySeconds * 1000);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await running;
    },
  };
}

function describeRotation(result: RotationResult): string {
  switch (result.kind) {
    case 'answered':
      return `${result.thingName}: ${result.step} ${'code' in result.answer ? `rejected (${result.answer.code}): ${result.answer.message}` : `accepted (request ${result.answer.requestId}, certificate ${short(result.answer.certificateId)})`}`;
    case 'dropped':
      return `message dropped: ${result.reason}`;
    case 'swept':
      return `sweep: ${result.withdrawn} rotation(s) withdrawn after their commit deadline, ${result.committed} commit(s) finished, ${result.failed} failed`;
    case 'campaigns':
      return `campaigns: ${result.campaigns.map((campaign) => `${short(campaign.campaignId)} ${campaign.stoppedBy} (${campaign.noticesSent} notice(s))`).join(', ')}`;
  }
}

function requireCa(ca: SoftwareCertificateAuthority | undefined): SoftwareCertificateAuthority {
  if (!ca) throw new Error('the CA is not loaded yet');
  return ca;
}

async function startDynamoDb(config: LocalModeConfig, files: DataFiles, log: (message: string) => void): Promise<Pick<DynamoDbLocal, 'endpoint' | 'stop'>> {
  if (config.dynamodbEndpoint) return { endpoint: config.dynamodbEndpoint, stop: async () => undefined };
  // A run that was killed, or whose terminal closed before it could stop, may have left its DynamoDB Local running on this folder.
  const stale = await stopStaleDynamoDbLocal(files.dynamodbPid, files.dynamodb);
  if (stale !== undefined) log(`[local] stopped the DynamoDB Local (pid ${stale}) an earlier run left running on ${files.dynamodb}`);
  if (config.dynamodbPort !== 0) await assertPortFree(config.dynamodbPort, 'dynamodbPort');
  return startDynamoDbLocal({ port: config.dynamodbPort, dataDirectory: files.dynamodb, ownProcessGroup: true, pidFile: files.dynamodbPid });
}

/** DynamoDB Local only says "exited"; find a taken port first and name the setting that moves it. */
async function assertPortFree(port: number, setting: keyof typeof SETTINGS): Promise<void> {
  await listenOrExplain(setting, () => new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(port, LOOPBACK, () => probe.close(() => resolve()));
  }));
}

async function listenOrExplain<T>(setting: keyof typeof SETTINGS, listen: () => Promise<T>): Promise<T> {
  try {
    return await listen();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      const { flag, env } = SETTINGS[setting];
      throw new Error(`Port ${(error as { port?: number }).port ?? ''} is ${code === 'EADDRINUSE' ? 'already in use' : 'not allowed'}: choose another with --${flag} <port> or ${env}=<port>.`, { cause: error });
    }
    if (code === 'EADDRNOTAVAIL') {
      // resolveListenHost checked the address; an interface that went away since ends here.
      throw new LocalConfigError(`Invalid setting:\n  --host / --api-host: ${(error as { address?: string }).address ?? 'the address'} is not an address of this machine (any more).`);
    }
    throw error;
  }
}

/**
 * The MQTT endpoint's key and certificate: the saved pair while it suits (issued by this CA, valid for
 * `SERVER_CERTIFICATE_RENEW_DAYS` more, covering every name in `host.serverNames`), else a fresh P-256
 * key and a certificate from the local CA for those names, saved for the next start. The CA stays.
 */
async function serverCredentials(ca: SoftwareCertificateAuthority, files: DataFiles, caPem: string, host: ListenHost, log: (message: string) => void): Promise<ServerCredentials> {
  const saved = await readServerCredentials(files, (message) => log(`[local] warning: ${message}`));
  const problem = saved
    ? serverCertificateProblem(saved, { caCertificatePem: caPem, names: host.serverNames, now: new Date(), minRemainingDays: SERVER_CERTIFICATE_RENEW_DAYS })
    : undefined;
  if (saved && problem === undefined) return saved;
  const provider = webcrypto as unknown as Crypto;
  const keys = (await provider.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const certificatePem = await ca.issueServerCertificate(host.serverNames, keys.publicKey, SERVER_CERTIFICATE_DAYS);
  const keyPem = x509.PemConverter.encode(await provider.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  await writeServerCredentials(files, { keyPem, certificatePem });
  const why = problem === undefined ? '' : ` (the saved one could not serve: ${problem}; the CA is unchanged)`;
  log(`[local] issued the MQTT server certificate for ${host.serverNames.join(', ')}, ${SERVER_CERTIFICATE_DAYS} days: ${files.serverCertificate}${why}`);
  return { keyPem, certificatePem };
}

function describeOutcome(result: JitrResult): string {
  switch (result.outcome) {
    case 'ACTIVATED':
      return `ACTIVATED, device ${result.deviceId} can connect now`;
    case 'REJECTED':
      return `REJECTED (${result.code}): ${result.reason}`;
    case 'ALREADY_PROCESSED':
      return `already processed (${result.status})`;
    case 'IN_PROGRESS':
      return 'another delivery is activating it (left to the next start)';
    case 'IGNORED':
      return `ignored: ${result.reason}`;
    case 'AWAITING_PRE_REGISTRATION':
      return `waiting: device ${result.deviceId} is not pre-registered; pre-registering it activates this certificate`;
    case 'MALFORMED_EVENT':
      return `malformed event dropped: ${result.problems.join('; ')}`;
  }
}

/**
 * Test-only: with `IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS` (an integer, e.g. -400), the device certificates the lifecycle
 * issues (API and rotation) are signed by the same CA key on a clock that many days off, so an end-to-end test gets a
 * certificate that has already expired when issued (recovery after expiry) without waiting for one to expire. The CA
 * certificate, the server certificate, the TLS endpoint, the store and the rotation deadlines keep real time. Unset in
 * any real use: then the lifecycle uses `ca` itself.
 */
async function testIssuingCa(
  ca: SoftwareCertificateAuthority,
  files: DataFiles,
  options: Pick<NonNullable<Parameters<typeof SoftwareCertificateAuthority.load>[1]>, 'revocations' | 'crlUrl'>,
  warn: (message: string) => void,
): Promise<SoftwareCertificateAuthority> {
  const text = process.env.IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS;
  if (text === undefined || text === '') return ca;
  const days = Number(text);
  if (!Number.isInteger(days)) throw new Error(`IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS must be a whole number of days (got "${text}").`);
  const material = await readCaMaterial(files, warn);
  if (!material) throw new Error('IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS: no CA material to sign with.');
  warn(`IOTCERT_TEST_CA_CLOCK_OFFSET_DAYS=${days}: device certificates are issued on a clock ${days} days off (a test setting)`);
  return SoftwareCertificateAuthority.load(material, { ...options, now: () => new Date(Date.now() + days * 86_400_000) });
}
