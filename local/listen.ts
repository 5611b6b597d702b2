import { STATUS_CODES, type Server as HttpServer } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import { errorBody, type ApiErrorCode } from '../functions/handlers/http/errors';

/** Starts `server` listening and answers the port it got (the one asked for, or a free one for 0). */
export async function listen(server: NetServer, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return typeof address === 'object' && address ? address.port : port;
}

/** A listening HTTP server as the local mode hands it around: where it is, and how to stop it. */
export function runningHttpServer(server: HttpServer, host: string, port: number) {
  return {
    port,
    url: `http://${host}:${port}`,
    stop: async (): Promise<void> => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
    },
  };
}

/** Node's own answers to requests it cannot parse, and the code and message each gets instead. */
const CLIENT_ERRORS: Readonly<Record<string, { readonly status: number; readonly code: ApiErrorCode; readonly message: string }>> = {
  HPE_HEADER_OVERFLOW: { status: 431, code: 'PAYLOAD_TOO_LARGE', message: 'The request headers are too large.' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'The chunk extensions of the request body are too large.' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'INVALID_REQUEST', message: 'The request did not arrive in time.' },
};
const MALFORMED = { status: 400, code: 'INVALID_REQUEST', message: 'The request is not valid HTTP/1.1.' } as const;

/**
 * Answers the requests Node's HTTP parser refuses (malformed, headers too large, too slow) with the API's
 * error body `{"error":{"code","message"}}` instead of Node's bare 400/408/413/431, then closes the
 * connection. Nothing of the request goes into the answer or the log: it may hold a token.
 */
export function answerClientErrorsWithJson(server: HttpServer, label: string, log: (message: string) => void): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const code = error.code ?? '';
    // A client that hung up, or a response already under way on this connection, cannot take an answer.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const answer = CLIENT_ERRORS[code] ?? MALFORMED;
    const body = JSON.stringify(errorBody(answer.code, answer.message));
    log(`[${label}] ${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}: request Node could not parse (${code || 'unknown error'}) → ${answer.status}`);
    socket.end(
      [
        `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}`,
        'Content-Type: application/json',
        'Cache-Control: no-store',
        `Content-Length: ${Buffer.byteLength(body)}`,
        'Connection: close',
        '',
        body,
      ].join('\r\n'),
    );
  });
}
