import { createServer, type Server, type ServerResponse } from 'node:http';
import { errorBody, type ApiErrorCode } from '../functions/handlers/http/errors';
import { escaped } from './log-text';
import { answerClientErrorsWithJson, listen, runningHttpServer } from './listen';

export interface CrlServerOptions {
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
  /** The current CRL, PEM: the CA signs it once per change and hands the same string back until the next (the server converts each PEM to DER once). */
  readonly crlPem: () => Promise<string>;
  /** The CA certificate, PEM. */
  readonly caPem: () => Promise<string>;
  readonly log: (message: string) => void;
}

export interface CrlServer {
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Publishes the software CA's CRL over plain HTTP (as AWS Private CA publishes to S3), where the
 * certificates' CRL distribution point says: `/crl` (DER, RFC 5280) and `/crl.pem`; also the CA
 * certificate at `/ca.pem` and `/ca` (DER). No token: a CRL and a CA certificate are public, so serving
 * them costs no signature: the CA signs a CRL once per change, and each PEM is decoded to DER once.
 * Errors answer in the API's JSON error shape.
 */
export async function startCrlServer(options: CrlServerOptions): Promise<CrlServer> {
  const crlDer = lastDerOf();
  const caDer = lastDerOf();
  const server: Server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    void (async () => {
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        sendError(response, 405, 'METHOD_NOT_ALLOWED', `${request.method ?? '?'} is not allowed here: use GET or HEAD.`, { Allow: 'GET, HEAD' });
        return;
      }
      let body: string | Buffer;
      let type: string;
      switch (path) {
        case '/crl.pem':
          [body, type] = [await options.crlPem(), 'application/x-pem-file'];
          break;
        case '/crl':
          [body, type] = [crlDer(await options.crlPem()), 'application/pkix-crl'];
          break;
        case '/ca.pem':
          [body, type] = [await options.caPem(), 'application/x-pem-file'];
          break;
        case '/ca':
          [body, type] = [caDer(await options.caPem()), 'application/pkix-cert'];
          break;
        default:
          sendError(response, 404, 'ROUTE_NOT_FOUND', 'Not found: try /crl, /crl.pem, /ca or /ca.pem.');
          return;
      }
      response.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache' });
      response.end(request.method === 'HEAD' ? undefined : body);
    })().catch((error: unknown) => {
      options.log(`[crl] ${escaped(path)} failed: ${escaped((error as Error).message)}`);
      if (!response.headersSent) sendError(response, 500, 'INTERNAL_ERROR', 'The CRL could not be served.');
      else response.destroy();
    });
  });
  answerClientErrorsWithJson(server, 'crl', options.log);
  const port = await listen(server, options.port, options.host);
  return runningHttpServer(server, options.host, port);
}

function sendError(response: ServerResponse, status: number, code: ApiErrorCode, message: string, headers: Readonly<Record<string, string>> = {}): void {
  const body = JSON.stringify(errorBody(code, message));
  response.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers }).end(body);
}

/** `pemToDer`, remembering the last PEM it decoded: the CA hands back the same PEM until its CRL changes. */
function lastDerOf(): (pem: string) => Buffer {
  let last: { readonly pem: string; readonly der: Buffer } | undefined;
  return (pem) => {
    if (last?.pem !== pem) last = { pem, der: pemToDer(pem) };
    return last.der;
  };
}

/** The DER of the first PEM block. */
export function pemToDer(pem: string): Buffer {
  const match = /-----BEGIN [A-Z0-9 ]+-----([\s\S]+?)-----END [A-Z0-9 ]+-----/.exec(pem);
  if (!match) throw new Error('not PEM');
  return Buffer.from((match[1] as string).replace(/\s+/g, ''), 'base64');
}
