import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildLambdaBundle } from '../../scripts/build-lambda-bundles';

/*
 * The lean build (infra/lambda-bundle-plugin.ts) changes which copy of each SDK package a client runs on and replaces
 * the credential chain: this runs a bundle built that way in a fresh node, against a local stand-in for the three AWS
 * APIs, and checks each client signs with the environment's credentials and reads the answer.
 */

const run = promisify(execFile);
const ENVIRONMENT_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'AKIDENVIRONMENT', AWS_SECRET_ACCESS_KEY: 'environment-secret', AWS_SESSION_TOKEN: 'environment-token', AWS_REGION: 'eu-west-1' };

interface Seen {
  readonly target: string;
  readonly authorization: string;
  readonly sessionToken: string;
}

let server: Server;
let endpoint: string;
let bundle: string;
let workDir: string;
const seen: Seen[] = [];

function answer(request: IncomingMessage): { status: number; body: unknown } {
  const target = String(request.headers['x-amz-target'] ?? `${request.method} ${request.url}`);
  if (target === 'DynamoDB_20120810.GetItem') return { status: 200, body: { Item: { pk: { S: 'DEVICE#d1' } } } };
  if (target === 'ACMPrivateCA.GetCertificate') return { status: 200, body: { Certificate: 'issued-pem', CertificateChain: 'chain-pem' } };
  if (target === `GET /certificates/${'a'.repeat(64)}`) return { status: 200, body: { certificateDescription: { certificateId: 'a'.repeat(64), status: 'PENDING_ACTIVATION' } } };
  if (target === `PUT /certificates/${'a'.repeat(64)}?newStatus=ACTIVE`) return { status: 200, body: {} };
  if (target.startsWith('GET /certificates/')) return { status: 404, body: { __type: 'ResourceNotFoundException', message: 'no such certificate' } };
  return { status: 400, body: { __type: 'UnknownOperationException', message: target } };
}

beforeAll(async () => {
  server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      seen.push({
        target: String(request.headers['x-amz-target'] ?? `${request.method} ${request.url}`),
        authorization: String(request.headers.authorization ?? ''),
        sessionToken: String(request.headers['x-amz-security-token'] ?? ''),
      });
      const { status, body } = answer(request);
      response.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  workDir = mkdtempSync(join(tmpdir(), 'bundle-runtime-'));
  ({ outfile: bundle } = await buildLambdaBundle(join(__dirname, 'fixtures', 'sdk-clients-entry.ts'), workDir));
}, 120_000);

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  rmSync(workDir, { recursive: true, force: true });
});

const callFromBundle = (env: NodeJS.ProcessEnv) =>
  run(process.execPath, ['-e', 'require(process.argv[1]).callEachClient(process.argv[2]).then((r) => process.stdout.write(JSON.stringify(r)))', bundle, endpoint], {
    // Only what Lambda sets: no profile, no config files of this machine.
    env: { PATH: process.env.PATH, HOME: workDir, ...env },
  });

test('each client of the bundle signs with the credentials of the environment and reads the answer', async () => {
  seen.length = 0;
  const { stdout } = await callFromBundle(ENVIRONMENT_CREDENTIALS);
  expect(JSON.parse(stdout)).toEqual({ item: { pk: { S: 'DEVICE#d1' } }, certificateStatus: 'PENDING_ACTIVATION', certificate: 'issued-pem', missingCertificate: 'ResourceNotFoundException: no such certificate' });
  expect(seen.map((request) => request.target)).toEqual([
    'DynamoDB_20120810.GetItem',
    `GET /certificates/${'a'.repeat(64)}`,
    `PUT /certificates/${'a'.repeat(64)}?newStatus=ACTIVE`,
    `GET /certificates/${'b'.repeat(64)}`,
    'ACMPrivateCA.GetCertificate',
  ]);
  for (const request of seen) {
    expect(request.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDENVIRONMENT\/\d{8}\/eu-west-1\/[a-z-]+\/aws4_request, SignedHeaders=.+, Signature=[0-9a-f]{64}$/);
    expect(request.sessionToken).toBe('environment-token');
  }
});

test('fails without credentials in the environment, and looks nowhere else (no profile, no SSO, no instance metadata)', async () => {
  seen.length = 0;
  const failed = callFromBundle({ AWS_REGION: 'eu-west-1', AWS_PROFILE: 'someone' });
  await expect(failed).rejects.toMatchObject({ stderr: expect.stringMatching(/Unable to find environment variable credentials/) });
  expect(seen).toEqual([]);
});

test('the X.509 stack runs in a bundle built this way, on the lighter metadata polyfill', async () => {
  // Prepare
  const directory = mkdtempSync(join(tmpdir(), 'bundle-x509-'));
  try {
    const { outfile, metafile } = await buildLambdaBundle(join(__dirname, 'fixtures', 'x509-entry.ts'), directory);

    // Act
    const { stdout } = await run(process.execPath, ['-e', 'require(process.argv[1]).signAndRead().then((r) => process.stdout.write(JSON.stringify(r)))', outfile], { env: { PATH: process.env.PATH } });

    // Assess
    expect(JSON.parse(stdout)).toEqual(['CN=bundled CA', 'true', 'CN=device-1', 'true']);
    expect(Object.keys(metafile.inputs).filter((input) => input.includes('/reflect-metadata/'))).toEqual([expect.stringMatching(/reflect-metadata\/ReflectLite\.js$/)]);
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}, 60_000);
