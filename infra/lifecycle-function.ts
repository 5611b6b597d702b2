import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { Arn, ArnFormat, AssetHashType, type BundlingOptions, type CfnElement, DockerImage, Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Architecture, Code, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat, type NodejsFunctionProps } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type ILogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { DEVICE_TABLE_SCHEMA } from '../functions/adapters/aws/device-table';
import type { EnvironmentVariable } from '../functions/handlers/config';
import type { EnrollmentPolicy } from './settings';
import type { PrivateCaIamAction } from '../functions/adapters/aws/private-ca-certificate-authority';
import { IOT_DATA_MESSENGER_IAM_ACTIONS } from '../functions/adapters/aws/iot-data-messenger';

/** The repository root; in the installed package, its `dist/` folder (this file is then `dist/infra/lifecycle-function.js`). */
const PROJECT_ROOT = path.join(__dirname, '..');

/**
 * The Lambda entry points the construct deploys; each exports `handler`. The one list of them: the package
 * build (scripts/build-lambda-bundles.ts) prebuilds a bundle for each key, so a new handler needs no other edit.
 */
export const HANDLER_ENTRIES = {
  jitr: path.join(PROJECT_ROOT, 'functions', 'handlers', 'jitr.ts'),
  api: path.join(PROJECT_ROOT, 'functions', 'handlers', 'api.ts'),
  registerCaWithIot: path.join(PROJECT_ROOT, 'functions', 'handlers', 'register-ca-with-iot.ts'),
  expiryMonitor: path.join(PROJECT_ROOT, 'functions', 'handlers', 'expiry-monitor.ts'),
  rotation: path.join(PROJECT_ROOT, 'functions', 'handlers', 'rotation-wiring.ts'),
} as const;

/** The name of a Lambda entry point (a key of {@link HANDLER_ENTRIES}), also the folder of its prebuilt bundle. */
export type HandlerName = keyof typeof HANDLER_ENTRIES;

/** The esbuild settings of a function bundle that NodejsFunction and the package build both apply. */
export interface LambdaBundleSettings {
  readonly minify: boolean;
  readonly sourceMap: boolean;
  readonly sourcesContent: boolean;
  readonly target: string;
  readonly format: OutputFormat;
  readonly externalModules: readonly string[];
  readonly mainFields: readonly string[];
}

/**
 * How every function is bundled, whether by NodejsFunction at synth (this repository) or ahead of time by
 * scripts/build-lambda-bundles.ts (the npm package): one definition, so both paths build the same code.
 */
export const LAMBDA_BUNDLE_SETTINGS: LambdaBundleSettings = {
  minify: true,
  sourceMap: true,
  sourcesContent: false,
  target: 'node22',
  format: OutputFormat.CJS,
  // Bundle the AWS SDK v3 too: esbuild keeps only the clients and commands this entry imports
  // (ESM builds tree-shake best), instead of relying on the runtime's copy.
  externalModules: [],
  mainFields: ['module', 'main'],
};

/**
 * Where the package build puts the prebuilt bundles, under the compiled package root: `dist/lambda/<HandlerName>/`
 * holds `index.js` and its source map. This repository has no such folder next to `infra/`, so it bundles at synth.
 */
export const PREBUILT_BUNDLES_FOLDER = 'lambda';

/** The file esbuild writes for a bundle (what NodejsFunction names it): the handler is `<file>.handler`. */
export const bundleFileName = (settings: LambdaBundleSettings): string => (settings.format === OutputFormat.ESM ? 'index.mjs' : 'index.js');

/**
 * The code of the function for `entry`: in the installed package, the bundle the package build made for it (the
 * package carries no TypeScript sources and no lock file to bundle from); in this repository, the same build run at
 * synth with the local esbuild, never Docker.
 */
