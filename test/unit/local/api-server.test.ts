import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { isAuthorized, LOCAL_API_CALLER, matchResource, startApiServer, toApiGatewayEvent, type ApiServer } from '../../../local/api-server';

describe('toApiGatewayEvent', () => {
  test('fills the fields API Gateway fills: resource, path parameters (decoded), query, headers, body and the caller', () => {
    const event = toApiGatewayEvent(
      { method: 'POST', url: '/devices/dev%3A1/certificates/abc/revoke?x=1&x=2&y=3', headers: { 'content-type': 'application/json', 'user-agent': 'curl' }, body: '{"reason":"UNSPECIFIED"}' },
    );

    expect(event).toMatchObject({
      httpMethod: 'POST',
      path: '/devices/dev%3A1/certificates/abc/revoke',
      resource: '/devices/{deviceId}/certificates/{certificateId}/revoke',
      pathParameters: { deviceId: 'dev:1', certificateId: 'abc' },
      queryStringParameters: { x: '2', y: '3' },
      multiValueQueryStringParameters: { x: ['1', '2'], y: ['3'] },
      headers: { 'content-type': 'application/json', 'user-agent': 'curl' },
      body: '{"reason":"UNSPECIFIED"}',
      isBase64Encoded: false,
      requestContext: { identity: { userArn: LOCAL_API_CALLER }, httpMethod: 'POST', stage: 'local', requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) },
    });
  });

  test('leaves query and body null when there are none', () => {
    const event = toApiGatewayEvent({ method: 'GET', url: '/devices/d1', headers: {}, body: '' });

    expect(event).toMatchObject({ resource: '/devices/{deviceId}', pathParameters: { deviceId: 'd1' }, queryStringParameters: null, body: null });
  });
});

describe('matchResource', () => {
  test.each([
    ['GET', '/devices', '/devices', null],
    ['POST', '/devices/d1/suspend/', '/devices/{deviceId}/suspend', { deviceId: 'd1' }],
    ['DELETE', '/devices/d1', '/devices/{deviceId}', { deviceId: 'd1' }],
    ['GET', '/devices/dev%3A1', '/devices/{deviceId}', { deviceId: 'dev%3A1' }],
    ['GET', '/nowhere', '/nowhere', null],
  ])('%s %s → %s', (method, path, resource, pathParameters) => {
    expect(matchResource(method, path)).toEqual({ resource, pathParameters });
  });
});

describe('isAuthorized', () => {
  test.each([
    ['Bearer secret', true],
    ['bearer secret', true],
    ['Bearer secret2', false],
    ['Bearer', false],
    ['Basic secret', false],
    [undefined, false],
  ])('%s → %s', (header, expected) => {
    expect(isAuthorized(header, 'secret')).toBe(expected);
  });
});

describe('startApiServer', () => {
  let server: ApiServer;
  const seen: { event: APIGatewayProxyEvent; context: Context }[] = [];

  beforeAll(async () => {
    server = await startApiServer({
      host: '127.0.0.1',
      port: 0,
      token: 'the-token',
      log: () => undefined,
      handler: async (event, context) => {
        seen.push({ event, context });
        return { statusCode: 201, headers: { 'Content-Type': 'application/json', Location: '/devices/d1' }, body: JSON.stringify({ ok: true }) };
      },
    });
  });

  afterAll(async () => server.stop());

  test('rejects a request without the bearer token with 401 and a JSON error, without calling the handler', async () => {
    const before = seen.length;

    const response = await fetch(`${server.url}/devices`, { method: 'POST', body: '{}' });

    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toContain('Bearer');
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toEqual({ error: { code: 'UNAUTHORIZED', message: 'Send the local API token as "Authorization: Bearer <token>" (the token is in .local/api-token).' } });
    expect(seen.length).toBe(before);
  });

  test('passes an authorized request to the handler as an API Gateway event with a Lambda context, and its result back', async () => {
    const response = await fetch(`${server.url}/devices`, { method: 'POST', headers: { Authorization: 'Bearer the-token', 'Content-Type': 'application/json' }, body: '{"deviceId":"d1"}' });

    expect(response.status).toBe(201);
    expect(response.headers.get('location')).toBe('/devices/d1');
    expect(await response.json()).toEqual({ ok: true });
    const last = seen.at(-1)!;
    expect(last.event).toMatchObject({ httpMethod: 'POST', resource: '/devices', body: '{"deviceId":"d1"}' });
    expect(last.context.getRemainingTimeInMillis()).toBeGreaterThan(20_000);
    expect(last.context.awsRequestId).toBe(last.event.requestContext.requestId);
  });

  test('rejects a body over 1 MiB with 413', async () => {
    const response = await fetch(`${server.url}/devices`, { method: 'POST', headers: { Authorization: 'Bearer the-token' }, body: 'x'.repeat(1024 * 1024 + 1) });

    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'The request body is larger than 1048576 bytes.' } });
  });
});

describe('startApiServer with a handler that throws', () => {
  let server: ApiServer;
  beforeAll(async () => {
    server = await startApiServer({
      host: '127.0.0.1',
      port: 0,
      token: 'the-token',
      log: () => undefined,
      handler: async () => {
        throw new Error('boom: table devices-123 missing');
      },
    });
  });
  afterAll(async () => server.stop());

  test('answers 500 INTERNAL_ERROR without the error', async () => {
    const response = await fetch(`${server.url}/devices/d1`, { headers: { Authorization: 'Bearer the-token' } });

    expect(response.status).toBe(500);
    // The exact text, written out: it is what a caller of the local mode reads.
    expect(await response.json()).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'The request failed on our side.' } });
  });
});
