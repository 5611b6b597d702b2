import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CURRENTLY_RECOMMENDED_FLAGS } from 'aws-cdk-lib/cx-api';
import { PROJECT_ROOT } from '../../local/config';

/*
 * What a new user sees first must be free of noise (issue: "cdk synth prints '85 feature flags are not configured'",
 * "npm ci warns that the esbuild install script is not allowed").
 */
describe('quiet output', () => {
  const read = (file: string) => JSON.parse(readFileSync(join(PROJECT_ROOT, file), 'utf8')) as Record<string, unknown>;

  test('cdk.json sets every feature flag this aws-cdk-lib recommends for a new app, at its recommended value', () => {
    const context = read('cdk.json').context as Record<string, unknown>;
    const notAsRecommended = Object.entries(CURRENTLY_RECOMMENDED_FLAGS).filter(([flag, value]) => JSON.stringify(context[flag]) !== JSON.stringify(value));

    expect(notAsRecommended).toEqual([]);
  });

  test('package.json allows the install script of esbuild (the bundler of the functions), so npm ci does not warn', () => {
    expect(read('package.json').allowScripts).toMatchObject({ esbuild: true });
  });
});
