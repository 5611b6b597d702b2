import 'reflect-metadata';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { X509Crl } from '@peculiar/x509';
import { join } from 'node:path';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { deviceTableDefinition } from '../../functions/adapters/aws/device-table';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { RegistrySnapshotFile } from '../../functions/adapters/local/registry-snapshot-file';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { DeviceLifecycle, randomIds, type RegistrationEvent } from '../../functions/core/lifecycle';
import { systemClock } from '../../functions/core/ports';
import { makeKeyAndCsr } from '../../local/cli/device';
import { deviceTableName, LOCAL_ACCOUNT_ID, LOCAL_THING_GROUP, SETTINGS } from '../../local/config';
import { dataFiles, ensureDataDir, writeCaMaterial } from '../../local/data-dir';
import { ensureTable, isDynamoDbLocal, localDocumentClient, localDynamoDbClient, startDynamoDbLocal } from '../../local/dynamodb-local';
import { jitrDeliveryId } from '../../local/jitr-delivery';
import { certificateIdOfFile, eventually, iotcert, mosquittoPub, mosquittoPubUntilAccepted, tlsFilesOf } from './support/clients';
import { newDataDir, removeDataDir, startLocalModeProcess, type LocalModeProcess, savedRegistry } from './support/local-mode-process';

jest.setTimeout(240_000);

interface DeviceView {
  status: string;
  certificates: { certificateId: string; status: string }[];
}

/** Polls the API (the device does not connect meanwhile) until the device and its one certificate are ACTIVE. */
const activeWithoutReconnecting = (local: LocalModeProcess, deviceId: string, timeoutMs: number) =>
  eventually(async () => {
    const view = (await local.api('GET', `/devices/${deviceId}`)).body as DeviceView;
    return view.status === 'ACTIVE' && view.certificates.length === 1 && view.certificates[0]?.status === 'ACTIVE' ? view : undefined;
  }, timeoutMs);

/**
 * `npm start` as a developer runs it: its own DynamoDB Local with files under the data folder.
 * Stopped by closing the terminal (SIGHUP), or killed, a start again keeps every device, certificate
 * status and revocation, and finishes the registrations the stop interrupted.
 */
