import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildOpenApiDocument } from '../../../functions/handlers/http/openapi';
import { API_ERROR_CODES } from '../../../functions/handlers/http/errors';
import { API_ROUTES } from '../../../functions/handlers/http/routes';

const committed = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'docs', 'openapi.json'), 'utf8'));

describe('OpenAPI document', () => {
  test('docs/openapi.json is the document the code builds (run `npm run openapi` after changing the API)', () => {
    expect(committed).toEqual(JSON.parse(JSON.stringify(buildOpenApiDocument())));
  });

  test('documents exactly the routes the router serves', () => {
    const documented = Object.entries(committed.paths as Record<string, Record<string, unknown>>).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`));
    const served = API_ROUTES.map((route) => `${route.method} ${route.resource}`);
    expect(documented.sort()).toEqual(served.sort());
  });

  test('every POST takes an Idempotency-Key header and every operation answers JSON errors', () => {
    for (const methods of Object.values(committed.paths as Record<string, Record<string, { parameters?: { name: string }[]; responses: Record<string, unknown> }>>)) {
      for (const [method, operation] of Object.entries(methods)) {
        if (method === 'post') expect(operation.parameters?.map((p) => p.name)).toContain('Idempotency-Key');
        expect(Object.keys(operation.responses).some((status) => status.startsWith('4'))).toBe(true);
      }
    }
  });

  test('the error schema lists every code of the error catalogue', () => {
    expect(committed.components.schemas.Error.properties.error.properties.code.enum).toEqual([...API_ERROR_CODES]);
  });

  test('every schema reference resolves to a schema of the document', () => {
    const references = [...JSON.stringify(committed).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)].map((match) => match[1] as string);
    expect(references.length).toBeGreaterThan(0);
    for (const name of new Set(references)) expect(Object.keys(committed.components.schemas)).toContain(name);
  });

  test('documents each path parameter with its pattern and a POST body with its schema', () => {
    const revoke = committed.paths['/devices/{deviceId}/certificates/{certificateId}/revoke'].post;
    expect(revoke.parameters.map((parameter: { name: string; in: string }) => `${parameter.in} ${parameter.name}`)).toEqual(['path deviceId', 'path certificateId', 'header Idempotency-Key']);
    expect(revoke.parameters[1].schema.pattern).toBe('^[0-9a-f]{64}$');
    expect(revoke.requestBody.content['application/json'].schema).toMatchObject({ required: ['reason'], additionalProperties: false });
  });
});
