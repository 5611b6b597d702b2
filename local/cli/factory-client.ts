import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { signRequest, type CredentialSource } from './factory-sigv4';

/**
 * The device API as a factory line calls it: a POST with an Idempotency-Key, authorized either with AWS
 * SigV4 (the deployed API, IAM authorization) or with the local mode's bearer token. Answers are classified
 * once, here: done, retry with the same key (throttled, busy, upstream failure), or a final refusal.
 */

export type ApiAuth =
  /** The local mode's `Authorization: Bearer <token>`. */
  | { readonly kind: 'token'; readonly token: string }
  /** AWS Signature Version 4, service `execute-api`. */
  | { readonly kind: 'sigv4'; readonly region: string; readonly credentials: CredentialSource; readonly now?: () => Date };

export interface ApiAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body, or the text when it is not JSON. */
  readonly body: unknown;
}

/** The API's error code (`{"error":{"code","message"}}`), or undefined for another body. */
export function errorOf(answer: ApiAnswer): { code?: string; message?: string } {
  const error = (answer.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  return {
    ...(typeof error?.code === 'string' ? { code: error.code } : {}),
    ...(typeof error?.message === 'string' ? { message: error.message } : typeof answer.body === 'string' && answer.body !== '' ? { message: answer.body.slice(0, 300) } : {}),
  };
}

export type AnswerClass =
  | 'DONE'
  /** Safe to send again with the same Idempotency-Key: throttled, the same key still running, a race, an upstream failure. */
  | 'RETRY'
  /** The caller's credentials or token were refused: every other request would be too. */
  | 'UNAUTHORIZED'
  /** A final refusal of this request (bad CSR, unknown device, a state that does not allow it, ...). */
  | 'REFUSED';

const RETRYABLE_CONFLICTS: ReadonlySet<string> = new Set(['REQUEST_IN_PROGRESS', 'CONFLICT']);

export function classify(answer: ApiAnswer): AnswerClass {
  const { status } = answer;
  if (status >= 200 && status < 300) return 'DONE';
  if (status === 401 || (status === 403 && errorOf(answer).code !== 'ENROLLMENT_REFUSED')) return 'UNAUTHORIZED';
  if (status === 429 || status >= 500) return 'RETRY'; // 500s included: every POST is idempotent under its key
  if (status === 409 && RETRYABLE_CONFLICTS.has(errorOf(answer).code ?? '')) return 'RETRY';
  return 'REFUSED';
}

/** How long the API asks to wait (`Retry-After` in seconds), if it says. */
export function retryAfterMs(answer: ApiAnswer): number | undefined {
  const value = answer.headers['retry-after'];
  const seconds = Number(Array.isArray(value) ? value[0] : value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** The request never got an HTTP answer. `unreachable`: nothing listens there (or no such host); retrying will not help. */
export class ApiNetworkError extends Error {
  public override readonly name = 'ApiNetworkError';
  public constructor(
    message: string,
    public readonly unreachable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const UNREACHABLE_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN']);

export interface DeviceApiClientOptions {
  /** The API's base URL: the deployed stack's `ApiUrl` output (`https://<id>.execute-api.<region>.amazonaws.com/v1/`) or the local mode's. */
  readonly apiUrl: URL;
  readonly auth: ApiAuth;
  /** Per request. @default 35_000 (API Gateway gives up after 29 s) */
  readonly timeoutMs?: number;
}

export class DeviceApiClient {
  private readonly basePath: string;

  public constructor(private readonly options: DeviceApiClientOptions) {
    this.basePath = options.apiUrl.pathname.replace(/\/+$/, '');
  }

  public get apiUrl(): URL {
    return this.options.apiUrl;
  }

  public get authKind(): ApiAuth['kind'] {
    return this.options.auth.kind;
  }

  /** The URL of an API path such as `/devices/sensor-1/certificates` (its parts already encoded). */
  public urlOf(path: string): URL {
    return new URL(`${this.options.apiUrl.origin}${this.basePath}${path}`);
  }

  /** POSTs a JSON body with an Idempotency-Key; answers whatever HTTP status came back. */
  public async post(path: string, body: unknown, idempotencyKey: string): Promise<ApiAnswer> {
    const url = this.urlOf(path);
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json', 'idempotency-key': idempotencyKey };
    const { auth } = this.options;
    const sent =
      auth.kind === 'token'
        ? { ...headers, host: url.host, authorization: `Bearer ${auth.token}` }
        : await signRequest({ method: 'POST', url, headers, body: text }, { credentials: auth.credentials, region: auth.region, ...(auth.now ? { now: auth.now } : {}) });
    return send(url, 'POST', { ...sent, 'content-length': String(Buffer.byteLength(text)), 'user-agent': 'iotcert-factory' }, text, this.options.timeoutMs ?? 35_000);
  }
}

function send(url: URL, method: string, headers: Record<string, string>, body: string, timeoutMs: number): Promise<ApiAnswer> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method, headers, timeout: timeoutMs }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => reject(new ApiNetworkError(`the answer from ${url.host} was cut short: ${error.message}`, false, { cause: error })));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text === '' ? '' : JSON.parse(text);
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: parsed });
      });
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    outgoing.on('error', (error: NodeJS.ErrnoException) => {
      const unreachable = UNREACHABLE_CODES.has(error.code ?? '');
      reject(new ApiNetworkError(`${method} ${url.href}: ${error.code ? `${error.code} ` : ''}${error.message}`, unreachable, { cause: error }));
    });
    outgoing.end(body);
  });
}

/**
 * Spaces the start of requests out to at most `perSecond` a second, across every worker (the API stage's
 * throttling counts requests per second for the whole stage). `0`: no pacing.
 */
export class RequestPacer {
  private next = 0;

  public constructor(
    private readonly perSecond: number,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    private readonly now: () => number = Date.now,
  ) {}

  public async take(): Promise<void> {
    if (this.perSecond <= 0) return;
    const interval = 1000 / this.perSecond;
    const at = Math.max(this.now(), this.next);
    this.next = at + interval;
    const wait = at - this.now();
    if (wait > 0) await this.sleep(wait);
  }
}
