/**
 * Onboarding benchmark: how much the lifecycle (certificate checks, claim + activation commits,
 * registry calls) costs over the bare DynamoDB writes any recorder of a device would need.
 *
 *   npm run bench            # N=200, concurrency 20
 *   BENCH_DEVICES=1000 npm run bench
 *
 * Baseline, measured in the same run on the same DynamoDB Local: one TransactWriteItems of four
 * items per device (device, certificate, change marker, event), the minimum our store writes once.
 * The figure reported is the ratio lifecycle / baseline; machine speed cancels out.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import { DeviceLifecycle, randomIds, type RegistrationEvent } from '../functions/core/lifecycle';
import { DynamoDbDeviceStore } from '../functions/adapters/aws/dynamodb-device-store';
import { LocalDeviceRegistry } from '../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../functions/adapters/local/software-ca';
import { certificateIdOf } from '../functions/core/x509';
import { ensureDeviceTable, localDocumentClient, localDynamoDbClient, startDynamoDbLocal } from '../local/dynamodb-local';
import { makeCsr } from '../test/support/pki';

const devices = Number(process.env.BENCH_DEVICES ?? 200);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 20);

async function inBatches<T>(items: readonly T[], work: (item: T) => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await work(items[next++] as T);
    }),
  );
  return Number(process.hrtime.bigint() - started) / 1e6;
}

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal();
  try {
    const client = localDynamoDbClient(dynamo.endpoint);
    const documentClient = localDocumentClient(dynamo.endpoint);
    const tableName = `bench-${randomUUID()}`;
    await ensureDeviceTable(client, tableName);
    const { ca, material } = await SoftwareCertificateAuthority.create('Bench CA');
    const registry = new LocalDeviceRegistry({ thingGroupName: 'fleet' });
    const caCertificateId = await certificateIdOf(material.certificatePem);
    const lifecycle = new DeviceLifecycle({ store: new DynamoDbDeviceStore({ tableName, documentClient }), registry, ca, clock: { now: () => new Date() }, ids: randomIds });

    // Certificates are minted before timing: the factory's work is not the lifecycle's.
    const events: RegistrationEvent[] = [];
    for (let index = 0; index < devices; index += 1) {
      const deviceId = `bench-${index}`;
      const pem = await ca.mintDeviceCertificate(deviceId, (await makeCsr(deviceId)).csrPem, 365);
      const registered = await registry.registerPendingActivation(pem, caCertificateId);
      events.push({ certificateId: registered.certificateId, caCertificateId, timestamp: Date.now(), certificateStatus: 'PENDING_ACTIVATION', awsAccountId: '0', certificateRegistrationTimestamp: '0' });
    }

    const baselineMs = await inBatches(events, (event) =>
      documentClient.send(
        new TransactWriteCommand({
          TransactItems: [
            { Put: { TableName: tableName, Item: { PK: `BASE#${event.certificateId}`, SK: 'DEVICE', status: 'ACTIVE' } } },
            { Put: { TableName: tableName, Item: { PK: `BASE#${event.certificateId}`, SK: 'CERT', status: 'ACTIVE' } } },
            { Put: { TableName: tableName, Item: { PK: `BASECHANGE#${event.certificateId}`, SK: 'CHANGE' }, ConditionExpression: 'attribute_not_exists(PK)' } },
            { Put: { TableName: tableName, Item: { PK: `BASE#${event.certificateId}`, SK: `EVENT#${Date.now()}` } } },
          ],
        }),
      ),
    );
    const lifecycleMs = await inBatches(events, async (event) => {
      const outcome = await lifecycle.registerOnFirstConnect(event);
      if (outcome.outcome !== 'ACTIVATED') throw new Error(`device not activated: ${JSON.stringify(outcome)}`);
    });

    console.log(`devices: ${devices}, concurrency: ${concurrency}`);
    console.log(`baseline (one 4-item transaction per device): ${baselineMs.toFixed(0)} ms (${(baselineMs / devices).toFixed(2)} ms/device)`);
    console.log(`lifecycle JITR (check, claim, registry, activate): ${lifecycleMs.toFixed(0)} ms (${(lifecycleMs / devices).toFixed(2)} ms/device)`);
    console.log(`ratio lifecycle/baseline: ${(lifecycleMs / baselineMs).toFixed(2)}x`);
    client.destroy();
    documentClient.destroy();
  } finally {
    await dynamo.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
