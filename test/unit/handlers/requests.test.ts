import type { APIGatewayProxyEvent } from 'aws-lambda';
import { createDeviceBody, parseBody } from '../../../functions/handlers/http/requests';

const eventWithBody = (body: string): APIGatewayProxyEvent => ({ body, isBase64Encoded: false }) as APIGatewayProxyEvent;

const reserved = (name: string): string =>
  `"${name}" is a reserved name (JavaScript objects use it for their prototype machinery, so it would be dropped or misread): choose another name`;

describe('parseBody', () => {
  test.each(['__proto__', 'constructor', 'prototype'])('refuses a device attribute named %s with 400 INVALID_REQUEST naming it and why', (name) => {
    // Prepare: JSON.parse makes "__proto__" an own property, the way a caller's body arrives
    const event = eventWithBody(`{"deviceId":"d1","attributes":{"${name}":"x"}}`);

    // Act
    const parsing = () => parseBody(event, createDeviceBody);

    // Assess
    expect(parsing).toThrow(
      expect.objectContaining({
        name: 'ValidationError',
        code: 'INVALID_REQUEST',
        message: `Invalid request: attributes.${name}: ${reserved(name)}.`,
        details: { problems: [`attributes.${name}: ${reserved(name)}`] },
      }),
    );
  });

  test('refuses "__proto__" wherever it is in the body, naming where', () => {
    const parsing = () => parseBody(eventWithBody('{"deviceId":"d1","__proto__":{"attributes":{}}}'), createDeviceBody);

    expect(parsing).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST', message: `Invalid request: __proto__: ${reserved('__proto__')}.` }));
  });

  test('says which attribute name rule a name breaks, not only that the key is invalid', () => {
    const parsing = () => parseBody(eventWithBody('{"deviceId":"d1","attributes":{"a b":"x"}}'), createDeviceBody);

    expect(parsing).toThrow(expect.objectContaining({ code: 'INVALID_REQUEST', message: 'Invalid request: attributes.a b: attribute names are 1-128 of a-z A-Z 0-9 _ . , @ / : # -.' }));
  });

  test('keeps ordinary attributes, including names that merely contain a reserved word', () => {
    const body = parseBody(eventWithBody('{"deviceId":"d1","attributes":{"line":"a","my_prototype":"b","constructor_id":"c"}}'), createDeviceBody);

    expect(body).toEqual({ deviceId: 'd1', attributes: { line: 'a', my_prototype: 'b', constructor_id: 'c' } });
  });
});
