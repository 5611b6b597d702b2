import { App, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { PolicyViolation } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DeviceCertificateLifecycleStack, type DeviceCertificateLifecycleStackProps } from '../../infra/device-certificate-lifecycle-stack';

export const EXISTING_CA_ARN = 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9';

export interface SynthesizedStack {
  readonly app: App;
  readonly stack: DeviceCertificateLifecycleStack;
  readonly template: Template;
}

/**
 * One stack as the app builds it. Bundling is skipped unless asked for (esbuild runs in
 * bundling.test.ts and in `cdk synth`): the entries must still exist, but tests stay fast.
 */
export function buildStack(props: DeviceCertificateLifecycleStackProps = {}, options: { bundle?: boolean } = {}): SynthesizedStack {
  const app = new App({ context: options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] } });
  const stack = new DeviceCertificateLifecycleStack(app, 'TestStack', props);
  return { app, stack, template: Template.fromStack(stack) };
}

/** The AwsSolutions findings nobody acknowledged (errors and warnings alike). */
export function unacknowledgedNagFindings(app: App): readonly PolicyViolation[] {
  return new AwsSolutionsChecks().validateScope(app).violations;
}

/** Every acknowledgement in the tree: rule id → reason, per construct path. */
export function acknowledgements(app: App): { path: string; id: string; reason: string }[] {
  const found: { path: string; id: string; reason: string }[] = [];
  for (const construct of app.node.findAll()) {
    for (const entry of construct.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
      for (const [id, reason] of Object.entries(entry.data as Record<string, string>)) {
        found.push({ path: construct.node.path, id: id.replace(/^annotation::/i, ''), reason });
      }
    }
  }
  return found;
}

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: unknown };

/** Every IAM statement of the template (inline role policies and AWS::IAM::Policy), with where it lives. */
export function iamStatements(template: Template): { logicalId: string; statement: Statement }[] {
  const out: { logicalId: string; statement: Statement }[] = [];
  for (const [logicalId, policy] of Object.entries(template.findResources('AWS::IAM::Policy'))) {
    for (const statement of (policy.Properties.PolicyDocument.Statement ?? []) as Statement[]) out.push({ logicalId, statement });
  }
  for (const [logicalId, role] of Object.entries(template.findResources('AWS::IAM::Role'))) {
    for (const policy of (role.Properties.Policies ?? []) as { PolicyDocument: { Statement: Statement[] } }[]) {
      for (const statement of policy.PolicyDocument.Statement) out.push({ logicalId, statement });
    }
  }
  return out;
}

export const actionsOf = (statement: Statement): string[] => (Array.isArray(statement.Action) ? statement.Action : [statement.Action]);
export const resourcesOf = (statement: Statement): unknown[] => (Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource]);

/** The statements of the role of the function whose logical id starts with `prefix`. */
export function statementsOfFunction(template: Template, functionLogicalIdPrefix: string): Statement[] {
  const functions = template.findResources('AWS::Lambda::Function');
  const entry = Object.entries(functions).find(([id]) => id.startsWith(functionLogicalIdPrefix));
  if (!entry) throw new Error(`no function ${functionLogicalIdPrefix}`);
  const roleLogicalId = (entry[1].Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
  const policies = template.findResources('AWS::IAM::Policy');
  return Object.values(policies)
    .filter((policy) => (policy.Properties.Roles as { Ref: string }[]).some((role) => role.Ref === roleLogicalId))
    .flatMap((policy) => policy.Properties.PolicyDocument.Statement as Statement[]);
}

export function functionLogicalId(template: Template, prefix: string): string {
  const id = Object.keys(template.findResources('AWS::Lambda::Function')).find((logicalId) => logicalId.startsWith(prefix));
  if (!id) throw new Error(`no function ${prefix}`);
  return id;
}
