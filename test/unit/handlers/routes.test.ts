import { PATH_PARAMETER_PATTERNS } from '../../../functions/handlers/http/requests';
import { API_ROUTES, matchPath, matchTemplate, pathParameterNames, takesIdempotencyKey } from '../../../functions/handlers/http/routes';

describe('route table', () => {
  test('holds the public routes of the device API, each once', () => {
    // An independent oracle on purpose: the public contract written out, so that adding or dropping a route
    // from the table is a deliberate change of this list too.
    expect(API_ROUTES.map((route) => `${route.method} ${route.resource}`)).toEqual([
      'POST /devices',
      'GET /devices',
      'GET /devices/{deviceId}',
      'POST /devices/{deviceId}/certificates',
      'POST /devices/{deviceId}/certificates/{certificateId}/revoke',
      'POST /devices/{deviceId}/revoke',
      'POST /devices/{deviceId}/suspend',
      'POST /devices/{deviceId}/resume',
      'POST /devices/{deviceId}/rotate',
      'POST /rotation-campaigns',
      'GET /rotation-campaigns/{campaignId}',
      'POST /rotation-campaigns/{campaignId}/cancel',
      'POST /certificate-authorities/{caCertificateId}/deactivate',
    ]);
  });

  test('gives every path parameter a pattern, and every operation its own id', () => {
    for (const route of API_ROUTES) for (const name of pathParameterNames(route.resource)) expect(PATH_PARAMETER_PATTERNS).toHaveProperty(name);
    expect(new Set(API_ROUTES.map((route) => route.operationId)).size).toBe(API_ROUTES.length);
  });

  test('only the changes (POST) take an Idempotency-Key', () => {
    expect(API_ROUTES.filter(takesIdempotencyKey).every((route) => route.method === 'POST')).toBe(true);
    expect(API_ROUTES.filter((route) => !takesIdempotencyKey(route)).map((route) => route.method)).toEqual(['GET', 'GET', 'GET']);
  });
});

describe('matchTemplate', () => {
  test.each([
    ['/devices', '/devices', {}],
    ['/devices', '/devices/', {}],
    ['/devices/{deviceId}', '/devices/dev%3A1', { deviceId: 'dev%3A1' }],
    ['/devices/{deviceId}/certificates/{certificateId}/revoke', '/devices/d1/certificates/abc/revoke', { deviceId: 'd1', certificateId: 'abc' }],
  ])('%s matches %s with %j (values still percent-encoded)', (resource, path, parameters) => {
    expect(matchTemplate(resource, path)).toEqual(parameters);
  });

  test.each([
    ['/devices/{deviceId}', '/devices'],
    ['/devices/{deviceId}', '/devices/a/b'],
    ['/devices', '/devicesx'],
    ['/devices/{deviceId}', '/devices//'],
  ])('%s does not match %s', (resource, path) => {
    expect(matchTemplate(resource, path)).toBeUndefined();
  });
});

describe('matchPath', () => {
  test('finds the route of the method', () => {
    expect(matchPath('POST', '/devices/d1/suspend')).toMatchObject({ route: { method: 'POST', resource: '/devices/{deviceId}/suspend' }, pathParameters: { deviceId: 'd1' }, allowed: true });
  });

  test('tells a path served with another method (405) from an unknown path (404)', () => {
    expect(matchPath('DELETE', '/devices/d1')).toMatchObject({ route: { resource: '/devices/{deviceId}' }, allowed: false });
    expect(matchPath('GET', '/nowhere')).toBeUndefined();
  });
});