function functionCode(entry: string): Pick<NodejsFunctionProps, 'code' | 'handler'> {
  const prebuiltRoot = path.join(PROJECT_ROOT, PREBUILT_BUNDLES_FOLDER);
  if (existsSync(prebuiltRoot)) {
    const name = (Object.keys(HANDLER_ENTRIES) as HandlerName[]).find((key) => HANDLER_ENTRIES[key] === entry);
    const directory = name === undefined ? undefined : path.join(prebuiltRoot, name);
    const file = bundleFileName(LAMBDA_BUNDLE_SETTINGS);
    if (directory === undefined || !existsSync(path.join(directory, file))) {
      throw new Error(`No prebuilt bundle for ${entry} in ${prebuiltRoot}: the package was built without it (npm run build makes one per HANDLER_ENTRIES key).`);
    }
    return { code: Code.fromAsset(directory), handler: `${path.parse(file).name}.handler` };
  }
  return { code: Code.fromAsset(path.dirname(entry), { assetHashType: AssetHashType.OUTPUT, bundling: localBundling(entry) }), handler: `${path.parse(bundleFileName(LAMBDA_BUNDLE_SETTINGS)).name}.handler` };
}

/**
 * The synth-time build of `entry`: scripts/build-lambda-bundles.ts with the local esbuild, in a child process (CDK's
 * local bundling is synchronous, esbuild plugins are not), the same build as the npm package's. NodejsFunction's own
 * bundling runs the esbuild command line, which cannot run the plugin that keeps the bundles lean
 * (infra/lambda-bundle-plugin.ts). Never Docker: a failed build fails the synth.
 */
