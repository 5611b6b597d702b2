import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { ERROR_MESSAGES } from '../functions/handlers/http/errors';
import { apiErrorResponse } from '../functions/handlers/http/responses';
import { matchPath } from '../functions/handlers/http/routes';
import { lambdaContext } from './lambda-context';
import { escaped } from './log-text';
import { answerClientErrorsWithJson, listen, runningHttpServer } from './listen';

/** The caller the handler sees (API Gateway's `requestContext.identity.userArn`): whoever holds the local token. */
export const LOCAL_API_CALLER = 'local-api-token';
/** API Gateway's own payload limit is 10 MB; the handler refuses anything over 64 KiB itself. */
const MAX_REQUEST_BYTES = 1024 * 1024;

export interface ApiServerOptions {
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
  readonly token: string;
  /** The Lambda handler, called with API Gateway (REST, proxy integration) events. */
  readonly handler: (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;
  /** The function's timeout, for the context's remaining time. @default 29000 (API Gateway's own limit) */
  readonly timeoutMs?: number;
  readonly log: (message: string) => void;
}

export interface ApiServer {
  readonly port: number;
  readonly url: string;
  /** Stops accepting and waits for the requests in flight. */
  stop(): Promise<void>;
}

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

/** Constant-time check of `Authorization: Bearer <token>`. */
export function isAuthorized(authorization: string | undefined, token: string): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return match !== null && timingSafeEqual(sha256(match[1] as string), sha256(token));
}

/** The resource template and path parameters (still percent-encoded) API Gateway would match `path` with, from the route table. */
export function matchResource(method: string, path: string): { resource: string; pathParameters: Record<string, string> | null } {
  const matched = matchPath(method, path);
  if (matched === undefined) return { resource: path, pathParameters: null };
  return { resource: matched.route.resource, pathParameters: Object.keys(matched.pathParameters).length === 0 ? null : { ...matched.pathParameters } };
}

/** An API Gateway REST API proxy event for one HTTP request. */
export function toApiGatewayEvent(request: { method: string; url: string; headers: IncomingMessage['headers']; body: string }): APIGatewayProxyEvent {
  const url = new URL(request.url, 'http://localhost');
  const headers: Record<string, string> = {};
  const multiValueHeaders: Record<string, string[]> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value === undefined) continue;
    const values = Array.isArray(value) ? value : [value];
    headers[name] = values.join(',');
    multiValueHeaders[name] = values;
  }
  const query: Record<string, string> = {};
  const multiQuery: Record<string, string[]> = {};
  for (const [name, value] of url.searchParams) {
    query[name] = value; // API Gateway keeps the last value
    (multiQuery[name] ??= []).push(value);
  }
  const hasQuery = Object.keys(query).length > 0;
  const path = url.pathname; // still percent-encoded: the handler decodes path parameters itself
  const { resource, pathParameters } = matchResource(request.method, path);
  const requestId = randomUUID();
  const now = new Date();
  return {
    httpMethod: request.method,
    path,
    resource,
    headers,
    multiValueHeaders,
    queryStringParameters: hasQuery ? query : null,
    multiValueQueryStringParameters: hasQuery ? multiQuery : null,
    pathParameters: pathParameters && Object.fromEntries(Object.entries(pathParameters).map(([name, value]) => [name, safeDecode(value)])),
    stageVariables: null,
    body: request.body === '' ? null : request.body,
    isBase64Encoded: false,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      authorizer: null,
      protocol: 'HTTP/1.1',
      httpMethod: request.method,
      path,
      stage: 'local',
      requestId,
      requestTimeEpoch: now.getTime(),
      resourceId: 'local',
      resourcePath: resource,
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: null,
        caller: LOCAL_API_CALLER,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: '127.0.0.1',
        user: LOCAL_API_CALLER,
        userAgent: headers['user-agent'] ?? null,
        userArn: LOCAL_API_CALLER,
      },
    },
  };
}

/**
 * A request's target as it goes into a log line: its path, escaped, and never its query string, which
 * may carry a token (`?access_token=...`) or other secrets a caller put there by mistake.
 */
export function loggedTarget(url: string | undefined): string {
  const target = url ?? '';
  const queryAt = target.search(/[?#]/);
  let path = queryAt === -1 ? target : target.slice(0, queryAt);
  // An absolute-form target (`POST http://user:secret@host/devices`) carries credentials in its authority.
  if (!path.startsWith('/')) {
    try {
      path = new URL(path).pathname;
    } catch {
      path = '?';
    }
  }
  return `${escaped(path)}${queryAt === -1 ? '' : '?…'}`;
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** Writes a handler's result, or one of the server's own error answers (built the same way). */
function send(response: ServerResponse, result: APIGatewayProxyResult): void {
  const headers: Record<string, string | string[]> = { ...(result.headers as Record<string, string> | undefined) };
  for (const [name, values] of Object.entries(result.multiValueHeaders ?? {})) headers[name] = values.map(String);
  response.writeHead(result.statusCode, headers);
  response.end(result.isBase64Encoded ? Buffer.from(result.body, 'base64') : result.body);
}

async function readBody(request: IncomingMessage): Promise<string | 'TOO_LARGE'> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_REQUEST_BYTES) return 'TOO_LARGE';
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The device API on `node:http`: each request becomes the API Gateway event the same Lambda handler
 * receives in AWS, and its result becomes the response. Instead of SigV4 (IAM), the local mode asks
 * for the bearer token it generated (`.local/api-token`).
 */
export async function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const server: Server = createServer((request, response) => {
    const started = Date.now();
    const method = request.method ?? 'GET';
    void (async () => {
      if (!isAuthorized(request.headers.authorization, options.token)) {
        send(response, apiErrorResponse('UNAUTHORIZED', ERROR_MESSAGES.localTokenMissing, { headers: { 'WWW-Authenticate': 'Bearer realm="iotcert-local"' } }));
        options.log(`[api] ${escaped(method)} ${loggedTarget(request.url)} → 401 (no or wrong token)`);
        return;
      }
      const body = await readBody(request);
      if (body === 'TOO_LARGE') {
        send(response, apiErrorResponse('PAYLOAD_TOO_LARGE', ERROR_MESSAGES.bodyTooLarge(MAX_REQUEST_BYTES), { headers: { Connection: 'close' } }));
        return;
      }
      const event = toApiGatewayEvent({ method, url: request.url ?? '/', headers: request.headers, body });
      const result = await options.handler(event, lambdaContext('iotcert-local-api', event.requestContext.requestId, options.timeoutMs ?? 29_000));
      send(response, result);
      options.log(`[api] ${escaped(method)} ${loggedTarget(request.url)} → ${result.statusCode} (${Date.now() - started} ms)`);
    })().catch((error: unknown) => {
      options.log(`[api] ${escaped(method)} ${loggedTarget(request.url)} failed: ${escaped((error as Error).message)}`);
      if (!response.headersSent) send(response, apiErrorResponse('INTERNAL_ERROR', ERROR_MESSAGES.localServerFailed));
      else response.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  answerClientErrorsWithJson(server, 'api', options.log);
  const port = await listen(server, options.port, options.host);
  return runningHttpServer(server, options.host, port);
}
