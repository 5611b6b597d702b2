import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { stackPropsFromContext } from './context';
import { DeviceCertificateLifecycleStack } from './device-certificate-lifecycle-stack';

/*
 * The CDK app (cdk.json: `npx tsx infra/app.ts`). Configure it with context values
 * (`npx cdk deploy -c caUsageMode=SHORT_LIVED_CERTIFICATE ...`; see infra/context.ts and docs/deploy.md).
 * The stack is environment-agnostic (no account or region at synth), so `cdk synth` works offline.
 * cdk-nag AwsSolutions runs on every synth: an unacknowledged finding fails it.
 */
const app = new App();
const props = stackPropsFromContext(app);
new DeviceCertificateLifecycleStack(app, 'DeviceCertificateLifecycle', props);
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
