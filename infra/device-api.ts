import { Duration, type RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';
import { DEVICE_ID_PATTERN } from '../functions/core/device-id';
import { REVOCATION_REASONS } from '../functions/core/model';

export interface DeviceApiProps {
  readonly handler: IFunction;
  readonly apiName: string;
  readonly throttling: { readonly rateLimit: number; readonly burstLimit: number };
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /** A regional AWS WAFv2 web ACL to put in front of the stage. @default - none */
  readonly webAclArn?: string;
}

/** Every route of the device API, as the router in functions/handlers/api.ts knows them. */
export const DEVICE_API_ROUTES = [
  { method: 'POST', path: '/devices', body: 'CreateDevice' },
  { method: 'GET', path: '/devices' },
  { method: 'GET', path: '/devices/{deviceId}' },
  { method: 'POST', path: '/devices/{deviceId}/certificates', body: 'SignCsr' },
  { method: 'POST', path: '/devices/{deviceId}/certificates/{certificateId}/revoke', body: 'Revoke' },
  { method: 'POST', path: '/devices/{deviceId}/revoke', body: 'Revoke' },
  { method: 'POST', path: '/devices/{deviceId}/suspend' },
  { method: 'POST', path: '/devices/{deviceId}/resume' },
] as const;

type BodyModel = 'CreateDevice' | 'SignCsr' | 'Revoke';

/**
 * How long API Gateway waits for the API function: its REST API maximum (29 s). The function gets the same
 * timeout; its slowest step, waiting for AWS Private CA to issue, gives up after maxWaitMs = 15 000 ms
 * (functions/handlers/dependencies.ts) and answers UPSTREAM_FAILURE well before API Gateway would answer 504.
 */
export const API_INTEGRATION_TIMEOUT = Duration.seconds(29);

/** What API Gateway's own error answers say, in the handler's shape `{ error: { code, message } }`. */
export interface GatewayErrorResponse {
  readonly type: apigateway.ResponseType;
  readonly code: string;
  /** A fixed message; @default - API Gateway's own message (`$context.error.message`) */
  readonly message?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * API Gateway's answers that never reach the function: the specific ones, then DEFAULT_4XX and DEFAULT_5XX for
 * every other type. The codes are the handler's (functions/core/errors.ts) plus UNAUTHORIZED, FORBIDDEN and
 * INTERNAL_ERROR, which only these answers (and the 500 fallback) use.
 */
export const GATEWAY_ERROR_RESPONSES: readonly GatewayErrorResponse[] = [
  { type: apigateway.ResponseType.BAD_REQUEST_BODY, code: 'INVALID_REQUEST' },
  { type: apigateway.ResponseType.BAD_REQUEST_PARAMETERS, code: 'INVALID_REQUEST' },
  {
    type: apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN,
    code: 'UNAUTHORIZED',
    // API Gateway answers an unknown method or path the same way, signed or not.
    message: 'Sign the request with AWS Signature Version 4 (service execute-api), and check its method and path: an unknown route is answered this way too.',
  },
  { type: apigateway.ResponseType.INVALID_SIGNATURE, code: 'UNAUTHORIZED' },
  { type: apigateway.ResponseType.EXPIRED_TOKEN, code: 'UNAUTHORIZED' },
  { type: apigateway.ResponseType.UNAUTHORIZED, code: 'UNAUTHORIZED' },
  { type: apigateway.ResponseType.ACCESS_DENIED, code: 'FORBIDDEN' },
  { type: apigateway.ResponseType.WAF_FILTERED, code: 'FORBIDDEN', message: 'The request was blocked by the web ACL in front of this API.' },
  {
    type: apigateway.ResponseType.THROTTLED,
    code: 'UPSTREAM_THROTTLED',
    message: 'Too many requests to this API: retry in a few seconds, with the same Idempotency-Key.',
    headers: { 'Retry-After': '2' },
  },
  { type: apigateway.ResponseType.REQUEST_TOO_LARGE, code: 'PAYLOAD_TOO_LARGE', message: 'The request is larger than this API accepts.' },
  {
    type: apigateway.ResponseType.INTEGRATION_TIMEOUT,
    code: 'UPSTREAM_FAILURE',
    message: 'The request did not finish in time; retry later with the same Idempotency-Key.',
  },
  { type: apigateway.ResponseType.INTEGRATION_FAILURE, code: 'UPSTREAM_FAILURE', message: 'The request failed on our side; retry later with the same Idempotency-Key.' },
  { type: apigateway.ResponseType.DEFAULT_4XX, code: 'INVALID_REQUEST' },
  { type: apigateway.ResponseType.DEFAULT_5XX, code: 'INTERNAL_ERROR', message: 'The request failed on our side; it is safe to retry with the same Idempotency-Key.' },
];

/** The response template of a gateway error: valid JSON whatever API Gateway's message holds (`messageString` is JSON-quoted). */
export function gatewayErrorTemplate(response: Pick<GatewayErrorResponse, 'code' | 'message'>): string {
  const message = response.message === undefined ? '$context.error.messageString' : JSON.stringify(response.message);
  return `{"error":{"code":${JSON.stringify(response.code)},"message":${message}}}`;
}

/**
 * The device REST API: AWS_IAM (SigV4) authorization on every method, request validation
 * (path and query parameters, and JSON bodies against models that mirror the handler's own
 * checks), JSON access logs, stage throttling and X-Ray tracing; every route is proxied to
 * the one API function, which re-validates everything and answers with precise errors.
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
        stageName: 'v1',
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
    const models = this.models();
    const integration = new apigateway.LambdaIntegration(props.handler, { proxy: true, allowTestInvoke: false, timeout: API_INTEGRATION_TIMEOUT });
    for (const route of DEVICE_API_ROUTES) {
      const resource = this.restApi.root.resourceForPath(route.path);
      // true = required (API Gateway refuses the request without it), false = optional.
      const requestParameters: Record<string, boolean> = {};
      for (const match of route.path.matchAll(/\{(\w+)\}/g)) requestParameters[`method.request.path.${match[1]}`] = true;
      if (route.method === 'GET' && route.path === '/devices') {
        Object.assign(requestParameters, { 'method.request.querystring.status': true, 'method.request.querystring.limit': false, 'method.request.querystring.nextToken': false });
      }
      if (route.method === 'POST') requestParameters['method.request.header.Idempotency-Key'] = false;
      resource.addMethod(route.method, integration, {
        authorizationType: apigateway.AuthorizationType.IAM,
        requestValidator: validator,
        requestParameters,
        requestModels: 'body' in route ? { 'application/json': models[route.body] } : undefined,
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

  /** JSON schemas (draft 4) mirroring functions/handlers/http/requests.ts, from the same constants. */
  private models(): Record<BodyModel, apigateway.Model> {
    const model = (name: BodyModel, schema: apigateway.JsonSchema) =>
      this.restApi.addModel(name, { contentType: 'application/json', modelName: name, schema: { schema: apigateway.JsonSchemaVersion.DRAFT4, title: name, ...schema } });
    return {
      CreateDevice: model('CreateDevice', {
        type: apigateway.JsonSchemaType.OBJECT,
        required: ['deviceId'],
        additionalProperties: false,
        properties: {
          deviceId: { type: apigateway.JsonSchemaType.STRING, pattern: DEVICE_ID_PATTERN.source },
          attributes: { type: apigateway.JsonSchemaType.OBJECT, maxProperties: 3, additionalProperties: { type: apigateway.JsonSchemaType.STRING } },
        },
      }),
      SignCsr: model('SignCsr', {
        type: apigateway.JsonSchemaType.OBJECT,
        required: ['csr'],
        additionalProperties: false,
        properties: { csr: { type: apigateway.JsonSchemaType.STRING, minLength: 1 } },
      }),
      Revoke: model('Revoke', {
        type: apigateway.JsonSchemaType.OBJECT,
        required: ['reason'],
        additionalProperties: false,
        properties: { reason: { type: apigateway.JsonSchemaType.STRING, enum: [...REVOCATION_REASONS] } },
      }),
    };
  }
}
