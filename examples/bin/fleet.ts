import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { SensorFleetStack } from '../lib/fleet-stack';

/*
 * `npx cdk synth` (cdk.json). Environment-agnostic, so it synthesizes offline; set `env` to deploy.
 * Optional context: `-c alarmTopicArn=arn:aws:sns:...` for the alarms.
 */
const app = new App();
const alarmTopicArn: unknown = app.node.tryGetContext('alarmTopicArn');
new SensorFleetStack(app, 'SensorFleet', { alarmTopicArn: typeof alarmTopicArn === 'string' ? alarmTopicArn : undefined });
// cdk-nag AwsSolutions on every synth: the construct acknowledges its own findings, each with a reason.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
