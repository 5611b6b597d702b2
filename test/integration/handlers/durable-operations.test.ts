import * as x509 from '@peculiar/x509';
import type { Config } from '@jest/types';
import { UpstreamError } from '../../../functions/core/errors';
import { DEFAULT_LIFECYCLE_SETTINGS } from '../../../functions/core/change-recorder';
import { createApiHarness, type ApiHarness } from '../../support/api-harness';
import { caFromMaterial, deviceCertificateExtensions, makeCsr, withTrailingBytes } from '../../support/pki';


/*
 * Regressions of issue 8, each through the handler entry points (API and JITR) on DynamoDB Local, with AWS IoT and
 * Private CA behind aws-sdk-client-mock. Each case failed on the code before the operation records.
 */

/** Every timer but Date stays real when a test moves the clock (the SDK and DynamoDB Local keep their own time). */
const REAL_TIMERS: Config.FakeableAPI[] = ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'];
const RETRYABLE = new Set(['CONFLICT', 'REQUEST_IN_PROGRESS', 'UPSTREAM_FAILURE', 'UPSTREAM_THROTTLED']);
const BACKEND = 'arn:aws:iam::123456789012:role/backend';

type Call = { status: number; body: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('durable operations through the API and JITR handlers', () => {
  let harness: ApiHarness;
  let keys = 0;
  beforeAll(async () => {
    harness = await createApiHarness({ enrollmentPolicy: 'open' });
  });
  afterAll(async () => {
    await harness.close();
  });
  afterEach(() => jest.restoreAllMocks());

  const newKey = () => `key-${(keys += 1).toString().padStart(8, '0')}`;

  /** A client that follows the API's advice: a retryable answer is retried with the same key, until a final one. */
  async function untilFinal(method: 'POST', path: string, body: unknown, key = newKey(), caller = BACKEND): Promise<Call & { tries: number }> {
    for (let tries = 1; ; tries += 1) {
      const response = await harness.call(method, path, { body, headers: { 'Idempotency-Key': key }, caller });
      if (response.status < 400 || !RETRYABLE.has(response.body.error?.code) || tries >= 8) return { ...response, tries };
    }
  }

  async function deviceWithCertificates(deviceId: string, count: number): Promise<string[]> {
    expect((await harness.call('POST', '/devices', { body: { deviceId } })).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const response = await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr: (await makeCsr(deviceId)).csrPem } });
      expect(response.status).toBe(201);
      ids.push(response.body.certificateId);
    }
    return ids;
  }

  const registryStatus = (certificateId: string) => harness.aws.registry.findCertificate(certificateId)?.status;
  const recordStatus = async (certificateId: string) => (await harness.table.store.getCertificate(certificateId))?.status;
  const deviceStatus = async (deviceId: string) => (await harness.table.store.getDevice(deviceId))?.status;

  describe('1. concurrent suspend / resume and certificate revocation on one device', () => {
    test.each([0, 1, 2])('10 suspends and 10 revocations of one certificate at once (burst %i): SUSPENDED, the others INACTIVE in AWS IoT and on record, no refusal', async (burst) => {
      const deviceId = `race-suspend-${burst}`;
      const [revoked, ...others] = await deviceWithCertificates(deviceId, 3);

      const answers = await Promise.all([
        ...Array.from({ length: 10 }, () => untilFinal('POST', `/devices/${deviceId}/suspend`, {})),
        ...Array.from({ length: 10 }, () => untilFinal('POST', `/devices/${deviceId}/certificates/${revoked}/revoke`, { reason: 'KEY_COMPROMISE' })),
      ]);

      expect(answers.filter((answer) => answer.status !== 200).map((answer) => answer.body)).toEqual([]);
      expect(await deviceStatus(deviceId)).toBe('SUSPENDED');
      expect([registryStatus(revoked as string), await recordStatus(revoked as string)]).toEqual(['REVOKED', 'REVOKED']);
      for (const id of others) expect([registryStatus(id), await recordStatus(id)]).toEqual(['INACTIVE', 'INACTIVE']);
    });

    test('10 resumes and 10 revocations of one certificate at once: ACTIVE, the others ACTIVE in AWS IoT and on record', async () => {
      const deviceId = 'race-resume-1';
      const [revoked, ...others] = await deviceWithCertificates(deviceId, 3);
      expect((await untilFinal('POST', `/devices/${deviceId}/suspend`, {})).status).toBe(200);

      const answers = await Promise.all([
        ...Array.from({ length: 10 }, () => untilFinal('POST', `/devices/${deviceId}/resume`, {})),
        ...Array.from({ length: 10 }, () => untilFinal('POST', `/devices/${deviceId}/certificates/${revoked}/revoke`, { reason: 'KEY_COMPROMISE' })),
      ]);

      expect(answers.filter((answer) => answer.status !== 200).map((answer) => answer.body)).toEqual([]);
      expect(await deviceStatus(deviceId)).toBe('ACTIVE');
      expect(registryStatus(revoked as string)).toBe('REVOKED');
      for (const id of others) expect([registryStatus(id), await recordStatus(id)]).toEqual(['ACTIVE', 'ACTIVE']);
    });
  });

  test('2. revoking a device while its certificates are revoked one by one ends REVOKED, and a new factory certificate for it is refused', async () => {
    const deviceId = 'race-revoke-device';
    const certificates = await deviceWithCertificates(deviceId, 3);

    const answers = await Promise.all([
      ...Array.from({ length: 5 }, () => untilFinal('POST', `/devices/${deviceId}/revoke`, { reason: 'CESSATION_OF_OPERATION' })),
      ...certificates.flatMap((id) => Array.from({ length: 3 }, () => untilFinal('POST', `/devices/${deviceId}/certificates/${id}/revoke`, { reason: 'KEY_COMPROMISE' }))),
    ]);

    expect(answers.filter((answer) => answer.status !== 200).map((answer) => answer.body)).toEqual([]);
    expect(await deviceStatus(deviceId)).toBe('REVOKED');
    for (const id of certificates) expect([registryStatus(id), await recordStatus(id)]).toEqual(['REVOKED', 'REVOKED']);
    const factoryCertificate = await harness.aws.ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 30);
    const registered = await harness.aws.registry.registerPendingActivation(factoryCertificate, harness.aws.caCertificateId);
    const outcome = await harness.jitr(registrationEvent(registered.certificateId));
    expect(outcome).toMatchObject({ outcome: 'REJECTED', code: 'ENROLLMENT_REFUSED' });
    expect(registryStatus(registered.certificateId)).toBe('REVOKED');
  });

  describe('3. a retried CSR signing never answers a certificate AWS IoT or the CA would refuse', () => {
    test.each(['ambiguous', 'failed'] as const)('the final write %s: the retry answers 201 with the one certificate issued, ACTIVE in AWS IoT and not revoked at the CA', async (mode) => {
      const deviceId = `issue-${mode}`;
      await deviceWithCertificates(deviceId, 0);
      const store = harness.table.store;
      const commit = store.commit.bind(store);
      let faults = 0;
      jest.spyOn(store, 'commit').mockImplementation(async (change) => {
        if (faults === 0 && change.operation?.next.status === 'DONE' && change.operation.next.operation === 'ISSUE_CERTIFICATE') {
          faults += 1;
          if (mode === 'ambiguous') await commit(change);
          throw new UpstreamError('UPSTREAM_FAILURE', 'DynamoDB TransactWriteItems failed: socket hang up', true);
        }
        return commit(change);
      });
      const issues = harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length;
      const key = newKey();
      const csr = (await makeCsr(deviceId)).csrPem;

      const first = await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr }, headers: { 'Idempotency-Key': key } });
      const retried = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr }, key);

      expect(first.status).toBe(502);
      expect(retried.status).toBe(201);
      expect(harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length - issues).toBe(1);
      expect(registryStatus(retried.body.certificateId)).toBe('ACTIVE');
      const serial = new x509.X509Certificate(retried.body.certificatePem).serialNumber.toLowerCase();
      expect(harness.aws.revokedSerials.map((entry) => entry.serial.toLowerCase().replace(/:/g, ''))).not.toContain(serial);
      expect(await recordStatus(retried.body.certificateId)).toBe('ACTIVE');
    });

    test('a certificate revoked in AWS IoT between the attempts is withdrawn: 410 CERTIFICATE_WITHDRAWN, never 201', async () => {
      const deviceId = 'issue-revoked-between';
      await deviceWithCertificates(deviceId, 0);
      const registry = harness.aws.registry;
      const attach = jest.spyOn(registry, 'attachCertificate').mockRejectedValueOnce(new Error('AttachThingPrincipal: connection reset'));
      const key = newKey();
      const csr = (await makeCsr(deviceId)).csrPem;

      expect((await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr }, headers: { 'Idempotency-Key': key } })).status).toBeGreaterThanOrEqual(500);
      const registeredId = attach.mock.calls[0]?.[1] as string;
      attach.mockRestore();
      expect(registryStatus(registeredId)).toBe('ACTIVE');
      await registry.updateCertificateStatus(registeredId, 'REVOKED');

      const retried = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr }, key);
      const again = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr }, key);

      expect([retried.status, retried.body.error?.code]).toEqual([410, 'CERTIFICATE_WITHDRAWN']);
      expect([again.status, again.body.error?.code]).toEqual([410, 'CERTIFICATE_WITHDRAWN']);
      expect(await recordStatus(registeredId)).toBe('REVOKED');
    });
  });

  describe('4. one idempotency model, keyed on the caller', () => {
    test("another caller's request with the same key is its own: it gets its own certificate, never the first caller's", async () => {
      const deviceId = 'two-callers';
      await deviceWithCertificates(deviceId, 0);
      const key = newKey();
      const mine = await makeCsr(deviceId);
      const theirs = await makeCsr(deviceId);

      const first = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr: mine.csrPem }, key, BACKEND);
      const second = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr: theirs.csrPem }, key, 'arn:aws:iam::123456789012:role/factory-line-2');

      expect([first.status, second.status]).toEqual([201, 201]);
      expect(second.body.certificateId).not.toBe(first.body.certificateId);
      const spkiOf = (key: x509.PublicKey) => Buffer.from(new Uint8Array(key.rawData)).toString('hex');
      expect(spkiOf(new x509.X509Certificate(second.body.certificatePem).publicKey)).toBe(spkiOf(new x509.Pkcs10CertificateRequest(theirs.csrPem).publicKey));
    });

    test('the same caller and key with another CSR, or on another operation, is 422 IDEMPOTENCY_KEY_REUSED and changes nothing', async () => {
      const deviceId = 'key-reuse';
      await deviceWithCertificates(deviceId, 0);
      const key = newKey();
      expect((await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr: (await makeCsr(deviceId)).csrPem }, key)).status).toBe(201);

      const otherCsr = await untilFinal('POST', `/devices/${deviceId}/certificates`, { csr: (await makeCsr(deviceId)).csrPem }, key);
      const otherOperation = await untilFinal('POST', `/devices/${deviceId}/suspend`, {}, key);

      expect([otherCsr.status, otherCsr.body.error.code]).toEqual([422, 'IDEMPOTENCY_KEY_REUSED']);
      expect([otherOperation.status, otherOperation.body.error.code]).toEqual([422, 'IDEMPOTENCY_KEY_REUSED']);
      expect(await deviceStatus(deviceId)).toBe('ACTIVE');
    });

    test('a suspend key used again after the device was resumed answers the recorded suspension and suspends nothing', async () => {
      const deviceId = 'key-replay';
      const [certificate] = await deviceWithCertificates(deviceId, 1);
      const key = newKey();
      expect((await untilFinal('POST', `/devices/${deviceId}/suspend`, {}, key)).body.status).toBe('SUSPENDED');
      expect((await untilFinal('POST', `/devices/${deviceId}/resume`, {})).body.status).toBe('ACTIVE');

      const replay = await untilFinal('POST', `/devices/${deviceId}/suspend`, {}, key);

      expect(replay).toMatchObject({ status: 200, body: { status: 'SUSPENDED' } });
      expect(await deviceStatus(deviceId)).toBe('ACTIVE');
      expect(registryStatus(certificate as string)).toBe('ACTIVE');
    });
  });

  test('5. a suspension written but answered with an error, whose re-read fails too, is never switched back in AWS IoT; the retry finishes it', async () => {
    const deviceId = 'unknown-outcome';
    const [certificate] = await deviceWithCertificates(deviceId, 1);
    const store = harness.table.store;
    const commit = store.commit.bind(store);
    jest.spyOn(store, 'commit').mockImplementation(async (change) => {
      await commit(change);
      if (change.device?.next.status === 'SUSPENDED') throw new UpstreamError('UPSTREAM_FAILURE', 'DynamoDB TransactWriteItems: timeout', true);
    });
    jest.spyOn(store, 'getOperation').mockRejectedValueOnce(new UpstreamError('UPSTREAM_FAILURE', 'DynamoDB GetItem: timeout', true));
    const key = newKey();

    const first = await harness.call('POST', `/devices/${deviceId}/suspend`, { body: {}, headers: { 'Idempotency-Key': key } });
    jest.restoreAllMocks();
    const states = [await deviceStatus(deviceId), registryStatus(certificate as string)];
    // The failed re-read was the one that ends the lease at once: the retry waits for the lease to run out (the clock moved past it, Date only).
    const whileLeased = await harness.call('POST', `/devices/${deviceId}/suspend`, { body: {}, headers: { 'Idempotency-Key': key } });
    jest.useFakeTimers({ doNotFake: REAL_TIMERS, now: Date.now() + (DEFAULT_LIFECYCLE_SETTINGS.operationLeaseSeconds + 1) * 1000 });
    const retried = await untilFinal('POST', `/devices/${deviceId}/suspend`, {}, key).finally(() => jest.useRealTimers());

    expect(first.status).toBeGreaterThanOrEqual(500);
    expect(states).not.toEqual(['SUSPENDED', 'ACTIVE'].reverse()); // never "store ACTIVE, IoT INACTIVE" (a switch-back after a written suspension)
    expect(whileLeased).toMatchObject({ status: 409, body: { error: { code: 'REQUEST_IN_PROGRESS' } } });
    expect(retried).toMatchObject({ status: 200, body: { status: 'SUSPENDED' } });
    expect([await deviceStatus(deviceId), registryStatus(certificate as string), await recordStatus(certificate as string)]).toEqual(['SUSPENDED', 'INACTIVE', 'INACTIVE']);
  });

  test('6. a device with 200 live certificates is suspended, resumed and revoked, every certificate following in AWS IoT and on record', async () => {
    const deviceId = 'many-certificates';
    expect((await harness.call('POST', '/devices', { body: { deviceId } })).status).toBe(201);
    const csr = (await makeCsr(deviceId)).csrPem;
    const certificates: string[] = [];
    for (let batch = 0; batch < 25; batch += 1) {
      const answers = await Promise.all(Array.from({ length: 8 }, () => untilFinal('POST', `/devices/${deviceId}/certificates`, { csr })));
      certificates.push(...answers.map((answer) => answer.body.certificateId as string));
    }
    expect(new Set(certificates).size).toBe(200);

    expect((await untilFinal('POST', `/devices/${deviceId}/suspend`, {})).body.status).toBe('SUSPENDED');
    expect(new Set(certificates.map(registryStatus))).toEqual(new Set(['INACTIVE']));
    expect((await untilFinal('POST', `/devices/${deviceId}/resume`, {})).body.status).toBe('ACTIVE');
    expect(new Set(certificates.map(registryStatus))).toEqual(new Set(['ACTIVE']));
    expect((await untilFinal('POST', `/devices/${deviceId}/revoke`, { reason: 'CESSATION_OF_OPERATION' })).body.status).toBe('REVOKED');
    expect(new Set(certificates.map(registryStatus))).toEqual(new Set(['REVOKED']));
    const view = await harness.call('GET', `/devices/${deviceId}`);
    expect(new Set(view.body.certificates.map((certificate: { status: string }) => certificate.status))).toEqual(new Set(['REVOKED']));
  }, 180_000);

  describe('8. one set of certificate rules for JITR and CSR signing', () => {
    test.each([
      ['two common names', { subject: 'CN=dev-a, CN=dev-b' }],
      ['basicConstraints CA:TRUE', { subject: 'CN=dev-ca', extensions: [new x509.BasicConstraintsExtension(true, undefined, true), ...deviceCertificateExtensions().slice(1)] }],
    ])('a certificate our CA signed with %s is refused at first connect: REVOKED in AWS IoT, no device', async (_case, options) => {
      const ourCa = await caFromMaterial(harness.aws.caMaterial);
      const pem = await ourCa.issue('ignored', options);
      const registered = await harness.aws.registry.registerPendingActivation(pem, harness.aws.caCertificateId);

      const outcome = await harness.jitr(registrationEvent(registered.certificateId));

      expect(outcome).toMatchObject({ outcome: 'REJECTED', code: 'INVALID_CERTIFICATE' });
      expect(registryStatus(registered.certificateId)).toBe('REVOKED');
      expect((await harness.call('GET', '/devices/dev-a')).status).toBe(404);
      expect((await harness.call('GET', '/devices/dev-ca')).status).toBe(404);
    });

    test('a CSR with two common names, or trailing bytes after its DER, is refused with 422 INVALID_CSR and nothing issued', async () => {
      await deviceWithCertificates('dev-a', 0);
      const issues = harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length;
      const twoNames = await harness.call('POST', '/devices/dev-a/certificates', { body: { csr: (await makeCsr('dev-a', { subject: 'CN=dev-a, CN=dev-b' })).csrPem } });
      const trailing = await harness.call('POST', '/devices/dev-a/certificates', { body: { csr: withTrailingBytes((await makeCsr('dev-a')).csrPem) } });
      expect([twoNames.status, twoNames.body.error.code, trailing.status, trailing.body.error.code]).toEqual([422, 'INVALID_CSR', 422, 'INVALID_CSR']);
      expect(harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length).toBe(issues);
    });
  });

  describe('9. smaller input defects', () => {
    test('an attribute named __proto__ is refused with 400 naming it, and no device is created', async () => {
      const response = await harness.call('POST', '/devices', { rawBody: '{"deviceId":"proto-1","attributes":{"__proto__":"x"}}' });
      expect(response.status).toBe(400);
      expect(response.body.error).toMatchObject({ code: 'INVALID_REQUEST', message: expect.stringContaining('__proto__') });
      expect((await harness.call('GET', '/devices/proto-1')).status).toBe(404);
    });

    test('a forged page token naming a key of another item is 400 INVALID_REQUEST, not 502', async () => {
      const forged = Buffer.from(JSON.stringify({ scope: 'status:ACTIVE', key: { PK: 'DEVICE#a', SK: 'DEVICE', GSI1PK: 'STATUS#REVOKED', GSI1SK: 'a' } })).toString('base64url');
      const response = await harness.call('GET', '/devices', { query: { status: 'ACTIVE', nextToken: forged } });
      expect([response.status, response.body.error.code]).toEqual([400, 'INVALID_REQUEST']);
    });
  });

  test('every certificate this file left ACTIVE in AWS IoT is ACTIVE on record (no usable certificate unrecorded)', async () => {
    const active = harness.aws.registry.snapshot().certificates.filter((certificate) => certificate.status === 'ACTIVE');
    const unrecorded: string[] = [];
    for (const certificate of active) {
      const status = await recordStatus(certificate.certificateId);
      if (status !== 'ACTIVE') unrecorded.push(`${new x509.X509Certificate(certificate.certificatePem).subject} ${certificate.certificateId} recorded ${status ?? 'nowhere'}`);
    }
    expect(active.length).toBeGreaterThan(0);
    expect(unrecorded).toEqual([]);
  });

  function registrationEvent(certificateId: string) {
    return { certificateId, caCertificateId: harness.aws.caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: String(Date.now()) };
  }
});

