/**
 * The MQTT endpoint alone, in its own process (Aedes is an ES module jest cannot load), for
 * endpoint-hardening-hooks.test.ts: two onboarded devices, a policy that lets every device subscribe
 * to any filter but publish and receive only under its own `devices/<thing>/`, and the endpoint's
 * `onAcceptedPublish` and `publish` wired to stdout and stdin as JSON lines.
 *
 * Out: `{"event":"ready",...}`, `{"event":"accepted",...}` per hook call, `{"event":"published",...}` per command.
 * In: `{"topic":...,"payload":...,"qos":0|1}` per line, handed to `publish`.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { createInterface } from 'node:readline';
import * as x509 from '@peculiar/x509';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { CertificateGate } from '../../local/iot-core/certificate-gate';
import { MqttEndpointError, startMqttEndpoint } from '../../local/iot-core/mqtt-endpoint';
import { PolicyAuthorizer } from '../../local/iot-core/policy-authorizer';
import { makeCsr, privateKeyPem } from '../support/pki';

const REGION = 'local';
const ACCOUNT = '000000000000';
const DEVICES = ['dev-a', 'dev-b'] as const;

const emit = (line: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(line)}\n`);

async function main(): Promise<void> {
  const { ca, material } = await SoftwareCertificateAuthority.create('hooks harness CA');
  const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
  await registry.registerCaCertificate(material.certificatePem, { autoRegistration: false });
  const arn = `arn:aws:iot:${REGION}:${ACCOUNT}`;
  const thing = '${iot:Connection.Thing.ThingName}';
  await registry.putPolicy('fleet-policy', {
    Version: '2012-10-17',
    Statement: [
      { Effect: 'Allow', Action: 'iot:Connect', Resource: `${arn}:client/${thing}` },
      { Effect: 'Allow', Action: ['iot:Publish', 'iot:Receive'], Resource: `${arn}:topic/devices/${thing}/*` },
      { Effect: 'Allow', Action: 'iot:Subscribe', Resource: `${arn}:topicfilter/*` },
    ],
  });
  await registry.attachPolicyToThingGroup('fleet-policy', 'fleet');

  const devices: Record<string, { key: string; cert: string; certificateId: string }> = {};
  for (const deviceId of DEVICES) {
    const { csrPem, keys } = await makeCsr(deviceId);
    const cert = await ca.mintDeviceCertificate(deviceId, csrPem, 30);
    const { certificateId } = await registry.registerCertificate({ certificatePem: cert, caCertificatePem: material.certificatePem });
    await registry.ensureThing(deviceId, {});
    await registry.attachCertificate(deviceId, certificateId);
    devices[deviceId] = { key: await privateKeyPem(keys), cert, certificateId };
  }

  const provider = webcrypto as unknown as Crypto;
  const serverKeys = (await provider.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const endpoint = await startMqttEndpoint({
    host: '127.0.0.1',
    port: 0,
    serverKeyPem: x509.PemConverter.encode(await provider.subtle.exportKey('pkcs8', serverKeys.privateKey), 'PRIVATE KEY'),
    serverCertificatePem: await ca.issueServerCertificate(['localhost', '127.0.0.1'], serverKeys.publicKey, 1),
    trustedCaPems: [material.certificatePem],
    registry,
    gate: new CertificateGate(registry, { accountId: ACCOUNT }),
    authorizer: new PolicyAuthorizer(registry, { region: REGION, accountId: ACCOUNT }),
    publishEvent: () => undefined,
    log: (message) => emit({ event: 'log', message }),
    verbose: true, // logs the wills it accepts, so the test can tell one was published
    onAcceptedPublish: (topic, payload, identity) => emit({ event: 'accepted', topic, payload: payload.toString('utf8'), identity }),
  });

  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const { topic, payload, qos } = JSON.parse(line) as { topic: string; payload: string; qos?: 0 | 1 };
    endpoint.publish(topic, payload, qos).then(
      () => emit({ event: 'published', topic }),
      (error: unknown) => emit({ event: 'published', topic, error: error instanceof MqttEndpointError ? error.code : String(error) }),
    );
  });
  commands.once('close', () => void endpoint.stop().then(() => process.exit(0)));

  emit({ event: 'ready', port: endpoint.port, ca: material.certificatePem, devices });
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
