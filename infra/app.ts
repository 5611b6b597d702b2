import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { stackPropsFromContext, withContextTerms } from './context';
import { DeviceCertificateLifecycleStack } from './device-certificate-lifecycle-stack';
import { InvalidConfigurationError } from './settings';

/*
 * The CDK app (cdk.json: `npx tsx infra/app.ts`). Configure it with context values
 * (`npx cdk deploy -c caUsageMode=SHORT_LIVED_CERTIFICATE ...`; see infra/context.ts and docs/deploy.md).
 * An unknown context key, or a value that cannot work, fails the synth with a message naming the key as typed.
 * The stack is environment-agnostic (no account or region at synth), so `cdk synth` works offline.
 * cdk-nag AwsSolutions runs on every synth: an unacknowledged finding fails it.
 */
const app = new App();
try {
  const props = stackPropsFromContext(app);
  withContextTerms(() => new DeviceCertificateLifecycleStack(app, 'DeviceCertificateLifecycle', props));
} catch (error) {
  // A configuration mistake is the user's to fix: the message says what, and a stack trace would only bury it.
  if (!(error instanceof InvalidConfigurationError)) throw error;
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
}
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
