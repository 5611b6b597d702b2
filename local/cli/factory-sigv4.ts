import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, Provider } from '@smithy/types';

/**
 * AWS Signature Version 4 for the device API in AWS (API Gateway with AWS_IAM authorization, service
 * `execute-api`). The signing itself is the AWS SDK's own signer (`@smithy/signature-v4`); this module only
 * builds the request it signs from what is actually sent (method, host with its port, encoded path, body),
 * so the signature covers the bytes on the wire.
 */

/** The signing name of API Gateway's invoke endpoint. */
export const EXECUTE_API_SERVICE = 'execute-api';

export type AwsCredentials = AwsCredentialIdentity;
export type CredentialSource = AwsCredentials | Provider<AwsCredentials>;

export interface SigV4Options {
  readonly credentials: CredentialSource;
  readonly region: string;
  /** @default 'execute-api' */
  readonly service?: string;
  /** The signing time. @default - now */
  readonly now?: () => Date;
  /**
   * Send the body's SHA-256 as `x-amz-content-sha256` (and sign it). API Gateway does not need the header,
   * but the signature covers the body either way (the canonical request ends with the body's hash).
   * @default true
   */
  readonly contentSha256Header?: boolean;
}

/** A request about to be sent, as it will go on the wire. */
export interface OutgoingRequest {
  readonly method: string;
  readonly url: URL;
  /** Header names in lower case. `host` is set from the URL. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
}

/**
 * Answers the headers to send: the given ones plus `host`, `x-amz-date`, `authorization` (and
 * `x-amz-content-sha256`, `x-amz-security-token` when they apply).
 */
export async function signRequest(request: OutgoingRequest, options: SigV4Options): Promise<Record<string, string>> {
  const signer = new SignatureV4({
    credentials: options.credentials,
    region: options.region,
    service: options.service ?? EXECUTE_API_SERVICE,
    sha256: Sha256,
    // Every AWS service but S3 signs the path URI-encoded once more; `url.pathname` is already encoded once.
    uriEscapePath: true,
    applyChecksum: options.contentSha256Header ?? true,
  });
  const { url } = request;
  const query: Record<string, string> = {};
  for (const [name, value] of url.searchParams) query[name] = value;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers ?? {})) headers[name.toLowerCase()] = value;
  headers.host = url.host; // with the port when it is not the scheme's default: what node:http sends
  const signed = await signer.sign(
    {
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query,
      headers,
      ...(request.body === undefined ? {} : { body: request.body }),
    },
    { signingDate: (options.now ?? (() => new Date()))() },
  );
  return { ...(signed.headers as Record<string, string>) };
}

/**
 * The default AWS credential chain (environment, SSO, web identity, shared config and credentials files,
 * container and instance metadata), loaded only when a request is to be signed.
 */
export async function defaultCredentialChain(): Promise<Provider<AwsCredentials>> {
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  return defaultProvider();
}

/** The Region in an `https://<api-id>.execute-api.<region>.amazonaws.com[.cn]/...` URL, if it is one. */
export function regionOfApiUrl(url: URL): string | undefined {
  return /^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(url.hostname)?.[1];
}
