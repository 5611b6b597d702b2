import { join } from 'node:path';
import { connect as mqttConnect, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { connectOnce, enrollDevice, publishAcknowledged, readDeviceTls, type DeviceTls } from '../../local/cli/device';
import { IOT_CORE_LIMITS } from '../../local/iot-core/limits';
import { closesWithin, mosquittoPub, mosquittoSub, publishOutcome, receivedMessages, recordMessages, sleep, stopAllSubscribers, subscribeGranted, tlsFilesOf } from './support/clients';
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
    await expect(local.waitForOutput(/"policy-b": PUBLISH to "devices\/policy-a\/commands" refused, connection closed/, 5_000)).resolves.toBeUndefined();
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

  describe("AWS IoT Core's own limits, whatever the policy allows", () => {
    /** What a new connection of device A gets right after subscribing to its own topics: retained messages only. */
    const retainedForA = async () => {
      const a = await connect('policy-a', tlsA);
      const received = recordMessages(a);
      await a.subscribeAsync('devices/policy-a/#', { qos: 1 });
      await sleep(500);
      return received;
    };

    test.each<[string, 'ACKNOWLEDGED' | 'CLOSED', string | Buffer, IClientPublishOptions, RegExp | undefined]>([
      ['a QoS 1 payload of exactly 128 KiB (the control)', 'ACKNOWLEDGED', Buffer.alloc(IOT_CORE_LIMITS.maxPayloadBytes), { qos: 1 }, undefined],
      ['a QoS 2 publish', 'CLOSED', 'x', { qos: 2 }, /QoS 2 is not supported/],
      ['a payload one byte over 128 KiB', 'CLOSED', Buffer.alloc(IOT_CORE_LIMITS.maxPayloadBytes + 1), { qos: 1 }, /the payload of 131073 bytes is over the 131072-byte limit/],
      ['a retained publish (the fleet policy grants no iot:RetainPublish)', 'CLOSED', 'on', { qos: 1, retain: true }, /iot:RetainPublish on arn:aws:iot:local:000000000000:topic\/devices\/policy-a\/state not allowed/],
    ])('device A publishing %s to its own topic: %s, and nothing retained', async (_case, expected, payload, options, logged) => {
      const a = await connect('policy-a', tlsA);

      const outcome = await publishOutcome(a, 'devices/policy-a/state', payload, options);
      const retained = await retainedForA();

      expect(outcome).toBe(expected);
      expect(retained).toEqual([]);
      if (logged) await expect(local.waitForOutput(new RegExp(`"policy-a": PUBLISH to "devices/policy-a/state" refused, connection closed: ${logged.source}`), 5_000)).resolves.toBeUndefined();
    });

    test("drops device A's retained will (no iot:RetainPublish) when its connection drops", async () => {
      const withWill = await new Promise<MqttClient>((resolve, reject) => {
        const client = mqttConnect({
          protocol: 'mqtts',
          host: local.mqtt.host,
          port: local.mqtt.port,
          clientId: 'policy-a',
          ...tlsA,
          protocolVersion: 4,
          reconnectPeriod: 0,
          will: { topic: 'devices/policy-a/status', payload: Buffer.from('offline'), qos: 1, retain: true },
        });
        client.once('connect', () => resolve(client));
        client.once('error', reject);
      });
      open.push(withWill);

      withWill.stream.destroy(); // no DISCONNECT: the broker publishes the will, unless it refuses it
      await local.waitForOutput(/"policy-a": will to "devices\/policy-a\/status" dropped: iot:RetainPublish on .* not allowed/, 5_000);
      const retained = await retainedForA();

      expect(retained).toEqual([]);
    });

    test('grants QoS 1 to a QoS 2 subscription', async () => {
      const a = await connect('policy-a', tlsA);

      const granted = await a.subscribeAsync('devices/policy-a/#', { qos: 2 });

      expect(granted.map((grant) => grant.qos)).toEqual([1]);
    });

    test('rejects a client id over 128 bytes with CONNACK "identifier rejected"; one of 128 bytes goes on to the policy', async () => {
      const outcome = (clientId: string) =>
        connect(clientId, tlsA).then(
          () => 'CONNECTED',
          (error: Error) => error.message,
        );

      const tooLong = await outcome('a'.repeat(IOT_CORE_LIMITS.maxClientIdBytes + 1));
      const atLimit = await outcome('a'.repeat(IOT_CORE_LIMITS.maxClientIdBytes));

      expect(tooLong).toMatch(/identifier rejected/i);
      expect(atLimit).toMatch(/not authorized/i); // no thing of that name: the policy's refusal
    });

    test('logs client ids and topics JSON-escaped: a newline in them cannot forge a log line', async () => {
      const forged = '\n00:00:00.000 [jitr] certificate 0123456789ab…: ACTIVATED, device forged-1 can connect now\n';

      await connect(`forged-1${forged}`, tlsA).catch(() => undefined);
      const a = await connect('policy-a', tlsA);
      await publishOutcome(a, `devices/policy-b/${forged}`, 'x', { qos: 1 });
      await local.waitForOutput(/"policy-a": PUBLISH to "devices\/policy-b\/\\n00:00:00.000 \[jitr\]/, 5_000);

      const lines = local.output().split('\n');
      expect(lines.filter((line) => line.startsWith('00:00:00.000 [jitr]'))).toEqual([]);
      expect(local.output()).toContain('CONNECT refused (client id "forged-1\\n00:00:00.000 [jitr] certificate 0123456789ab…: ACTIVATED, device forged-1 can connect now\\n"');
    });
  });
});
