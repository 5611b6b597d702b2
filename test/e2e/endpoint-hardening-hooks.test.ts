import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect, type MqttClient } from 'mqtt';
import { PROJECT_ROOT } from '../../local/config';
import { connectOnce, publishAcknowledged, type DeviceTls } from '../../local/cli/device';
import { eventually, publishOutcome, recordMessages, subscribeGranted } from './support/clients';

jest.setTimeout(60_000);

interface HarnessLine {
  readonly event: 'ready' | 'accepted' | 'published' | 'log';
  readonly [field: string]: unknown;
}

interface Harness {
  readonly port: number;
  readonly tls: Readonly<Record<'dev-a' | 'dev-b', DeviceTls>>;
  readonly certificateIds: Readonly<Record<'dev-a' | 'dev-b', string>>;
  readonly lines: HarnessLine[];
  /** Hands a message to the endpoint's `publish`; answers the error code it rejected with, if it did. */
  publish(topic: string, payload: string, qos?: 0 | 1): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** endpoint-hardening-hooks.harness.ts in its own process: the endpoint with its hooks wired to JSON lines. */
async function startHarness(): Promise<Harness> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'endpoint-hardening-hooks.harness.ts')], { cwd: PROJECT_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: HarnessLine[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => lines.push(JSON.parse(line) as HarnessLine));
  const ready = await eventually(async () => lines.find((line) => line.event === 'ready'), 30_000, 100).catch(() => {
    throw new Error(`the harness did not start:\n${stderr}`);
  });
  const { port, ca, devices } = ready as unknown as { port: number; ca: string; devices: Record<'dev-a' | 'dev-b', { key: string; cert: string; certificateId: string }> };
  const tlsOf = (id: 'dev-a' | 'dev-b'): DeviceTls => ({ key: devices[id].key, cert: devices[id].cert, ca });
  return {
    port,
    tls: { 'dev-a': tlsOf('dev-a'), 'dev-b': tlsOf('dev-b') },
    certificateIds: { 'dev-a': devices['dev-a'].certificateId, 'dev-b': devices['dev-b'].certificateId },
    lines,
    publish: async (topic, payload, qos) => {
      const before = lines.length;
      child.stdin?.write(`${JSON.stringify({ topic, payload, qos })}\n`);
      const answer = await eventually(async () => lines.slice(before).find((line) => line.event === 'published' && line.topic === topic), 10_000, 20);
      return answer.error as string | undefined;
    },
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

describe('MQTT endpoint hooks for topic rules and server publishes', () => {
  let harness: Harness;
  const clients: MqttClient[] = [];
  const target = () => ({ host: '127.0.0.1', port: harness.port });
  const accepted = () => harness.lines.filter((line) => line.event === 'accepted');

  beforeAll(async () => {
    harness = await startHarness();
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.end(true);
  });

  afterAll(async () => {
    await harness?.stop();
  });

  test('onAcceptedPublish sees each accepted device PUBLISH once, with its topic, payload, client id and certificate id; not a refused one', async () => {
    // Prepare
    const client = await connectOnce(target(), 'dev-a', harness.tls['dev-a']);
    clients.push(client);
    const before = accepted().length;

    // Act
    await publishAcknowledged(client, 'devices/dev-a/telemetry', '{"t":21}');
    client.publish('devices/dev-a/telemetry', 'qos0', { qos: 0 });
    const refused = await publishOutcome(client, 'devices/dev-b/telemetry', 'not mine', { qos: 1 });
    await eventually(async () => (accepted().length >= before + 2 ? true : undefined), 5_000, 20);

    // Assess
    expect(refused).toBe('CLOSED');
    expect(accepted().slice(before)).toEqual([
      { event: 'accepted', topic: 'devices/dev-a/telemetry', payload: '{"t":21}', identity: { clientId: 'dev-a', certificateId: harness.certificateIds['dev-a'] } },
      { event: 'accepted', topic: 'devices/dev-a/telemetry', payload: 'qos0', identity: { clientId: 'dev-a', certificateId: harness.certificateIds['dev-a'] } },
    ]);
  });

  test('onAcceptedPublish is not called for a will', async () => {
    // Prepare: a connection with a will, dropped without DISCONNECT so the will is published.
    const ca = harness.tls['dev-a'];
    const withWill = connect({ protocol: 'mqtts', host: '127.0.0.1', port: harness.port, clientId: 'dev-a', key: ca.key, cert: ca.cert, ca: ca.ca, reconnectPeriod: 0, will: { topic: 'devices/dev-a/status', payload: Buffer.from('gone'), qos: 0, retain: false } });
    await new Promise<void>((resolve, reject) => {
      withWill.once('connect', () => resolve());
      withWill.once('error', reject);
    });
    const before = accepted().length;

    // Act
    withWill.stream.destroy();
    await eventually(async () => (harness.lines.some((line) => line.event === 'log' && /"dev-a": will to "devices\/dev-a\/status" accepted/.test(String(line.message))) ? true : undefined), 10_000, 20);
    const marker = await connectOnce(target(), 'dev-b', harness.tls['dev-b']);
    clients.push(marker);
    await publishAcknowledged(marker, 'devices/dev-b/marker', 'after the will');
    await eventually(async () => (accepted().length > before ? true : undefined), 5_000, 20);

    // Assess: the marker, published after the will, is there; the will is not.
    expect(accepted().slice(before).map((line) => line.topic)).toEqual(['devices/dev-b/marker']);
  });

  test('publish delivers a server message to the subscribers whose policy lets them receive it, and only to them', async () => {
    // Prepare: both devices subscribe to every device's topics (allowed), but may receive only their own.
    const a = await connectOnce(target(), 'dev-a', harness.tls['dev-a']);
    const b = await connectOnce(target(), 'dev-b', harness.tls['dev-b']);
    clients.push(a, b);
    expect(await subscribeGranted(a, 'devices/#')).toEqual([1]);
    expect(await subscribeGranted(b, 'devices/#')).toEqual([1]);
    const [toA, toB] = [recordMessages(a), recordMessages(b)];
    const before = accepted().length;

    // Act
    const errors = [await harness.publish('devices/dev-a/commands', 'reboot', 1), await harness.publish('devices/dev-b/commands', 'ping', 0)];
    await eventually(async () => (toA.length >= 1 && toB.length >= 1 ? true : undefined), 5_000, 20);
    await publishAcknowledged(a, 'devices/dev-a/flush', 'x'); // one round trip more: anything else in flight to a would be in by now

    // Assess
    expect(errors).toEqual([undefined, undefined]);
    expect(toA.filter((message) => message.topic.endsWith('/commands'))).toEqual([{ topic: 'devices/dev-a/commands', payload: 'reboot' }]);
    expect(toB.filter((message) => message.topic.endsWith('/commands'))).toEqual([{ topic: 'devices/dev-b/commands', payload: 'ping' }]);
    // A server publish is not a device publish: topic rules do not see it.
    expect(accepted().slice(before).map((line) => line.topic)).toEqual(['devices/dev-a/flush']);
  });

  test.each([
    ['a topic with a wildcard', 'INVALID_TOPIC', 'devices/+/commands', 'x'],
    ['an empty topic', 'INVALID_TOPIC', '', 'x'],
    ['a payload over 128 KB', 'PAYLOAD_TOO_LARGE', 'devices/dev-a/commands', 'x'.repeat(128 * 1024 + 1)],
  ])('publish rejects %s with %s', async (_name, code, topic, payload) => {
    expect(await harness.publish(topic, payload)).toBe(code);
  });
});
