import type { APIGatewayProxyEvent } from 'aws-lambda';
import { readConfig } from '../../../functions/handlers/config';
import { listDevicesQuery, parseBody, parseQuery, signCsrBody, startRotationCampaignBody } from '../../../functions/handlers/http/requests';
import { registrationEventSchema } from '../../../functions/handlers/jitr';
import { rotateRequestSchema } from '../../../functions/handlers/mqtt/rotation-protocol';

/*
 * The handlers' schemas are on `zod/mini`, which has no error messages of its own ("Invalid input" for every issue):
 * functions/handlers/schema-messages.ts gives them zod's English ones. These are the answers a caller would see
 * if that went missing; only handler modules are imported here, so nothing else sets the messages.
 */

const eventWithBody = (body: unknown): APIGatewayProxyEvent => ({ body: JSON.stringify(body), isBase64Encoded: false }) as APIGatewayProxyEvent;
const queryEvent = (query: Record<string, string>): APIGatewayProxyEvent => ({ queryStringParameters: query }) as unknown as APIGatewayProxyEvent;

describe("zod's own messages in the handlers' answers", () => {
  test.each([
    ['an empty CSR', () => parseBody(eventWithBody({ csr: '' }), signCsrBody), 'Invalid request: csr: Too small: expected string to have >=1 characters.'],
    ['a CSR that is not a string', () => parseBody(eventWithBody({ csr: 5 }), signCsrBody), 'Invalid request: csr: Invalid input: expected string, received number.'],
    ['a body that is an array', () => parseBody(eventWithBody([]), signCsrBody), 'Invalid request: body: Invalid input: expected object, received array.'],
    [
      'a fractional noticesPerSecond',
      () => parseBody(eventWithBody({ expiringBefore: '2027-01-31T00:00:00Z', noticesPerSecond: 1.5 }), startRotationCampaignBody),
      'Invalid request: noticesPerSecond: Invalid input: expected int, received number.',
    ],
    ['a limit that is not a number', () => parseQuery(queryEvent({ limit: 'ten' }), listDevicesQuery), 'Invalid request: limit: Invalid input: expected number, received NaN.'],
    ['a limit above 100', () => parseQuery(queryEvent({ limit: '101' }), listDevicesQuery), 'Invalid request: limit: Too big: expected number to be <=100.'],
  ])('rejects %s with 400 INVALID_REQUEST saying what is wrong', (_case, parsing, message) => {
    expect(parsing).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST', message }));
  });

  test('fails a cold start on a malformed number variable, saying the bound', () => {
    expect(() => readConfig(['CERTIFICATE_VALIDITY_DAYS'], { CERTIFICATE_VALIDITY_DAYS: '0' })).toThrow(
      expect.objectContaining({ code: 'CONFIGURATION_ERROR', message: 'Configuration error: CERTIFICATE_VALIDITY_DAYS is invalid: Too small: expected number to be >=1.' }),
    );
  });

  test('rejects a malformed registration event and rotation message naming each field', () => {
    const event = registrationEventSchema.safeParse({ certificateId: 'a'.repeat(64), caCertificateId: 'a'.repeat(64), timestamp: '1', certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '1', certificateRegistrationTimestamp: 1 });
    const rotation = rotateRequestSchema.safeParse({ requestId: 'r'.repeat(65), csr: null });

    expect(event.error?.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`)).toEqual(['timestamp: Invalid input: expected number, received string']);
    expect(rotation.error?.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`)).toEqual([
      'requestId: Too big: expected string to have <=64 characters',
      'csr: Invalid input: expected string, received null',
    ]);
  });
});