function localBundling(entry: string): BundlingOptions {
  const script = path.join(PROJECT_ROOT, 'scripts', 'build-lambda-bundles.ts');
  return {
    // Required by the type, never pulled: local bundling below either builds the bundle or throws.
    image: DockerImage.fromRegistry('unused-local-bundling-only'),
    // Never run (no Docker), but part of CDK's bundling cache key: without it, the functions (whose entries share one
    // folder) would all get the first one's bundle.
    command: ['build-lambda-bundles.ts', '--entry', path.relative(PROJECT_ROOT, entry)],
    local: {
      tryBundle(outputDir: string): boolean {
        const result = spawnSync(process.execPath, ['--import', 'tsx', script, '--entry', entry, '--outdir', outputDir], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
        if (result.status !== 0) throw new Error(`Bundling ${path.relative(PROJECT_ROOT, entry)} failed: ${result.stderr || result.error?.message || `exit ${result.status}`}`);
        return true;
      },
    },
  };
}

/** The CA as the functions see it: what goes into CA_ARN, CA_SIGNING_ALGORITHM and CA_TEMPLATE_ARN. */
export interface CertificateAuthorityBinding {
  readonly certificateAuthorityArn: string;
  readonly signingAlgorithm: string;
  /** The Private CA template device certificates are issued with. */
  readonly deviceTemplateArn: string;
  /** CAs the stack replaced whose devices are still accepted (a CA rotation): read and revoked at, never issued from. */
  readonly previousCertificateAuthorityArns?: readonly string[];
}

/** The AWS Private CA actions a function may need; IssueCertificate is only allowed with the device template. */
export type CaAction = PrivateCaIamAction;

/**
 * The AWS IoT registry actions a function may be granted, each with the resources IAM authorizes it
 * against (Service Authorization Reference, "Actions, resources, and condition keys for AWS IoT"):
 * - DescribeCertificate, UpdateCertificate: `cert` (ids are SHA-256 fingerprints, known at run time: `cert/*`);
 * - AttachThingPrincipal, DetachThingPrincipal: `cert` only, the principal (the reference lists no `thing`
 *   resource type for them, only the `iot:thingArn` condition key);
 * - CreateThing: `thing` (names are device ids, known at run time: `thing/*`);
 * - AddThingToThingGroup: `thing` and `thinggroup` (the fleet's one group);
 * - AttachPolicy, DetachPolicy: their target, `cert` or `thinggroup`;
 * - RegisterCertificate, RegisterCertificateWithoutCA: no resource type, so IAM only accepts "*";
 * - UpdateCACertificate: `cacert` (the ids of the fleet's previous CAs are SHA-256 fingerprints: `cacert/*`).
 */
const IOT_ACTION_RESOURCES = {
  'iot:DescribeCertificate': ['certificates'],
  'iot:UpdateCertificate': ['certificates'],
  'iot:AttachThingPrincipal': ['certificates'],
  'iot:DetachThingPrincipal': ['certificates'],
  'iot:CreateThing': ['things'],
  'iot:AddThingToThingGroup': ['things', 'thingGroup'],
  'iot:AttachPolicy': ['certificates', 'thingGroup'],
  'iot:DetachPolicy': ['certificates', 'thingGroup'],
  'iot:RegisterCertificate': ['*'],
  'iot:RegisterCertificateWithoutCA': ['*'],
  'iot:UpdateCACertificate': ['caCertificates'],
} as const satisfies Record<string, readonly ('certificates' | 'caCertificates' | 'things' | 'thingGroup' | '*')[]>;

/** The AWS IoT registry actions a function may need. */
export type IotAction = keyof typeof IOT_ACTION_RESOURCES;

const isIotAction = (action: string): action is IotAction => Object.hasOwn(IOT_ACTION_RESOURCES, action);

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
      ...functionCode(props.entry),
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: Tracing.ACTIVE,
      logGroup,
      environment: { NODE_OPTIONS: '--enable-source-maps' },
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

  /**
   * DEVICE_TABLE_NAME, with `dynamodb:Query` on the table's ByExpiry index and nothing else: what the store's
   * `findCertificatesExpiring` sends. No access to the table's items or its other index.
   */
  public useDeviceTableExpiryIndex(table: ITable): this {
    this.setVariable('DEVICE_TABLE_NAME', table.tableName);
    this.addToRolePolicy(new iam.PolicyStatement({ actions: ['dynamodb:Query'], resources: [`${table.tableArn}/index/${DEVICE_TABLE_SCHEMA.byExpiryIndex.indexName}`] }));
    return this;
  }

  /** CA_ARN, CA_SIGNING_ALGORITHM and CA_TEMPLATE_ARN, with `actions` on that CA only. */
  public useCertificateAuthority(ca: CertificateAuthorityBinding, actions: readonly CaAction[]): this {
    this.setVariable('CA_ARN', ca.certificateAuthorityArn);
    this.setVariable('CA_SIGNING_ALGORITHM', ca.signingAlgorithm);
    this.setVariable('CA_TEMPLATE_ARN', ca.deviceTemplateArn);
    const previous = ca.previousCertificateAuthorityArns ?? [];
    this.setVariable('PREVIOUS_CA_ARNS', previous.join(','));
    const issue = actions.filter((action) => action === 'acm-pca:IssueCertificate');
    const others = actions.filter((action) => action !== 'acm-pca:IssueCertificate');
    if (others.length > 0) {
      // Previous CAs: their certificates are read (to accept their devices) and revoked there; nothing is issued from them.
      this.addToRolePolicy(new iam.PolicyStatement({ actions: [...others], resources: [ca.certificateAuthorityArn, ...previous] }));
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
   * THING_GROUP_NAME, with the AWS IoT registry `actions` (e.g. `iotRegistryIamActions(...)` of the adapter),
   * each on the narrowest resource IAM allows for it (see {@link iotStatements}). Fails on an action it does
   * not know how to scope, rather than granting it on "*".
   */
  public useFleet(fleet: FleetBinding, actions: readonly string[]): this {
    const unknown = actions.filter((action) => !isIotAction(action));
    if (unknown.length > 0) throw new Error(`${this.node.path}: no resource scoping is defined for ${unknown.join(', ')} (infra/lifecycle-function.ts IOT_ACTION_RESOURCES).`);
    this.setVariable('THING_GROUP_NAME', fleet.thingGroupName);
    for (const statement of iotStatements(Stack.of(this), fleet, actions.filter(isIotAction))) this.addToRolePolicy(statement);
    return this;
  }

  /** ENROLLMENT_POLICY and CERTIFICATE_VALIDITY_DAYS: settings, no permission attached. */
  public useIssuancePolicy(policy: { readonly enrollmentPolicy: EnrollmentPolicy; readonly certificateValidityDays: number }): this {
    this.setVariable('ENROLLMENT_POLICY', policy.enrollmentPolicy);
    this.setVariable('CERTIFICATE_VALIDITY_DAYS', String(policy.certificateValidityDays));
    return this;
  }

  /** EXPIRY_WARNING_DAYS and METRICS_SERVICE_NAME: settings of the expiry monitor, no permission attached (its metrics go to its log as EMF). */
  public useExpiryMonitoring(monitoring: { readonly warningDays: number; readonly metricsServiceName: string }): this {
    this.setVariable('EXPIRY_WARNING_DAYS', String(monitoring.warningDays));
    this.setVariable('METRICS_SERVICE_NAME', monitoring.metricsServiceName);
    return this;
  }

  /**
   * Messages to devices through AWS IoT's data plane (IotDataMessenger): iot:Publish on `topics` only (a topic
   * resource name, e.g. `devices/*\/certificates/*`) and iot:DescribeEndpoint (no resource type: "*"), which finds the
   * account's ATS endpoint once per cold start (IOT_DATA_ENDPOINT left empty).
   */
  public useDeviceMessaging(topics: string): this {
    const topicArn = Arn.format({ service: 'iot', resource: 'topic', resourceName: topics, arnFormat: ArnFormat.SLASH_RESOURCE_NAME }, Stack.of(this));
    const resources: Readonly<Record<(typeof IOT_DATA_MESSENGER_IAM_ACTIONS)[number], string>> = { 'iot:DescribeEndpoint': '*', 'iot:Publish': topicArn };
    for (const action of IOT_DATA_MESSENGER_IAM_ACTIONS) this.addToRolePolicy(new iam.PolicyStatement({ actions: [action], resources: [resources[action]] }));
    this.setVariable('IOT_DATA_ENDPOINT', '');
    return this;
  }

  /** The rotation's commit window (the rotation function). */
  public useRotation(rotation: { readonly commitSeconds: number }): this {
    this.setVariable('ROTATION_COMMIT_SECONDS', String(rotation.commitSeconds));
    return this;
  }

  /** How fast the expiry monitor sends renewal notices (0: none). */
  public useRenewalNotices(notices: { readonly perSecond: number }): this {
    this.setVariable('RENEWAL_NOTICES_PER_SECOND', String(notices.perSecond));
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
 * IAM statements for AWS IoT registry actions: one statement per set of resources, each action on the
 * resources {@link IOT_ACTION_RESOURCES} gives it.
 */
export function iotStatements(stack: Stack, fleet: FleetBinding, actions: readonly IotAction[]): iam.PolicyStatement[] {
  const arn = (resource: string) => Arn.format({ service: 'iot', resource, resourceName: '*', arnFormat: ArnFormat.SLASH_RESOURCE_NAME }, stack);
  const resourceOf = { certificates: arn('cert'), caCertificates: arn('cacert'), things: arn('thing'), thingGroup: fleet.thingGroupArn, '*': '*' } as const;
  const byResources = new Map<string, { actions: IotAction[]; resources: string[] }>();
  for (const action of new Set(actions)) {
    const kinds = IOT_ACTION_RESOURCES[action];
    const key = kinds.join(',');
    const group = byResources.get(key) ?? { actions: [], resources: kinds.map((kind) => resourceOf[kind]) };
    group.actions.push(action);
    byResources.set(key, group);
  }
  return [...byResources.values()].map(({ actions: grouped, resources }) => new iam.PolicyStatement({ actions: grouped, resources }));
}

/**
 * The IAM5 (wildcard) findings of the role of a function that uses the device table and the AWS IoT registry
 * (`useDeviceTable`, `useFleet`), each with the reason it cannot be narrower; `starReason` says why "*" is needed.
 */
export function acknowledgeRegistryFunctionWildcards(fn: LifecycleFunction, deviceTable: ITable, starReason: string): void {
  const stack = Stack.of(fn);
  const iotArn = 'arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>';
  const reasons: Record<string, string> = {
    'Resource::*': starReason,
    [`Resource::${iotArn}:cert/*`]:
      'Device certificate ids (SHA-256 fingerprints) are only known at run time; the grant is limited to certificates of this account and region ' +
      '(DescribeCertificate, UpdateCertificate, and AttachThingPrincipal/DetachThingPrincipal, which IAM authorizes against the certificate).',
    [`Resource::${iotArn}:thing/*`]: 'Thing names are device ids, only known at run time; the grant is limited to things of this account and region.',
    [`Resource::<${stack.getLogicalId(deviceTable.node.defaultChild as CfnElement)}.Arn>/index/*`]:
      'The indexes of the device table (ByStatus, ByExpiry), which the store queries to list devices by status and certificates by expiry.',
  };
  for (const [finding, reason] of Object.entries(reasons)) Validations.of(fn.executionRole).acknowledge({ id: `AwsSolutions-IAM5[${finding}]`, reason });
}

/** The ARN of an AWS Private CA template, e.g. `EndEntityClientAuthCertificate/V1`. */
export function privateCaTemplateArn(stack: Stack, template: string): string {
  return `arn:${stack.partition}:acm-pca:::template/${template}`;
}
