/**
 * The DynamoDB calls of the local API's requests, recorded for a design floor (bench/support/dynamodb-call-replay.ts).
 * The local mode runs in a child process, out of reach of an SDK middleware; the calibration runs the same requests
 * in this process through the same code the local mode wires (local/local-mode.ts: `DynamoDbDeviceStore`, the
 * software CA, the local registry with the CA registered and the fleet policy on the thing group, `DeviceLifecycle`
 * with the local mode's default settings, `createApiHandler`, events as local/api-server.ts builds them), on a table
 * of its own in the local mode's DynamoDB Local. Only the DynamoDB calls are kept: they are what a floor replays.
 */
import { randomUUID } from 'node:crypto';
import { Logger } from '@aws-lambda-powertools/logger';
import { DeviceLifecycle, randomIds } from '../../functions/core/lifecycle';
import { systemClock } from '../../functions/core/ports';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';
import { LocalDeviceRegistry } from '../../functions/adapters/local/local-device-registry';
import { SoftwareCertificateAuthority } from '../../functions/adapters/local/software-ca';
import { certificateIdOf } from '../../functions/core/x509';
import { createApiHandler } from '../../functions/handlers/api';
import { fleetPolicyDocument } from '../../functions/policy/fleet-policy';
import { toApiGatewayEvent } from '../../local/api-server';
import { LOCAL_ACCOUNT_ID, LOCAL_POLICY_NAME, LOCAL_REGION, LOCAL_THING_GROUP, parseLocalModeConfig } from '../../local/config';
import { ensureDeviceTable, localDocumentClient, localDynamoDbClient } from '../../local/dynamodb-local';
import { lambdaContext } from '../../local/lambda-context';
import { DynamoDbCallRecorder } from './dynamodb-call-replay';

export interface LocalApiCalibration {
  /** The table the calibration wrote to; replays go there too. */
  readonly tableName: string;
  /** Sends one request as the local API server would; answers its status and body. Each call is recorded while `record` runs. */
  request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  readonly recorder: DynamoDbCallRecorder;
  /** Values every request shares (the CA's certificate id): not per-device tokens, a replay keeps them. */
  readonly sharedValues: readonly string[];
  close(): void;
}

export async function localApiCalibration(dynamoDbEndpoint: string): Promise<LocalApiCalibration> {
  const config = parseLocalModeConfig([], {});
  if (config === 'HELP') throw new Error('unreachable: no --help given');
  const tableName = `bench-floor-${randomUUID()}`;
  const client = localDynamoDbClient(dynamoDbEndpoint);
  await ensureDeviceTable(client, tableName);
  const documentClient = localDocumentClient(dynamoDbEndpoint);
  const { ca, material } = await SoftwareCertificateAuthority.create('iotcert bench floor calibration CA');
  const registry = new LocalDeviceRegistry({ thingGroupName: LOCAL_THING_GROUP });
  await registry.registerCaCertificate(material.certificatePem, { autoRegistration: true });
  await registry.putPolicy(LOCAL_POLICY_NAME, fleetPolicyDocument({ region: LOCAL_REGION, accountId: LOCAL_ACCOUNT_ID }));
  await registry.attachPolicyToThingGroup(LOCAL_POLICY_NAME, LOCAL_THING_GROUP);
  const lifecycle = new DeviceLifecycle(
    { store: new DynamoDbDeviceStore({ tableName, documentClient }), registry, ca, clock: systemClock, ids: randomIds },
    { enrollmentPolicy: config.enrollmentPolicy, validityDays: config.validityDays, rotationCommitSeconds: config.rotationCommitSeconds },
  );
  const api = createApiHandler({ lifecycle, clock: systemClock, logger: new Logger({ serviceName: 'device-api', logLevel: 'WARN' }) });
  return {
    tableName,
    recorder: new DynamoDbCallRecorder(documentClient),
    sharedValues: [await certificateIdOf(material.certificatePem)],
    request: async (method, path, body) => {
      // What local/cli/device.ts `callApi` sends: a fresh Idempotency-Key with each body.
      const headers = body === undefined ? {} : { 'content-type': 'application/json', 'idempotency-key': randomUUID() };
      const event = toApiGatewayEvent({ method, url: path, headers, body: body === undefined ? '' : JSON.stringify(body) });
      const answer = await api(event, lambdaContext('iotcert-local-api', event.requestContext.requestId, 29_000));
      return { status: answer.statusCode, body: JSON.parse(answer.body) as unknown };
    },
    close: () => {
      client.destroy();
      documentClient.destroy();
    },
  };
}
