import { ConflictError, LifecycleError, UpstreamError, ValidationError } from '../../../functions/core/errors';
import { errorResponse } from '../../../functions/handlers/http/responses';

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
