import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiCallError, callApi } from '../../../local/cli/device';

/** A stand-in API that answers each request with the next of `answers` and records the Idempotency-Key it got. */
async function fakeApi(answers: readonly { status: number; code?: string }[]): Promise<{ url: string; keys: (string | undefined)[]; server: Server }> {
  const keys: (string | undefined)[] = [];
  let next = 0;
  const server = createServer((request: IncomingMessage, response) => {
    keys.push(request.headers['idempotency-key'] as string | undefined);
    const answer = answers[Math.min(next++, answers.length - 1)] as { status: number; code?: string };
    response.writeHead(answer.status, { 'Content-Type': 'application/json', 'Retry-After': '0' });
    response.end(JSON.stringify(answer.code ? { error: { code: answer.code, message: 'still running' } } : { deviceId: 'd-1' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, keys, server };
}

describe('callApi (the CLI and e2e client of the device API)', () => {
  let api: Awaited<ReturnType<typeof fakeApi>> | undefined;
  afterEach(async () => {
    await new Promise((resolve) => api?.server.close(resolve));
  });

  test('sends a POST again with the same Idempotency-Key while the API answers 409 REQUEST_IN_PROGRESS', async () => {
    api = await fakeApi([{ status: 409, code: 'REQUEST_IN_PROGRESS' }, { status: 409, code: 'REQUEST_IN_PROGRESS' }, { status: 201 }]);

    const answer = await callApi(api.url, 'token', 'POST', '/devices', { deviceId: 'd-1' });

    expect(answer).toEqual({ status: 201, body: { deviceId: 'd-1' } });
    expect(api.keys).toHaveLength(3);
    expect(new Set(api.keys).size).toBe(1);
    expect(api.keys[0]).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('gives up after a bounded number of attempts, and never retries another conflict', async () => {
    api = await fakeApi([{ status: 409, code: 'REQUEST_IN_PROGRESS' }]);
    await expect(callApi(api.url, 'token', 'POST', '/devices', { deviceId: 'd-1' })).rejects.toMatchObject({ status: 409 });
    expect(api.keys).toHaveLength(9);

    await new Promise((resolve) => api?.server.close(resolve));
    api = await fakeApi([{ status: 409, code: 'DEVICE_EXISTS' }]);
    const error = await callApi(api.url, 'token', 'POST', '/devices', { deviceId: 'd-1' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ApiCallError);
    expect(api.keys).toHaveLength(1);
  });
});
