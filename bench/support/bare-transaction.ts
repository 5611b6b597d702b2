/**
 * The baseline the store's benchmarks are measured against: one TransactWriteItems of four items (device,
 * certificate, a conditional change marker, an event), the least a recorder of a device change writes once.
 */
import { TransactWriteCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

export function bareTransaction(documentClient: DynamoDBDocumentClient, tableName: string, key: string): Promise<unknown> {
  return documentClient.send(
    new TransactWriteCommand({
      TransactItems: [
        { Put: { TableName: tableName, Item: { PK: `BASE#${key}`, SK: 'DEVICE', status: 'ACTIVE' } } },
        { Put: { TableName: tableName, Item: { PK: `BASE#${key}`, SK: 'CERT', status: 'ACTIVE' } } },
        { Put: { TableName: tableName, Item: { PK: `BASECHANGE#${key}`, SK: 'CHANGE' }, ConditionExpression: 'attribute_not_exists(PK)' } },
        { Put: { TableName: tableName, Item: { PK: `BASE#${key}`, SK: `EVENT#${Date.now()}` } } },
      ],
    }),
  );
}
