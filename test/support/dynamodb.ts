import { randomUUID } from 'node:crypto';
import { DeleteTableCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { ensureDeviceTable, localDocumentClient, localDynamoDbClient } from '../../local/dynamodb-local';
import { DynamoDbDeviceStore } from '../../functions/adapters/aws/dynamodb-device-store';

export interface TestTable {
  readonly tableName: string;
  readonly client: DynamoDBClient;
  readonly documentClient: DynamoDBDocumentClient;
  readonly store: DynamoDbDeviceStore;
  drop(): Promise<void>;
}

export function dynamoDbEndpoint(): string {
  const endpoint = process.env.DYNAMODB_ENDPOINT;
  if (!endpoint) throw new Error('DYNAMODB_ENDPOINT is not set: the jest global setup starts DynamoDB Local.');
  return endpoint;
}

/** A fresh device table on the shared DynamoDB Local, so test files never see each other's items. */
export async function createTestTable(): Promise<TestTable> {
  const endpoint = dynamoDbEndpoint();
  const tableName = `devices-${randomUUID()}`;
  const client = localDynamoDbClient(endpoint);
  await ensureDeviceTable(client, tableName);
  const documentClient = localDocumentClient(endpoint);
  return {
    tableName,
    client,
    documentClient,
    store: new DynamoDbDeviceStore({ tableName, documentClient }),
    drop: async () => {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
      client.destroy();
      documentClient.destroy();
    },
  };
}
