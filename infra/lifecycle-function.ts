import * as path from 'node:path';
import { Arn, ArnFormat, Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type NodejsFunctionProps } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type ILogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import type { EnvironmentVariable } from '../functions/handlers/config';
import type { EnrollmentPolicy } from './settings';

const PROJECT_ROOT = path.join(__dirname, '..');

/** The Lambda entry points the construct deploys; each exports `handler`. */
export const HANDLER_ENTRIES = {
  jitr: path.join(PROJECT_ROOT, 'functions', 'handlers', 'jitr.ts'),
  api: path.join(PROJECT_ROOT, 'functions', 'handlers', 'api.ts'),
  registerCaWithIot: path.join(PROJECT_ROOT, 'functions', 'handlers', 'register-ca-with-iot.ts'),
} as const;

/** The CA as the functions see it: what goes into CA_ARN, CA_SIGNING_ALGORITHM and CA_TEMPLATE_ARN. */
export interface CertificateAuthorityBinding {
  readonly certificateAuthorityArn: string;
  readonly signingAlgorithm: string;
  /** The Private CA template device certificates are issued with. */
  readonly deviceTemplateArn: string;
}

/** The AWS Private CA actions a function may need; IssueCertificate is only allowed with the device template. */
export type CaAction = 'acm-pca:IssueCertificate' | 'acm-pca:GetCertificate' | 'acm-pca:RevokeCertificate' | 'acm-pca:GetCertificateAuthorityCertificate';

/** The AWS IoT registry actions a function may need. */
export type IotAction =
  | 'iot:DescribeCertificate'
  | 'iot:UpdateCertificate'
  | 'iot:RegisterCertificate'
  | 'iot:RegisterCertificateWithoutCA'
  | 'iot:CreateThing'
  | 'iot:AddThingToThingGroup'
  | 'iot:AttachThingPrincipal'
  | 'iot:DetachThingPrincipal'
  | 'iot:AttachPolicy'
  | 'iot:DetachPolicy';

export interface FleetBinding {
  readonly thingGroupName: string;
  readonly thingGroupArn: string;
}

export interface LifecycleFunctionProps {
  /** One of {@link HANDLER_ENTRIES}. */
  readonly entry: string;
  readonly description: string;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /** @default Duration.seconds(30) */
  readonly timeout?: Duration;
  /** @default 512 */
  readonly memorySize?: number;
  /** Extra NodejsFunction props (async invocation settings and the like). */
  readonly extra?: Partial<NodejsFunctionProps>;
}

/**
 * A NodejsFunction with the project's runtime settings (Node.js 22 on arm64, X-Ray, a minified
 * esbuild bundle holding only the SDK clients its entry imports, its own log group), whose
 * environment can only be set through the `use*` methods below: each sets a variable and grants
 * the matching permission together, so the two cannot drift apart (the Powertools
 * `function-with-logstream-construct` pattern).
 */
export class LifecycleFunction extends NodejsFunction {
  /** The function's own role (a sibling construct named `<id>Role`): acknowledgements of its findings go here. */
  public readonly executionRole: iam.Role;
  private readonly variables = new Map<EnvironmentVariable, string>();

  public constructor(scope: Construct, id: string, props: LifecycleFunctionProps) {
    const logGroup = new LogGroup(scope, `${id}Logs`, { retention: props.logRetention, removalPolicy: props.removalPolicy });
    const role = roleWritingTo(scope, `${id}Role`, logGroup);
    super(scope, id, {
      role,
      entry: props.entry,
      handler: 'handler',
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: path.join(PROJECT_ROOT, 'package-lock.json'),
      logGroup,
      environment: { NODE_OPTIONS: '--enable-source-maps' },
      bundling: {
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        target: 'node22',
        format: OutputFormat.CJS,
        // Bundle the AWS SDK v3 too: esbuild keeps only the clients and commands this entry imports
        // (ESM builds tree-shake best), instead of relying on the runtime's copy.
        externalModules: [],
        mainFields: ['module', 'main'],
        forceDockerBundling: false,
      },
      ...props.extra,
    });
    this.executionRole = role;
    Validations.of(this).acknowledge({
      id: 'AwsSolutions-L1',
      reason: 'Pinned to nodejs22.x on purpose (docs ARCHITECTURE.md): the runtime the functions are built (esbuild target node22) and tested for; a newer runtime is adopted deliberately, not by default.',
    });
  }

  /** DEVICE_TABLE_NAME, with read/write access to that table and its indexes. */
  public useDeviceTable(table: ITable): this {
    this.setVariable('DEVICE_TABLE_NAME', table.tableName);
    table.grantReadWriteData(this);
    return this;
  }

  /** IDEMPOTENCY_TABLE_NAME, with read/write access to that table. */
  public useIdempotencyTable(table: ITable): this {
    this.setVariable('IDEMPOTENCY_TABLE_NAME', table.tableName);
    table.grantReadWriteData(this);
    return this;
  }

