import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { certificateIdOf } from '../../functions/core/x509';
import { connectDevice, makeKeyAndCsr, type ConnectReport } from '../../local/cli/device';
import { readCaMaterial } from '../../local/data-dir';
import { removeDataDir, startLocalModeProcess, type LocalModeProcess, savedRegistry } from './support/local-mode-process';

const DEVICES = 100;

interface DevicePage {
  items: { deviceId: string }[];
  nextToken?: string;
}

describe('local mode: a burst of first connects', () => {
  let local: LocalModeProcess;

  beforeAll(async () => {
    local = await startLocalModeProcess();
  }, 120_000);

  afterAll(async () => {
    await local?.stop();
    if (local) await removeDataDir(local.dataDir);
  }, 60_000);

  test(`${DEVICES} factory-minted devices connecting at once all end ACTIVE, each activated exactly once, each certificate on exactly one thing`, async () => {
    // Prepare: EC P-256 keys and certificates signed by the local CA, as a factory would make them.
    const material = await readCaMaterial(local.files);
    const ca = await SoftwareCertificateAuthority.load(material!);
    const ids = Array.from({ length: DEVICES }, (_, index) => `burst-${String(index).padStart(3, '0')}`);
    const mintStarted = Date.now();
    const devices = [];
    for (const deviceId of ids) {
      const { keyPem, csrPem } = await makeKeyAndCsr(deviceId);
      const certificatePem = await ca.mintDeviceCertificate(deviceId, csrPem, 30);
      devices.push({ deviceId, certificateId: await certificateIdOf(certificatePem), tls: { key: keyPem, cert: certificatePem, ca: material!.certificatePem } });
    }
    const mintMs = Date.now() - mintStarted;

    // Act: every device connects at the same moment, retrying with backoff after the JITR refusal.
    const started = Date.now();
    const reports: ConnectReport[] = await Promise.all(
      devices.map((device) => connectDevice({ deviceId: device.deviceId, tls: device.tls, target: local.mqtt, attempts: 60, initialDelayMs: 500, maxDelayMs: 4_000 })),
    );
    const onboardingMs = Date.now() - started;

    // Assess: every device published, after exactly one registration each.
    const failed = reports.flatMap((report, index) => (report.published ? [] : [{ device: ids[index], attempts: report.attempts.slice(-2) }]));
    expect(failed).toEqual([]);
    expect(reports.every((report) => report.attempts[0]?.outcome === 'REFUSED')).toBe(true); // each first connect was the JITR refusal

    // The store: exactly these devices are ACTIVE, each with its one certificate (paged through the API).
    const active: DevicePage['items'] = [];
    let nextToken: string | undefined;
    do {
      const { body } = await local.api('GET', `/devices?status=ACTIVE&limit=100${nextToken ? `&nextToken=${encodeURIComponent(nextToken)}` : ''}`);
      const page = body as DevicePage;
      active.push(...page.items);
      nextToken = page.nextToken;
    } while (nextToken);
    expect(active.map((device) => device.deviceId).sort()).toEqual(ids);
    const expectedCertificates = Object.fromEntries(devices.map((device) => [device.deviceId, [device.certificateId]]));
    const views = await Promise.all(active.map(async (device) => (await local.api('GET', `/devices/${device.deviceId}`)).body as { deviceId: string; certificateIds: string[] }));
    expect(Object.fromEntries(views.map((view) => [view.deviceId, view.certificateIds]))).toEqual(expectedCertificates);
    const { body: registered } = await local.api('GET', '/devices?status=REGISTERED&limit=100');
    expect((registered as DevicePage).items).toEqual([]);

    // The JITR function activated each certificate exactly once: one ACTIVATED line per certificate, for its device.
    await local.waitForOccurrences(': ACTIVATED, device ', DEVICES - 1, 10_000); // the log lines reach us a moment after the effects
    const activated = [...local.output().matchAll(/^\d{2}:\d{2}:\d{2}\.\d{3} \[jitr\] certificate ([0-9a-f]{12})…: ACTIVATED, device (\S+) can connect now$/gm)].map(
      ([, certificate, device]) => `${device} ${certificate}`,
    );
    expect(activated.sort()).toEqual(devices.map((device) => `${device.deviceId} ${device.certificateId.slice(0, 12)}`).sort());

    // The registry: each certificate ACTIVE and attached to exactly one thing (its device's, among all
    // things), and each device's thing has exactly one principal.
    const registry = (await savedRegistry(local.files)) as unknown as {
      certificates: { certificateId: string; status: string }[];
      things: { thingName: string; principals: string[] }[];
    };
    const thingsOf = (certificateId: string) => registry.things.filter((thing) => thing.principals.includes(certificateId)).map((thing) => thing.thingName);
    expect(Object.fromEntries(devices.map((device) => [device.certificateId, thingsOf(device.certificateId)]))).toEqual(
      Object.fromEntries(devices.map((device) => [device.certificateId, [device.deviceId]])),
    );
    const principalsOf = new Map(registry.things.map((thing) => [thing.thingName, thing.principals]));
    expect(Object.fromEntries(ids.map((id) => [id, principalsOf.get(id)]))).toEqual(expectedCertificates);
    const statuses = new Map(registry.certificates.map((certificate) => [certificate.certificateId, certificate.status]));
    expect(devices.filter((device) => statuses.get(device.certificateId) !== 'ACTIVE')).toEqual([]);

    const attempts = reports.map((report) => report.attempts.length);
    console.log(
      `${DEVICES} devices: minted in ${mintMs} ms; all ACTIVE and published ${onboardingMs} ms after connecting at once ` +
        `(attempts per device: min ${Math.min(...attempts)}, max ${Math.max(...attempts)}; slowest device ${Math.max(...reports.map((report) => report.totalMs))} ms)`,
    );
  }, 240_000);
});
