import 'reflect-metadata';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { connectDevice, connectOnce, enrollDevice, mintDevice, readDeviceTls, type DeviceTls } from '../../local/cli/device';
import { expiringTopic } from '../../functions/handlers/mqtt/rotation-protocol';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess } from './support/local-mode-process';

jest.setTimeout(240_000);

const DAY_MS = 86_400_000;

interface Received {
  readonly topic: string;
  readonly body: Record<string, unknown>;
}

/** A device connected over MQTT, subscribed to its renewal notices and to its own telemetry (to know when the broker has passed everything before). */
async function listeningDevice(local: LocalModeProcess, deviceId: string, tls: DeviceTls) {
  const client = await connectOnce(local.mqtt, deviceId, tls);
  const received: Received[] = [];
  client.on('message', (topic, payload) => received.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown> }));
  await client.subscribeAsync([expiringTopic(deviceId), `devices/${deviceId}/telemetry`], { qos: 1 });
  return { deviceId, client, received };
}

/** Resolves once `done()` holds, checked now and after each message the client receives (jest's timeout bounds it). */
function untilMessage(client: MqttClient, done: () => boolean): Promise<void> {
  if (done()) return Promise.resolve();
  return new Promise((resolve) => {
    const onMessage = () => {
      if (!done()) return;
      client.off('message', onMessage);
      resolve();
    };
    client.on('message', onMessage);
  });
}

describe('local mode: a rotation campaign tells every device in the window to rotate, over MQTT', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess({ extraArgs: ['--jitr-concurrency', '8'] });
  });

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  });

  test('devices whose certificate expires before the date get the notice; one expiring later and a suspended one do not', async () => {
    // Prepare: four factory-minted devices with 30-day certificates, onboarded by JITR; one enrolled with a 365-day
    // certificate (outside the window); one with a 30-day certificate, suspended.
    const inWindow = ['campaign-1', 'campaign-2', 'campaign-3', 'campaign-4'];
    const tlsOf = new Map<string, DeviceTls>();
    for (const deviceId of [...inWindow, 'campaign-suspended']) {
      const dir = join(local.dataDir, 'devices', deviceId);
      await mintDevice({ deviceId, outDir: dir, dataDir: local.dataDir, validityDays: 30 });
      const tls = await readDeviceTls(dir);
      const onboarded = await connectDevice({ deviceId, tls, target: local.mqtt });
      expect(onboarded.connected).toBe(true);
      tlsOf.set(deviceId, tls);
    }
    const outsideDir = join(local.dataDir, 'devices', 'campaign-outside');
    await enrollDevice({ deviceId: 'campaign-outside', outDir: outsideDir, dataDir: local.dataDir });
    const listeners = await Promise.all(inWindow.map(async (deviceId) => listeningDevice(local, deviceId, tlsOf.get(deviceId) as DeviceTls)));
    const outside = await listeningDevice(local, 'campaign-outside', await readDeviceTls(outsideDir));
    await local.api('POST', '/devices/campaign-suspended/suspend', {});

    // Act: the backend asks for rotation now, for every certificate expiring within 60 days.
    const started = await local.api('POST', '/rotation-campaigns', { expiringBefore: new Date(Date.now() + 60 * DAY_MS).toISOString(), noticesPerSecond: 10 });
    const campaign = started.body as { campaignId: string; status: string };

    // Assess: each device in the window gets one notice for its certificate, renewBy now.
    expect(started.status).toBe(202);
    expect(campaign.status).toBe('RUNNING');
    await Promise.all(listeners.map((listener) => untilMessage(listener.client, () => listener.received.length > 0)));
    await local.waitForOutput(new RegExp(`campaigns: ${campaign.campaignId.slice(0, 12)}\\S* COMPLETED \\(4 notice`), 60_000);
    for (const listener of listeners) {
      const view = (await local.api('GET', `/devices/${listener.deviceId}`)).body as { certificates: { certificateId: string; notAfter: string }[] };
      expect(listener.received).toEqual([
        { topic: expiringTopic(listener.deviceId), body: { certificateId: view.certificates[0]?.certificateId, notAfter: view.certificates[0]?.notAfter, renewBy: expect.any(String) } },
      ]);
      expect(Date.parse(listener.received[0]?.body.renewBy as string)).toBeLessThan(Date.parse(view.certificates[0]?.notAfter as string) - 29 * DAY_MS);
    }
    // The device outside the window: a message of its own sent after the campaign completed arrives, and nothing before it.
    await outside.client.publishAsync('devices/campaign-outside/telemetry', JSON.stringify({ marker: true }), { qos: 1 });
    await untilMessage(outside.client, () => outside.received.length > 0);
    expect(outside.received).toEqual([{ topic: 'devices/campaign-outside/telemetry', body: { marker: true } }]);
    const read = await local.api('GET', `/rotation-campaigns/${campaign.campaignId}`);
    expect(read.body).toMatchObject({ status: 'DONE', noticesSent: 4, certificatesSkipped: 1 });

    await Promise.all([...listeners, outside].map((listener) => listener.client.endAsync()));
  });
});