describe('7. early devices under the preregistered enrollment policy', () => {
  let harness: ApiHarness;
  beforeAll(async () => {
    harness = await createApiHarness({ enrollmentPolicy: 'preregistered' });
  });
  afterAll(async () => {
    await harness.close();
  });

  test('a device that connects before it is pre-registered is not revoked; pre-registering it activates its certificate, so its next connect succeeds', async () => {
    const pem = await harness.aws.ca.mintDeviceCertificate('early-1', (await makeCsr('early-1')).csrPem, 30);
    const registered = await harness.aws.registry.registerPendingActivation(pem, harness.aws.caCertificateId);
    const event = { certificateId: registered.certificateId, caCertificateId: harness.aws.caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '123456789012', certificateRegistrationTimestamp: String(Date.now()) };

    expect(await harness.jitr(event)).toMatchObject({ outcome: 'AWAITING_PRE_REGISTRATION', deviceId: 'early-1' });
    expect(harness.aws.registry.findCertificate(registered.certificateId)?.status).toBe('PENDING_ACTIVATION');

    const created = await harness.call('POST', '/devices', { body: { deviceId: 'early-1' }, headers: { 'Idempotency-Key': 'early-0000001' } });

    expect(created.status).toBe(201);
    expect(harness.aws.registry.findCertificate(registered.certificateId)?.status).toBe('ACTIVE');
    expect(harness.aws.registry.findThing('early-1')?.principals).toEqual([registered.certificateId]);
    const view = await harness.call('GET', '/devices/early-1');
    expect(view.body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: registered.certificateId, status: 'ACTIVE', source: 'JITR' }] });
    expect(await harness.jitr(event)).toMatchObject({ outcome: 'ALREADY_PROCESSED', status: 'ACTIVE' });
  });
});
