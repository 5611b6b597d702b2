import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { GetCertificateAuthorityCertificateCommand } from '@aws-sdk/client-acm-pca';
import { Logger } from '@aws-lambda-powertools/logger';
import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { DynamoDbDeviceStore } from '../../../functions/adapters/aws/dynamodb-device-store';
import { IotDeviceRegistry } from '../../../functions/adapters/aws/iot-device-registry';
import { PrivateCaCertificateAuthority } from '../../../functions/adapters/aws/private-ca-certificate-authority';
import { DRIFT_CURSOR_OPERATION_ID, DriftCheck, type DriftCheckSettings } from '../../../functions/core/drift';
import { UpstreamError } from '../../../functions/core/errors';
import { DAY_MS, ExpiryMonitor, daysLeft, type ExpiryMonitorSettings } from '../../../functions/core/expiry';
import type { CertificateRecord, CertificateStatus, DeviceStatus } from '../../../functions/core/model';
import type { DeviceRegistry, RegistryCertificateStatus } from '../../../functions/core/ports';
import { certificateIdOf } from '../../../functions/core/x509';
import { EXPIRY_METRICS, REGISTRY_MODES } from '../../../functions/handlers/config';
import { createExpiryMonitorHandler, pacedRegistry } from '../../../functions/handlers/expiry-monitor';
import { DRIFT_CURSOR_PARTITION_KEY } from '../../../infra/expiry-monitor';
import { createTestTable, type TestTable } from '../../support/dynamodb';
import { CA_ARN, createFakeAws, type FakeAws } from '../../support/fake-aws';
import { makeCsr } from '../../support/pki';
import { certificateRecord, deviceRecord } from '../../support/records';

/*
 * The expiry monitor handler on the real core and adapters: the DynamoDB store on DynamoDB Local (certificates
 * written through its commit, read back through the ByExpiry index) and the Private CA adapter answered by the
 * fake AWS Private CA. What it publishes and logs is read from what Powertools writes to stdout: the EMF
 * blob of the metrics and the JSON lines of the log.
 */

const NOW = new Date();
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs);

let aws: FakeAws;
let table: TestTable;

let committed = 0;
async function storeCertificate(deviceId: string, notAfter: Date, status: CertificateStatus = 'ACTIVE', target: TestTable = table): Promise<void> {
  committed += 1;
  const certificate: CertificateRecord = {
    certificateId: committed.toString(16).padStart(64, 'a'),
    deviceId,
    serialNumber: committed.toString(16),
    subject: `CN=${deviceId}`,
    issuer: 'CN=Fake Private CA',
    keyAlgorithm: 'EC_P_256',
    notBefore: new Date(notAfter.getTime() - 365 * DAY_MS).toISOString(),
    notAfter: notAfter.toISOString(),
    status,
    source: 'CSR',
    certificatePem: '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----',
    createdAt: NOW.toISOString(),
    updatedAt: NOW.toISOString(),
    version: 1,
  };
  await target.store.commit({ certificates: [{ next: certificate }], events: [] });
}

/**
 * Runs the handler with a fresh Private CA adapter (it caches the CA certificate) and captures what Powertools
 * writes: metrics and INFO lines to stdout, WARN and ERROR lines to stderr.
 */
async function run(settings: Partial<ExpiryMonitorSettings> = {}, store: TestTable = table, notices?: Parameters<typeof createExpiryMonitorHandler>[0]['notices'], drift?: DriftCheck) {
  const lines: string[] = [];
  const capture = (chunk: string | Uint8Array) => {
    lines.push(...String(chunk).split('\n').filter((line) => line.trim() !== ''));
    return true;
  };
  const writes = [jest.spyOn(process.stdout, 'write').mockImplementation(capture), jest.spyOn(process.stderr, 'write').mockImplementation(capture)];
  try {
    const monitor = new ExpiryMonitor(
      {
        store: store.store,
        ca: new PrivateCaCertificateAuthority({ client: aws.pcaClient, certificateAuthorityArn: CA_ARN, signingAlgorithm: 'SHA256WITHECDSA' }),
        clock: { now: () => NOW },
      },
      { warningDays: 30, ...settings },
    );
    const handler = createExpiryMonitorHandler({
      monitor,
      metrics: new Metrics({ namespace: EXPIRY_METRICS.namespace, serviceName: 'fleet-test' }),
      logger: new Logger({ serviceName: 'expiry-monitor' }),
      ...(notices ? { notices } : {}),
      ...(drift ? { drift } : {}),
    });
    const outcome = await handler({ 'detail-type': 'Scheduled Event', source: 'aws.events' }).then(
      (result) => ({ result, error: undefined }),
      (error: unknown) => ({ result: undefined, error }),
    );
    const parsed = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    return { ...outcome, emf: parsed.filter((entry) => '_aws' in entry), logs: parsed.filter((entry) => !('_aws' in entry)) };
  } finally {
    for (const write of writes) write.mockRestore();
  }
}