  /** CA_ARN, CA_SIGNING_ALGORITHM and CA_TEMPLATE_ARN, with `actions` on that CA only. */
  public useCertificateAuthority(ca: CertificateAuthorityBinding, actions: readonly CaAction[]): this {
    this.setVariable('CA_ARN', ca.certificateAuthorityArn);
    this.setVariable('CA_SIGNING_ALGORITHM', ca.signingAlgorithm);
    this.setVariable('CA_TEMPLATE_ARN', ca.deviceTemplateArn);
    const issue = actions.filter((action) => action === 'acm-pca:IssueCertificate');
    const others = actions.filter((action) => action !== 'acm-pca:IssueCertificate');
    if (others.length > 0) {
      this.addToRolePolicy(new iam.PolicyStatement({ actions: [...others], resources: [ca.certificateAuthorityArn] }));
    }
    if (issue.length > 0) {
      this.addToRolePolicy(
        new iam.PolicyStatement({
          actions: issue,
          resources: [ca.certificateAuthorityArn],
          // Only device certificates: no CA certificates or other templates through this role.
          conditions: { StringEquals: { 'acm-pca:TemplateArn': ca.deviceTemplateArn } },
        }),
      );
    }
    return this;
  }

  /**
   * THING_GROUP_NAME, with the AWS IoT registry `actions`, each on the narrowest resource
   * IAM allows for it (see {@link iotStatements}).
   */
  public useFleet(fleet: FleetBinding, actions: readonly IotAction[]): this {
    this.setVariable('THING_GROUP_NAME', fleet.thingGroupName);
    for (const statement of iotStatements(Stack.of(this), fleet, actions)) this.addToRolePolicy(statement);
    return this;
  }

  /** ENROLLMENT_POLICY and CERTIFICATE_VALIDITY_DAYS: settings, no permission attached. */
  public useIssuancePolicy(policy: { readonly enrollmentPolicy: EnrollmentPolicy; readonly certificateValidityDays: number }): this {
    this.setVariable('ENROLLMENT_POLICY', policy.enrollmentPolicy);
    this.setVariable('CERTIFICATE_VALIDITY_DAYS', String(policy.certificateValidityDays));
    return this;
  }

  /** The configuration variables set so far (for tests and for callers that document them). */
  public get configuredVariables(): readonly EnvironmentVariable[] {
    return [...this.variables.keys()];
  }

  private setVariable(name: EnvironmentVariable, value: string): void {
    const previous = this.variables.get(name);
    if (previous !== undefined && previous !== value) throw new Error(`${this.node.path}: ${name} is set twice to different values.`);
    this.variables.set(name, value);
    this.addEnvironment(name, value);
  }
}

/**
 * A Lambda execution role that may write to `logGroup` only, instead of the AWS managed
 * AWSLambdaBasicExecutionRole (which allows every log group of the account).
 */
export function roleWritingTo(scope: Construct, id: string, logGroup: ILogGroup): iam.Role {
  const role = new iam.Role(scope, id, { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
  role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [logGroup.logGroupArn] }));
  return role;
}

/**
 * IAM statements for AWS IoT registry actions, grouped by the resource each action is
 * authorized against (Service Authorization Reference, "Actions defined by AWS IoT"):
 * - certificates: `cert/*` (certificate ids are only known at run time);
 * - things: `thing/*` (thing names are device ids, known at run time), and the one thing group;
 * - AttachPolicy/DetachPolicy are authorized against their target (certificate or thing group).
 * Actions for which AWS IoT defines no resource type can only be granted on `*`; see below.
 */
export function iotStatements(stack: Stack, fleet: FleetBinding, actions: readonly IotAction[]): iam.PolicyStatement[] {
  const arn = (resource: string) => Arn.format({ service: 'iot', resource, resourceName: '*', arnFormat: ArnFormat.SLASH_RESOURCE_NAME }, stack);
  const certificates = arn('cert');
  const things = arn('thing');
  const wanted = new Set(actions);
  const pick = (...candidates: IotAction[]) => candidates.filter((action) => wanted.has(action));
  const statements: iam.PolicyStatement[] = [];
  const add = (picked: IotAction[], resources: string[]) => {
    if (picked.length > 0) statements.push(new iam.PolicyStatement({ actions: picked, resources }));
  };
  add(pick('iot:DescribeCertificate', 'iot:UpdateCertificate'), [certificates]);
  add(pick('iot:CreateThing'), [things]);
  add(pick('iot:AddThingToThingGroup'), [things, fleet.thingGroupArn]);
  add(pick('iot:AttachPolicy', 'iot:DetachPolicy'), [certificates, fleet.thingGroupArn]);
  // RegisterCertificate, RegisterCertificateWithoutCA, AttachThingPrincipal and DetachThingPrincipal
  // have no resource type in the Service Authorization Reference: IAM only accepts "*" for them.
  add(pick('iot:RegisterCertificate', 'iot:RegisterCertificateWithoutCA', 'iot:AttachThingPrincipal', 'iot:DetachThingPrincipal'), ['*']);
  return statements;
}

/** The ARN of an AWS Private CA template, e.g. `EndEntityClientAuthCertificate/V1`. */
export function privateCaTemplateArn(stack: Stack, template: string): string {
  return `arn:${stack.partition}:acm-pca:::template/${template}`;
}
