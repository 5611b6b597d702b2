import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

/**
 * The single table that holds devices, certificates, the audit trail and the operation
 * records that make each change happen once. The CDK stack, the local mode and the tests
 * all build the table from this one definition.
 *
 * | item             | PK                     | SK                                   | GSI1 ByStatus (PK / SK)      | GSI2 ByExpiry (PK / SK)                 |
 * |------------------|------------------------|--------------------------------------|------------------------------|-----------------------------------------|
 * | device           | DEVICE#<deviceId>      | DEVICE                               | STATUS#<status> / <deviceId> | ROTATION / <commitDeadline>#<deviceId>  (while a rotation is in flight) |
 * | certificate link | DEVICE#<deviceId>      | CERTIFICATE#<createdAt>#<certId>     | -                            | -                                       |
 * | audit event      | DEVICE#<deviceId> (or CERTIFICATE#<certId> when no device) | EVENT#<at>#<eventId> | - | -                          |
 * | certificate      | CERTIFICATE#<certId>   | CERTIFICATE                          | -                            | EXPIRY#<yyyy-mm> / <notAfter>#<certId>  (live certificates only) |
 * | operation        | OPERATION#<sha256(caller, handle)> | OPERATION                | -                            | -                                       |
 *
 * The ByExpiry index holds both deadlines the scheduled functions walk: certificates' expiry and rotations' commit deadline.
 * Operation records carry `expiresAt` (epoch seconds): DynamoDB's TTL removes them OPERATION_RETENTION_DAYS after their last write.
 */
export const DEVICE_TABLE_SCHEMA = {
  partitionKey: 'PK',
  sortKey: 'SK',
  byStatusIndex: { indexName: 'ByStatus', partitionKey: 'GSI1PK', sortKey: 'GSI1SK' },
  byExpiryIndex: { indexName: 'ByExpiry', partitionKey: 'GSI2PK', sortKey: 'GSI2SK' },
  timeToLiveAttribute: 'expiresAt',
} as const;

/** The table as `CreateTable` wants it (the local mode and the tests; the CDK stack declares the same keys). */
export function deviceTableDefinition(tableName: string): CreateTableCommandInput {
  const { partitionKey, sortKey, byStatusIndex, byExpiryIndex } = DEVICE_TABLE_SCHEMA;
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [partitionKey, sortKey, byStatusIndex.partitionKey, byStatusIndex.sortKey, byExpiryIndex.partitionKey, byExpiryIndex.sortKey].map(
      (name) => ({ AttributeName: name, AttributeType: 'S' }),
    ),
    KeySchema: [
      { AttributeName: partitionKey, KeyType: 'HASH' },
      { AttributeName: sortKey, KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [byStatusIndex, byExpiryIndex].map((index) => ({
      IndexName: index.indexName,
      KeySchema: [
        { AttributeName: index.partitionKey, KeyType: 'HASH' as const },
        { AttributeName: index.sortKey, KeyType: 'RANGE' as const },
      ],
      Projection: { ProjectionType: 'ALL' as const },
    })),
  };
}