describe('local mode: a restart keeps every device and certificate', () => {
  const dataDirs: string[] = [];
  let local: LocalModeProcess | undefined;

  afterEach(async () => {
    await local?.stop();
    local = undefined;
  });

  afterAll(async () => {
    await Promise.all(dataDirs.map(removeDataDir));
  });

  test('devices onboarded before the terminal closed (one revoked, one still registering) are as they were after the next start; DynamoDB Local stopped with it', async () => {
    // Prepare: a first run with a JITR device, an API-enrolled device that gets revoked, and a device whose first connect comes just before the stop.
    const dataDir = await newDataDir();
    dataDirs.push(dataDir);
    local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true });
    const firstStartupMs = local.startupMs;
    const caPem = await readFile(local.files.caCertificate, 'utf8');
    const token = local.token;
    const javaPid = Number(await readFile(local.files.dynamodbPid, 'utf8'));
    const dirOf = (id: string) => join(dataDir, 'devices', id);
    for (const id of ['kept-1', 'late-1']) expect((await iotcert(['device', 'mint', '--id', id, '--out', dirOf(id)], dataDir)).code).toBe(0);
    expect((await iotcert(['device', 'enroll', '--id', 'revoked-1', '--out', dirOf('revoked-1')], dataDir)).code).toBe(0);
    const tls = (id: string) => tlsFilesOf(dirOf(id), local!.files.caCertificate);
    expect((await mosquittoPubUntilAccepted(tls('kept-1'), local.mqtt.port, 'kept-1', 'devices/kept-1/telemetry', 'first run')).at(-1)?.code).toBe(0);
    const revokedId = await certificateIdOfFile(tls('revoked-1').cert);
    await local.api('POST', `/devices/revoked-1/certificates/${revokedId}/revoke`, { reason: 'SUPERSEDED' });
    const crlBefore = await (await fetch(local.endpoints.crl.pemUrl)).text();
    const registering = await mosquittoPub(tls('late-1'), local.mqtt.port, 'late-1', 'devices/late-1/telemetry', 'just before the stop');
    expect(registering.code).not.toBe(0); // the JITR refusal: its registration is now in flight

    // Act: the terminal closes (SIGHUP), then a start again on the same data folder.
    const stopped = await local.stop('SIGHUP');
    const javaLeftRunning = await isDynamoDbLocal(javaPid, local.files.dynamodb);
    local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true });

    // Assess: a clean stop that took DynamoDB Local with it, then the same CA, token and registry.
    expect(stopped.code).toBe(0);
    expect(stopped.output).toMatch(/SIGHUP: stopping[\s\S]*stopped cleanly/);
    expect(javaLeftRunning).toBe(false);
    expect(await readFile(local.files.caCertificate, 'utf8')).toBe(caPem);
    expect(local.token).toBe(token);
    // The registration in flight at the stop was not lost: ACTIVE without the device connecting again first.
    await expect(activeWithoutReconnecting(local, 'late-1', 15_000)).resolves.toMatchObject({ status: 'ACTIVE' });
    expect((await mosquittoPub(tls('late-1'), local.mqtt.port, 'late-1', 'devices/late-1/telemetry', 'second run')).code).toBe(0);
    const keptFirstTry = await mosquittoPub(tls('kept-1'), local.mqtt.port, 'kept-1', 'devices/kept-1/telemetry', 'second run');
    expect(keptFirstTry.code).toBe(0); // still ACTIVE: no second JITR
    const revokedTry = await mosquittoPub(tls('revoked-1'), local.mqtt.port, 'revoked-1', 'devices/revoked-1/telemetry', 'second run');
    expect(revokedTry.code).not.toBe(0);
    await expect(local.waitForOutput(/refused, connection closed: the certificate is REVOKED/, 5_000)).resolves.toBeUndefined();

    const kept = (await local.api('GET', '/devices/kept-1')).body;
    expect(kept).toMatchObject({ status: 'ACTIVE', certificates: [{ status: 'ACTIVE', source: 'JITR' }] });
    const revoked = (await local.api('GET', '/devices/revoked-1')).body;
    expect(revoked).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: revokedId, status: 'REVOKED', revocationReason: 'SUPERSEDED' }] });
    const crlAfter = await (await fetch(local.endpoints.crl.pemUrl)).text();
    expect(crlAfter).not.toBe(''); // re-signed at each fetch, so compare the entries
    expect(serialsOf(crlAfter)).toEqual(serialsOf(crlBefore));
    expect(serialsOf(crlAfter)).toHaveLength(1);

    console.log(`startup with DynamoDB Local: first ${firstStartupMs} ms, restart ${local.startupMs} ms (process spawn to ready)`);
  });

  test('after a crash mid-activation, the next start stops the DynamoDB Local left running and finishes both half-done activations at once, without the devices reconnecting', async () => {
    // Prepare what a killed run leaves behind, with the code the local mode runs: its DynamoDB Local still
    // running (pid file and all), and two activations cut short under the local mode's delivery ids:
    // `claimed` after the store's claim (registry PENDING_ACTIVATION, a 60 s lease held), `half-done`
    // after the registry's activation (registry ACTIVE, store PENDING_ACTIVATION).
    const dataDir = await newDataDir();
    dataDirs.push(dataDir);
    const files = dataFiles(dataDir);
    await ensureDataDir(files);
    const { ca, material } = await SoftwareCertificateAuthority.create('iotcert local device CA');
    await writeCaMaterial(files, material);
    const leftRunning = await startDynamoDbLocal({ dataDirectory: files.dynamodb, pidFile: files.dynamodbPid, ownProcessGroup: true });
    const leftRunningPid = Number(await readFile(files.dynamodbPid, 'utf8'));
    const tableName = deviceTableName({ tablePrefix: SETTINGS.tablePrefix.default });
    const dynamoClient = localDynamoDbClient(leftRunning.endpoint);
    const documentClient = localDocumentClient(leftRunning.endpoint);
    await ensureTable(dynamoClient, deviceTableDefinition(tableName));
    const store = new DynamoDbDeviceStore({ tableName, documentClient });
    const registryFile = new RegistrySnapshotFile(files.registry, { journalPath: files.registryJournal });
    const registry = new LocalDeviceRegistry({ thingGroupName: LOCAL_THING_GROUP, onChange: registryFile.save });
    const { caCertificateId } = await registry.registerCaCertificate(material.certificatePem, { autoRegistration: true });

    const crashes = { claimed: 'crash-claimed', 'half-done': 'crash-half-done' } as const;
    const certificateIds: Record<string, string> = {};
    for (const [when, deviceId] of Object.entries(crashes)) {
      const certificatePem = await ca.mintDeviceCertificate(deviceId, (await makeKeyAndCsr(deviceId)).csrPem, 30);
      const { certificateId } = await registry.registerPendingActivation(certificatePem, caCertificateId);
      certificateIds[deviceId] = certificateId;
      let crashed!: () => void;
      const reached = new Promise<void>((resolve) => (crashed = resolve));
      const never = () => {
        crashed();
        return new Promise<never>(() => undefined);
      };
      const lifecycle = new DeviceLifecycle({
        store: when === 'half-done' ? stopAt(store, 'commit', (change) => change.certificates?.some((c) => c.next.certificateId === certificateId && c.next.status === 'ACTIVE') === true, never) : store,
        registry: when === 'claimed' ? stopAt(registry, 'updateCertificateStatus', () => true, never) : registry,
        ca,
        clock: systemClock,
        ids: randomIds,
      });
      const event: RegistrationEvent = { certificateId, caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: LOCAL_ACCOUNT_ID, certificateRegistrationTimestamp: String(Date.now()) };
      void lifecycle.registerOnFirstConnect(event, { deliveryId: jitrDeliveryId(certificateId) });
      await reached;
    }
    await registryFile.flush();
    const before = { claimed: registry.findCertificate(certificateIds['crash-claimed']!)?.status, halfDone: registry.findCertificate(certificateIds['crash-half-done']!)?.status };
    const halfDoneInStore = (await store.getCertificate(certificateIds['crash-half-done']!))?.status;
    dynamoClient.destroy();
    documentClient.destroy();

    // Act: the next start, on the same data folder.
    local = await startLocalModeProcess({ dataDir, embeddedDynamoDb: true });
    const started = Date.now();
    const views = await Promise.all(Object.values(crashes).map((deviceId) => activeWithoutReconnecting(local!, deviceId, 15_000)));
    const finishedMs = Date.now() - started;

    // Assess: the leftovers were as described; the old DynamoDB Local was stopped (and said so); both
    // activations were finished by the first delivery at the start, long before the 60 s lease ran out.
    expect(before).toEqual({ claimed: 'PENDING_ACTIVATION', halfDone: 'ACTIVE' });
    expect(halfDoneInStore).toBe('PENDING_ACTIVATION');
    expect(local.output()).toContain(`stopped the DynamoDB Local (pid ${leftRunningPid}) an earlier run left running`);
    expect(await isDynamoDbLocal(leftRunningPid, files.dynamodb)).toBe(false);
    expect(local.output()).toContain('delivering 1 registration(s) left pending by the previous run');
    expect(local.output()).toContain('delivering 1 registration(s) the previous run activated in the registry but did not record');
    expect(views.map((view) => view.status)).toEqual(['ACTIVE', 'ACTIVE']);
    for (const certificateId of Object.values(certificateIds)) expect(local.occurrences(`certificate ${certificateId.slice(0, 12)}…: ACTIVATED`)).toBe(1);
    expect(local.output()).not.toContain('another delivery holds its activation');
    const registryAfter = (await savedRegistry(files)) as unknown as { certificates: { certificateId: string; status: string }[] };
    expect(registryAfter.certificates.filter((certificate) => Object.values(certificateIds).includes(certificate.certificateId)).map((certificate) => certificate.status)).toEqual(['ACTIVE', 'ACTIVE']);
    expect(existsSync(files.dynamodbPid)).toBe(true); // the new run's
    console.log(`half-done activations finished ${finishedMs} ms after the restart was ready`);
  });
});

/** `target` with `method` stopping for good (a crash) when `when` holds for its arguments. */
type ArgumentsOf<F> = F extends (...args: infer A) => unknown ? A : never;

function stopAt<T extends object, K extends keyof T>(target: T, method: K, when: (...args: ArgumentsOf<T[K]>) => boolean, stop: () => Promise<never>): T {
  return new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property, object) as unknown;
      if (typeof value !== 'function') return value;
      const bound = (value as (...args: unknown[]) => unknown).bind(object);
      return property === method ? (...args: ArgumentsOf<T[K]>) => (when(...args) ? stop() : bound(...args)) : bound;
    },
  });
}

function serialsOf(crlPem: string): string[] {
  return new X509Crl(crlPem).entries.map((entry) => entry.serialNumber.toLowerCase());
}
