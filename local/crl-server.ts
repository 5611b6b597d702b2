import { createServer, type Server } from 'node:http';
import { escaped } from './log-text';
import { listen, runningHttpServer } from './listen';

export interface CrlServerOptions {
  readonly host: string;
  /** 0: any free port. */
  readonly port: number;
  /** A fresh CRL, PEM. */
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
 * certificate at `/ca.pem` and `/ca` (DER). No token: a CRL and a CA certificate are public.
 */
export async function startCrlServer(options: CrlServerOptions): Promise<CrlServer> {
  const server: Server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://localhost').pathname;
    void (async () => {
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        response.writeHead(405, { Allow: 'GET, HEAD' }).end();
        return;
      }
      let body: string | Buffer;
      let type: string;
      switch (path) {
        case '/crl.pem':
          [body, type] = [await options.crlPem(), 'application/x-pem-file'];
          break;
        case '/crl':
          [body, type] = [pemToDer(await options.crlPem()), 'application/pkix-crl'];
          break;
        case '/ca.pem':
          [body, type] = [await options.caPem(), 'application/x-pem-file'];
          break;
        case '/ca':
          [body, type] = [pemToDer(await options.caPem()), 'application/pkix-cert'];
          break;
        default:
          response.writeHead(404, { 'Content-Type': 'text/plain' }).end('Not found: try /crl, /crl.pem, /ca or /ca.pem\n');
          return;
      }
      response.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache' });
      response.end(request.method === 'HEAD' ? undefined : body);
    })().catch((error: unknown) => {
      options.log(`[crl] ${escaped(path)} failed: ${escaped((error as Error).message)}`);
      if (!response.headersSent) response.writeHead(500).end();
      else response.destroy();
    });
  });
  const port = await listen(server, options.port, options.host);
  return runningHttpServer(server, options.host, port);
}

/** The DER of the first PEM block. */
export function pemToDer(pem: string): Buffer {
  const match = /-----BEGIN [A-Z0-9 ]+-----([\s\S]+?)-----END [A-Z0-9 ]+-----/.exec(pem);
  if (!match) throw new Error('not PEM');
  return Buffer.from((match[1] as string).replace(/\s+/g, ''), 'base64');
}
