import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiHarness, type ApiHarness } from '../../support/api-harness';
import { makeCsr, withBrokenSignature } from '../../support/pki';

describe('device API handler (real core, DynamoDB Local, AWS IoT and Private CA behind aws-sdk-client-mock)', () => {
  let harness: ApiHarness;
  beforeAll(async () => {
    harness = await createApiHarness({ validityDays: 90 });
  });
  afterAll(async () => {
    await harness.close();
  });

  const allItems = async () => (await harness.table.documentClient.send(new ScanCommand({ TableName: harness.table.tableName }))).Items ?? [];

  describe('POST /devices', () => {
    test('pre-registers a device and answers 201 with it', async () => {
      const response = await harness.call('POST', '/devices', { body: { deviceId: 'api-1', attributes: { line: 'a' } } });
      expect(response.status).toBe(201);
      expect(response.body).toMatchObject({ deviceId: 'api-1', status: 'REGISTERED', attributes: { line: 'a' } });
      expect(response.raw.headers?.Location).toBe('/devices/api-1');
    });

    test('fails with 409 DEVICE_ALREADY_EXISTS for an existing device', async () => {
      await harness.call('POST', '/devices', { body: { deviceId: 'api-2' } });
      const response = await harness.call('POST', '/devices', { body: { deviceId: 'api-2' } });
      expect(response).toMatchObject({ status: 409, body: { error: { code: 'DEVICE_ALREADY_EXISTS', message: 'Device api-2 already exists.' } } });
    });

    test.each([
      ['unknown fields', { deviceId: 'api-3', colour: 'red' }, 'unknown field(s) "colour" in the body'],
      ['a malformed device id', { deviceId: 'has spaces' }, 'deviceId: use 1 to 128 characters'],
      ['too many attributes', { deviceId: 'api-4', attributes: { a: '1', b: '2', c: '3', d: '4' } }, 'a device has at most 3 attributes'],
      ['a missing device id', {}, 'deviceId'],
    ])('rejects %s with 400 INVALID_REQUEST and writes nothing', async (_case, body, fragment) => {
      const before = (await allItems()).length;
      const response = await harness.call('POST', '/devices', { body });
      expect(response.status).toBe(400);
      expect(response.body.error.code).toBe('INVALID_REQUEST');
      expect(response.body.error.message).toContain(fragment);
      expect((await allItems()).length).toBe(before);
    });

    test('rejects a body that is not JSON with 400', async () => {
      const response = await harness.call('POST', '/devices', { rawBody: '{"deviceId": ' });
      expect(response.body).toEqual({ error: { code: 'INVALID_REQUEST', message: 'The request body is not valid JSON.' } });
      expect(response.status).toBe(400);
    });

    test('rejects a 1 MB body with 413 PAYLOAD_TOO_LARGE and writes nothing', async () => {
      const before = (await allItems()).length;
      const response = await harness.call('POST', '/devices', { rawBody: JSON.stringify({ deviceId: 'big', attributes: { a: 'x'.repeat(1024 * 1024) } }) });
      expect(response).toMatchObject({ status: 413, body: { error: { code: 'PAYLOAD_TOO_LARGE' } } });
      expect((await allItems()).length).toBe(before);
    });
  });

  describe('POST /devices/{deviceId}/certificates', () => {
    test('signs an openssl-made CSR; openssl verify accepts the certificate against the CA; AWS IoT has it ACTIVE on the thing', async () => {
      await harness.call('POST', '/devices', { body: { deviceId: 'csr-1' } });
      const dir = mkdtempSync(join(tmpdir(), 'csr-'));
      execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'csr.pem'), '-subj', '/CN=csr-1'], { stdio: 'pipe' });
      const csr = execFileSync('cat', [join(dir, 'csr.pem')]).toString();

      const response = await harness.call('POST', '/devices/csr-1/certificates', { body: { csr } });

      expect(response.status).toBe(201);
      expect(Object.keys(response.body).sort()).toEqual(['certificateChainPem', 'certificateId', 'certificatePem', 'notAfter']);
      writeFileSync(join(dir, 'cert.pem'), response.body.certificatePem);
      writeFileSync(join(dir, 'ca.pem'), harness.aws.caCertificatePem);
      expect(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, 'cert.pem')]).toString()).toContain('OK');
      expect(harness.aws.registry.findCertificate(response.body.certificateId)?.status).toBe('ACTIVE');
      expect(harness.aws.registry.findThing('csr-1')?.principals).toEqual([response.body.certificateId]);
      const device = await harness.call('GET', '/devices/csr-1');
      expect(device.body).toMatchObject({ status: 'ACTIVE', certificates: [{ certificateId: response.body.certificateId, status: 'ACTIVE', source: 'CSR' }] });
    });

    test.each([
      ['garbage PEM', 'INVALID_CSR', 422, async (): Promise<string> => 'not a csr'],
      ['a CSR with a bad signature', 'INVALID_CSR', 422, async (): Promise<string> => withBrokenSignature((await makeCsr('csr-bad')).csrPem)],
      ['an RSA-1024 CSR', 'INVALID_CSR', 422, async (): Promise<string> => (await makeCsr('csr-bad', { keySpec: 'RSA_1024' })).csrPem],
      ['a CSR whose CN is another device', 'INVALID_CSR', 422, async (): Promise<string> => (await makeCsr('someone-else')).csrPem],
    ] as const)('rejects %s with %s %d and leaves the store and AWS unchanged', async (_case, code, status, makeBody) => {
      await harness.call('POST', '/devices', { body: { deviceId: 'csr-bad' } });
      const before = await allItems();
      const issueCalls = harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length;

      const response = await harness.call('POST', '/devices/csr-bad/certificates', { body: { csr: await makeBody() } });

      expect(response.status).toBe(status);
      expect(response.body.error.code).toBe(code);
      expect(await allItems()).toEqual(before);
      expect(harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length).toBe(issueCalls);
    });

    test('fails with 404 DEVICE_NOT_FOUND for an unknown device', async () => {
      const response = await harness.call('POST', '/devices/nobody/certificates', { body: { csr: (await makeCsr('nobody')).csrPem } });
      expect(response).toMatchObject({ status: 404, body: { error: { code: 'DEVICE_NOT_FOUND', message: 'Device nobody does not exist.' } } });
    });

    test('answers the first result again for a retry with the same Idempotency-Key, and issues once', async () => {
      await harness.call('POST', '/devices', { body: { deviceId: 'idem-1' } });
      const body = { csr: (await makeCsr('idem-1')).csrPem };
      const headers = { 'Idempotency-Key': 'retry-key-0001' };
      const issueCalls = harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length;

      const first = await harness.call('POST', '/devices/idem-1/certificates', { body, headers });
      const second = await harness.call('POST', '/devices/idem-1/certificates', { body, headers });

      expect(first.status).toBe(201);
      expect(second.body).toEqual(first.body);
      expect(harness.aws.pca.commandCalls(harness.aws.pcaIssueCommand).length).toBe(issueCalls + 1);
      expect((await harness.call('GET', '/devices/idem-1')).body.certificates).toHaveLength(1);
    });

    test('fails with 422 IDEMPOTENCY_KEY_REUSED for the same key with another body', async () => {
      await harness.call('POST', '/devices', { body: { deviceId: 'idem-2' } });
      const headers = { 'Idempotency-Key': 'retry-key-0002' };
      await harness.call('POST', '/devices/idem-2/certificates', { body: { csr: (await makeCsr('idem-2')).csrPem }, headers });
      const response = await harness.call('POST', '/devices/idem-2/certificates', { body: { csr: (await makeCsr('idem-2')).csrPem }, headers });
      expect(response).toMatchObject({ status: 422, body: { error: { code: 'IDEMPOTENCY_KEY_REUSED' } } });
    });

    test('rejects a malformed Idempotency-Key with 400', async () => {
      const response = await harness.call('POST', '/devices', { body: { deviceId: 'idem-3' }, headers: { 'Idempotency-Key': 'no' } });
      expect(response).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
    });
  });

  describe('revocation, suspension, reads', () => {
    async function deviceWithCertificate(deviceId: string): Promise<string> {
      await harness.call('POST', '/devices', { body: { deviceId } });
      const issued = await harness.call('POST', `/devices/${deviceId}/certificates`, { body: { csr: (await makeCsr(deviceId)).csrPem } });
      return issued.body.certificateId as string;
    }

    test('revokes a certificate in AWS IoT and at the CA, detaches it, and shows it REVOKED with reason', async () => {
      const certificateId = await deviceWithCertificate('rev-1');

      const response = await harness.call('POST', `/devices/rev-1/certificates/${certificateId}/revoke`, { body: { reason: 'KEY_COMPROMISE' } });

      expect(response).toMatchObject({ status: 200, body: { certificateId, status: 'REVOKED', revocationReason: 'KEY_COMPROMISE' } });
      expect(harness.aws.registry.findCertificate(certificateId)?.status).toBe('REVOKED');
      expect(harness.aws.registry.findThing('rev-1')?.principals).toEqual([]);
      expect(harness.aws.revokedSerials.at(-1)?.reason).toBe('KEY_COMPROMISE');
      const view = await harness.call('GET', '/devices/rev-1');
      expect(view.body.events[0]).toMatchObject({ type: 'CERTIFICATE_REVOKED', actor: 'arn:aws:iam::123456789012:role/backend', reason: 'KEY_COMPROMISE' });
    });

    test('revoking it again answers 200 with it REVOKED as it was (reason kept), and adds no audit entry', async () => {
      const certificateId = await deviceWithCertificate('rev-2');
      const first = await harness.call('POST', `/devices/rev-2/certificates/${certificateId}/revoke`, { body: { reason: 'SUPERSEDED' } });
      const again = await harness.call('POST', `/devices/rev-2/certificates/${certificateId}/revoke`, { body: { reason: 'KEY_COMPROMISE' } });
      expect(again).toMatchObject({ status: 200, body: { status: 'REVOKED', revocationReason: 'SUPERSEDED', updatedAt: first.body.updatedAt } });
      const view = await harness.call('GET', '/devices/rev-2');
      expect(view.body.events.filter((event: { type: string }) => event.type === 'CERTIFICATE_REVOKED')).toHaveLength(1);
    });

    test('rejects an unknown revocation reason with 400 naming the allowed ones', async () => {
      const certificateId = await deviceWithCertificate('rev-3');
      const response = await harness.call('POST', `/devices/rev-3/certificates/${certificateId}/revoke`, { body: { reason: 'BORED' } });
      expect(response.status).toBe(400);
      expect(response.body.error.message).toContain('reason must be one of UNSPECIFIED, KEY_COMPROMISE');
      expect(harness.aws.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
    });

    test('revokes a whole device', async () => {
      const certificateId = await deviceWithCertificate('rev-4');
      const response = await harness.call('POST', '/devices/rev-4/revoke', { body: { reason: 'CESSATION_OF_OPERATION' } });
      expect(response).toMatchObject({ status: 200, body: { status: 'REVOKED' } });
      expect(harness.aws.registry.findCertificate(certificateId)?.status).toBe('REVOKED');
    });

    test('suspends and resumes a device; resuming an ACTIVE device answers it unchanged; resuming a REVOKED one answers 409', async () => {
      const certificateId = await deviceWithCertificate('sus-1');
      expect((await harness.call('POST', '/devices/sus-1/suspend')).body.status).toBe('SUSPENDED');
      expect(harness.aws.registry.findCertificate(certificateId)?.status).toBe('INACTIVE');
      expect((await harness.call('POST', '/devices/sus-1/resume')).body.status).toBe('ACTIVE');
      expect(harness.aws.registry.findCertificate(certificateId)?.status).toBe('ACTIVE');
      const again = await harness.call('POST', '/devices/sus-1/resume');
      expect(again).toMatchObject({ status: 200, body: { status: 'ACTIVE' } });
      await harness.call('POST', '/devices/sus-1/revoke', { body: { reason: 'KEY_COMPROMISE' } });
      expect(await harness.call('POST', '/devices/sus-1/resume')).toMatchObject({ status: 409, body: { error: { code: 'INVALID_TRANSITION', message: 'A device in state REVOKED cannot move to ACTIVE.' } } });
    });

    test('rejects a body on suspend with 400', async () => {
      await deviceWithCertificate('sus-2');
      expect((await harness.call('POST', '/devices/sus-2/suspend', { body: { now: true } })).body.error.code).toBe('INVALID_REQUEST');
      expect((await harness.call('GET', '/devices/sus-2')).body.status).toBe('ACTIVE');
    });

    test('lists devices by status, page by page', async () => {
      for (const id of ['page-1', 'page-2', 'page-3']) await harness.call('POST', '/devices', { body: { deviceId: id } });
      const seen: string[] = [];
      let nextToken: string | undefined;
      do {
        const response = await harness.call('GET', '/devices', { query: { status: 'REGISTERED', limit: '2', ...(nextToken ? { nextToken } : {}) } });
        expect(response.status).toBe(200);
        seen.push(...response.body.items.map((d: { deviceId: string }) => d.deviceId));
        nextToken = response.body.nextToken;
      } while (nextToken);
      expect(seen).toEqual(expect.arrayContaining(['page-1', 'page-2', 'page-3']));
    });

    test.each([
      [{ status: 'HAPPY' }, 'status must be one of'],
      [{ status: 'ACTIVE', limit: '1000' }, 'limit'],
      [{ status: 'ACTIVE', nextToken: 'forged' }, 'nextToken is not valid'],
    ])('rejects the listing query %j with 400', async (query, fragment) => {
      const response = await harness.call('GET', '/devices', { query: query as Record<string, string> });
      expect(response.status).toBe(400);
      expect(response.body.error.message).toContain(fragment);
    });

    test('routes by the resource template and path parameters API Gateway sends, even for a device named "devices"', async () => {
      await harness.call('POST', '/devices', { body: { deviceId: 'devices' } });
      const event = {
        httpMethod: 'GET',
        path: '/devices/devices',
        resource: '/devices/{deviceId}',
        pathParameters: { deviceId: 'devices' },
        headers: {},
        queryStringParameters: null,
        body: null,
        isBase64Encoded: false,
        requestContext: { requestId: 'r-1', identity: { userArn: 'arn:aws:iam::123456789012:role/backend' } },
      } as unknown as Parameters<typeof harness.api>[0];
      const response = await harness.api(event);
      expect(response.statusCode).toBe(200);
      expect(JSON.parse(response.body)).toMatchObject({ deviceId: 'devices', status: 'REGISTERED' });
    });

    test('answers 404 for an unknown device and an unknown route, 405 for a wrong method', async () => {
      expect((await harness.call('GET', '/devices/nobody')).body.error.code).toBe('DEVICE_NOT_FOUND');
      expect((await harness.call('GET', '/things')).status).toBe(404);
      expect((await harness.call('GET', '/devices/x/suspend')).status).toBe(405);
    });
  });
});
