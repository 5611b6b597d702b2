import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { GetCertificateAuthorityCertificateCommand } from '@aws-sdk/client-acm-pca';
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { PrivateCaCertificateAuthority } from '../../../functions/adapters/aws/private-ca-certificate-authority';
import { DAY_MS, ExpiryMonitor, daysLeft, type ExpiryMonitorSettings } from '../../../functions/core/expiry';
import type { CertificateRecord, CertificateStatus } from '../../../functions/core/model';
import { EXPIRY_METRICS } from '../../../functions/handlers/config';
import { createExpiryMonitorHandler } from '../../../functions/handlers/expiry-monitor';
import { createTestTable, type TestTable } from '../../support/dynamodb';
import { CA_ARN, createFakeAws, type FakeAws } from '../../support/fake-aws';

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
async function run(settings: Partial<ExpiryMonitorSettings> = {}, store: TestTable = table, notices?: Parameters<typeof createExpiryMonitorHandler>[0]['notices']) {
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