/** A CA certificate and its chain with chosen expiries, as AWS Private CA would answer for a subordinate CA. */
async function caWithChain(notAfter: { issuing: Date; intermediate: Date; root: Date }): Promise<{ Certificate: string; CertificateChain: string }> {
  const provider = webcrypto as unknown as Crypto;
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = async () => (await provider.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const [rootKeys, intermediateKeys, issuingKeys] = [await keys(), await keys(), await keys()];
  const extensions = [new x509.BasicConstraintsExtension(true, undefined, true)];
  const notBefore = at(-DAY_MS);
  const root = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=Root', keys: rootKeys, notBefore, notAfter: notAfter.root, signingAlgorithm: algorithm, extensions }, provider);
  const intermediate = await x509.X509CertificateGenerator.create(
    { subject: 'CN=Intermediate', issuer: root.subject, publicKey: intermediateKeys.publicKey, signingKey: rootKeys.privateKey, notBefore, notAfter: notAfter.intermediate, signingAlgorithm: algorithm, extensions },
    provider,
  );
  const issuing = await x509.X509CertificateGenerator.create(
    { subject: 'CN=Issuing CA', issuer: intermediate.subject, publicKey: issuingKeys.publicKey, signingKey: intermediateKeys.privateKey, notBefore, notAfter: notAfter.issuing, signingAlgorithm: algorithm, extensions },
    provider,
  );
  return { Certificate: issuing.toString('pem'), CertificateChain: `${intermediate.toString('pem')}\n${root.toString('pem')}` };
}

/** X.509 keeps whole seconds: a `notAfter` chosen with milliseconds comes back rounded down. */
const wholeSecond = (date: Date) => new Date(Math.floor(date.getTime() / 1000) * 1000);

beforeAll(async () => {
  aws = await createFakeAws();
  table = await createTestTable();
  // Soonest first: what the log must list, in this order.
  await storeCertificate('sensor-a', at(DAY_MS));
  await storeCertificate('sensor-h', at(3 * DAY_MS), 'PENDING_ACTIVATION');
  await storeCertificate('sensor-b', at(10 * DAY_MS));
  await storeCertificate('sensor-b', at(12 * DAY_MS)); // a second live certificate of the same device: counted, listed once
  await storeCertificate('sensor-c', at(30 * DAY_MS - 60_000), 'INACTIVE'); // a suspended device still has to rotate
  // Not expiring soon:
  await storeCertificate('sensor-d', at(30 * DAY_MS)); // exactly 30 days left: not fewer than 30
  await storeCertificate('sensor-e', at(45 * DAY_MS));
  await storeCertificate('sensor-f', at(-DAY_MS)); // already expired
  await storeCertificate('sensor-g', at(5 * DAY_MS), 'REVOKED'); // not live: not in the expiry index at all
});

afterAll(async () => {
  aws.restore();
  await table.drop();
});

afterEach(() => {
  aws.pca.on(GetCertificateAuthorityCertificateCommand).resolves({ Certificate: aws.caCertificatePem });
});

test('publishes the CA days to expiry and the count of live certificates expiring within 30 days, in one EMF blob', async () => {
  const { result, error, emf } = await run();

  expect(error).toBeUndefined();
  const caDays = daysLeft(new x509.X509Certificate(aws.caCertificatePem).notAfter, NOW);
  expect(caDays).toBeGreaterThan(3000); // the fake CA is valid 10 years
  expect(result).toEqual({ caDaysToExpiry: caDays, caNotAfter: new x509.X509Certificate(aws.caCertificatePem).notAfter.toISOString(), deviceCertificatesExpiringSoon: 5, deviceIds: ['sensor-a', 'sensor-h', 'sensor-b', 'sensor-c'], noticesSent: 0 });
  expect(emf).toEqual([
    {
      _aws: {
        Timestamp: expect.any(Number),
        CloudWatchMetrics: [
          {
            Namespace: 'IotCertificateLifecycle',
            Dimensions: [['service']],
            Metrics: expect.arrayContaining([
              { Name: 'CaDaysToExpiry', Unit: 'None' },
              { Name: 'DeviceCertificatesExpiringSoon', Unit: 'Count' },
            ]),
          },
        ],
      },
      service: 'fleet-test',
      CaDaysToExpiry: caDays,
      DeviceCertificatesExpiringSoon: 5,
    },
  ]);
});

test('tells each device with an ACTIVE certificate in the window to renew it, paced, and no other', async () => {
  const published: { topic: string; message: Record<string, unknown> }[] = [];
  const waits: number[] = [];
  const { result, error } = await run({}, table, {
    messenger: { publish: async (topic, message) => void published.push({ topic, message: { ...message } }) },
    perSecond: 1,
    wait: async (ms) => void waits.push(ms),
  });

  expect(error).toBeUndefined();
  expect(result?.noticesSent).toBe(3);
  // ACTIVE ones only: sensor-h is still being activated, sensor-c suspended (it cannot rotate until resumed).
  expect(published.map((p) => p.topic)).toEqual(['devices/sensor-a/certificates/expiring', 'devices/sensor-b/certificates/expiring', 'devices/sensor-b/certificates/expiring']);
  const [first] = published;
  expect(first?.message).toEqual({ certificateId: expect.stringMatching(/^[0-9a-f]{64}$/), notAfter: at(DAY_MS).toISOString(), renewBy: NOW.toISOString() });
  expect(published[1]?.message.renewBy).toBe(at(9 * DAY_MS).toISOString());
  // One a second: the two after the first wait for their turn.
  expect(waits).toHaveLength(2);
  for (const ms of waits) expect(ms).toBeGreaterThan(0);
});

test('logs the devices whose certificates expire soon, soonest first, each once, for an operator to act on', async () => {
  const { logs } = await run();

  const warning = logs.find((entry) => entry.level === 'WARN');
  expect(warning).toMatchObject({
    message: 'device certificates expire within 30 days: their devices must rotate',
    service: 'expiry-monitor',
    count: 5,
    warningDays: 30,
    deviceIds: ['sensor-a', 'sensor-h', 'sensor-b', 'sensor-c'],
    deviceIdsTruncated: false,
    soonestNotAfter: at(DAY_MS).toISOString(),
  });
  expect(logs.find((entry) => entry.message === 'CA expiry checked')).toMatchObject({ level: 'INFO', expiresFirst: 'CN=Fake Private CA' });
});

test('pages through the index one certificate at a time and counts the same; the list stops at its limit and says so', async () => {
  const { result, logs } = await run({ pageSize: 1, maxListedDevices: 2 });

  expect(result).toMatchObject({ deviceCertificatesExpiringSoon: 5, deviceIds: ['sensor-a', 'sensor-h'] });
  expect(logs.find((entry) => entry.level === 'WARN')).toMatchObject({ count: 5, deviceIds: ['sensor-a', 'sensor-h'], deviceIdsTruncated: true });
});

test('a chain whose intermediate expires first: CaDaysToExpiry is the intermediate\'s days', async () => {
  const hour = 3_600_000;
  const intermediateEnd = wholeSecond(at(60 * DAY_MS + hour));
  aws.pca.on(GetCertificateAuthorityCertificateCommand).resolves(await caWithChain({ issuing: at(800 * DAY_MS + hour), intermediate: intermediateEnd, root: at(3000 * DAY_MS + hour) }));

  const { result, emf, logs } = await run();

  expect(result).toMatchObject({ caDaysToExpiry: 60, caNotAfter: intermediateEnd.toISOString() });
  expect(emf[0]).toMatchObject({ CaDaysToExpiry: 60 });
  expect(logs.find((entry) => entry.message === 'CA expiry checked')).toMatchObject({
    expiresFirst: 'CN=Intermediate',
    certificates: [
      { subject: 'CN=Issuing CA', daysLeft: 800 },
      { subject: 'CN=Intermediate', daysLeft: 60 },
      { subject: 'CN=Root', daysLeft: 3000 },
    ],
  });
});

test('an expired CA: a negative CaDaysToExpiry, and an error in the log', async () => {
  aws.pca.on(GetCertificateAuthorityCertificateCommand).resolves(await caWithChain({ issuing: wholeSecond(at(-2 * DAY_MS - 1000)), intermediate: at(500 * DAY_MS), root: at(3000 * DAY_MS) }));

  const { result, emf, logs } = await run();

  expect(result).toMatchObject({ caDaysToExpiry: -3 });
  expect(emf[0]).toMatchObject({ CaDaysToExpiry: -3, DeviceCertificatesExpiringSoon: 5 });
  expect(logs.find((entry) => entry.level === 'ERROR')).toMatchObject({
    message: 'the CA has expired: no device certificate it signed verifies any more (docs/deploy.md, "Rotating the CA")',
    expiresFirst: 'CN=Issuing CA',
  });
});

test('fails when the CA cannot be read, after publishing the device count it could get (no CaDaysToExpiry: the CA alarm counts it as breaching)', async () => {
  aws.pca.on(GetCertificateAuthorityCertificateCommand).callsFake(async () => {
    throw Object.assign(new Error('User is not authorized to perform acm-pca:GetCertificateAuthorityCertificate'), { name: 'AccessDeniedException' });
  });

  const { error, emf, logs } = await run();

  expect(error).toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'AWS Private CA GetCertificateAuthorityCertificate failed (AccessDeniedException).' });
  expect(emf).toHaveLength(1);
  expect(emf[0]).toMatchObject({ DeviceCertificatesExpiringSoon: 5 });
  expect(emf[0]).not.toHaveProperty('CaDaysToExpiry');
  expect(logs.find((entry) => entry.level === 'ERROR')).toMatchObject({ message: 'could not read the CA certificates' });
});

