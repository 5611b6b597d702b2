import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRoutes } from '../../../functions/handlers/api';
import { buildOpenApiDocument } from '../../../functions/handlers/http/openapi';
import { ERROR_CODES } from '../../../functions/core/errors';
import type { DeviceLifecycle } from '../../../functions/core/lifecycle';
import { systemClock } from '../../../functions/core/ports';

const routes = createRoutes({ lifecycle: {} as DeviceLifecycle, clock: systemClock });
const committed = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'docs', 'openapi.json'), 'utf8'));

describe('OpenAPI document', () => {
  test('docs/openapi.json is the document the code builds (run `npm run openapi` after changing the API)', () => {
    expect(committed).toEqual(JSON.parse(JSON.stringify(buildOpenApiDocument())));
  });

  test('documents exactly the routes the router serves', () => {
    const documented = Object.entries(committed.paths as Record<string, Record<string, unknown>>).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`));
    const served = routes.map((route) => `${route.method} ${route.resource}`);
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

  test('the error schema lists every error code', () => {
    expect(committed.components.schemas.Error.properties.error.properties.code.enum).toEqual(expect.arrayContaining([...ERROR_CODES]));
  });
});
