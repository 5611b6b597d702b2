import { createHash, createHmac } from 'node:crypto';
import { regionOfApiUrl, signRequest } from '../../../local/cli/factory-sigv4';

/**
 * SigV4 signing of the factory command's requests, against a fixed clock and fixed credentials: the AWS
 * Signature Version 4 test suite's own vector, and the API's real request shape checked against an
 * independent implementation of the algorithm written here from its specification.
 */

const sha256 = (data: string) => createHash('sha256').update(data, 'utf8').digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();

/** SigV4 from the specification (canonical request, string to sign, derived key), for non-S3 services. */
function referenceSignature(request: { method: string; path: string; headers: Record<string, string>; signedHeaders: readonly string[]; body: string }, signing: { amzDate: string; region: string; service: string; secretAccessKey: string }): string {
  // Every service but S3 URI-encodes each path segment once more (the path on the wire is already encoded once).
  const canonicalUri = request.path
    .split('/')
    .map((segment) => encodeURIComponent(segment))
    .join('/');
  const canonicalHeaders = request.signedHeaders.map((name) => `${name}:${(request.headers[name] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonicalRequest = [request.method, canonicalUri, '', canonicalHeaders, request.signedHeaders.join(';'), sha256(request.body)].join('\n');
  const day = signing.amzDate.slice(0, 8);
  const scope = `${day}/${signing.region}/${signing.service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', signing.amzDate, scope, sha256(canonicalRequest)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${signing.secretAccessKey}`, day), signing.region), signing.service), 'aws4_request');
  return createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
}

/** The AWS SigV4 test suite's credentials and time (also in @smithy/signature-v4's fixture). */
const SUITE = {
  credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' },
  date: new Date('2015-08-30T12:36:00Z'),
  region: 'us-east-1',
  service: 'service',
};

describe('factory SigV4 signing', () => {
  test('reproduces the AWS SigV4 test suite vector "post-x-www-form-urlencoded" (body, content-type, host)', async () => {
    const headers = await signRequest(
      { method: 'POST', url: new URL('https://example.amazonaws.com/'), headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'Param1=value1' },
      { credentials: SUITE.credentials, region: SUITE.region, service: SUITE.service, now: () => SUITE.date, contentSha256Header: false },
    );

    expect(headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a',
    );
    // The reference implementation agrees with the suite too, so it can judge the cases the suite does not have.
    expect(
      referenceSignature(
        { method: 'POST', path: '/', headers, signedHeaders: ['content-type', 'host', 'x-amz-date'], body: 'Param1=value1' },
        { amzDate: '20150830T123600Z', region: SUITE.region, service: SUITE.service, secretAccessKey: SUITE.credentials.secretAccessKey },
      ),
    ).toBe('ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a');
  });

  describe('a CSR signing request to the deployed API', () => {
    const credentials = { accessKeyId: 'AKIAFACTORYEXAMPLE', secretAccessKey: 'factory/secret/EXAMPLEKEY', sessionToken: 'session-token-EXAMPLE' };
    const url = new URL('https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/devices/line%3A7/certificates');
    const body = JSON.stringify({ csr: '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n' });
    const sign = (payload = body) =>
      signRequest(
        { method: 'POST', url, headers: { 'content-type': 'application/json', 'idempotency-key': 'iotcert-sign-0123456789abcdef' }, body: payload },
        { credentials, region: 'eu-west-1', now: () => new Date('2026-11-30T12:00:00.000Z') },
      );

    test('has the Authorization shape of SigV4 for execute-api, the date of the fixed clock and the session token', async () => {
      const headers = await sign();

      expect(headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAFACTORYEXAMPLE\/20261130\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/);
      expect(headers['x-amz-date']).toBe('20261130T120000Z');
      expect(headers['x-amz-security-token']).toBe('session-token-EXAMPLE');
      expect(headers.host).toBe('a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com');
    });

    test('signs host, x-amz-date, the body hash, the content type, the Idempotency-Key and the session token', async () => {
      const headers = await sign();
      const signedHeaders = /SignedHeaders=([^,]+)/.exec(headers.authorization ?? '')?.[1]?.split(';');

      expect(signedHeaders).toEqual(['content-type', 'host', 'idempotency-key', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-security-token']);
      expect(headers['x-amz-content-sha256']).toBe(sha256(body));
    });

    test('matches the reference signature (path segments encoded twice), and any change to the body changes it', async () => {
      const headers = await sign();
      const signature = /Signature=([0-9a-f]{64})$/.exec(headers.authorization ?? '')?.[1];
      const signedHeaders = ['content-type', 'host', 'idempotency-key', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-security-token'];

      expect(signature).toBe(
        referenceSignature(
          { method: 'POST', path: url.pathname, headers, signedHeaders, body },
          { amzDate: '20261130T120000Z', region: 'eu-west-1', service: 'execute-api', secretAccessKey: credentials.secretAccessKey },
        ),
      );
      const other = await sign(body.replace('MIIB', 'MIIC'));
      expect(other.authorization).not.toBe(headers.authorization);
      expect(other['x-amz-content-sha256']).toBe(sha256(body.replace('MIIB', 'MIIC')));
    });

    test('a port other than the scheme default is part of the signed host', async () => {
      const headers = await signRequest({ method: 'POST', url: new URL('http://127.0.0.1:8443/v1/devices'), body: '{}' }, { credentials, region: 'eu-west-1', now: () => new Date('2026-11-30T12:00:00Z') });

      expect(headers.host).toBe('127.0.0.1:8443');
    });
  });

  test.each([
    ['https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/', 'eu-west-1'],
    ['https://abc.execute-api.us-gov-west-1.amazonaws.com/v1', 'us-gov-west-1'],
    ['https://abc.execute-api.cn-north-1.amazonaws.com.cn/v1', 'cn-north-1'],
    ['https://api.example.com/v1', undefined],
    ['http://127.0.0.1:3000', undefined],
  ])('the Region of %s is %s', (url, region) => {
    expect(regionOfApiUrl(new URL(url))).toBe(region);
  });
});
