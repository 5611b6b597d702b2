import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../local/config';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';
import type { ToolResult } from './support/clients';

jest.setTimeout(120_000);

/**
 * docs/devices.md runs here as written: its ```bash test=<id> blocks, in order, with the variables its
 * ```bash device-env block declares, against a local mode started with --host localhost (a name the
 * server certificate must carry; the machine's rule keeps tests on 127.0.0.1).
 */
const GUIDE = join(PROJECT_ROOT, 'docs', 'devices.md');

interface Guide {
  /** The variables the device-env block exports. */
  readonly variables: string[];
  /** The tested blocks, by id, in the order they appear. */
  readonly blocks: Map<string, string>;
}

function readGuide(): Guide {
  const markdown = readFileSync(GUIDE, 'utf8');
  const blocks = new Map<string, string>();
  let variables: string[] = [];
  for (const match of markdown.matchAll(/^```bash (test=[\w-]+|device-env)\n([\s\S]*?)^```$/gm)) {
    const [, info = '', body = ''] = match;
    if (info === 'device-env') variables = [...body.matchAll(/^export (\w+)=/gm)].map((found) => found[1] ?? '');
    else blocks.set(info.slice('test='.length), body);
  }
  return { variables, blocks };
}

/** Runs one block with bash -eu (a failing command fails the block), from the repository, with `env` set. */
function runBlock(script: string, env: Record<string, string>): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-eu', '-c', script], { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('docs/devices.md: a Linux device with mosquitto and openssl, as the guide says', () => {
  const guide = readGuide();
  let local: LocalModeProcess;
  let env: Record<string, string>;
  const THING = 'guide-sensor-1';

  const block = (id: string): string => {
    const script = guide.blocks.get(id);
    if (script === undefined) throw new Error(`docs/devices.md has no \`\`\`bash test=${id} block`);
    return script;
  };

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--host', 'localhost'] });
    env = { IOTCERT_DATA_DIR: local.dataDir, IOT_HOST: 'localhost', IOT_PORT: String(local.mqtt.port), THING, DIR: join(local.dataDir, 'device') };
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('the guide declares the variables this test sets, and every command block it marks as tested is run below', () => {
    expect(guide.variables).toEqual(['IOT_HOST', 'IOT_PORT', 'THING', 'DIR']);
    expect([...guide.blocks.keys()]).toEqual(['mint', 'check-files', 'server-identity', 'first-connect', 'subscribe']);
  });

  test('mint: the factory step writes the key, the certificate and the CA file', async () => {
    const result = await runBlock(block('mint'), env);

    expect(result.code).toBe(0);
    expect(result.stdout.split('\n')).toEqual(expect.arrayContaining(['ca.pem', 'device.csr', 'device.key', 'device.pem']));
    expect(existsSync(join(env.DIR ?? '', 'device.key'))).toBe(true);
  });

  test('check-files: the key matches the certificate, which names the thing and chains to the CA file', async () => {
    const result = await runBlock(block('check-files'), env);

    expect(result.code).toBe(0);
    expect(result.stdout).toContain('key matches certificate\n');
    expect(result.stdout).toContain(`subject=CN = ${THING}\n`);
    expect(result.stdout).toContain(`${join(env.DIR ?? '', 'device.pem')}: OK\n`);
  });

  test.each([
    ['a name: SNI and the name checked', 'localhost', 'Verification: OK\nVerified peername: localhost\n'],
    ['an address: the IP entry checked', '127.0.0.1', 'Verification: OK\n'],
  ])('server-identity, %s', async (_case, host, output) => {
    const result = await runBlock(block('server-identity'), { ...env, IOT_HOST: host });

    expect(result).toMatchObject({ code: 0, stdout: output });
  });

  test('first-connect: refused while JITR registers the certificate, then published after the backoff; the device is ACTIVE', async () => {
    const result = await runBlock(block('first-connect'), env);

    expect(result.code).toBe(0);
    expect(result.stderr).toContain('Error: The connection was lost.');
    expect(result.stdout).toMatch(/^published on attempt [2-7]\n$/);
    expect((await local.api('GET', `/devices/${THING}`)).body).toMatchObject({ deviceId: THING, status: 'ACTIVE' });
  });

  test.each(['localhost', '127.0.0.1'])('subscribe to %s: its own topics are granted, another thing\'s are refused', async (host) => {
    const result = await runBlock(block('subscribe'), { ...env, IOT_HOST: host });

    expect(result).toMatchObject({ code: 0, stdout: `subscribed to devices/${THING}/#\n`, stderr: 'All subscription requests were denied.\n' });
  });
});
