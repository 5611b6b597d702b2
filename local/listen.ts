import type { Server as HttpServer } from 'node:http';
import type { Server as NetServer } from 'node:net';

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
