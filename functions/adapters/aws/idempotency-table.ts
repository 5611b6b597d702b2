import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

/**
 * The table Powertools idempotency keeps API request records in (its default layout:
 * partition key `id`, TTL attribute `expiration`). Separate from the device table because
 * Powertools' layout puts every record under one partition key value on a table with a sort key.
 */
export const IDEMPOTENCY_TABLE_SCHEMA = { partitionKey: 'id', timeToLiveAttribute: 'expiration' } as const;

export function idempotencyTableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [{ AttributeName: IDEMPOTENCY_TABLE_SCHEMA.partitionKey, AttributeType: 'S' }],
    KeySchema: [{ AttributeName: IDEMPOTENCY_TABLE_SCHEMA.partitionKey, KeyType: 'HASH' }],
  };
}
