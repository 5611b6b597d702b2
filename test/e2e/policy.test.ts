import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { connectOnce, enrollDevice, publishAcknowledged, readDeviceTls, type DeviceTls } from '../../local/cli/device';
import { closesWithin, mosquittoPub, mosquittoSub, receivedMessages, recordMessages, sleep, stopAllSubscribers, subscribeGranted, tlsFilesOf } from './support/clients';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(120_000);

/** How long a message that is not delivered is waited for: deliveries on loopback take a few milliseconds. */
const QUIET_MS = 1_500;

/**
 * The fleet policy, enforced by the broker: each device reaches only its own client id and its own
 * `devices/<thing>/...` topics. Refusals: CONNACK 5 on connect, SUBACK 0x80 on subscribe, the
 * connection closed on publish (what AWS IoT Core does; MQTT 3.1.1 has no negative PUBACK).
 */
describe('local mode: the IoT policy keeps each device inside its own topics', () => {
  let local: LocalModeProcess;
  let tlsA: DeviceTls;
  let tlsB: DeviceTls;
  const open: MqttClient[] = [];

  const connect = async (clientId: string, tls: DeviceTls) => {
    const client = await connectOnce(local.mqtt, clientId, tls);
    open.push(client);
    return client;
  };

  beforeAll(async () => {
    local = await startLocalModeProcess();
    for (const id of ['policy-a', 'policy-b']) await enrollDevice({ deviceId: id, outDir: join(local.dataDir, id), dataDir: local.dataDir });
    tlsA = await readDeviceTls(join(local.dataDir, 'policy-a'));
    tlsB = await readDeviceTls(join(local.dataDir, 'policy-b'));
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((client) => client.endAsync(true).catch(() => undefined)));
    await stopAllSubscribers();
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('a device receives what is published on its own topics (the control for the refusals below)', async () => {
    const a = await connect('policy-a', tlsA);
    const received = recordMessages(a);
    const granted = await subscribeGranted(a, 'devices/policy-a/#');

    await publishAcknowledged(a, 'devices/policy-a/telemetry', 'own');
    await sleep(300);

    expect(granted).toEqual([1]);
    expect(received).toEqual([{ topic: 'devices/policy-a/telemetry', payload: 'own' }]);
  });

  test("rejects device B's publish to device A's topic: B's connection is closed and A never receives it", async () => {
    const a = await connect('policy-a', tlsA);
    const received = recordMessages(a);
    await a.subscribeAsync('devices/policy-a/#', { qos: 1 });
    const b = await connect('policy-b', tlsB);

    const refused = publishAcknowledged(b, 'devices/policy-a/commands', 'from B').then(
      () => 'ACKNOWLEDGED',
      (error: Error) => error.message,
    );

    expect(await refused).toMatch(/closed the connection/);
    expect(await closesWithin(b, 1_000)).toBe(true);
    await sleep(QUIET_MS);
    expect(received).toEqual([]);
    expect(a.connected).toBe(true);
    await expect(local.waitForOutput(/policy-b: PUBLISH to "devices\/policy-a\/commands" refused, connection closed/, 5_000)).resolves.toBeUndefined();
  });

  test.each([['devices/policy-b/#'], ['devices/+/telemetry'], ['#'], ['devices/#']])("rejects device A's subscription to %s with SUBACK 0x80, and A receives none of B's messages", async (filter) => {
    const a = await connect('policy-a', tlsA);
    const received = recordMessages(a);
    const b = await connect('policy-b', tlsB);

    const granted = await subscribeGranted(a, filter);
    await publishAcknowledged(b, 'devices/policy-b/telemetry', 'from B to its own topic');
    await sleep(QUIET_MS);

    expect(granted).toEqual([128]);
    expect(received).toEqual([]);
    expect(a.connected).toBe(true); // a refused SUBSCRIBE does not cost the connection
  });

  test('rejects device A connecting with client id B (CONNACK 5), and B keeps its connection', async () => {
    const b = await connect('policy-b', tlsB);

    const spoof = await connect('policy-b', tlsA).then(
      () => 'CONNECTED',
      (error: Error) => error.message,
    );
    const unknownId = await connect('not-a-thing', tlsA).then(
      () => 'CONNECTED',
      (error: Error) => error.message,
    );

    expect(spoof).toMatch(/Not authorized/i);
    expect(unknownId).toMatch(/Not authorized/i);
    await sleep(300);
    expect(b.connected).toBe(true); // no takeover: the spoofed CONNECT was refused before it
    await local.waitForOutput(/CONNECT refused \(client id "policy-b"/, 5_000);
    expect(local.output()).toMatch(/CONNECT refused \(client id "policy-b", certificate [0-9a-f]{12}…\): iot:Connect on policy-b refused: no thing named "policy-b" is attached to this certificate/);
  });

  test("with mosquitto_sub and mosquitto_pub: A's subscription to B's topics is denied, A's publish to B's topic drops A's connection, B receives nothing", async () => {
    const fileA = tlsFilesOf(join(local.dataDir, 'policy-a'), local.files.caCertificate);
    const fileB = tlsFilesOf(join(local.dataDir, 'policy-b'), local.files.caCertificate);
    const denied = mosquittoSub(fileA, local.mqtt.port, 'policy-a', 'devices/policy-b/#');
    const deniedQos = await denied.subscribed;
    const deniedOutput = await denied.stop();
    const listening = mosquittoSub(fileB, local.mqtt.port, 'policy-b', 'devices/policy-b/#');
    expect(await listening.subscribed).toBe(1);

    const crossPublish = await mosquittoPub(fileA, local.mqtt.port, 'policy-a', 'devices/policy-b/commands', 'from A');
    const wrongClientId = await mosquittoPub(fileB, local.mqtt.port, 'policy-b-pub', 'devices/policy-b/telemetry', 'x'); // B's certificate, not B's client id
    await sleep(QUIET_MS);
    const heard = await listening.stop();

    expect(deniedQos).toBe(128);
    expect(deniedOutput.stderr + deniedOutput.stdout).toMatch(/All subscription requests were denied/);
    expect(crossPublish.code).not.toBe(0);
    expect(crossPublish.stderr).toMatch(/connection was lost/i);
    expect(wrongClientId.code).not.toBe(0);
    expect(wrongClientId.stderr).toMatch(/not authori[sz]ed/i);
    expect(receivedMessages(heard.stdout)).toEqual([]);
  });
});