test('a fleet with nothing expiring soon: 0 published, nobody listed', async () => {
  const empty = await createTestTable();
  try {
    await storeCertificate('sensor-z', at(200 * DAY_MS), 'ACTIVE', empty);

    const { result, emf, logs } = await run({}, empty);

    expect(result).toMatchObject({ deviceCertificatesExpiringSoon: 0, deviceIds: [] });
    expect(emf[0]).toMatchObject({ DeviceCertificatesExpiringSoon: 0 });
    expect(logs.find((entry) => entry.message === 'no device certificate expires within 30 days')).toMatchObject({ level: 'INFO' });
    expect(logs.some((entry) => entry.level === 'WARN')).toBe(false);
  } finally {
    await empty.drop();
  }
});

/*
 * The drift check, on the DynamoDB store (DynamoDB Local) and the AWS IoT adapter answered by the fake AWS IoT: device
 * and certificate records written through the store, certificates registered in the fake registry with the status a
 * test gives them.
 */
describe('the drift check', () => {
  let fleet: TestTable;
  const iotRegistry = () => new IotDeviceRegistry({ client: aws.iotClient, thingGroupName: 'fleet', ...REGISTRY_MODES });
  const driftCheck = (target: TestTable, settings: DriftCheckSettings = {}, registry: Pick<DeviceRegistry, 'describeCertificate' | 'updateCertificateStatus'> = iotRegistry()) =>
    new DriftCheck({ store: target.store, registry, clock: { now: () => NOW } }, settings);

  /** A device with one certificate: on record with `record`, registered in (fake) AWS IoT with `registry`. */
  async function deviceWith(deviceId: string, status: { device?: DeviceStatus; record: CertificateStatus; registry: RegistryCertificateStatus }): Promise<string> {
    const certificatePem = await aws.ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
    const certificateId = await certificateIdOf(certificatePem);
    await aws.registry.registerCertificate({ certificatePem, caCertificatePem: aws.caCertificatePem });
    const registered = aws.registry.findCertificate(certificateId);
    if (registered) registered.status = status.registry;
    await fleet.store.commit({
      device: { next: deviceRecord(deviceId, { status: status.device ?? 'ACTIVE' }) },
      certificates: [{ next: certificateRecord(certificateId, deviceId, at(200 * DAY_MS).toISOString(), { status: status.record, certificatePem }) }],
      events: [],
    });
    return certificateId;
  }

  beforeEach(async () => {
    fleet = await createTestTable();
  });

  afterEach(async () => {
    await fleet.drop();
  });

  test('publishes CertificateDrift and CertificateDriftRepaired with the other metrics, logs each disagreement, and repairs the ones the record decides', async () => {
    const healthy = await deviceWith('meter-a', { record: 'ACTIVE', registry: 'ACTIVE' });
    const revoked = await deviceWith('meter-b', { record: 'REVOKED', registry: 'ACTIVE' });
    const disabled = await deviceWith('meter-c', { record: 'ACTIVE', registry: 'INACTIVE' });

    const { result, error, emf, logs } = await run({}, table, undefined, driftCheck(fleet));

    expect(error).toBeUndefined();
    expect(result?.drift).toEqual({ checked: 3, findings: 2, repaired: 1, failures: 0, skipped: 0, stoppedBy: 'PASS_COMPLETED', passStartedAt: NOW.toISOString() });
    expect(emf).toHaveLength(1);
    expect(emf[0]).toMatchObject({ CertificateDrift: 2, CertificateDriftRepaired: 1, DeviceCertificatesExpiringSoon: 5, CaDaysToExpiry: expect.any(Number) });
    expect(JSON.stringify(emf[0])).toContain('{"Name":"CertificateDrift","Unit":"Count"}');
    expect(logs.filter((entry) => entry.level === 'WARN' && String(entry.message).startsWith('certificate drift'))).toEqual([
      expect.objectContaining({
        message: 'certificate drift REVOKED_CERTIFICATE_NOT_REVOKED: repaired: set REVOKED in AWS IoT',
        deviceId: 'meter-b',
        certificateId: revoked,
        deviceStatus: 'ACTIVE',
        recordStatus: 'REVOKED',
        registryStatus: 'ACTIVE',
        kind: 'REVOKED_CERTIFICATE_NOT_REVOKED',
        repair: 'REVOKED',
        repaired: true,
      }),
      expect.objectContaining({
        message: 'certificate drift CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE: reported only: decide in AWS IoT or through the API',
        certificateId: disabled,
        kind: 'CERTIFICATE_DISABLED_OUTSIDE_LIFECYCLE',
        repaired: false,
      }),
    ]);
    expect(logs.find((entry) => entry.message === 'drift check done')).toMatchObject({ level: 'INFO', checked: 3, drift: 2, repaired: 1, stoppedBy: 'PASS_COMPLETED' });
    expect(aws.registry.findCertificate(revoked)?.status).toBe('REVOKED');
    expect(aws.registry.findCertificate(disabled)?.status).toBe('INACTIVE');
    expect(aws.registry.findCertificate(healthy)?.status).toBe('ACTIVE');
  });

  test('no disagreement: CertificateDrift 0 is published all the same (the alarm sees the check ran)', async () => {
    await deviceWith('meter-a', { record: 'ACTIVE', registry: 'ACTIVE' });
    await deviceWith('meter-b', { device: 'SUSPENDED', record: 'INACTIVE', registry: 'INACTIVE' });

    const { result, emf, logs } = await run({}, table, undefined, driftCheck(fleet));

    expect(result?.drift).toMatchObject({ checked: 2, findings: 0, repaired: 0 });
    expect(emf[0]).toMatchObject({ CertificateDrift: 0, CertificateDriftRepaired: 0 });
    expect(logs.some((entry) => String(entry.message).startsWith('certificate drift'))).toBe(false);
  });

  test('a run checks at most maxCertificatesPerRun; the next run goes on from the cursor kept in the table', async () => {
    const ids: string[] = [];
    for (const id of ['meter-a', 'meter-b', 'meter-c']) ids.push(await deviceWith(id, { record: 'REVOKED', registry: 'ACTIVE' }));
    const check = driftCheck(fleet, { maxCertificatesPerRun: 2, devicesPerPage: 2 });

    const first = await run({}, table, undefined, check);
    expect(first.result?.drift).toMatchObject({ checked: 2, repaired: 2, stoppedBy: 'LIMIT_REACHED' });
    expect(await fleet.store.getOperation(DRIFT_CURSOR_OPERATION_ID)).toMatchObject({ caller: 'drift-check', progress: { deviceId: 'meter-c', pageToken: expect.any(String) } });

    const second = await run({}, table, undefined, check);
    expect(second.result?.drift).toMatchObject({ checked: 1, repaired: 1, stoppedBy: 'PASS_COMPLETED' });
    for (const id of ids) expect(aws.registry.findCertificate(id)?.status).toBe('REVOKED');
  });

  test('the cursor is the one item the monitor writes, under the key its IAM grant names (dynamodb:LeadingKeys in infra/expiry-monitor.ts)', async () => {
    await deviceWith('meter-a', { record: 'REVOKED', registry: 'ACTIVE' });

    await run({}, table, undefined, driftCheck(fleet));

    const { Items = [] } = await fleet.documentClient.send(new ScanCommand({ TableName: fleet.tableName, FilterExpression: 'itemType = :operation', ExpressionAttributeValues: { ':operation': 'Operation' } }));
    expect(Items.map((item) => item.PK)).toEqual([DRIFT_CURSOR_PARTITION_KEY]);
  });

  test('fails when the drift check cannot read the table, after publishing the CA and expiry metrics', async () => {
    const missing = new DynamoDbDeviceStore({ tableName: 'no-such-table', documentClient: fleet.documentClient });
    const check = new DriftCheck({ store: missing, registry: iotRegistry(), clock: { now: () => NOW } });

    const { error, emf, logs } = await run({}, table, undefined, check);

    expect(error).toMatchObject({ code: 'UPSTREAM_FAILURE' });
    expect(emf).toHaveLength(1);
    expect(emf[0]).toMatchObject({ CaDaysToExpiry: expect.any(Number), DeviceCertificatesExpiringSoon: 5 });
    expect(emf[0]).not.toHaveProperty('CertificateDrift');
    expect(logs.find((entry) => entry.level === 'ERROR')).toMatchObject({ message: 'could not compare the device records with AWS IoT' });
  });

  test('AWS IoT failing call after call stops the check and fails the run, after publishing what it found', async () => {
    for (const id of ['meter-a', 'meter-b', 'meter-c']) await deviceWith(id, { record: 'ACTIVE', registry: 'ACTIVE' });
    const refusing: Pick<DeviceRegistry, 'describeCertificate' | 'updateCertificateStatus'> = {
      describeCertificate: async () => {
        throw new UpstreamError('UPSTREAM_FAILURE', 'AWS IoT DescribeCertificate failed (AccessDeniedException).', false);
      },
      updateCertificateStatus: async () => undefined,
    };

    const { error, emf, logs } = await run({}, table, undefined, driftCheck(fleet, { maxConsecutiveFailures: 2 }, refusing));

    expect(error).toMatchObject({ code: 'UPSTREAM_FAILURE', message: 'The drift check stopped after 2 failed AWS IoT calls (the first: AWS IoT DescribeCertificate failed (AccessDeniedException).).' });
    expect(emf[0]).toMatchObject({ CertificateDrift: 0, DeviceCertificatesExpiringSoon: 5 });
    expect(logs.find((entry) => entry.level === 'ERROR')).toMatchObject({
      message: 'the drift check could not read or repair some certificates in AWS IoT; the next pass checks them again',
      failures: 2,
      stoppedBy: 'FAILURES',
      failureSamples: [expect.objectContaining({ deviceId: 'meter-a' }), expect.objectContaining({ deviceId: 'meter-b' })],
    });
  });

  test('the AWS wiring paces the registry calls of the check', async () => {
    const waits: number[] = [];
    const calls: string[] = [];
    const registry = pacedRegistry(
      { describeCertificate: async (id) => (calls.push(id), { certificateId: id, certificatePem: '', status: 'ACTIVE' }), updateCertificateStatus: async (id) => void calls.push(`update ${id}`) },
      4,
      async (ms) => void waits.push(ms),
    );

    await Promise.all([registry.describeCertificate('a'), registry.describeCertificate('b'), registry.updateCertificateStatus('c', 'INACTIVE')]);

    expect(calls).toEqual(['a', 'b', 'update c']);
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeGreaterThan(200);
    expect(waits[1]).toBeGreaterThan(450);
  });
});
