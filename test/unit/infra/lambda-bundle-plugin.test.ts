import { withLiteralSchemaKeys } from '../../../infra/lambda-bundle-plugin';

/*
 * The rewrite that lets esbuild drop the unused part of an AWS SDK client's schema table (infra/lambda-bundle-plugin.ts,
 * item 4): the bundles themselves are checked in bundling.test.ts and run in bundle-runtime.test.ts.
 */
describe('withLiteralSchemaKeys', () => {
  test('writes the string of a module constant in place of the computed key that names it', () => {
    const source = ['const _h = "http";', 'const _hQ = "httpQuery";', 'export var UpdateCertificate$ = [9, n0, _UC, { [_h]: ["PUT", "/certificates/{certificateId}", 200] }, () => A$, () => B$];', 'var A$ = [3, n0, _A, 0, [_n], [[0, { [_hQ]: _nS }]]];'].join('\n');

    expect(withLiteralSchemaKeys(source)).toBe(
      ['const _h = "http";', 'const _hQ = "httpQuery";', 'export var UpdateCertificate$ = [9, n0, _UC, { "http": ["PUT", "/certificates/{certificateId}", 200] }, () => A$, () => B$];', 'var A$ = [3, n0, _A, 0, [_n], [[0, { "httpQuery": _nS }]]];'].join('\n'),
    );
  });

  test.each([
    ['a name that is no module constant', 'var x = { [_unknown]: 1 };'],
    ['a constant declared twice', 'const _d = "a";\nconst _d = "b";\nvar x = { [_d]: 1 };'],
    ['a constant that is not a plain string', 'const _t = `http`;\nvar x = { [_t]: 1 };'],
    ['not computed', 'const _h = "http";\nvar x = { _h: 1 };'],
  ])('leaves a computed key alone when it is %s', (_case, source) => {
    expect(withLiteralSchemaKeys(source)).toBe(source);
  });
});
