import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { DeviceLifecycle, randomIds, type LifecycleSettings } from '../../functions/core/lifecycle';
import { systemClock } from '../../functions/core/ports';
import { IotDeviceRegistry } from '../../functions/adapters/aws/iot-device-registry';
import { PrivateCaCertificateAuthority } from '../../functions/adapters/aws/private-ca-certificate-authority';
import { createApiHandler } from '../../functions/handlers/api';
import { matchPath } from '../../functions/handlers/http/routes';
import { createJitrHandler } from '../../functions/handlers/jitr';
import { createTestTable, type TestTable } from './dynamodb';
import { CA_ARN, createFakeAws, type FakeAws } from './fake-aws';

/**
 * What API Gateway sends: the resource template the route table matches and the decoded path parameters. A path no
 * route serves is never proxied in AWS (API Gateway answers it); here it goes to the handler as `/{proxy+}` would.
 */
function asApiGatewayRoute(method: string, path: string): { resource: string; pathParameters: Record<string, string> | null } {
  const matched = matchPath(method, path);
  if (matched === undefined) return { resource: '/{proxy+}', pathParameters: { proxy: path.slice(1) } };
  const names = Object.keys(matched.pathParameters);
  return { resource: matched.route.resource, pathParameters: names.length ? Object.fromEntries(Object.entries(matched.pathParameters).map(([name, value]) => [name, decodeURIComponent(value)])) : null };
}

/** What Lambda passes to the handler. */
const lambdaContext = { getRemainingTimeInMillis: () => 30_000, functionName: 'device-api', awsRequestId: 'test' } as unknown as Context;

export interface ApiHarness {
  readonly aws: FakeAws;
  readonly table: TestTable;
  readonly lifecycle: DeviceLifecycle;
  readonly api: ReturnType<typeof createApiHandler>;
  readonly jitr: ReturnType<typeof createJitrHandler>;
  call(method: 'GET' | 'POST', path: string, options?: { body?: unknown; rawBody?: string; headers?: Record<string, string>; query?: Record<string, string>; caller?: string }): Promise<{ status: number; body: any; raw: APIGatewayProxyResult }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  close(): Promise<void>;
}

/** The real handlers, core, adapters and DynamoDB Local, with AWS IoT and Private CA answered by `createFakeAws`. */
export async function createApiHarness(settings: Partial<LifecycleSettings> = {}): Promise<ApiHarness> {
  const aws = await createFakeAws();
  const table = await createTestTable();
  const lifecycle = new DeviceLifecycle(
    {
      store: table.store,
      registry: new IotDeviceRegistry({ client: aws.iotClient, thingGroupName: 'fleet', policyAttachment: 'THING_GROUP', certificateRegistration: 'WITH_CA' }),
      ca: new PrivateCaCertificateAuthority({ client: aws.pcaClient, certificateAuthorityArn: CA_ARN, signingAlgorithm: 'SHA256WITHECDSA', sleep: async () => undefined }),
      clock: systemClock,
      ids: randomIds,
    },
    settings,
  );
  const silent = { info: () => undefined, error: () => undefined, addContext: () => undefined } as never;
  const api = createApiHandler({ lifecycle, clock: systemClock, logger: silent });
  const jitr = createJitrHandler({ lifecycle, logger: silent });
  return {
    aws,
    table,
    lifecycle,
    api,
    jitr,
    call: async (method, path, options = {}) => {
      const { resource, pathParameters } = asApiGatewayRoute(method, path);
      const event = {
        httpMethod: method,
        path,
        resource,
        headers: { 'Content-Type': 'application/json', ...options.headers },
        multiValueHeaders: {},
        queryStringParameters: options.query ?? null,
        multiValueQueryStringParameters: null,
        pathParameters,
        stageVariables: null,
        body: options.rawBody ?? (options.body === undefined ? null : JSON.stringify(options.body)),
        isBase64Encoded: false,
        requestContext: { requestId: randomUUID(), identity: { userArn: options.caller ?? 'arn:aws:iam::123456789012:role/backend' } },
      } as unknown as APIGatewayProxyEvent;
      const raw = await api(event, lambdaContext);
      return { status: raw.statusCode, body: JSON.parse(raw.body), raw };
    },
    close: async () => {
      aws.restore();
      await table.drop();
    },
  };
}
