import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { GATEWAY_ERRORS, gatewayErrorTemplate, type GatewayError } from '../functions/handlers/http/errors';
import { REQUEST_BODIES, requestJsonSchema, type RequestBodyName } from '../functions/handlers/http/requests';
import { API_ROUTES, API_STAGE, pathParameterNames, takesIdempotencyKey, type ApiRoute } from '../functions/handlers/http/routes';

export interface DeviceApiProps {
  readonly handler: IFunction;
  readonly apiName: string;
  readonly throttling: { readonly rateLimit: number; readonly burstLimit: number };
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /** A regional AWS WAFv2 web ACL to put in front of the stage. @default - none */
  readonly webAclArn?: string;
}

/** Every route of the device API: the route table the function's router serves (functions/handlers/http/routes.ts). */
export const DEVICE_API_ROUTES: readonly ApiRoute[] = API_ROUTES;

/**
 * How long API Gateway waits for the API function: its REST API maximum (29 s). The function gets the same
 * timeout; its slowest step, waiting for AWS Private CA to issue, gives up well before (test/infra/function-wiring.test.ts
 * checks the margin) and answers UPSTREAM_FAILURE before API Gateway would answer 504.
 */
export const API_INTEGRATION_TIMEOUT = Duration.seconds(29);

/** One of API Gateway's own error answers (functions/handlers/http/errors.ts `GATEWAY_ERRORS`), with its CDK response type. */
export interface GatewayErrorResponse extends Omit<GatewayError, 'type'> {
  readonly type: apigateway.ResponseType;
}

/** API Gateway's answers that never reach the function, from the API's error catalogue. */
export const GATEWAY_ERROR_RESPONSES: readonly GatewayErrorResponse[] = GATEWAY_ERRORS.map((gatewayError) => ({ ...gatewayError, type: apigateway.ResponseType.of(gatewayError.type) }));

/**
 * The device REST API: AWS_IAM (SigV4) authorization on every method, request validation
 * (path and query parameters, and JSON bodies against models built from the zod schemas the
 * handler validates with), JSON access logs, stage throttling and X-Ray tracing; every route of
 * the route table is proxied to the one API function, which re-validates everything and answers
 * with precise errors.
 */
export class DeviceApi extends Construct {
  public readonly restApi: apigateway.RestApi;

  public constructor(scope: Construct, id: string, props: DeviceApiProps) {
    super(scope, id);
    const accessLogs = new LogGroup(this, 'AccessLogs', { retention: props.logRetention, removalPolicy: props.removalPolicy });
    this.restApi = new apigateway.RestApi(this, 'Resource', {
      restApiName: props.apiName,
      description: 'Device certificate lifecycle API (AWS_IAM auth)',
      endpointTypes: [apigateway.EndpointType.REGIONAL],
      // Execution logging needs the account-level CloudWatch role; CDK keeps it on delete (other APIs may use it).
      cloudWatchRole: true,
      deployOptions: {
        stageName: API_STAGE,
        accessLogDestination: new apigateway.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigateway.AccessLogFormat.jsonWithStandardFields(),
        loggingLevel: apigateway.MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        tracingEnabled: true,
        throttlingRateLimit: props.throttling.rateLimit,
        throttlingBurstLimit: props.throttling.burstLimit,
      },
      defaultMethodOptions: { authorizationType: apigateway.AuthorizationType.IAM },
    });

    // API Gateway's own answers (auth, throttling, validation, timeouts) in the shape the handler uses: { error: { code, message } }.
    for (const response of GATEWAY_ERROR_RESPONSES) {
      this.restApi.addGatewayResponse(response.type.responseType, {
        type: response.type,
        responseHeaders: { 'Content-Type': "'application/json'", 'Cache-Control': "'no-store'", ...Object.fromEntries(Object.entries(response.headers ?? {}).map(([name, value]) => [name, `'${value}'`])) },
        templates: { 'application/json': gatewayErrorTemplate(response) },
      });
    }

    const validator = this.restApi.addRequestValidator('Validator', { validateRequestBody: true, validateRequestParameters: true });
    // One model per body the routes take, named after it (a body shared by two routes is one model).
    const bodies = [...new Set(API_ROUTES.flatMap((route) => (route.body === undefined ? [] : [route.body])))];
    const models = new Map(bodies.map((name) => [name, this.model(name)] as const));
    const integration = new apigateway.LambdaIntegration(props.handler, { proxy: true, allowTestInvoke: false, timeout: API_INTEGRATION_TIMEOUT });
    for (const route of API_ROUTES) {
      const resource = this.restApi.root.resourceForPath(route.resource);
      resource.addMethod(route.method, integration, {
        authorizationType: apigateway.AuthorizationType.IAM,
        requestValidator: validator,
        requestParameters: requestParametersOf(route),
        requestModels: route.body !== undefined ? { 'application/json': models.get(route.body) as apigateway.Model } : undefined,
      });
    }

    if (props.webAclArn) {
      new wafv2.CfnWebACLAssociation(this, 'WebAcl', { resourceArn: this.restApi.deploymentStage.stageArn, webAclArn: props.webAclArn });
    } else {
      Validations.of(this.restApi).acknowledge({
        id: 'AwsSolutions-APIG3',
        reason: 'Every method requires SigV4 (AWS_IAM) credentials of the calling backend and the stage is throttled; pass webAclArn (context value webAclArn) to put an AWS WAF web ACL in front as well.',
      });
    }
    Validations.of(this.restApi).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      reason: 'The account-level role API Gateway uses to write execution logs; AmazonAPIGatewayPushToCloudWatchLogs is the policy AWS documents for it, and the log groups it writes are created by API Gateway at run time.',
    });
    Validations.of(this.restApi).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: 'The callers are backend services with AWS credentials: every method uses AWS_IAM (SigV4) authorization instead of a Cognito user pool.',
    });
  }

  /** The model (JSON schema draft 4) of a request body, from the zod schema the handler validates it with. */
  private model(name: RequestBodyName): apigateway.Model {
    const schema = requestJsonSchema(REQUEST_BODIES[name], 'draft-4') as apigateway.JsonSchema;
    return this.restApi.addModel(name, { contentType: 'application/json', modelName: name, schema: { schema: apigateway.JsonSchemaVersion.DRAFT4, title: name, ...schema } });
  }
}

/** What API Gateway checks before proxying (true = required: refused without it; false = optional): path, query and Idempotency-Key. */
function requestParametersOf(route: ApiRoute): Record<string, boolean> {
  const requestParameters: Record<string, boolean> = {};
  for (const name of pathParameterNames(route.resource)) requestParameters[`method.request.path.${name}`] = true;
  if (route.query !== undefined) {
    const query = requestJsonSchema(route.query, 'draft-4');
    const required = (query.required ?? []) as string[];
    for (const name of Object.keys((query.properties ?? {}) as Record<string, unknown>)) requestParameters[`method.request.querystring.${name}`] = required.includes(name);
  }
  if (takesIdempotencyKey(route)) requestParameters['method.request.header.Idempotency-Key'] = false;
  return requestParameters;
}
