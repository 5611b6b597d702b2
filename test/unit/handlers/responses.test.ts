import { ConflictError, LifecycleError, UpstreamError, ValidationError } from '../../../functions/core/errors';
import { API_ERROR_CODES, API_ERRORS, errorBody, GATEWAY_ERRORS, gatewayErrorTemplate } from '../../../functions/handlers/http/errors';
import { apiErrorResponse, errorResponse } from '../../../functions/handlers/http/responses';

describe('errorResponse', () => {
  test('answers a client error with its status, code, message and details', () => {
    const response = errorResponse(new ValidationError('INVALID_CSR', 'The CSR signature does not verify.', { details: { field: 'csr' } }));
    expect(response.statusCode).toBe(422);
    expect(JSON.parse(response.body)).toEqual({ error: { code: 'INVALID_CSR', message: 'The CSR signature does not verify.', details: { field: 'csr' } } });
  });

  test('answers a throttled dependency with 503, Retry-After and a message that names no AWS internals', () => {
    const response = errorResponse(new UpstreamError('UPSTREAM_THROTTLED', 'AWS IoT DescribeCertificate is throttled (ThrottlingException).', true, { details: { certificateArn: 'arn:aws:iot:x' } }));
    expect(response.statusCode).toBe(503);
    expect(response.headers?.['Retry-After']).toBe('2');
    expect(response.body).not.toMatch(/DescribeCertificate|Throttling|arn:/);
  });

  test('answers a failed dependency with 502 without its details', () => {
    const response = errorResponse(new UpstreamError('UPSTREAM_FAILURE', 'AWS Private CA GetCertificate failed (AccessDeniedException).', false));
    expect(response.statusCode).toBe(502);
    expect(response.body).not.toContain('AccessDenied');
  });

  test.each([new Error('boom: table devices-123 missing'), new LifecycleError('CONFIGURATION_ERROR', 'CA_ARN is not set'), 'a string'])('answers anything unexpected (%s) with a generic 500', (error) => {
    const response = errorResponse(error);
    expect(response.statusCode).toBe(500);
    expect(JSON.parse(response.body).error.code).toBe('INTERNAL_ERROR');
    expect(response.body).not.toMatch(/boom|CA_ARN|a string/);
  });

  test('answers a lost race with 409 CONFLICT', () => {
    expect(errorResponse(new ConflictError('Another change won.')).statusCode).toBe(409);
  });
});

describe('error catalogue', () => {
  test('gives every code an HTTP status, and answers codes the core throws with that status', () => {
    for (const code of API_ERROR_CODES) expect(API_ERRORS[code].status).toBeGreaterThanOrEqual(400);
    expect(errorResponse(new ValidationError('PAYLOAD_TOO_LARGE', 'The request body is larger than 65536 bytes.')).statusCode).toBe(API_ERRORS.PAYLOAD_TOO_LARGE.status);
  });

  test('builds an error body without details when there are none', () => {
    expect(errorBody('ROUTE_NOT_FOUND', 'No route GET /x.')).toEqual({ error: { code: 'ROUTE_NOT_FOUND', message: 'No route GET /x.' } });
  });

  test('builds answers with the status of the code and the JSON headers', () => {
    const response = apiErrorResponse('METHOD_NOT_ALLOWED', 'DELETE is not allowed on /devices.', { headers: { Allow: 'GET, POST' } });
    expect(response).toEqual({
      statusCode: 405,
      headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', Allow: 'GET, POST' },
      body: JSON.stringify({ error: { code: 'METHOD_NOT_ALLOWED', message: 'DELETE is not allowed on /devices.' } }),
    });
  });

  test.each(GATEWAY_ERRORS.map((gatewayError) => [gatewayError.type, gatewayError] as const))('answers API Gateway %s with a template that is an error body once API Gateway fills in its message', (_type, gatewayError) => {
    const sent = JSON.parse(gatewayErrorTemplate(gatewayError).replace('$context.error.messageString', JSON.stringify('Some "quoted" message')));
    expect(sent).toEqual(errorBody(gatewayError.code, gatewayError.message ?? 'Some "quoted" message'));
  });

  test('declares each gateway response once', () => {
    const types = GATEWAY_ERRORS.map((gatewayError) => gatewayError.type);
    expect(new Set(types).size).toBe(types.length);
  });
});
